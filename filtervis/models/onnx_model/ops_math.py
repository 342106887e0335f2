"""
ONNX ops that compute values where they stand: elementwise arithmetic and
comparisons, activations, normalizations, reductions, Softmax, Gemm and
MatMul. Each takes a layout.Node and its inputs (layout.Mapped or numpy) and
returns its outputs; all-constant inputs are computed in numpy (shape
arithmetic), the rest as TensorFlow ops named after the node.

    from filtervis.models.onnx_model import ops_math
    ops_math.OPS['HardSigmoid'](node, [x])         # alpha from the node: 1/6 from PyTorch, 0.2 by default

Broadcasting follows ONNX's rule (axes line up from the end) in ONNX's axis
order, then the operands are laid out as the tensor is (layout.aligned): a
PyTorch bias [C, 1, 1] meets an NHWC map as [1, 1, 1, C].
"""

import math

import numpy as np

from filtervis.models.onnx_model import layout
from filtervis.models.onnx_model.layout import Mapped
from filtervis.util import quiet

tf = quiet.import_tensorflow()   # tensorflow.compat.v1, graph mode


def _any_mapped(values):
    return any(isinstance(v, Mapped) for v in values)


def _numpy_divide(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        return (np.trunc(a / b)).astype(a.dtype)   # ONNX's integer division truncates
    return a / b


def _divide(a, b, name):
    dtype = a.dtype if isinstance(a, tf.Tensor) else b.dtype
    return (tf.realdiv if dtype.is_floating else tf.truncatediv)(a, b, name=name)


def _power(a, b, name):
    if not isinstance(b, tf.Tensor) and np.all(np.asarray(b) == 2):
        return tf.square(a, name=name)
    return tf.pow(a, b, name=name)


def elementwise(numpy_fn, tf_fn):
    """An op over broadcast operands (two or more): numpy when all are constant, else one TensorFlow op."""
    def op(node, inputs):
        values = [v for v in inputs if v is not None]
        if not _any_mapped(values):
            result = values[0]
            for value in values[1:]:
                result = numpy_fn(result, value)
            return [np.asarray(result)]
        operands, order = layout.aligned(values)
        result = operands[0]
        for index, operand in enumerate(operands[1:]):
            last = index == len(operands) - 2
            result = tf_fn(result, operand, name=node.name if last else None)
        return [Mapped(result, order)]
    return op


def mean(node, inputs):
    total = elementwise(np.add, lambda a, b, name: tf.add(a, b))(node, inputs)[0]
    if not isinstance(total, Mapped):
        return [total / len(inputs)]
    return [Mapped(tf.multiply(total.t, 1.0 / len(inputs), name=node.name), total.order)]


def where(node, inputs):
    if not _any_mapped(inputs):
        return [np.where(*inputs)]
    (condition, a, b), order = layout.aligned(inputs)
    condition = condition if isinstance(condition, tf.Tensor) else np.asarray(condition, bool)
    return [Mapped(tf.where_v2(condition, a, b, name=node.name), order)]


def prelu(node, inputs):
    x, slope = inputs
    if not isinstance(x, Mapped):
        raise node.refuse('its input does not depend on the image')
    (x_t, slope), order = layout.aligned([x, slope])
    return [Mapped(tf.add(tf.nn.relu(x_t), slope * tf.minimum(x_t, 0.0), name=node.name), order)]


def unary(numpy_fn, tf_fn):
    """An op on one value that keeps its layout: numpy for a constant (where numpy_fn exists), else TensorFlow."""
    def op(node, inputs):
        x = inputs[0]
        if not isinstance(x, Mapped):
            if numpy_fn is None:
                raise node.refuse('its input does not depend on the image', 'fold it away before export')
            return [np.asarray(numpy_fn(np.asarray(x)))]
        return [Mapped(tf_fn(x.t, node), x.order)]
    return op


def _hard_sigmoid(x_t, alpha, beta, name=None):
    return tf.minimum(tf.maximum(x_t * np.float32(alpha) + np.float32(beta), 0.0), 1.0, name=name)


def _leaky_relu(x_t, alpha, name=None):
    # Not tf.nn.leaky_relu: TensorFlow 2.21's remapper fuses it into the conv before it and then fails on the
    # gradient graph ('fanout ... exist for missing node'), printing an error on every run. Exact: x or alpha * x.
    return tf.subtract(tf.nn.relu(x_t), np.float32(alpha) * tf.nn.relu(-x_t), name=name)


def _elu(x_t, alpha, name=None):
    if alpha == 1.0:
        return tf.nn.elu(x_t, name=name)
    # elu of the negative part only: exp() of a large input never reaches the gradient as inf * 0.
    return tf.add(tf.nn.relu(x_t), alpha * tf.nn.elu(tf.minimum(x_t, 0.0)), name=name)


def _gelu(x_t, approximate, name=None):
    # tf.compat.v1.nn has no gelu: the two formulas of the ONNX specification.
    if approximate == 'tanh':
        inner = np.float32(np.sqrt(2 / np.pi)) * (x_t + np.float32(0.044715) * x_t * x_t * x_t)
        return tf.multiply(0.5 * x_t, 1.0 + tf.tanh(inner), name=name)
    return tf.multiply(0.5 * x_t, 1.0 + tf.math.erf(x_t * np.float32(1 / np.sqrt(2))), name=name)


def _clip(node, inputs):
    x = inputs[0]
    if node.opset < 11:
        low, high = node.attr('min'), node.attr('max')
    else:
        low, high = [None if len(inputs) <= i or inputs[i] is None else np.asarray(inputs[i]).item()
                     for i in (1, 2)]
        if any(isinstance(v, Mapped) for v in inputs[1:]):
            raise node.refuse('its bounds are computed from the image')
    if not isinstance(x, Mapped):
        return [np.clip(x, low, high)]
    if low == 0 and high == 6:
        return [Mapped(tf.nn.relu6(x.t, name=node.name), x.order)]
    if low == 0 and high is None:
        return [Mapped(tf.nn.relu(x.t, name=node.name), x.order)]
    x_t = x.t if low is None else tf.maximum(x.t, np.float32(low), name=None if high is not None else node.name)
    return [Mapped(x_t if high is None else tf.minimum(x_t, np.float32(high), name=node.name), x.order)]


def _erf(values):
    return np.vectorize(math.erf)(values).astype(np.asarray(values).dtype)


UNARY = {
    'Relu': (lambda x: np.maximum(x, 0), lambda x, n: tf.nn.relu(x, name=n.name)),
    'Sigmoid': (None, lambda x, n: tf.sigmoid(x, name=n.name)),
    'Tanh': (np.tanh, lambda x, n: tf.tanh(x, name=n.name)),
    'Exp': (np.exp, lambda x, n: tf.exp(x, name=n.name)),
    'Log': (np.log, lambda x, n: tf.log(x, name=n.name)),
    'Sqrt': (np.sqrt, lambda x, n: tf.sqrt(x, name=n.name)),
    'Abs': (np.abs, lambda x, n: tf.abs(x, name=n.name)),
    'Neg': (np.negative, lambda x, n: tf.negative(x, name=n.name)),
    'Reciprocal': (np.reciprocal, lambda x, n: tf.reciprocal(x, name=n.name)),
    'Floor': (np.floor, lambda x, n: tf.floor(x, name=n.name)),
    'Ceil': (np.ceil, lambda x, n: tf.ceil(x, name=n.name)),
    'Sign': (np.sign, lambda x, n: tf.sign(x, name=n.name)),
    'Not': (np.logical_not, lambda x, n: tf.logical_not(x, name=n.name)),
    'Erf': (_erf, lambda x, n: tf.math.erf(x, name=n.name)),
    'Softplus': (None, lambda x, n: tf.nn.softplus(x, name=n.name)),
    'Softsign': (None, lambda x, n: tf.nn.softsign(x, name=n.name)),
    'LeakyRelu': (None, lambda x, n: _leaky_relu(x, n.attr('alpha', 0.01), name=n.name)),
    'Elu': (None, lambda x, n: _elu(x, n.attr('alpha', 1.0), name=n.name)),
    'Selu': (None, lambda x, n: tf.multiply(_elu(x, n.attr('alpha', 1.67326319217681884765625)),
                                            np.float32(n.attr('gamma', 1.05070102214813232421875)), name=n.name)),
    # alpha is the node's: PyTorch exports 1/6, Paddle 0.2, ONNX's default is 0.2.
    'HardSigmoid': (None, lambda x, n: _hard_sigmoid(x, n.attr('alpha', 0.2), n.attr('beta', 0.5), name=n.name)),
    'HardSwish': (None, lambda x, n: tf.multiply(x, _hard_sigmoid(x, 1 / 6, 0.5), name=n.name)),
    'Gelu': (None, lambda x, n: _gelu(x, n.attr('approximate', 'none'), name=n.name)),
    'Mish': (None, lambda x, n: tf.multiply(x, tf.tanh(tf.nn.softplus(x)), name=n.name)),
}


def batch_normalization(node, inputs):
    """BatchNormalization in inference: x * scale / sqrt(var + eps) + (B - mean * that), along ONNX axis 1."""
    if node.attr('training_mode', 0) or len([o for o in node.outputs if o]) > 1:
        raise node.refuse('training-mode batch normalization (running statistics as outputs)',
                          'export the model in eval mode (model.eval())')
    x, scale, bias, running_mean, running_var = inputs
    if _any_mapped(inputs[1:]):
        raise node.refuse('its statistics are computed from the image')
    rank = layout.rank(x)
    epsilon = node.attr('epsilon', 1e-5)
    factor = np.asarray(scale, np.float64) / np.sqrt(np.asarray(running_var, np.float64) + epsilon)
    shift = np.asarray(bias, np.float64) - np.asarray(running_mean, np.float64) * factor
    along = (-1,) + (1,) * (rank - 2)   # ONNX axis 1, broadcast over the axes after it
    factor, shift = factor.astype(np.float32).reshape(along), shift.astype(np.float32).reshape(along)
    if not isinstance(x, Mapped):
        return [x * factor + shift]
    (x_t, factor, shift), order = layout.aligned([x, factor, shift])
    return [Mapped(tf.add(x_t * factor, shift, name=node.name), order)]


def _normalized(node, x, axes, scale, bias, epsilon):
    """(x - mean) / sqrt(var + epsilon) * scale + bias over the ONNX axes `axes`; scale and bias broadcast."""
    if not isinstance(x, Mapped):
        raise node.refuse('its input does not depend on the image')
    physical = [layout.physical_axis(x, axis) for axis in axes]
    mean_t, variance_t = tf.nn.moments(x.t, physical, keepdims=True)
    y_t = (x.t - mean_t) * tf.rsqrt(variance_t + np.float32(epsilon))
    (y_t, scale, bias), order = layout.aligned([Mapped(y_t, x.order), scale, bias])
    y_t = tf.multiply(y_t, scale, name=node.name if bias is None else None)
    return [Mapped(y_t if bias is None else tf.add(y_t, bias, name=node.name), order)]


def instance_normalization(node, inputs):
    x, scale, bias = inputs
    rank = layout.rank(x)
    along = (-1,) + (1,) * (rank - 2)
    return _normalized(node, x, range(2, rank), np.reshape(scale, along), np.reshape(bias, along),
                       node.attr('epsilon', 1e-5))


def layer_normalization(node, inputs):
    """LayerNormalization (opset 17): over ONNX axes `axis`..last; scale and bias of those axes' shape."""
    if len([o for o in node.outputs if o]) > 1:
        raise node.refuse('its Mean and InvStdDev outputs are not supported')
    x, scale = inputs[:2]
    bias = inputs[2] if len(inputs) > 2 else None
    rank = layout.rank(x)
    return _normalized(node, x, range(node.attr('axis', -1) % rank, rank), scale, bias,
                       node.attr('epsilon', 1e-5))


REDUCTIONS = {
    'ReduceMean': (np.mean, tf.reduce_mean),
    'ReduceMax': (np.max, tf.reduce_max),
    'ReduceMin': (np.min, tf.reduce_min),
    'ReduceSum': (np.sum, tf.reduce_sum),
    'ReduceProd': (np.prod, tf.reduce_prod),
    'ReduceSumSquare': (lambda x, axis, keepdims: np.sum(np.square(x), axis=axis, keepdims=keepdims),
                        lambda x, axes, keepdims, name: tf.reduce_sum(tf.square(x), axes, keepdims, name=name)),
    'ReduceL1': (lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims),
                 lambda x, axes, keepdims, name: tf.reduce_sum(tf.abs(x), axes, keepdims, name=name)),
    'ReduceL2': (lambda x, axis, keepdims: np.sqrt(np.sum(np.square(x), axis=axis, keepdims=keepdims)),
                 lambda x, axes, keepdims, name: tf.sqrt(tf.reduce_sum(tf.square(x), axes, keepdims), name=name)),
}


def reduction(node, inputs):
    """Reduce*: axes from the attribute (before opset 18; ReduceSum before 13) or the second input."""
    numpy_fn, tf_fn = REDUCTIONS[node.op_type]
    x = inputs[0]
    rank = layout.rank(x)
    axes_from_input = node.opset >= (13 if node.op_type == 'ReduceSum' else 18)
    axes = (inputs[1] if len(inputs) > 1 else None) if axes_from_input else node.attr('axes')
    if isinstance(axes, Mapped):
        raise node.refuse('its axes are computed from the image')
    if axes is None or np.size(axes) == 0:
        if node.attr('noop_with_empty_axes', 0):
            return [x]
        axes = range(rank)
    axes = sorted({int(a) % rank for a in np.ravel(axes)})
    keepdims = bool(node.attr('keepdims', 1))
    if not isinstance(x, Mapped):
        return [np.asarray(numpy_fn(x, axis=tuple(axes), keepdims=keepdims))]
    physical = [layout.physical_axis(x, axis) for axis in axes]
    order = x.order if keepdims else layout.renumbered(x.order, axes)
    return [Mapped(tf_fn(x.t, physical, keepdims, name=node.name), order)]


def softmax(node, inputs):
    """Softmax and LogSoftmax: one axis from opset 13; before it, over all axes from `axis` (default 1) on."""
    x = inputs[0]
    if not isinstance(x, Mapped):
        raise node.refuse('its input does not depend on the image')
    function = tf.nn.softmax if node.op_type == 'Softmax' else tf.nn.log_softmax
    axis = node.attr('axis', -1 if node.opset >= 13 else 1) % x.rank
    if node.opset >= 13 or axis == x.rank - 1:
        return [Mapped(function(x.t, axis=layout.physical_axis(x, axis), name=node.name), x.order)]
    shape = layout.onnx_shape(x)
    flat = layout.reshaped(x, [None if axis else 1, int(np.prod(shape[axis:]))])
    y = Mapped(function(flat.t, axis=-1), flat.order)
    return [layout.reshaped(y, shape, name=node.name)]


def _matrix(value):
    """A rank-2 value in ONNX order: a tensor or a float32 constant."""
    if isinstance(value, Mapped):
        return layout.arranged(value, (0, 1))
    return np.asarray(value, np.float32)


def gemm(node, inputs):
    """Gemm: alpha * A' B' + beta * C, A' and B' transposed as transA and transB say."""
    a, b = inputs[:2]
    c = inputs[2] if len(inputs) > 2 else None
    if not _any_mapped(inputs):
        raise node.refuse('none of its inputs depends on the image', 'fold it away before export')
    alpha, beta = np.float32(node.attr('alpha', 1.0)), np.float32(node.attr('beta', 1.0))
    steps = [lambda t, name: tf.matmul(_matrix(a), _matrix(b), transpose_a=bool(node.attr('transA', 0)),
                                       transpose_b=bool(node.attr('transB', 0)), name=name)]
    if alpha != 1:
        steps.append(lambda t, name: tf.multiply(t, alpha, name=name))
    if c is not None and beta != 0:
        c = layout.arranged(c, layout.identity(layout.rank(c))) if isinstance(c, Mapped) else np.float32(c)
        steps.append(lambda t, name: tf.add(t, c * beta if beta != 1 else c, name=name))
    y_t = None
    for index, step in enumerate(steps):
        y_t = step(y_t, node.name if index == len(steps) - 1 else None)
    return [Mapped(y_t, (0, 1))]


def matmul(node, inputs):
    """MatMul with numpy's rules; a map times a constant matrix along its last physical axis is a 1x1 conv."""
    a, b = inputs
    if not _any_mapped(inputs):
        return [np.matmul(a, b)]
    if isinstance(a, Mapped) and not isinstance(b, Mapped) and np.ndim(b) == 2 and a.order[-1] == a.rank - 1:
        b = np.asarray(b, np.float32)
        if a.rank == 4:
            # A 1x1 conv: what geometry.py and the bfloat16 path follow (ConvNeXt's Linear on NHWC).
            return [Mapped(tf.nn.conv2d(a.t, b[None, None], [1, 1, 1, 1], 'VALID', name=node.name), a.order)]
        if a.rank == 2:
            return [Mapped(tf.matmul(a.t, b, name=node.name), a.order)]
        return [Mapped(tf.tensordot(a.t, b, [[a.rank - 1], [0]], name=node.name), a.order)]
    rank = max(layout.rank(a), layout.rank(b))
    operands = [layout.arranged(v, layout.identity(v.rank)) if isinstance(v, Mapped) else np.float32(v)
                for v in (a, b)]
    if min(layout.rank(a), layout.rank(b)) < 2 or rank > 4:
        raise node.refuse('MatMul of ranks %d and %d is not supported' % (layout.rank(a), layout.rank(b)))
    return [Mapped(tf.matmul(operands[0], operands[1], name=node.name), layout.identity(rank))]


OPS = {
    'Add': elementwise(np.add, tf.add),
    'Sub': elementwise(np.subtract, tf.subtract),
    'Mul': elementwise(np.multiply, tf.multiply),
    'Div': elementwise(_numpy_divide, _divide),
    'Pow': elementwise(np.power, _power),
    'Max': elementwise(np.maximum, tf.maximum),
    'Min': elementwise(np.minimum, tf.minimum),
    'Sum': elementwise(np.add, tf.add),
    'Mean': mean,
    'Equal': elementwise(np.equal, tf.equal),
    'Greater': elementwise(np.greater, tf.greater),
    'Less': elementwise(np.less, tf.less),
    'GreaterOrEqual': elementwise(np.greater_equal, tf.greater_equal),
    'LessOrEqual': elementwise(np.less_equal, tf.less_equal),
    'And': elementwise(np.logical_and, tf.logical_and),
    'Or': elementwise(np.logical_or, tf.logical_or),
    'Where': where,
    'PRelu': prelu,
    'Clip': _clip,
    'BatchNormalization': batch_normalization,
    'InstanceNormalization': instance_normalization,
    'LayerNormalization': layer_normalization,
    'Softmax': softmax,
    'LogSoftmax': softmax,
    'Gemm': gemm,
    'MatMul': matmul,
}
OPS.update({name: unary(*functions) for name, functions in UNARY.items()})
OPS.update({name: reduction for name in REDUCTIONS})

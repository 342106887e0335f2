"""
ONNX ops that make, cut, join or rearrange tensors without computing new
values: constants and shape arithmetic (Constant, ConstantOfShape, Shape,
Size, Range, Cast, Gather, Unsqueeze, Squeeze, Concat of shapes), and
Reshape, Flatten, Transpose, Concat, Split, Slice (strided too), Expand,
Identity and Dropout on tensors. Shapes are those of the fixed input size, so
shape arithmetic folds to numpy constants while the graph is built.

    from filtervis.models.onnx_model import ops_shape
    ops_shape.OPS['Slice'](node, [x, starts, ends, axes, steps])   # YOLOX's Focus: every 2nd row

The batch: a folded shape holds node.batch (the model's own batch size, or 1
when it is dynamic) for ONNX axis 0 of a tensor that depends on the image. A
Reshape whose target keeps that size in front keeps the batch axis of any
size at run time; one that moves it into other axes is refused.
"""

import numpy as np

from filtervis.models.onnx_model import layout
from filtervis.models.onnx_model.layout import Mapped
from filtervis.util import quiet

tf = quiet.import_tensorflow()   # tensorflow.compat.v1, graph mode

# ONNX's TensorProto data types (onnx.TensorProto.FLOAT, ...) as numpy types.
NUMPY_TYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
               9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


def _constant(node, value, what):
    if isinstance(value, Mapped):
        raise node.refuse('its %s are computed from the image' % what, 'export with a fixed input size, so that '
                          'they fold to constants')
    return value


def _ints(values):
    return [int(v) for v in np.ravel(values)]


def constant(node, inputs):
    for key, kind in (('value', None), ('value_float', np.float32), ('value_floats', np.float32),
                      ('value_int', np.int64), ('value_ints', np.int64)):
        if node.attr(key) is not None:
            return [np.asarray(node.attr(key), dtype=kind)]
    raise node.refuse('only dense numeric constants are supported (no sparse or string values)')


def constant_of_shape(node, inputs):
    shape = _ints(_constant(node, inputs[0], 'shape'))
    value = node.attr('value')
    value = np.zeros(1, np.float32) if value is None else np.asarray(value)
    return [np.full(shape, value.ravel()[0], dtype=value.dtype)]


def shape(node, inputs):
    sizes = layout.folded_shape(inputs[0], node)
    start, end = node.attr('start', 0), node.attr('end')
    return [np.asarray(sizes[start:end], np.int64)]


def size(node, inputs):
    return [np.asarray(int(np.prod(layout.folded_shape(inputs[0], node))), np.int64)]


def range_(node, inputs):
    start, limit, delta = [np.asarray(_constant(node, v, 'bounds')) for v in inputs]
    return [np.arange(start, limit, delta).astype(start.dtype)]


def cast(node, inputs):
    kind = NUMPY_TYPES.get(node.attr('to'))
    if kind is None:
        raise node.refuse('cast to ONNX type %s is not supported' % node.attr('to'))
    x = inputs[0]
    if not isinstance(x, Mapped):
        return [np.asarray(x).astype(kind)]
    if x.t.dtype.as_numpy_dtype == kind:
        return [x]
    return [Mapped(tf.cast(x.t, kind, name=node.name), x.order)]


def passed(node, inputs):
    """Identity, and Dropout at inference: the input itself (Dropout's mask output is refused)."""
    if len([o for o in node.outputs if o]) > 1:
        raise node.refuse("its mask output is not supported")
    return [inputs[0]]


def gather(node, inputs):
    """Gather along one axis, with constant indices (negative ones count from the end)."""
    data, indices = inputs
    indices = np.asarray(_constant(node, indices, 'indices'), np.int64)
    rank = layout.rank(data)
    axis = node.attr('axis', 0) % rank
    if not isinstance(data, Mapped):
        return [np.take(data, indices, axis=axis)]
    if axis == 0:
        raise node.refuse('it gathers along the batch axis')
    side = layout.onnx_shape(data)[axis]
    indices = np.where(indices < 0, indices + side, indices)
    if indices.ndim <= 1:
        position = layout.physical_axis(data, axis)
        order = layout.renumbered(data.order, [axis]) if indices.ndim == 0 else data.order
        return [Mapped(tf.gather(data.t, indices, axis=position, name=node.name), order)]
    gathered = tf.gather(layout.arranged(data, layout.identity(rank)), indices, axis=axis, name=node.name)
    return [Mapped(gathered, layout.identity(gathered.shape.rank))]


def _axes_argument(node, inputs):
    """Axes of Squeeze and Unsqueeze: an attribute before opset 13, the second input from it."""
    if node.opset < 13:
        return node.attr('axes')
    return None if len(inputs) < 2 or inputs[1] is None else _ints(_constant(node, inputs[1], 'axes'))


def unsqueeze(node, inputs):
    x = inputs[0]
    axes = _axes_argument(node, inputs)
    rank = layout.rank(x) + len(axes)
    new_shape = layout.onnx_shape(x)
    for axis in sorted(a % rank for a in axes):
        new_shape.insert(axis, 1)
    if not isinstance(x, Mapped):
        return [np.reshape(x, new_shape)]
    return [layout.reshaped(x, new_shape, name=node.name)]


def squeeze(node, inputs):
    x = inputs[0]
    axes = _axes_argument(node, inputs)
    old_shape = layout.onnx_shape(x)
    rank = len(old_shape)
    axes = [axis for axis in range(rank) if old_shape[axis] == 1] if axes is None else [a % rank for a in axes]
    if any(old_shape[axis] != 1 for axis in axes):
        raise node.refuse('it squeezes axes %s of shape %s, which are not all of size 1' % (axes, old_shape))
    new_shape = [size for axis, size in enumerate(old_shape) if axis not in axes]
    if not isinstance(x, Mapped):
        return [np.reshape(x, new_shape)]
    return [layout.reshaped(x, new_shape, name=node.name)]


def _target(node, x, target):
    """The ONNX shape Reshape makes of x (ints, None for the run-time batch): 0 copies, -1 is inferred."""
    old = layout.folded_shape(x, node) if isinstance(x, Mapped) else list(np.shape(x))
    target = _ints(target)
    if not node.attr('allowzero', 0):
        target = [old[axis] if size == 0 else size for axis, size in enumerate(target)]
    if -1 in target:
        known = int(np.prod([size for size in target if size != -1]))
        target[target.index(-1)] = int(np.prod(old)) // max(known, 1)
    if int(np.prod(target)) != int(np.prod(old)):
        raise node.refuse('it reshapes %s into %s' % (old, target))
    if isinstance(x, Mapped) and layout.onnx_shape(x)[0] is None:
        if target[0] != node.batch:
            raise node.refuse('it folds the batch axis into others (%s into %s), which works for a batch of %d '
                              'only' % (old, target, node.batch), 'keep the batch axis in front (x.flatten(1))')
        target[0] = None
    return target


def reshape(node, inputs):
    x = inputs[0]
    target = node.attr('shape') if node.opset < 5 else _constant(node, inputs[1], 'target shape')
    new_shape = _target(node, x, target)
    if not isinstance(x, Mapped):
        return [np.reshape(x, new_shape)]
    return [layout.reshaped(x, new_shape, name=node.name)]


def flatten(node, inputs):
    """Flatten to [prod(shape[:axis]), prod(shape[axis:])], in ONNX's (NCHW) order, as Gemm weights expect."""
    x = inputs[0]
    old = layout.folded_shape(x, node) if isinstance(x, Mapped) else list(np.shape(x))
    axis = node.attr('axis', 1) % (len(old) + 1)
    target = [int(np.prod(old[:axis])), int(np.prod(old[axis:]))]
    if not isinstance(x, Mapped):
        return [np.reshape(x, target)]
    return [layout.reshaped(x, _target(node, x, target), name=node.name)]


def transpose(node, inputs):
    """Transpose: only the order changes; the data moves where a later op needs it elsewhere."""
    x = inputs[0]
    rank = layout.rank(x)
    perm = node.attr('perm') or list(range(rank))[::-1]
    if not isinstance(x, Mapped):
        return [np.transpose(x, perm)]
    inverse = np.argsort(perm)
    return [Mapped(x.t, tuple(int(inverse[axis]) for axis in x.order))]


def concat(node, inputs):
    values = [v for v in inputs if v is not None and not (not isinstance(v, Mapped) and np.size(v) == 0
                                                           and np.ndim(v) == 1)]
    rank = layout.rank(values[0])
    axis = node.attr('axis') % rank
    if not any(isinstance(v, Mapped) for v in values):
        return [np.concatenate([np.asarray(v) for v in values], axis=axis)]
    order = next(v.order for v in values if isinstance(v, Mapped))
    dtype = next(v.t.dtype.as_numpy_dtype for v in values if isinstance(v, Mapped))
    parts = [layout.arranged(v, order) if isinstance(v, Mapped) else np.asarray(layout.arranged(v, order), dtype)
             for v in values]
    return [Mapped(tf.concat(parts, axis=order.index(axis), name=node.name), order)]


def split(node, inputs):
    """Split into the given sizes (attribute before opset 13, input from it) or equal parts."""
    x = inputs[0]
    rank = layout.rank(x)
    axis = node.attr('axis', 0) % rank
    count = len(node.outputs)
    if node.opset < 13:
        sizes = node.attr('split')
    else:
        sizes = None if len(inputs) < 2 or inputs[1] is None else _ints(_constant(node, inputs[1], 'sizes'))
    side = (layout.folded_shape(x, node) if isinstance(x, Mapped) else list(np.shape(x)))[axis]
    if sizes is None:
        # Equal parts; from opset 18 the last may be smaller.
        part = -(-side // count)
        sizes = [part] * (count - 1) + [side - part * (count - 1)]
    if sum(sizes) != side or len(sizes) != count:
        raise node.refuse('sizes %s do not split %d units into %d outputs' % (list(sizes), side, count))
    if not isinstance(x, Mapped):
        return np.split(np.asarray(x), np.cumsum(sizes)[:-1], axis=axis)
    if axis == 0:
        raise node.refuse('it splits the batch axis')
    parts = tf.split(x.t, list(sizes), axis=layout.physical_axis(x, axis), name=node.name)
    return [Mapped(part, x.order) for part in parts]


def _slice_of(start, end, step, side):
    """A Python slice for ONNX's start, end and step on an axis of `side` units, clamped as ONNX clamps."""
    start = start + side if start < 0 else start
    end = end + side if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), side), min(max(end, 0), side), step)
    start, end = min(max(start, 0), side - 1), min(max(end, -1), side - 1)
    return slice(start, None if end < 0 else end, step)


def slice_(node, inputs):
    """Slice: starts, ends, axes, steps (attributes before opset 10, inputs from it; negative and strided)."""
    x = inputs[0]
    if node.opset < 10:
        starts, ends, axes, steps = node.attr('starts'), node.attr('ends'), node.attr('axes'), None
    else:
        starts, ends = [_ints(_constant(node, v, 'bounds')) for v in inputs[1:3]]
        axes, steps = [None if len(inputs) <= i or inputs[i] is None else _ints(_constant(node, inputs[i], 'axes'))
                       for i in (3, 4)]
    rank = layout.rank(x)
    axes = list(range(len(starts))) if axes is None else [a % rank for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    sides = layout.folded_shape(x, node) if isinstance(x, Mapped) else list(np.shape(x))
    cuts = [slice(None)] * rank
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step == 0:
            raise node.refuse('a step of 0')
        cuts[axis] = _slice_of(int(start), int(end), int(step), sides[axis])
    if not isinstance(x, Mapped):
        return [np.asarray(x)[tuple(cuts)]]
    if cuts[0].indices(sides[0]) != (0, sides[0], 1):
        raise node.refuse('it slices the batch axis')
    cuts[0] = slice(None)
    begin, end, strides, begin_mask, end_mask = [], [], [], 0, 0
    for position, axis in enumerate(x.order):
        cut = cuts[axis]
        begin.append(cut.start or 0)
        end.append(cut.stop or 0)
        strides.append(cut.step or 1)
        begin_mask |= (cut.start is None) << position
        end_mask |= (cut.stop is None) << position
    return [Mapped(tf.strided_slice(x.t, begin, end, strides, begin_mask=begin_mask, end_mask=end_mask,
                                    name=node.name), x.order)]


def expand(node, inputs):
    """Expand: broadcast to a shape (both ways, as ONNX says); a tensor is multiplied by ones of that shape."""
    x, target = inputs
    target = _ints(_constant(node, target, 'shape'))
    if not isinstance(x, Mapped):
        return [np.broadcast_to(x, np.broadcast_shapes(np.shape(x), target)).copy()]
    old = layout.folded_shape(x, node)
    new = list(np.broadcast_shapes(tuple(old), tuple(target)))
    if new == old:
        return [x]
    # Ones with a batch of 1: broadcasting keeps the tensor's own batch.
    ones = np.ones([1] + new[1:], x.t.dtype.as_numpy_dtype)
    (x_t, ones), order = layout.aligned([x, ones])
    return [Mapped(tf.multiply(x_t, ones, name=node.name), order)]


OPS = {
    'Constant': constant,
    'ConstantOfShape': constant_of_shape,
    'Shape': shape,
    'Size': size,
    'Range': range_,
    'Cast': cast,
    'Identity': passed,
    'Dropout': passed,
    'Gather': gather,
    'Unsqueeze': unsqueeze,
    'Squeeze': squeeze,
    'Reshape': reshape,
    'Flatten': flatten,
    'Transpose': transpose,
    'Concat': concat,
    'Split': split,
    'Slice': slice_,
    'Expand': expand,
}

"""
ONNX ops that slide over or move the rows and columns of a feature map, as
NHWC TensorFlow ops: Conv, ConvTranspose, MaxPool, AveragePool, the global
pools, Pad, Resize and Upsample. Each takes a layout.Node and its inputs
(layout.Mapped or numpy) and returns its outputs; the semantics are those of
the ONNX operator specification, checked against onnxruntime in
tests/test_onnx_ops.py. A bare tensor returned is in its rank's canonical
order (NHWC for a map, layout.canonical).

    from filtervis.models.onnx_model import ops_spatial
    ops_spatial.OPS['Conv'](node, [x, weights, bias])     # [Mapped], NHWC

Padding becomes TensorFlow's SAME where it pads the same rows, VALID where
there is none, and otherwise a Pad op before a VALID op: TensorFlow 2.21's
CPU gradient of a conv with EXPLICIT padding fails with groups or dilations
and is slow with strides, and a Pad op is what geometry.py follows.
"""

import math

import numpy as np

from filtervis.models.onnx_model import layout
from filtervis.models.onnx_model.layout import NHWC, Mapped
from filtervis.util import quiet

tf = quiet.import_tensorflow()   # tensorflow.compat.v1, graph mode


def _feature_map(node, value, what='its input'):
    """value as an NHWC tensor [N, H, W, C]; Refused for a constant or a tensor that is not 4-D."""
    if not isinstance(value, Mapped):
        raise node.refuse('%s does not depend on the image' % what, 'fold it away before export')
    if value.rank != 4:
        raise node.refuse('%s has rank %d; only 2-D maps [N, C, H, W] are supported (no 1-D or 3-D '
                          'convolutions or pools)' % (what, value.rank))
    return layout.arranged(value, NHWC)


def _constant(node, value, what):
    if isinstance(value, Mapped):
        raise node.refuse('its %s are computed from the image' % what, 'export them as constants')
    return np.asarray(value)


def _pairs(node, sides, extents, strides):
    """[(before, after)] padding of rows and columns, from pads or auto_pad (ONNX: [top, left, bottom, right])."""
    auto_pad = node.attr('auto_pad', 'NOTSET')
    if auto_pad in ('NOTSET', 'VALID'):
        pads = node.attr('pads', [0, 0, 0, 0]) if auto_pad == 'NOTSET' else [0, 0, 0, 0]
        if len(pads) != 4:
            raise node.refuse('pads %s: expected 4 numbers for a 2-D map' % (pads,))
        return [(int(pads[0]), int(pads[2])), (int(pads[1]), int(pads[3]))]
    if auto_pad not in ('SAME_UPPER', 'SAME_LOWER'):
        raise node.refuse('auto_pad %r is not an ONNX value' % auto_pad)
    pairs = []
    for side, extent, stride in zip(sides, extents, strides):
        total = max((-(-side // stride) - 1) * stride + extent - side, 0)
        small, large = total // 2, total - total // 2
        # SAME_UPPER puts the odd row at the end, as TensorFlow's SAME does.
        pairs.append((small, large) if auto_pad == 'SAME_UPPER' else (large, small))
    return pairs


def _same(sides, extents, strides):
    """The (before, after) pairs TensorFlow's SAME padding uses for these sides."""
    pairs = []
    for side, extent, stride in zip(sides, extents, strides):
        total = max((-(-side // stride) - 1) * stride + extent - side, 0)
        pairs.append((total // 2, total - total // 2))
    return pairs


def _padding(x_t, pairs, extents, strides, value=0.0):
    """(tensor, 'SAME' or 'VALID') that pads x_t [N, H, W, C] by `pairs` when the op slides over it."""
    sides = x_t.shape.as_list()[1:3]
    if all(p == (0, 0) for p in pairs):
        return x_t, 'VALID'
    if [tuple(p) for p in pairs] == _same(sides, extents, strides):
        return x_t, 'SAME'
    paddings = [[0, 0], list(pairs[0]), list(pairs[1]), [0, 0]]
    return tf.pad(x_t, paddings, constant_values=value), 'VALID'


def conv(node, inputs):
    """Conv: weights [C_out, C_in/group, kh, kw]; any group (depthwise included), dilations, pads, auto_pad."""
    x, weights, bias = (list(inputs) + [None, None])[:3]
    x_t = _feature_map(node, x)
    weights = _constant(node, weights, 'weights')
    if weights.ndim != 4:
        raise node.refuse('weights of shape %s: only 2-D convolutions are supported' % (weights.shape,))
    groups = int(node.attr('group', 1))
    channels = x_t.shape.as_list()[3]
    out_channels, per_group, kernel_h, kernel_w = weights.shape
    if per_group * groups != channels or out_channels % groups:
        raise node.refuse('weights %s with group %d do not fit %d input channels' % (weights.shape, groups, channels))
    strides = [int(s) for s in node.attr('strides', [1, 1])]
    dilations = [int(d) for d in node.attr('dilations', [1, 1])]
    extents = [(kernel_h - 1) * dilations[0] + 1, (kernel_w - 1) * dilations[1] + 1]
    pairs = _pairs(node, x_t.shape.as_list()[1:3], extents, strides)
    x_t, padding = _padding(x_t, pairs, extents, strides)
    kernel = weights.transpose(2, 3, 1, 0).astype(np.float32)            # [kh, kw, C_in/group, C_out]
    bias = None if bias is None else _constant(node, bias, 'bias').astype(np.float32)
    tf_strides, tf_dilations = [1] + strides + [1], [1] + dilations + [1]
    if groups == 1:
        conv_t = tf.nn.conv2d(x_t, kernel, tf_strides, padding, dilations=tf_dilations)
        # A BiasAdd after a Conv2D (zeros where ONNX has none) is the pattern of units.py's fast path.
        return [tf.nn.bias_add(conv_t, np.zeros(out_channels, np.float32) if bias is None else bias,
                               name=node.name)]
    last = bias is None
    if per_group == 1 and dilations == [1, 1]:
        multiplier = out_channels // groups
        # ONNX's output channel c * multiplier + m is TensorFlow's depthwise channel (c, m).
        depthwise = kernel.reshape(kernel_h, kernel_w, groups, multiplier)
        conv_t = tf.nn.depthwise_conv2d(x_t, depthwise, tf_strides, padding, dilations=[1, 1],
                                        name=node.name if last else None)
    else:
        # A grouped Conv2D, also for a dilated depthwise conv, whose DepthwiseConv2dNative gradient is wrong
        # on the CPU. Its bias is an Add, not a BiasAdd: units.py's fast path would slice the kernel's
        # output channels, which breaks the groups.
        conv_t = tf.nn.conv2d(x_t, kernel, tf_strides, padding, dilations=tf_dilations,
                              name=node.name if last else None)
    return [conv_t if last else tf.add(conv_t, bias, name=node.name)]


def conv_transpose(node, inputs):
    """ConvTranspose: weights [C_in, C_out/group, kh, kw]; strides, dilations, pads, output_padding, group."""
    x, weights, bias = (list(inputs) + [None, None])[:3]
    x_t = _feature_map(node, x)
    weights = _constant(node, weights, 'weights')
    if node.attr('auto_pad', 'NOTSET') != 'NOTSET' or node.attr('output_shape') is not None:
        raise node.refuse('auto_pad and output_shape are not supported', 'export with pads (PyTorch does)')
    groups = int(node.attr('group', 1))
    channels, per_group, kernel_h, kernel_w = weights.shape
    strides = [int(s) for s in node.attr('strides', [1, 1])]
    dilations = [int(d) for d in node.attr('dilations', [1, 1])]
    pads = [int(p) for p in node.attr('pads', [0, 0, 0, 0])]
    extra = [int(p) for p in node.attr('output_padding', [0, 0])]
    if any(e >= s for e, s in zip(extra, strides)):
        raise node.refuse('output_padding %s is not below the strides %s' % (extra, strides))
    # Zeros between the taps make a dilated kernel an ordinary one.
    dilated = np.zeros((channels, per_group, (kernel_h - 1) * dilations[0] + 1, (kernel_w - 1) * dilations[1] + 1),
                       np.float32)
    dilated[:, :, ::dilations[0], ::dilations[1]] = weights
    sides = x_t.shape.as_list()[1:3]
    full = [(side - 1) * stride + extent + e
            for side, stride, extent, e in zip(sides, strides, dilated.shape[2:], extra)]
    batch_t = tf.shape(x_t)[0]
    parts = tf.split(x_t, groups, axis=3) if groups > 1 else [x_t]
    outputs = []
    for group, part_t in enumerate(parts):
        kernel = dilated[group * channels // groups:(group + 1) * channels // groups].transpose(2, 3, 1, 0)
        outputs.append(tf.nn.conv2d_transpose(part_t, kernel, tf.stack([batch_t, full[0], full[1], per_group]),
                                              [1] + strides + [1], 'VALID'))
    y_t = tf.concat(outputs, axis=3) if groups > 1 else outputs[0]
    y_t.set_shape([None, full[0], full[1], per_group * groups])
    if bias is not None:
        y_t = y_t + _constant(node, bias, 'bias').astype(np.float32)
    # ONNX's pads take rows off the full output; output_padding was added at its end.
    y_t = tf.identity(y_t[:, pads[0]:full[0] - pads[2], pads[1]:full[1] - pads[3], :], name=node.name)
    return [y_t]


def _pool_geometry(node, x_t):
    """(kernel, strides, pairs with the ceil_mode rows, pairs as given) of a MaxPool or AveragePool."""
    kernel = [int(k) for k in node.attr('kernel_shape')]
    if len(kernel) != 2:
        raise node.refuse('kernel_shape %s: only 2-D pools are supported' % (kernel,))
    if any(int(d) != 1 for d in node.attr('dilations', [1, 1])):
        raise node.refuse('dilated pooling is not supported')
    strides = [int(s) for s in node.attr('strides', [1, 1])]
    sides = x_t.shape.as_list()[1:3]
    given = _pairs(node, sides, kernel, strides)
    if not node.attr('ceil_mode', 0):
        return kernel, strides, given, given
    pairs = []
    for side, k, stride, (before, after) in zip(sides, kernel, strides, given):
        out = -(-(side + before + after - k) // stride) + 1
        # As PyTorch and onnxruntime do: the last window must start inside the map or its leading padding.
        if (out - 1) * stride >= side + before:
            out -= 1
        pairs.append((before, after + max(0, (out - 1) * stride + k - (side + before + after))))
    return kernel, strides, pairs, given


def max_pool(node, inputs):
    """MaxPool (pads, auto_pad, ceil_mode, strides); padding never wins a max."""
    if len([o for o in node.outputs if o]) > 1:
        raise node.refuse('its Indices output is not supported')
    x_t = _feature_map(node, inputs[0])
    kernel, strides, pairs, _ = _pool_geometry(node, x_t)
    x_t, padding = _padding(x_t, pairs, kernel, strides, value=-np.inf)
    return [tf.nn.max_pool2d(x_t, kernel, strides, padding, name=node.name)]


def average_pool(node, inputs):
    """AveragePool (pads, auto_pad, ceil_mode, count_include_pad): the mean over what each window counts."""
    x_t = _feature_map(node, inputs[0])
    kernel, strides, pairs, given = _pool_geometry(node, x_t)
    include_pad = bool(node.attr('count_include_pad', 0))
    sides = x_t.shape.as_list()[1:3]
    if not include_pad and [tuple(p) for p in pairs] == _same(sides, kernel, strides):
        # TensorFlow's SAME average counts only the map's own units, as count_include_pad=0 does.
        return [tf.nn.avg_pool2d(x_t, kernel, strides, 'SAME', name=node.name)]
    padded_t = tf.pad(x_t, [[0, 0], list(pairs[0]), list(pairs[1]), [0, 0]]) if any(map(any, pairs)) else x_t
    counts = []
    for side, k, stride, (before, after), (_, given_after) in zip(sides, kernel, strides, pairs, given):
        out = (side + before + after - k) // stride + 1
        # Counted: the map, and with count_include_pad its given pads (never the rows ceil_mode adds).
        low, high = (-before, side + given_after) if include_pad else (0, side)
        starts = np.arange(out) * stride - before
        counts.append(np.minimum(starts + k, high) - np.maximum(starts, low))
    count = np.outer(counts[0], counts[1]).astype(np.float32)
    if (count == kernel[0] * kernel[1]).all():
        return [tf.nn.avg_pool2d(padded_t, kernel, strides, 'VALID', name=node.name)]
    # avg_pool2d divides every window by kh * kw; the constant turns that into the count of each window.
    mean_t = tf.nn.avg_pool2d(padded_t, kernel, strides, 'VALID')
    return [tf.multiply(mean_t, (kernel[0] * kernel[1] / count)[None, :, :, None], name=node.name)]


def global_pool(reduce):
    def pool(node, inputs):
        x = inputs[0]
        if not isinstance(x, Mapped) or x.rank < 3:
            raise node.refuse('expected a map [N, C, ...] that depends on the image')
        axes = [layout.physical_axis(x, axis) for axis in range(2, x.rank)]
        return [Mapped(reduce(x.t, axes, keepdims=True, name=node.name), x.order)]
    return pool


def pad(node, inputs):
    """Pad (constant, reflect, edge; negative pads crop), opset 2's attributes or opset 11's inputs."""
    x = inputs[0]
    if node.opset < 11:
        pads, value = node.attr('pads', node.attr('paddings')), node.attr('value', 0.0)
        axes = None
    else:
        pads = _constant(node, inputs[1], 'pads')
        value = inputs[2] if len(inputs) > 2 and inputs[2] is not None else 0.0
        axes = inputs[3] if len(inputs) > 3 and inputs[3] is not None else None
        value = _constant(node, value, 'constant value')
    mode = node.attr('mode', 'constant')
    rank = layout.rank(x)
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in np.ravel(axes)]
    pads = [int(p) for p in np.ravel(pads)]
    if len(pads) != 2 * len(axes):
        raise node.refuse('%d pads for %d axes' % (len(pads), len(axes)))
    per_axis = {axis: (pads[i], pads[i + len(axes)]) for i, axis in enumerate(axes)}
    if not isinstance(x, Mapped):
        pairs = [per_axis.get(axis, (0, 0)) for axis in range(rank)]
        if any(min(p) < 0 for p in pairs) or mode != 'constant':
            raise node.refuse('a constant padded in mode %s or cropped' % mode)
        return [np.pad(x, pairs, constant_values=np.asarray(value).item())]
    if mode not in ('constant', 'reflect', 'edge'):
        raise node.refuse('mode %r is not supported (constant, reflect, edge are)' % mode)
    if per_axis.get(0, (0, 0)) != (0, 0):
        raise node.refuse('it pads the batch axis')
    x_t = x.t
    physical = [per_axis.get(axis, (0, 0)) for axis in x.order]
    if any(min(p) < 0 for p in physical):
        # Negative pads crop.
        crop = tuple(slice(max(-b, 0), (-max(-a, 0)) or None) for b, a in physical)
        x_t = x_t[crop]
        physical = [(max(b, 0), max(a, 0)) for b, a in physical]
    if mode == 'edge':
        # The border repeated: a gather of clamped indices per axis, which geometry.py does not mistake
        # for a concatenation.
        shape = x_t.shape.as_list()
        for position, (before, after) in enumerate(physical):
            if before or after:
                index = np.clip(np.arange(-before, shape[position] + after), 0, shape[position] - 1)
                x_t = tf.gather(x_t, index, axis=position)
        return [Mapped(tf.identity(x_t, name=node.name), x.order)]
    padded = tf.pad(x_t, [list(p) for p in physical], mode='REFLECT' if mode == 'reflect' else 'CONSTANT',
                    constant_values=0 if mode == 'reflect' else np.asarray(value).item(), name=node.name)
    return [Mapped(padded, x.order)]


def _source(mode, out, side, scale):
    """float32 [out]: where each output unit of an axis reads the input, per coordinate_transformation_mode."""
    # float32 arithmetic, as onnxruntime computes it: a tie at .5 must fall the same way.
    x, scale = np.arange(out, dtype=np.float32), np.float32(scale)
    half = np.float32(0.5)
    if mode == 'half_pixel':
        return (x + half) / scale - half
    if mode == 'pytorch_half_pixel':
        return (x + half) / scale - half if out > 1 else np.zeros(out, np.float32)
    if mode == 'align_corners':
        return x * np.float32(side - 1) / np.float32(out - 1) if out > 1 else np.zeros(out, np.float32)
    if mode == 'asymmetric':
        return x / scale
    if mode == 'tf_half_pixel_for_nn':
        return (x + half) / scale
    if mode == 'half_pixel_symmetric':
        adjustment = np.float32(out) / (scale * np.float32(side))
        offset = np.float32(side) / 2 * (1 - adjustment)
        return offset + (x + half) / scale - half
    return None


def _nearest(source, nearest_mode, side, upsampling):
    if nearest_mode == 'round_prefer_floor':
        index = np.ceil(source - 0.5)
    elif nearest_mode == 'round_prefer_ceil':
        index = np.floor(source + 0.5)
    elif nearest_mode == 'floor':
        index = np.floor(source)
    elif nearest_mode == 'ceil':
        index = np.ceil(source)
    else:   # opset 10's Resize and Upsample: onnxruntime floors when enlarging, rounds up when shrinking
        index = np.floor(source) if upsampling else np.ceil(source)
    return np.clip(index, 0, side - 1).astype(np.int64)


def _weights(source, mode, side, cubic_a, exclude_outside):
    """float32 [out, side]: each output unit as a weighted sum of the input units (linear or cubic)."""
    matrix = np.zeros((len(source), side), np.float64)
    base = np.floor(source)
    t = (source - base).astype(np.float64)
    if mode == 'linear':
        source = np.clip(source, 0, side - 1)
        base = np.floor(source)
        t = source - base
        taps, weights = [0, 1], [1 - t, t]
    else:
        a = cubic_a
        taps = [-1, 0, 1, 2]
        weights = [((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
                   ((a + 2) * t - (a + 3)) * t * t + 1,
                   ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
                   ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a]
    rows = np.arange(len(source))
    for tap, weight in zip(taps, weights):
        index = base.astype(np.int64) + tap
        inside = (index >= 0) & (index < side)
        if exclude_outside:
            weight = np.where(inside, weight, 0.0)
        np.add.at(matrix, (rows, np.clip(index, 0, side - 1)), weight)
    if exclude_outside:
        matrix /= matrix.sum(axis=1, keepdims=True)
    return matrix.astype(np.float32)


def resize(node, inputs):
    """Resize (opsets 10-19) and Upsample: nearest (4 rounding modes), linear and cubic, per
    coordinate_transformation_mode; scales or sizes; only the map's rows and columns may change."""
    x = inputs[0]
    if not isinstance(x, Mapped):
        raise node.refuse('its input does not depend on the image')
    shape = layout.onnx_shape(x)
    if node.op_type == 'Upsample':
        scales, sizes = (node.attr('scales') if node.opset < 9 else inputs[1]), None
    elif node.opset < 11:
        scales, sizes = inputs[1], None
    else:
        scales = inputs[2] if len(inputs) > 2 else None
        sizes = inputs[3] if len(inputs) > 3 else None
    old_rules = node.op_type == 'Upsample' or node.opset < 11
    mode = node.attr('mode', 'nearest')
    if mode == 'bilinear':   # Upsample-7's name for it
        mode = 'linear'
    transform = 'asymmetric' if old_rules else node.attr('coordinate_transformation_mode', 'half_pixel')
    nearest_mode = 'opset10' if old_rules else node.attr('nearest_mode', 'round_prefer_floor')
    if node.attr('antialias', 0) or node.attr('keep_aspect_ratio_policy', 'stretch') != 'stretch':
        raise node.refuse('antialias and keep_aspect_ratio_policy are not supported')
    if mode not in ('nearest', 'linear', 'cubic') or _source(transform, 1, 1, 1.0) is None:
        raise node.refuse('mode %r with coordinate_transformation_mode %r is not supported' % (mode, transform))
    # From opset 18 scales and sizes may name only some axes.
    axes = [int(a) % x.rank for a in node.attr('axes', range(x.rank))]
    if sizes is not None and np.size(sizes):
        given = dict(zip(axes, _constant(node, sizes, 'sizes').ravel().tolist()))
        sizes = [int(given.get(axis, side)) if axis else side for axis, side in enumerate(shape)]
        scales = [out / side if axis and side else 1.0 for axis, (out, side) in enumerate(zip(sizes, shape))]
    else:
        given = dict(zip(axes, _constant(node, scales, 'scales').ravel().tolist()))
        scales = [float(given.get(axis, 1.0)) for axis in range(x.rank)]
        sizes = [None if side is None else int(math.floor(side * scale)) for side, scale in zip(shape, scales)]
    if len(scales) != x.rank or any(scales[axis] != 1 for axis in range(min(2, x.rank))):
        raise node.refuse('scales %s: only the map\'s rows and columns may be resized' % (scales,))
    indices, y_t = {}, x.t
    for axis in range(2, x.rank):
        side, out = shape[axis], sizes[axis]
        if out == side and scales[axis] == 1:
            continue
        position = x.order.index(axis)
        source = _source(transform, out, side, scales[axis])
        if mode == 'nearest':
            indices[position] = _nearest(source, nearest_mode, side, scales[axis] >= 1)
            continue
        matrix = _weights(source, mode, side, float(node.attr('cubic_coeff_a', -0.75)), node.attr('exclude_outside', 0))
        letters = 'abcdefgh'[:x.rank]
        result = letters.replace(letters[position], 'z')
        y_t = tf.einsum('z%s,%s->%s' % (letters[position], letters, result), matrix, y_t)
    if not indices:
        return [Mapped(tf.identity(y_t, name=node.name), x.order)]
    half_pixel = _tf_nearest(indices, y_t)
    if half_pixel is not None:
        # TensorFlow's own op where it picks the same units: a graph that says "resize", and one op, not two.
        sides = [len(indices.get(a, range(side))) for a, side in zip((1, 2), y_t.shape.as_list()[1:3])]
        resized = tf.raw_ops.ResizeNearestNeighbor(images=y_t, size=sides, half_pixel_centers=half_pixel,
                                                   name=node.name)
        return [Mapped(resized, x.order)]
    for position, index in sorted(indices.items()):
        y_t = tf.gather(y_t, index, axis=position)
    return [Mapped(tf.identity(y_t, name=node.name), x.order)]


def _tf_nearest(indices, x_t):
    """half_pixel_centers (False or True) for which tf.image.resize_nearest_neighbor reads the units
    `indices` ({physical axis: index array}) of an NHWC map, or None when neither does."""
    if sorted(indices) not in ([1, 2], [1], [2]) or x_t.shape.rank != 4:
        return None
    sides = x_t.shape.as_list()[1:3]
    wanted = {1: np.arange(sides[0]), 2: np.arange(sides[1]), **indices}
    for half_pixel in (False, True):
        # TensorFlow's rule, in float32: floor((y [+ 0.5]) * in / out), at most in - 1.
        picked = [np.minimum(np.floor((np.arange(len(wanted[a]), dtype=np.float32) + np.float32(0.5 * half_pixel))
                                      * np.float32(side / len(wanted[a]))), side - 1)
                  for a, side in zip((1, 2), sides)]
        if all(np.array_equal(p, wanted[a]) for p, a in zip(picked, (1, 2))):
            return half_pixel
    return None


OPS = {
    'Conv': conv,
    'ConvTranspose': conv_transpose,
    'MaxPool': max_pool,
    'AveragePool': average_pool,
    'GlobalAveragePool': global_pool(tf.reduce_mean),
    'GlobalMaxPool': global_pool(tf.reduce_max),
    'Pad': pad,
    'Resize': resize,
    'Upsample': resize,
}

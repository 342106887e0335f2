"""
Where each unit of a convolutional network looks in its input image.

For every 4-D tensor that depends on an image input, `walk` gives the side of
its feature map for a square input of a given size and its receptive field,
from one pass over a tf.compat.v1 graph in topological order. Nothing is run:
only op attributes and constant inputs are read, so a 600-op graph takes a
few milliseconds. `smallest_input` searches such walks for the smallest input
each tensor accepts.

    from filtervis.core import geometry
    fields = geometry.walk(graph, 'images:0', 224)
    fields['conv3_3/conv3_3:0']    # Field(side=56, size=40, stride=4, offset=-18)
    pairs, unknown = geometry.walk_axes(graph, 'images:0', 224)   # (rows, columns) Fields; {name: why not}
    geometry.smallest_input(graph, 'images:0', ['conv5_3/conv5_3:0'])    # {'conv5_3/conv5_3:0': 16}

Unit (y, x) of a tensor sees input rows offset + stride*y ... offset +
stride*y + size - 1 and the same columns; rows outside 0 ... size-1 of the
image are padding. This is exact for every unit whose window holds no
padding, and for border units where the padding lies outside the image; a
map whose outer units stop short of the image's edge (a crop, a strided
VALID conv) and is then padded gives its border units a few rows fewer.
Rows and columns are followed apart (a 1x7 kernel, a pad of (0, 1) rows):
`walk_axes` gives both Fields, `walk` the tensors whose rows and columns agree.

What the walk knows: Conv2D and DepthwiseConv2dNative (strides, dilations,
SAME, VALID and EXPLICIT padding), MaxPool and AvgPool, Pad, PadV2 and
MirrorPad with constant paddings, Slice and StridedSlice with constant
bounds (a crop shifts the field, a step of 2 doubles the stride), spatial
reductions, merges (Add, Mul, ConcatV2 along channels: the union of their
inputs' fields, a side-1 map broadcast over the others), a dense layer over
channels (tf.tensordot: Reshape to [N*h*w, C], MatMul, Reshape back to the
map's own sides), and every other op with one image input as pointwise
(ReLU, GELU, BiasAdd, batch and layer norm over channels, a channel slice,
a Transpose that keeps every axis in place). Ops that move pixels some other
way (resizing, any other Reshape or Transpose, DepthToSpace, transposed
convolutions, ...) are not guessed at: the tensors downstream of them are
left out, `walk_axes` says why, and `smallest_input` raises GeometryError
naming the op. Such an op never stops the walk for the other tensors.
"""

import numbers
from dataclasses import dataclass

import numpy as np

from filtervis.util import quiet

tf = quiet.import_tensorflow()   # tensorflow.compat.v1, graph mode


@dataclass(frozen=True)
class Field:
    """The geometry of one feature map, in input pixels, for a square input of the walked size.

    side:   side of the feature map (>= 1), or 0 when the input is too small
            for it (or when a merge gets inputs of different sides, which
            TensorFlow would refuse)
    size:   receptive field: rows of the input one unit sees
    stride: input pixels between neighbouring units
    offset: first input row that unit 0 sees; negative where the field
            starts in the padding. Unit (y, x) sees rows offset + stride*y ...
            offset + stride*y + size - 1, and the same columns.
    """
    side: int
    size: int
    stride: int
    offset: int


class GeometryError(ValueError):
    """An op on the image's path moves pixels in a way no Field describes."""


# What the walk knows of an image-dependent tensor, besides a (rows, columns)
# pair of Fields (a plain tuple) for a 4-D one:
_FLAT = 'flat'       # rank other than 4, its values tied to no place in particular (Flatten)
_GLOBAL = 'global'   # rank other than 4, each value computed from the whole image (global pooling)


@dataclass(frozen=True)
class _Unknown:
    """Downstream of an op the walk does not follow: its label 'name (Type)' and why."""
    op: str
    reason: str


@dataclass(frozen=True)
class _Pixels:
    """A dense layer's view of a map: [N*h*w, C], one row per pixel of a map whose Fields are `pair`;
    sources: the 4-D tensors flattened into it, whose Shape the Reshape back to [N, h, w, C'] must read."""
    pair: tuple
    sources: frozenset


# Ops whose outputs depend on the shape of the image, not on its pixels.
_SHAPE_ONLY = frozenset(['Shape', 'ShapeN', 'Size', 'Rank', 'ZerosLike', 'OnesLike'])
_CONVOLUTIONS = frozenset(['Conv2D', 'DepthwiseConv2dNative'])
_POOLS = frozenset(['MaxPool', 'AvgPool'])
_PADS = frozenset(['Pad', 'PadV2', 'MirrorPad'])
_REDUCTIONS = frozenset(['Mean', 'Max', 'Min', 'Sum', 'Prod', 'EuclideanNorm', 'All', 'Any'])
_BATCH_NORMS = frozenset(['FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3'])
# Ops that work along the axes given by one input (its index here): pointwise
# when those are the batch or channel axes.
_ALONG_AXES = {'ReverseV2': 1, 'Split': 0, 'SplitV': 2, 'GatherV2': 2,
               'Cumsum': 1, 'Cumprod': 1, 'CumulativeLogsumexp': 1}
# Ops with 4-D outputs that move pixels in ways the walk does not follow. The
# walk takes any op it does not know as pointwise, so this list is what keeps
# it from guessing.
_MOVES_PIXELS = frozenset([
    'Transpose', 'ConjugateTranspose', 'Tile', 'BroadcastTo', 'Roll', 'Reverse', 'ReverseSequence', 'ResizeBilinear',
    'ResizeNearestNeighbor', 'ResizeBicubic', 'ResizeArea', 'ScaleAndTranslate', 'CropAndResize', 'ExtractGlimpse',
    'ExtractGlimpseV2', 'ImageProjectiveTransformV2', 'ImageProjectiveTransformV3', 'DepthToSpace', 'SpaceToDepth',
    'ExtractImagePatches',
    # Dilated depthwise convolutions interleave the map into the batch here: no Field between the two ops.
    'SpaceToBatchND', 'BatchToSpaceND', 'SpaceToBatch', 'BatchToSpace',
    # A transposed convolution puts units 1/stride input pixels apart, and
    # which rows a unit sees depends on its position modulo the stride.
    'Conv2DBackpropInput', 'DepthwiseConv2dNativeBackpropInput', 'Conv2DBackpropFilter', 'MaxPoolV2',
    'MaxPoolWithArgmax', 'FractionalMaxPool', 'FractionalAvgPool', 'Dilation2D', 'MaxPoolGrad', 'AvgPoolGrad',
    'MirrorPadGrad', 'GatherNd', 'ScatterNd', 'TensorScatterUpdate', 'TensorScatterAdd', 'DynamicStitch',
    # Rank changes that may drop or add rows and columns (the input's rank may be unknown).
    'Squeeze', 'ExpandDims',
    # These work on the last two axes, columns and channels.
    'BatchMatMul', 'BatchMatMulV2', 'BatchMatMulV3', 'Einsum', 'MatrixBandPart', 'MatrixDiagPartV3',
    'MatrixSetDiagV3', 'FFT2D', 'IFFT2D', 'RFFT2D', 'IRFFT2D',
    # Calls and loops hide their bodies.
    'PartitionedCall', 'StatefulPartitionedCall', 'While', 'StatelessWhile', 'If', 'StatelessIf', 'Case',
    'PyFunc', 'PyFuncStateless', 'EagerPyFunc',
])


class _NotFollowed(Exception):
    """Raised inside the walk for an op it does not follow; the argument says why."""


def walk(graph, input_name, size):
    """{tensor name: Field} for the 4-D tensors that depend on `input_name`, for square inputs of `size` pixels.

    graph: a tf.Graph; input_name: a tensor name such as 'images:0', of
    shape [N, H, W, C] (H, W, N unknown or not); size: int >= 1, the input
    side H = W to compute sides and SAME paddings for. Each op is visited
    once, in the order the graph was built (which is topological). Left out:
    tensors of rank other than 4, tensors whose rows and columns differ, and
    tensors downstream of an op the walk does not follow or that no Field
    describes (NCHW, a concat along rows, maps of different strides merged):
    walk_axes gives the first and says why for the others.
    """
    pairs, _ = walk_axes(graph, input_name, size)
    return {name: rows for name, (rows, columns) in pairs.items() if rows == columns}


def walk_axes(graph, input_name, size):
    """(pairs, unknown) for the tensors that depend on `input_name`, for square inputs of `size` pixels.

    pairs: {tensor name: (rows Field, columns Field)} for every 4-D tensor
    the walk follows (a 1x7 kernel gives rows and columns of different
    sizes); unknown: {tensor name: why not (str), naming the op} for the
    tensors downstream of an op it does not follow. Arguments as walk().
    """
    pairs, unknown = {}, {}
    for name, state in _walk(graph, input_name, size).items():
        if type(state) is tuple:
            pairs[name] = state
        elif isinstance(state, _Unknown):
            unknown[name] = 'its path holds %s, which %s' % (state.op, state.reason)
    return pairs, unknown


def smallest_input(graph, input_name, tensor_names, limit=4096):
    """{name: smallest square input side (int) for which the tensor and every tensor it depends on have side >= 1}.

    tensor_names: a list of names of 4-D tensors that depend on input_name.
    Assumes that an input that works keeps working when it grows: searches
    by doubling, then bisection, reusing walks across names. Raises
    GeometryError when a tensor's path holds an op the walk does not follow
    (naming it), ValueError for a name that is missing, not 4-D or does not
    depend on the input, and ValueError naming the tensor when no input up to
    `limit` pixels works.
    """
    if isinstance(tensor_names, str):
        raise ValueError('tensor_names=%r is one string; pass a list of tensor names' % tensor_names)
    if not (isinstance(limit, numbers.Integral) and limit >= 1):
        raise ValueError('limit=%r: expected an int >= 1' % (limit,))
    walks = {}

    def state(name, size):
        if size not in walks:
            walks[size] = _walk(graph, input_name, size)
        return walks[size].get(name)

    for name in tensor_names:
        found = state(name, 1)
        if found is None:
            _tensor(graph, name)   # a missing name says so
            raise ValueError('%s does not depend on %s' % (name, input_name))
        _refuse_unknown(name, found)
        if type(found) is not tuple:
            raise ValueError('%s is not a feature map [N, h, w, C]: its shape is %s'
                             % (name, graph.get_tensor_by_name(name).shape))

    def works(name, size):
        found = state(name, size)
        _refuse_unknown(name, found)   # maps of different strides merge only where their sides agree
        rows, columns = found
        return min(rows.side, columns.side) >= 1

    smallest = {}
    for name in tensor_names:
        fails, candidate = 0, 1
        while not works(name, candidate):
            if candidate >= limit:
                raise ValueError('%s: no square input of up to %d pixels gives it a feature map' % (name, limit))
            fails, candidate = candidate, min(2 * candidate, limit)
        while candidate - fails > 1:
            middle = (fails + candidate) // 2
            if works(name, middle):
                candidate = middle
            else:
                fails = middle
        smallest[name] = candidate
    return smallest


def _refuse_unknown(name, state):
    if isinstance(state, _Unknown):
        raise GeometryError('%s depends on %s, which %s; geometry.py cannot follow the image through it'
                            % (name, state.op, state.reason))


def _tensor(graph, name):
    try:
        return graph.get_tensor_by_name(name)
    except (KeyError, ValueError) as error:
        raise ValueError('no tensor %r in the graph (%s)' % (name, error)) from None


def _walk(graph, input_name, size):
    """{tensor name: state} for every tensor that depends on input_name: a (rows, columns) pair of Fields,
    _Pixels, _FLAT, _GLOBAL or an _Unknown."""
    if not (isinstance(size, numbers.Integral) and size >= 1):
        raise ValueError('size=%r: expected an int >= 1, the side of a square input' % (size,))
    image = _tensor(graph, input_name)
    if image.shape.rank not in (None, 4):
        raise ValueError('%s has shape %s: expected an image batch [N, H, W, C]' % (input_name, image.shape))
    size = int(size)
    pixel = Field(size, 1, 1, 0)
    states = {image.name: (pixel, pixel)}
    # A graph lists its ops in the order they were added, each after its
    # inputs (import_graph_def sorts them so too): one pass is topological.
    # The back edge of a tf.while_loop is not followed.
    for op in graph.get_operations():
        dependent = [(index, states[t.name]) for index, t in enumerate(op.inputs) if t.name in states]
        if not dependent or op.type in _SHAPE_ONLY:
            continue
        result = _follow(op, dependent, size)
        for output in op.outputs:
            states[output.name] = _fit(op, result, output, size)
    return states


def _follow(op, dependent, size):
    """The state of op's outputs, from [(input index, state)] of its image-dependent inputs."""
    kinds = [state for _, state in dependent]
    for state in kinds:
        if isinstance(state, _Unknown):
            return state
    if any(isinstance(state, _Pixels) for state in kinds):
        return _row_wise(op, dependent)
    if _FLAT in kinds:
        return _FLAT
    if all(state is _GLOBAL for state in kinds):
        return _GLOBAL
    # A global value mixed into maps acts as a side-1 map that sees the whole image.
    dependent = [(index, _whole(size) if state is _GLOBAL else state) for index, state in dependent]
    try:
        return _spatial(op, dependent, size)
    except _NotFollowed as reason:
        return _Unknown('%s (%s)' % (op.name, op.type), str(reason))


def _row_wise(op, dependent):
    """The state after op of a dense layer's [N*h*w, C] view of a map (_Pixels): kept by its MatMul and
    bias, the map's pair after the Reshape back to the map's own sides, else flat (no 4-D output: _fit)."""
    (index, pixels), kind = dependent[0], op.type
    if len(dependent) == 1 and index == 0:
        if kind == 'BiasAdd' or kind == 'MatMul' and not op.get_attr('transpose_a'):
            return pixels
        if kind == 'Reshape' and _rebuilds_map(op.inputs[1], pixels.sources):
            return pixels.pair
    return _FLAT


def _fit(op, result, output, size):
    """The state of one output of op, whose op-wide result is `result`: by the output's rank."""
    rank = output.shape.rank
    if type(result) is tuple:
        return result if rank in (None, 4) else _FLAT
    if isinstance(result, _Pixels):
        return result if rank == 2 else _FLAT
    if result is _FLAT and rank == 4:
        return _Unknown('%s (%s)' % (op.name, op.type), 'makes a 4-D tensor from one of another rank')
    if result is _GLOBAL and rank == 4:
        # Keras' squeeze-and-excite reshapes pooled [N, C] values to [N, 1, 1, C].
        if output.shape.as_list()[1:3] == [1, 1]:
            return _whole(size)
        return _Unknown('%s (%s)' % (op.name, op.type), 'spreads a global value over a map of unknown side')
    return result


def _whole(size, axis=None):
    """The Fields of a spatial reduction (one unit that sees the whole image), or of one axis of it."""
    field = Field(1 if axis is None or axis.side > 0 else 0, size, size, 0)
    return field if axis is not None else (field, field)


def _spatial(op, dependent, size):
    """The result of op on 4-D maps: a (rows, columns) pair, _FLAT or _GLOBAL; raises _NotFollowed."""
    kind = op.type
    if kind in _CONVOLUTIONS or kind in _POOLS:
        return _window(op, _only(op, dependent, 0))
    if kind in _PADS:
        pair = _only(op, dependent, 0)
        paddings = tf.get_static_value(op.inputs[1])
        if paddings is None:
            raise _NotFollowed('has paddings that are not constant')
        # A mirror pad's border units also see the mirrored rows; the Field,
        # reaching into the padding there, does not list them.
        return tuple(_pad(axis, int(paddings[1 + i][0]), int(paddings[1 + i][1])) for i, axis in enumerate(pair))
    if kind in _REDUCTIONS:
        pair = _only(op, dependent, 0)
        axes = _axes(op.inputs[1])
        if not op.get_attr('keep_dims'):
            if not axes:
                return pair
            return _GLOBAL if {1, 2} <= axes else _FLAT
        return tuple(_whole(size, axis) if 1 + i in axes else axis for i, axis in enumerate(pair))
    if kind in _BATCH_NORMS and op.get_attr('is_training'):
        # Batch statistics: every unit is normalized by values from the whole image.
        return _merge(op, [_only(op, dependent, 0), _whole(size)])
    if kind in ('ConcatV2', 'Concat'):
        axis_input = len(op.inputs) - 1 if kind == 'ConcatV2' else 0
        if any(index == axis_input for index, _ in dependent):
            raise _NotFollowed('has an axis computed from the image')
        if _axes(op.inputs[axis_input]) & {1, 2}:
            raise _NotFollowed('concatenates along rows or columns; no Field describes the result')
        return _merge(op, [pair for _, pair in dependent])
    if kind in _ALONG_AXES:
        axes_input = _ALONG_AXES[kind]
        pair = _only(op, dependent, 1 if kind == 'Split' else 0)
        if _axes(op.inputs[axes_input]) & {1, 2}:
            raise _NotFollowed('works along rows or columns')
        return pair
    if kind in ('Slice', 'StridedSlice'):
        pair = _only(op, dependent, 0)
        spans = _slice_spans(op)
        return tuple(_step(axis, *spans[1 + i]) for i, axis in enumerate(pair))
    if kind == 'Transpose' and _static_list(op.inputs[1]) == [0, 1, 2, 3]:
        return _only(op, dependent, 0)   # tf.tensordot's transpose, which keeps every axis in place
    if kind == 'Reshape':
        return _flattened_pixels(op, _only(op, dependent, 0))
    if kind in _MOVES_PIXELS:
        raise _NotFollowed('moves pixels')
    if len(dependent) == 1:
        return dependent[0][1]
    return _merge(op, [pair for _, pair in dependent])


def _only(op, dependent, index):
    """The pair of input `index`, when it is op's only image-dependent input."""
    if [i for i, _ in dependent] != [index]:
        raise _NotFollowed('takes a filter, paddings or axes computed from the image')
    return dependent[0][1]


def _axes(tensor):
    """The set of axes (0..3, NHWC) held by a constant tensor of axis numbers."""
    value = tf.get_static_value(tensor)
    if value is None:
        raise _NotFollowed('has axes that are not constant')
    return {int(axis) % 4 for axis in np.ravel(value)}


def _window(op, pair):
    """Rows and columns through a convolution or pool: its kernel, strides, dilations and padding."""
    # One copy of all attributes: a get_attr call each would be most of the walk's time.
    attrs = op.node_def.attr
    if attrs['data_format'].s not in (b'', b'NHWC'):
        raise _NotFollowed('uses data_format %s; geometry.py reads NHWC tensors only'
                           % attrs['data_format'].s.decode())
    if op.type in _POOLS:
        kernel = attrs['ksize'].list.i[1:3]
    else:
        # With v2 behaviour off, indexing a shape gives Dimension objects; as_list gives ints.
        shape = op.inputs[1].shape.as_list() if op.inputs[1].shape.rank == 4 else [None] * 4
        if None in shape[:2]:
            raise _NotFollowed('has a filter of unknown shape')
        kernel = shape[:2]
    strides = attrs['strides'].list.i
    dilations = attrs['dilations'].list.i or (1, 1, 1, 1)
    padding = attrs['padding'].s
    explicit = attrs['explicit_paddings'].list.i if padding == b'EXPLICIT' else (0,) * 8
    return tuple(_slide(axis, kernel[i], strides[1 + i], dilations[1 + i], padding, explicit[2 + 2 * i: 4 + 2 * i])
                 for i, axis in enumerate(pair))


def _slide(axis, kernel, stride, dilation, padding, explicit):
    """One axis through a window of `kernel` taps `dilation` apart, moved by `stride`."""
    extent = (kernel - 1) * dilation + 1
    side = axis.side
    if padding == b'SAME':
        # As TensorFlow pads: the output covers every input unit, and an odd
        # padding puts its extra row after the input, not before.
        out = -(-side // stride)
        before = max((out - 1) * stride + extent - side, 0) // 2
    else:
        before, after = explicit
        out = max((side + before + after - extent) // stride + 1, 0)
    return Field(out if side > 0 else 0, axis.size + (extent - 1) * axis.stride,
                 axis.stride * stride, axis.offset - before * axis.stride)


def _pad(axis, before, after):
    """One axis with `before` and `after` units of padding added."""
    return Field(axis.side + before + after if axis.side > 0 else 0, axis.size, axis.stride,
                 axis.offset - before * axis.stride)


def _merge(op, pairs):
    """Rows and columns of an elementwise op on several maps: the union of their fields."""
    return tuple(_union([pair[i] for pair in pairs]) for i in range(2))


def _union(axes):
    side = max(axis.side for axis in axes)
    # Maps of side 1 broadcast over the others (squeeze-and-excite).
    spread = [axis for axis in axes if axis.side == 1] if side > 1 else []
    full = [axis for axis in axes if axis not in spread]
    if side > 1 and all(axis.side == side for axis in full):
        strides = sorted({axis.stride for axis in full})
        if len(strides) > 1:
            raise _NotFollowed('merges maps whose units are %s input pixels apart; their units do not line up, '
                               'so no Field describes the result' % ' and '.join(map(str, strides)))
        stride = strides[0]
        # A broadcast unit is seen by every unit: widen its field so that
        # unit y's range, offset + stride*y ..., still holds all of it.
        parts = full + [Field(side, axis.size + stride * (side - 1), stride, axis.offset - stride * (side - 1))
                        for axis in spread]
    else:
        # All of side 1 (stride no longer places anything but padding), or
        # of different sides, which TensorFlow would refuse: side 0.
        stride = min(axis.stride for axis in axes)
        side = side if all(axis.side == side for axis in axes) else 0
        parts = axes
    offset = min(axis.offset for axis in parts)
    end = max(axis.offset + axis.size for axis in parts)
    return Field(side, end - offset, stride, offset)


def _static_list(tensor):
    """The value of a constant tensor as a list, or None when it is not constant."""
    value = tf.get_static_value(tensor)
    return None if value is None else np.ravel(value).tolist()


def _slice_spans(op):
    """{1: rows, 2: columns}, each (start or None, stop or None, step), that a Slice or StridedSlice keeps."""
    values = [_static_list(t) for t in op.inputs[1:]]
    if any(value is None for value in values):
        raise _NotFollowed('has bounds that are not constant')
    if op.type == 'Slice':
        begin, sizes = values
        return {axis: (begin[axis], None if sizes[axis] == -1 else begin[axis] + sizes[axis], 1) for axis in (1, 2)}
    spans = {1: (None, None, 1), 2: (None, None, 1)}
    begin, end, strides = values
    if op.get_attr('new_axis_mask'):
        raise _NotFollowed('adds an axis')
    begin_mask, end_mask = op.get_attr('begin_mask'), op.get_attr('end_mask')
    shrink, ellipsis = op.get_attr('shrink_axis_mask'), op.get_attr('ellipsis_mask')
    # An ellipsis at spec position e stands for the axes that the spec does
    # not name; positions after it count from the last axis.
    at = ellipsis.bit_length() - 1 if ellipsis else len(begin)
    for position in range(len(begin)):
        axis = position if position < at else position + 4 - len(begin)
        if position == at or axis not in spans:
            continue
        if shrink >> position & 1:
            raise _NotFollowed('keeps one row or column and drops the axis')
        spans[axis] = (None if begin_mask >> position & 1 else begin[position],
                       None if end_mask >> position & 1 else end[position], strides[position])
    return spans


def _step(axis, start, stop, step):
    """One axis through a slice start:stop:step (Python's rules, on a map of axis.side units)."""
    if step < 1:
        raise _NotFollowed('reverses rows or columns')
    first, last, _ = slice(start, stop, step).indices(axis.side)
    return Field(len(range(first, last, step)), axis.size, axis.stride * step, axis.offset + first * axis.stride)


def _flattened_pixels(op, pair):
    """The _Pixels of a Reshape [N, h, w, C] -> [N*h*w, C], the first half of a dense layer over channels.

    Its rows are the map's pixels exactly when its shape ends in the map's
    channel count C: a constant, or tf.tensordot's product of the map's own
    channel dimension. Any other Reshape moves pixels.
    """
    channels = op.inputs[0].shape.as_list()[3] if op.inputs[0].shape.rank == 4 else None
    tensor, sources = op.inputs[0], {op.inputs[0].name}
    while tensor.op.type == 'Identity' or tensor.op.type == 'Transpose' and _static_list(
            tensor.op.inputs[1]) == [0, 1, 2, 3]:
        tensor = tensor.op.inputs[0]
        sources.add(tensor.name)
    shape, pack = _static_list(op.inputs[1]), op.inputs[1].op
    if shape is not None:
        ends_in_channels = shape[-1:] == [channels]
    else:
        last_t = pack.inputs[-1] if pack.type == 'Pack' and len(pack.inputs) == 2 else None
        last_t = last_t.op.inputs[0] if last_t is not None and last_t.op.type == 'Prod' else last_t
        ends_in_channels = last_t is not None and (_static_list(last_t) == [channels]
                                                   or _reads_shape(last_t, sources, [3]))
    if channels is None or op.outputs[0].shape.rank != 2 or not ends_in_channels:
        raise _NotFollowed("moves pixels (a Reshape other than a dense layer's [N*h*w, C] view of a map)")
    return _Pixels(pair, frozenset(sources))


def _rebuilds_map(shape_t, sources):
    """Whether shape_t is tf.tensordot's [N, h, w] of a source map's own Shape, then one constant (C')."""
    concat = shape_t.op
    if concat.type != 'ConcatV2' or len(concat.inputs) != 3 or _static_list(concat.inputs[2]) != [0]:
        return False
    channels = _static_list(concat.inputs[1])
    return _reads_shape(concat.inputs[0], sources, [0, 1, 2]) and channels is not None and len(channels) == 1


def _reads_shape(tensor, sources, indices):
    """Whether tensor is tf.gather(tf.shape(source), indices) for one of the source tensors' names."""
    gather = tensor.op
    return (gather.type == 'GatherV2' and gather.inputs[0].op.type == 'Shape'
            and gather.inputs[0].op.inputs[0].name in sources and _static_list(gather.inputs[1]) == indices
            and _static_list(gather.inputs[2]) == [0])

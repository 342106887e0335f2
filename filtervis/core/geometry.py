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
    geometry.smallest_input(graph, 'images:0', ['conv5_3/conv5_3:0'])    # {'conv5_3/conv5_3:0': 16}

Unit (y, x) of a tensor sees input rows offset + stride*y ... offset +
stride*y + size - 1 and the same columns; rows outside 0 ... size-1 of the
image are padding. The walk follows rows and columns apart, so a 1x7 kernel
or a pad of (0, 1) rows is no trouble, but a tensor whose rows and columns
differ has no Field and is left out of `walk`'s answer.

What the walk knows: Conv2D and DepthwiseConv2dNative (strides, dilations,
SAME, VALID and EXPLICIT padding), MaxPool and AvgPool, Pad, PadV2 and
MirrorPad with constant paddings, spatial reductions (Mean, Max, ... over
rows and columns), merges (Add, Mul, ConcatV2 along channels, ...: the union
of their inputs' fields, a side-1 map broadcast over the others), and every
other op with one image input is taken as pointwise (ReLU, BiasAdd, inference
batch norm, a channel slice). Ops that move pixels some other way (resizing,
Reshape, Transpose, DepthToSpace, transposed and SpaceToBatchND-dilated
convolutions, ...) are not guessed at: the tensors downstream of them are
left out of `walk`, and `smallest_input` raises GeometryError naming the op.
"""

import numbers
from collections import namedtuple
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
# pair of Fields for a 4-D one:
_FLAT = 'flat'       # rank other than 4, its values tied to no place in particular (Flatten)
_GLOBAL = 'global'   # rank other than 4, each value computed from the whole image (global pooling)
_Unknown = namedtuple('_Unknown', 'op reason')   # downstream of an op the walk does not follow

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
    'Reshape', 'Transpose', 'ConjugateTranspose', 'Tile', 'BroadcastTo', 'Roll', 'Reverse', 'ReverseSequence',
    'ResizeBilinear', 'ResizeNearestNeighbor', 'ResizeBicubic', 'ResizeArea', 'ScaleAndTranslate',
    'CropAndResize', 'ExtractGlimpse', 'ExtractGlimpseV2', 'ImageProjectiveTransformV2',
    'ImageProjectiveTransformV3', 'DepthToSpace', 'SpaceToDepth', 'ExtractImagePatches',
    # Dilated depthwise convolutions interleave the map into the batch here,
    # so the tensors between the two ops have no Field.
    'SpaceToBatchND', 'BatchToSpaceND', 'SpaceToBatch', 'BatchToSpace',
    # A transposed convolution puts units 1/stride input pixels apart, and
    # which rows a unit sees depends on its position modulo the stride.
    'Conv2DBackpropInput', 'DepthwiseConv2dNativeBackpropInput',
    'Conv2DBackpropFilter', 'MaxPoolV2', 'MaxPoolWithArgmax',
    'FractionalMaxPool', 'FractionalAvgPool', 'Dilation2D', 'MaxPoolGrad', 'AvgPoolGrad', 'MirrorPadGrad',
    'GatherNd', 'ScatterNd', 'TensorScatterUpdate', 'TensorScatterAdd', 'DynamicStitch',
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
    tensors downstream of an op the walk does not follow (smallest_input
    names it). Raises GeometryError for ops it knows but that no Field
    describes: NCHW layout, concatenation along rows or columns, merging maps
    of different strides.
    """
    return {name: state[0] for name, state in _walk(graph, input_name, size).items()
            if isinstance(state, tuple) and state[0] == state[1]}


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
        if isinstance(found, _Unknown):
            raise GeometryError('%s depends on %s, which %s; geometry.py cannot follow the image through it'
                                % (name, found.op, found.reason))
        if not isinstance(found, tuple):
            raise ValueError('%s is not a feature map [N, h, w, C]: its shape is %s'
                             % (name, graph.get_tensor_by_name(name).shape))

    def works(name, size):
        rows, columns = state(name, size)
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


def _tensor(graph, name):
    try:
        return graph.get_tensor_by_name(name)
    except (KeyError, ValueError) as error:
        raise ValueError('no tensor %r in the graph (%s)' % (name, error)) from None


def _walk(graph, input_name, size):
    """{tensor name: state} for every tensor that depends on input_name: a (rows, columns) pair of Fields,
    _FLAT, _GLOBAL or an _Unknown."""
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


def _fit(op, result, output, size):
    """The state of one output of op, whose op-wide result is `result`: by the output's rank."""
    rank = output.shape.rank
    if isinstance(result, tuple):
        return result if rank in (None, 4) else _FLAT
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
            raise GeometryError('%s (%s) concatenates along rows or columns; no Field describes the result'
                                % (op.name, kind))
        return _merge(op, [pair for _, pair in dependent])
    if kind in _ALONG_AXES:
        axes_input = _ALONG_AXES[kind]
        pair = _only(op, dependent, 1 if kind == 'Split' else 0)
        if _axes(op.inputs[axes_input]) & {1, 2}:
            raise _NotFollowed('works along rows or columns')
        return pair
    if kind in ('Slice', 'StridedSlice'):
        pair = _only(op, dependent, 0)
        if _cuts_rows_or_columns(op):
            raise _NotFollowed('cuts rows or columns (or may: its bounds are not constant)')
        return pair
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
        raise GeometryError('%s (%s) uses data_format %s; geometry.py reads NHWC tensors only'
                            % (op.name, op.type, attrs['data_format'].s.decode()))
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
    return tuple(_union(op, [pair[i] for pair in pairs]) for i in range(2))


def _union(op, axes):
    side = max(axis.side for axis in axes)
    # Maps of side 1 broadcast over the others (squeeze-and-excite).
    spread = [axis for axis in axes if axis.side == 1] if side > 1 else []
    full = [axis for axis in axes if axis not in spread]
    if side > 1 and all(axis.side == side for axis in full):
        strides = sorted({axis.stride for axis in full})
        if len(strides) > 1:
            raise GeometryError('%s (%s) merges maps whose units are %s input pixels apart; their units do not '
                                'line up, so no Field describes the result'
                                % (op.name, op.type, ' and '.join(map(str, strides))))
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


def _cuts_rows_or_columns(op):
    """Whether a Slice or StridedSlice keeps less than all rows and columns (True when that cannot be told)."""
    values = [tf.get_static_value(t) for t in op.inputs[1:]]
    if any(value is None for value in values):
        return True
    if op.type == 'Slice':
        begin, size = values
        return any(begin[axis] != 0 or size[axis] != -1 for axis in (1, 2))
    begin, _, strides = values
    if op.get_attr('new_axis_mask'):
        return True
    begin_mask, end_mask = op.get_attr('begin_mask'), op.get_attr('end_mask')
    shrink, ellipsis = op.get_attr('shrink_axis_mask'), op.get_attr('ellipsis_mask')
    # An ellipsis at spec position e stands for the axes that the spec does
    # not name; positions after it count from the last axis.
    at = ellipsis.bit_length() - 1 if ellipsis else len(begin)
    for position in range(len(begin)):
        if position == at:
            continue
        axis = position if position < at else position + 4 - len(begin)
        whole = ((begin_mask >> position & 1 or begin[position] == 0) and end_mask >> position & 1
                 and strides[position] == 1 and not shrink >> position & 1)
        if axis in (1, 2) and not whole:
            return True
    return False

"""
What a unit computes, as tensors built on a Network's graph: the unit's
tensor (or its pre-activation), only the wanted channels of a conv unit (the
fast path), a direction in channel space, every k-th row and column (for the
diversity penalty), and any of these in bfloat16 through the network's one
bfloat16 copy of its ops. objectives.py builds every objective from these.

    from filtervis.core import units
    maps_t = units.channel_maps(net, 5, filter_ids_t)         # float32 [N, h, w] for a batch of filter ids
    value_t = units.channel_objective(net, 5, filter_ids_t)   # float32 [N], the mean of each picture's filter
"""

import warnings

from filtervis.core import precision
from filtervis.util import quiet

tf = quiet.import_tensorflow()


def _through_identity(tensor):
    """The tensor an Identity chain (names given to units by a loader) passes on."""
    while tensor.op.type == 'Identity':
        tensor = tensor.op.inputs[0]
    return tensor


def conv_parts(tensor):
    """(input_t, kernel_t, bias_t, conv_op) when tensor is BiasAdd(Conv2D(input, kernel), bias), else None."""
    tensor = _through_identity(tensor)
    if tensor.op.type != 'BiasAdd' or tensor.op.inputs[0].op.type != 'Conv2D':
        return None
    conv_op = tensor.op.inputs[0].op
    if conv_op.get_attr('data_format') != b'NHWC':
        return None
    return conv_op.inputs[0], conv_op.inputs[1], tensor.op.inputs[1], conv_op


def unit_tensor(net, layer_index, pre_relu=False, prefix=''):
    """The unit's tensor (or its pre-activation tensor) in the graph, or in the copy imported under `prefix`."""
    tensor = (net.pre_tensors if pre_relu else net.layer_tensors)[layer_index]
    return net.graph.get_tensor_by_name(prefix + tensor.name) if prefix else tensor


def bfloat16_chain(net, tensors, input_t=None):
    """The tensors (float32, on the paths from input_t, default net.input) as net's one bfloat16 chain
    computes them (precision.bfloat16_tensors): a list; first-layer tensors come back float32.

    Each op is copied once per input: every objective term, view and fetch
    built on this network shares the copies made before it.
    """
    input_t = net.input if input_t is None else input_t
    copies = net.cached_ops(('bfloat16_copies', input_t.name), dict)
    return precision.bfloat16_tensors(net.graph, input_t, tensors, copies=copies)


def _layer_input(net, layer_input_t, precision_name, input_t):
    """The input of a unit's own conv as the chosen precision computes it."""
    if precision_name == 'bfloat16' and precision.after_a_conv(input_t, layer_input_t):
        # Not the first layer: its input comes from the bfloat16 chain, or
        # is the first layer's float32 output, which this conv reads cast.
        layer_input_t, = bfloat16_chain(net, [layer_input_t], input_t)
        layer_input_t = tf.cast(layer_input_t, tf.bfloat16)
    return layer_input_t


def _conv_unit(net, layer_index, pre_relu, prefix):
    """(relu, (input_t, kernel_t, bias_t, conv_op)) when the unit (or its pre-activation) is conv + bias
    (+ ReLU), the pattern of the fast path; else None."""
    tensor = _through_identity(unit_tensor(net, layer_index, pre_relu, prefix))
    relu = tensor.op.type == 'Relu'
    parts = conv_parts(tensor.op.inputs[0] if relu else tensor)
    return None if parts is None else (relu, parts)


def _explicit_padding(conv_op):
    """An EXPLICIT-padded conv's pads, [before, after] per NHWC axis: [[0, 0], [top, bottom], [left, right], [0, 0]]."""
    pads = conv_op.get_attr('explicit_paddings')
    return [pads[i:i + 2] for i in range(0, 8, 2)]


def _own_columns(net, conv_unit, kernel_cols_t, bias_cols_t, precision_name, input_t):
    """The fast path: [N, h, w, 1], image i convolved with its own kernel column kernel_cols_t[..., i] plus
    bias_cols_t[i], then the unit's ReLU when it has one (conv_unit: what _conv_unit found).

    Image i gets N channels and keeps the i-th; N is small.
    """
    relu, (layer_input_t, _, _, conv_op) = conv_unit
    layer_input_t = _layer_input(net, layer_input_t, precision_name, input_t)
    padding = conv_op.get_attr('padding').decode()
    if padding == 'EXPLICIT':
        padding = _explicit_padding(conv_op)
    conv_t = tf.nn.conv2d(layer_input_t, tf.cast(kernel_cols_t, layer_input_t.dtype),
                          strides=conv_op.get_attr('strides'), padding=padding,
                          dilations=conv_op.get_attr('dilations'))
    pre_t = tf.nn.bias_add(conv_t, tf.cast(bias_cols_t, layer_input_t.dtype))           # [N, h, w, N]
    count = tf.shape(bias_cols_t)[0]
    own_t = tf.gather(pre_t, tf.reshape(tf.range(count), [-1, 1]), axis=3, batch_dims=1)   # [N, h, w, 1]
    return tf.nn.relu(own_t) if relu else own_t


def unit_values(net, layer_index, pre_relu=False, prefix='', precision_name='float32', input_t=None):
    """The whole unit, [N, h, w, C]: float32, or bfloat16 when precision_name is 'bfloat16' and the unit lies
    after the first layer (bfloat16_chain). A vector unit [N, K] comes as a 1 x 1 map [N, 1, 1, K]."""
    input_t = net.input if input_t is None else input_t
    tensor = unit_tensor(net, layer_index, pre_relu, prefix)
    if precision_name == 'bfloat16':
        tensor, = bfloat16_chain(net, [tensor], input_t)
    return as_map(tensor)


def as_map(tensor_t):
    """A unit's tensor as a map: [N, h, w, C] as it is, a vector [N, K] as [N, 1, 1, K]: one position, which
    sees the whole picture, so that every objective, measure and search of maps takes it."""
    if tensor_t.shape.rank == 4:
        return tensor_t
    return tf.reshape(tensor_t, [-1, 1, 1, int(tensor_t.shape[-1])])


def _conv_pads(conv_op, input_t):
    """int32 [2, 2]: the rows and columns (before, after) that conv_op pads input_t with (its padding attr).

    SAME is computed from the input's run-time size, so that a network of
    free input size is padded as its conv pads at any size.
    """
    padding = conv_op.get_attr('padding').decode()
    if padding == 'EXPLICIT':
        return tf.constant(_explicit_padding(conv_op)[1:3], tf.int32)
    if padding == 'VALID':
        return tf.zeros([2, 2], tf.int32)
    kernel = tf.shape(conv_op.inputs[1])[:2]
    strides = tf.constant(conv_op.get_attr('strides')[1:3], tf.int32)
    dilations = tf.constant(conv_op.get_attr('dilations')[1:3], tf.int32)
    sides = tf.shape(input_t)[1:3]
    outputs = (sides + strides - 1) // strides
    total = tf.maximum((outputs - 1) * strides + (kernel - 1) * dilations + 1 - sides, 0)
    return tf.stack([total // 2, total - total // 2], axis=1)


def sampled_values(net, layer_index, every, prefix='', precision_name='float32', input_t=None):
    """The whole unit at every `every`-th row and column of its map: [N, ceil(h/every), ceil(w/every), C].

    The exact values of unit_values at rows and columns 0, every, 2*every, ...
    (float32, or bfloat16 as unit_values). Where the unit is conv + bias
    (+ ReLU), only those positions are computed: the layer's input, padded as
    its conv pads it, is convolved at `every` times the conv's stride, which
    is 1/every^2 of the conv's work forward and back. Elsewhere the whole unit
    is computed and sliced. The diversity term reads its Gram matrices here.
    """
    input_t = net.input if input_t is None else input_t
    conv_unit = _conv_unit(net, layer_index, False, prefix)
    if conv_unit is None or every == 1:
        return unit_values(net, layer_index, False, prefix, precision_name, input_t)[:, ::every, ::every, :]
    relu, (layer_input_t, kernel_t, bias_t, conv_op) = conv_unit
    layer_input_t = _layer_input(net, layer_input_t, precision_name, input_t)
    pads_t = _conv_pads(conv_op, layer_input_t)
    # A Pad op, not the conv's EXPLICIT padding: TensorFlow 2.21's CPU gradient of a strided conv with
    # EXPLICIT padding took 3.2 s where Pad and VALID take 12 ms (16 pictures, conv3_2, bfloat16).
    padded_t = tf.pad(layer_input_t, tf.concat([[[0, 0]], pads_t, [[0, 0]]], axis=0))
    _, row_stride, column_stride, _ = conv_op.get_attr('strides')
    conv_t = tf.nn.conv2d(padded_t, tf.cast(kernel_t, layer_input_t.dtype),
                          strides=[1, row_stride * every, column_stride * every, 1], padding='VALID',
                          dilations=conv_op.get_attr('dilations'))
    pre_t = tf.nn.bias_add(conv_t, tf.cast(bias_t, layer_input_t.dtype))
    return tf.nn.relu(pre_t) if relu else pre_t


def channel_maps(net, layer_index, filter_ids_t, pre_relu=False, prefix='', precision_name='float32',
                 input_t=None):
    """Image i's map of channel filter_ids_t[i] of the unit: [N, h, w, 1], float32 or bfloat16.

    The fast path, where the unit is conv + bias (+ ReLU): only the wanted
    channels are computed, by convolving the layer's input with the gathered
    kernel and bias columns (conv3_2: 6 of 256 channels). Everywhere else the
    whole unit is computed and channel i gathered.
    pre_relu: the unit before its activation (where it has one).
    prefix: the import scope of a copy of the network (regularized.py), whose
      input is input_t; default the network itself on net.input.
    precision_name: 'float32' or 'bfloat16' (resolved): every op after the
      first layer runs in bfloat16 (precision.bfloat16_tensors).
    """
    input_t = net.input if input_t is None else input_t
    conv_unit = _conv_unit(net, layer_index, pre_relu, prefix)
    if conv_unit is not None:
        _, (_, kernel_t, bias_t, _) = conv_unit
        return _own_columns(net, conv_unit, tf.gather(kernel_t, filter_ids_t, axis=3),       # [k, k, in, N]
                            tf.gather(bias_t, filter_ids_t), precision_name, input_t)
    values_t = unit_values(net, layer_index, pre_relu, prefix, precision_name, input_t)
    return tf.gather(values_t, tf.reshape(filter_ids_t, [-1, 1]), axis=3, batch_dims=1)    # [N, h, w, 1]


def direction_maps(net, layer_index, vectors_t, pre_relu=False, prefix='', precision_name='float32',
                   input_t=None):
    """Image i's unit projected on vectors_t[i] (float32 [N, C]): [N, h, w, 1], sum over c of v[c] * unit[..., c].

    Before an activation (a conv + bias unit, or pre_relu) the projection is
    linear in the kernel, so the fast path convolves with the kernel
    contracted by v, computing one channel; a one-hot v gives exactly the
    channel's kernel column, so the same pictures as the channel objective.
    After an activation the whole unit is computed.
    """
    input_t = net.input if input_t is None else input_t
    conv_unit = _conv_unit(net, layer_index, pre_relu, prefix)
    if conv_unit is not None and not conv_unit[0]:       # linear: no ReLU after the conv
        _, (_, kernel_t, bias_t, _) = conv_unit
        kernel_cols_t = tf.tensordot(kernel_t, tf.transpose(vectors_t), axes=[[3], [0]])    # [k, k, in, N]
        bias_cols_t = tf.linalg.matvec(vectors_t, bias_t)                                   # [N]
        return _own_columns(net, conv_unit, kernel_cols_t, bias_cols_t, precision_name, input_t)
    values_t = unit_values(net, layer_index, pre_relu, prefix, precision_name, input_t)
    return tf.reduce_sum(values_t * tf.cast(vectors_t, values_t.dtype)[:, None, None, :], axis=3, keepdims=True)


def map_mean(maps_t):
    """float32 [N]: the mean of each image's map [N, h, w, 1].

    float32 before the mean: a bfloat16 sum of a 56x56 map would stop growing
    once each new term is below half a unit of its 8-bit mantissa.
    """
    return tf.reduce_mean(tf.cast(maps_t, tf.float32), axis=[1, 2, 3])


def channel_objective(net, layer_index, filter_ids_t, pre_relu=False, prefix='', precision_name='float32',
                      input_t=None):
    """Per-image objective, float32 [N]: the mean of channel filter_ids_t[i] of the unit over its map, in image i.

    See channel_maps for the fast path and the arguments.
    """
    return map_mean(channel_maps(net, layer_index, filter_ids_t, pre_relu, prefix, precision_name, input_t))


def unit_precision(net, layer_index, precision_name, auto=False):
    """The precision a unit runs in: precision_name ('float32' or 'bfloat16', resolved), or float32 with
    a one-line RuntimeWarning where bfloat16 cannot run on the unit's path, or, when auto (the user asked
    for 'auto'), where it would run slower than float32 (precision.SLOWER_IN_BFLOAT16)."""
    if precision_name != 'bfloat16':
        return precision_name
    problem = net.cached_ops(('bfloat16_problem', layer_index), lambda: bfloat16_problem(net, layer_index))
    if not problem and auto:
        slower = net.cached_ops(('bfloat16_slower', layer_index), lambda: precision.bfloat16_slower(
            net.input, [net.pre_tensors[layer_index], net.layer_tensors[layer_index]]))
        if slower is not None:
            problem = ("%s is a %s op, whose bfloat16 kernel is slower than float32 here; --precision bfloat16 "
                       "forces it" % (slower.name, slower.type))
    if problem:
        warnings.warn('%s: bfloat16 does not apply (%s); running float32' % (net.short_names[layer_index], problem),
                      RuntimeWarning, stacklevel=3)
        return 'float32'
    return precision_name


def bfloat16_problem(net, layer_index):
    """None when the unit's objective can run in bfloat16 (precision.bfloat16_tensors), else why not (str)."""
    return precision.bfloat16_problem(net.input, [net.pre_tensors[layer_index], net.layer_tensors[layer_index]])

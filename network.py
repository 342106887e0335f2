"""
Any convolutional network as the rest of the project sees it: a frozen graph
with an image input and named units, plus the objective every method
maximizes. VGG16 (vgg16.py) and users' Keras models are adapters over this.

A Network is a frozen GraphDef and what the project needs to know about it:
- the input tensor: float32 [N, H, W, C], C = 1 (greyscale) or 3 (RGB), pixels
  0..255 always; the preprocessing the weights expect lives inside the graph;
  H = W fixed (input_size) or free (None);
- its units, in network order: a name, the tensor [N, h, w, channels], the
  pre-activation tensor where one exists, and, from one walk of the graph
  (geometry.py), the output side for an input side, the receptive field and
  the smallest input it accepts;
- its session and the ops built on it, each built once (cached_ops).

    import network
    net = network.Network(graph_def, [network.Unit('conv1', 'conv1/Relu:0', 'conv1/BiasAdd:0', 'Conv2D')])
    net.layer_index('conv1')                  # 0
    net.receptive_field(0, 224)               # (3, 1, -1): size, stride, offset in pixels
    net.spec()                                # a dict: with the graph file, all a worker needs to load it
"""

import difflib
import hashlib
import numbers
import os
import re
import warnings
from dataclasses import asdict, dataclass

import numpy as np

import geometry
import precision
import quiet

tf = quiet.import_tensorflow()

# The version of spec(): a worker refuses a spec of another one.
SPEC_FORMAT = 1
INPUT_CHANNELS = (1, 3)
# Activations whose input is a unit's pre-activation tensor.
ACTIVATION_OPS = ('Relu', 'Relu6', 'Elu', 'Selu', 'LeakyRelu', 'Softplus', 'Tanh', 'Sigmoid')


@dataclass(frozen=True)
class Unit:
    """One unit of a network: a 4-D tensor whose channels can be visualized.

    name:   what users call it ('conv3_2', or a Keras layer name)
    tensor: its tensor's name in the graph, float32 [N, h, w, channels]
    pre:    the tensor before its activation, or None where there is none
    kind:   the layer type, for listings ('Conv2D', 'SeparableConv2D', ...)
    """
    name: str
    tensor: str
    pre: str = None
    kind: str = ''


def load_graph_def(path, fix=None):
    """Parse a frozen GraphDef file; FileNotFoundError / ValueError with `fix`, the next step, in the message."""
    fix = fix or 'make it again'
    if not os.path.exists(path):
        raise FileNotFoundError('no model at %s; %s' % (path, fix))
    graph_def = tf.GraphDef()
    with open(path, 'rb') as f:
        data = f.read()
    try:
        graph_def.ParseFromString(data)
    except Exception as error:  # protobuf raises its own DecodeError
        raise ValueError('%s is not a valid frozen graph (%s: %s); %s'
                         % (path, type(error).__name__, error, fix)) from None
    return graph_def


class Network:
    """A frozen graph with an image input and named units, with its session and cached ops.

    net.graph          tf.compat.v1.Graph holding only this network (and the ops built on it once)
    net.input          the input tensor, float32 [N, H, W, input_channels], pixels 0..255
    net.input_channels 1 (greyscale) or 3 (RGB)
    net.input_size     the fixed input side, or None when any side works
    net.units          [Unit], in network order
    net.short_names    unit names; net.layer_names the names of their ops
    net.layer_tensors, net.pre_tensors   per unit: the tensor and its pre-activation (or the tensor itself)
    net.layer_channels, net.layer_min_sizes   per unit: channels, smallest input side
    net.description    what made the weights, for captions
    net.md5            identity of the weights (stamp md5, file md5 or the graph's bytes)
    net.preprocess     the input scaling inside the graph ('unit', 'caffe', 'tf', 'torch', 'none') or None if unknown
    net.path           the graph file (absolute), or None for a graph given in memory
    """

    def __init__(self, graph_def, units, *, input_name='images:0', description='a frozen graph', md5=None,
                 preprocess=None, path=None, threads=None):
        self.path = None if path is None else os.path.abspath(path)
        self.threads = None if threads is None else check_int('threads', threads, 1)
        self.graph_def = graph_def
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.import_graph_def(graph_def, name='')
        try:
            self.input = self.graph.get_tensor_by_name(input_name)
        except (KeyError, ValueError):
            raise ValueError('the graph has no input tensor %r' % input_name) from None
        shape = self.input.shape
        if shape.rank != 4:
            raise ValueError('input %s has shape %s: expected an image batch [N, H, W, C]' % (input_name, shape))
        shape = shape.as_list()
        self.input_channels = shape[3]
        if self.input_channels not in INPUT_CHANNELS:
            raise ValueError('input %s has %s channels: only greyscale (1) and RGB (3) images are supported'
                             % (input_name, self.input_channels))
        self.input_size = shape[1] if shape[1] is not None and shape[1] == shape[2] else None
        if shape[1] != shape[2]:
            raise ValueError('input %s is %sx%s: only square inputs are supported' % (input_name, shape[1], shape[2]))
        if not units:
            raise ValueError('the network has no units to visualize')
        self.units = list(units)
        self.short_names = [u.name for u in self.units]
        if len(set(self.short_names)) != len(self.short_names):
            raise ValueError('unit names repeat: %s' % ', '.join(sorted({n for n in self.short_names
                                                                          if self.short_names.count(n) > 1})))
        self.layer_tensors = [self._tensor(u.tensor, u.name) for u in self.units]
        self.pre_tensors = [self._tensor(u.pre, u.name) if u.pre else t for u, t in zip(self.units, self.layer_tensors)]
        self.layer_names = [t.op.name for t in self.layer_tensors]
        for unit, tensor in zip(self.units, self.layer_tensors):
            if tensor.shape.rank != 4 or tensor.shape[3] is None:
                raise ValueError('unit %s (%s) has shape %s: expected [N, h, w, channels]'
                                 % (unit.name, unit.tensor, tensor.shape))
        self.layer_channels = [int(t.shape[3]) for t in self.layer_tensors]
        smallest = geometry.smallest_input(self.graph, self.input.name, [t.name for t in self.layer_tensors])
        self.layer_min_sizes = [smallest[t.name] for t in self.layer_tensors]
        self.description = description
        self.preprocess = preprocess
        # The graph's bytes in protobuf's deterministic order when nothing
        # better names the weights: node attributes are a map, whose default
        # order varies between processes.
        self.md5 = md5 or hashlib.md5(graph_def.SerializeToString(deterministic=True)).hexdigest()
        self.session = None   # made on first use by session(), one per network
        self.cache = {}       # ops built once, keyed by what they compute (cached_ops)

    def _tensor(self, name, unit):
        try:
            return self.graph.get_tensor_by_name(name)
        except (KeyError, ValueError):
            raise ValueError('unit %s: the graph has no tensor %r' % (unit, name)) from None

    # -- what a worker needs to load the same network

    def spec(self):
        """A JSON-able dict that, with the graph file, makes the same Network (from_spec)."""
        return {'format': SPEC_FORMAT, 'input': self.input.name, 'units': [asdict(u) for u in self.units],
                'description': self.description, 'md5': self.md5, 'preprocess': self.preprocess}

    @classmethod
    def from_spec(cls, path, spec, threads=None):
        """The Network of spec() over the graph file at path."""
        if spec.get('format') != SPEC_FORMAT:
            raise ValueError('network spec format %r: this code reads format %d' % (spec.get('format'), SPEC_FORMAT))
        return cls(load_graph_def(path), [Unit(**u) for u in spec['units']], input_name=spec['input'],
                   description=spec['description'], md5=spec['md5'], preprocess=spec['preprocess'],
                   path=path, threads=threads)

    # -- session and ops built once

    def cached_ops(self, key, build):
        """build() under this graph the first time `key` is asked for, then the same result.

        key: a hashable tuple naming what the ops compute (e.g. ('ascent',
        layer index, precision)). The graph grows once per key, never per call.
        """
        if key not in self.cache:
            with self.graph.as_default():
                self.cache[key] = build()
        return self.cache[key]

    def close(self):
        """Close the session opened for this network, if any."""
        if self.session is not None:
            self.session.close()
            self.session = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # -- units

    def layer_index(self, layer_id):
        """Index into units of an int index or a unit name (or its op name, e.g. 'conv3_2/conv3_2').

        Public entry points resolve a layer once with this; everything below
        them takes the index.
        """
        count = len(self.units)
        if isinstance(layer_id, (int, np.integer)) and not isinstance(layer_id, bool):
            if -count <= layer_id < count:
                return int(layer_id) % count
            raise ValueError('layer %d is out of range: this network has %d units, 0..%d (%s ... %s)'
                             % (layer_id, count, count - 1, self.short_names[0], self.short_names[-1]))
        if isinstance(layer_id, str):
            if layer_id in self.short_names:
                return self.short_names.index(layer_id)
            if layer_id in self.layer_names:
                return self.layer_names.index(layer_id)
            close = difflib.get_close_matches(layer_id, self.short_names, n=3, cutoff=0)
            listed = ', '.join(self.short_names) if count <= 16 else 'closest: %s' % ', '.join(close)
            raise ValueError('unknown layer %r: use an index 0..%d or a unit name (%s)' % (layer_id, count - 1, listed))
        raise ValueError('layer %r: expected an index or a unit name such as %r' % (layer_id, self.short_names[0]))

    def default_layer(self):
        """The unit a command line shows when none is named: the middle one (VGG16: the post's conv3_2)."""
        return len(self.units) // 2

    def scope(self, layer_index):
        """A graph name scope for ops built on a unit: its name where TensorFlow allows it, else unitN."""
        name = self.short_names[layer_index]
        return name if re.fullmatch(r'[A-Za-z0-9.][A-Za-z0-9_.\-]*', name) else 'unit%d' % layer_index

    def min_size(self, layer_id):
        """Smallest input side the unit accepts (every op on its path gives at least one pixel)."""
        return self.layer_min_sizes[self.layer_index(layer_id)]

    def channels(self, layer_id):
        """Number of channels (filters) of a unit."""
        return self.layer_channels[self.layer_index(layer_id)]

    def geometry(self, size):
        """{tensor name: geometry.Field} for size x size inputs, from one walk of the graph; kept per size."""
        return self.cached_ops(('geometry', size), lambda: geometry.walk(self.graph, self.input.name, size))

    def output_side(self, layer_index, size):
        """Side of the unit's feature map for size x size inputs."""
        return self._field(layer_index, size).side

    def receptive_field(self, layer_index, size=None):
        """(size, stride, offset) in input pixels of a unit (layer_index) for inputs of `size` (default: the
        fixed input size, else 224).

        Unit (y, x) sees input rows offset + stride * y ... offset + stride * y
        + size - 1, and the same for columns; offset is negative where the
        field starts in the padding. Exact for 'SAME' padding at this size.
        """
        field = self._field(layer_index, size or self.input_size or 224)
        return field.size, field.stride, field.offset

    def _field(self, layer_index, size):
        name = self.layer_tensors[layer_index].name
        fields = self.geometry(size)
        if name not in fields:
            raise ValueError('the receptive field of %s is not known: its path holds an op that moves pixels in '
                             'a way geometry.py does not follow' % self.short_names[layer_index])
        return fields[name]

    def unit_line(self, layer_index, size, kind=None):
        """One line for --list-layers: name, kind, channels, output side and receptive field at size x size."""
        field, stride, _ = self.receptive_field(layer_index, size)
        side = self.output_side(layer_index, size)
        return ('%-32s %-20s %5d channels  %4dx%-4d  receptive field %d, stride %d'
                % (self.short_names[layer_index], kind or self.units[layer_index].kind or '-',
                   self.layer_channels[layer_index], side, side, field, stride))

    def create_feed_dict(self, image):
        """{input: image with a batch axis} for an image [H, W, C] or a batch [N, H, W, C], 0..255.

        The array is not copied (np.expand_dims gives a view), so a caller who
        updates `image` in place, as the post's loop does, feeds the new pixels.
        """
        image = np.asarray(image)
        if image.ndim == 3:
            image = np.expand_dims(image, axis=0)
        if image.ndim != 4 or image.shape[-1] != self.input_channels:
            raise ValueError('image of shape %s: expected [H, W, %d] or [N, H, W, %d], %s 0..255'
                             % (image.shape, self.input_channels, self.input_channels,
                                'RGB' if self.input_channels == 3 else 'greyscale'))
        return {self.input: image}


def session(net):
    """The network's session, made on first use and kept (one per network).

    Sized by net.threads when set. net.close() closes it. Both precisions
    share it: bfloat16 is written into the ops, not into the session's
    configuration.
    """
    if net.session is None:
        config = tf.ConfigProto()
        if net.threads is not None:
            config.intra_op_parallelism_threads = net.threads
            config.inter_op_parallelism_threads = net.threads
        net.session = tf.Session(graph=net.graph, config=config)
    return net.session


# ---------------------------------------------------------------------------
# Checks on what callers ask for, shared by every method

def check_int(name, value, minimum):
    """value as int, or ValueError naming `name` unless it is an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError('%s=%r: expected an integer >= %d' % (name, value, minimum))
    return int(value)


def check_seed(seed):
    """None, or the seed as int >= 0."""
    return None if seed is None else check_int('seed', seed, 0)


def check_feature_ids(net, layer_index, feature_ids):
    """Filter ids as a list of int, each within the channels of unit `layer_index` (an index)."""
    channels = net.layer_channels[layer_index]
    short = net.short_names[layer_index]
    if isinstance(feature_ids, (numbers.Integral, str)) or not hasattr(feature_ids, '__iter__'):
        raise ValueError('feature_ids=%r: expected a sequence of filter ids, e.g. [0, 1, 2] or range(%d)'
                         % (feature_ids, channels))
    ids = []
    for feature_id in feature_ids:
        if isinstance(feature_id, bool) or not isinstance(feature_id, (int, np.integer)):
            raise ValueError('filter id %r is not an integer; %s has filters 0..%d'
                             % (feature_id, short, channels - 1))
        if not 0 <= feature_id < channels:
            raise ValueError('filter %d is out of range: %s has %d filters, 0..%d'
                             % (feature_id, short, channels, channels - 1))
        ids.append(int(feature_id))
    if not ids:
        raise ValueError('no filter ids given')
    return ids


def check_size(net, layer_index, size):
    """size as int, or ValueError unless unit `layer_index` accepts size x size inputs."""
    minimum = net.layer_min_sizes[layer_index]
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < minimum:
        raise ValueError('size=%r: %s needs images of at least %d pixels (the post uses 224)'
                         % (size, net.short_names[layer_index], minimum))
    if net.input_size is not None and size != net.input_size:
        raise ValueError('size=%r: this network takes %dx%d images only; use size %d'
                         % (size, net.input_size, net.input_size, net.input_size))
    return int(size)


def parse_filters(text, channels):
    """'0-5' -> [0..5], '1,4,9' -> [1, 4, 9], 'all' -> range(channels); spaces allowed.

    Ids beyond the layer are left for check_feature_ids, which names the layer's range.
    """
    text = text.strip()
    if text == 'all':
        return list(range(channels))
    ids = []
    try:
        for part in text.split(','):
            if '-' in part.strip()[1:]:
                first, last = (int(v) for v in part.split('-'))
                if last < first:
                    raise ValueError
                ids.extend(range(first, last + 1))
            else:
                ids.append(int(part))
    except ValueError:
        raise ValueError("--filters %r: expected e.g. '0-5', '1,4,9' or 'all' (a range runs upwards)"
                         % text) from None
    return ids


# ---------------------------------------------------------------------------
# The objective every method maximizes

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
    after the first layer (bfloat16_chain)."""
    input_t = net.input if input_t is None else input_t
    tensor = unit_tensor(net, layer_index, pre_relu, prefix)
    if precision_name == 'bfloat16':
        tensor, = bfloat16_chain(net, [tensor], input_t)
    return tensor


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

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

    from filtervis.core import network
    net = network.Network(graph_def, [network.Unit('conv1', 'conv1/Relu:0', 'conv1/BiasAdd:0', 'Conv2D')])
    net.layer_index('conv1')                  # 0
    net.receptive_field(0, 224)               # (3, 1, -1): size, stride, offset in pixels
    net.classifier_of(index)                  # the head a verdict on a picture of unit `index` reads, or None
    net.spec()                                # a dict: with the graph file, all a worker needs to load it
"""

import difflib
import hashlib
import os
import re
from dataclasses import asdict, dataclass

import numpy as np

from filtervis.core import geometry
from filtervis.core.checks import check_int
from filtervis.util import quiet

tf = quiet.import_tensorflow()

# The version of spec(): a worker refuses a spec of another one.
SPEC_FORMAT = 1
INPUT_CHANNELS = (1, 3)
# The unit that holds a vector's probabilities is its name with this at the end ('predictions_probability').
PROBABILITY_SUFFIX = '_probability'
# Activations whose input is a unit's pre-activation tensor.
ACTIVATION_OPS = ('Relu', 'Relu6', 'Elu', 'Selu', 'LeakyRelu', 'Softplus', 'Tanh', 'Sigmoid')
# Ops that pass a value on unchanged (IdentityN: its input k as its output k). The routes that freeze a model
# read its outputs and units through them, so a value that feeds only chains of these feeds no layer.
PASS_THROUGH_OPS = ('Identity', 'IdentityN', 'Snapshot', 'StopGradient')


@dataclass(frozen=True)
class Unit:
    """One unit of a network: a tensor whose channels can be visualized, a map or a vector.

    name:   what users call it ('conv3_2', or a Keras layer name)
    tensor: its tensor's name in the graph: float32 [N, h, w, channels] (a map), or [N, K] (a vector: a
            Dense layer, a classifier's logits), which everything below takes as a 1 x 1 map seen from
            the whole picture
    pre:    the tensor before its activation, or None where there is none
    kind:   the layer type, for listings ('Conv2D', 'SeparableConv2D', 'Dense', ...)
    probability: for a vector that ends in softmax or sigmoid: the probabilities' tensor. `tensor` is
            then the logits (the activation's input): an ascent on the probability stalls once the
            softmax saturates, and can rise by pushing the other classes down rather than its own up.
    """
    name: str
    tensor: str
    pre: str = None
    kind: str = ''
    probability: str = None


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
        # A vector with probabilities is maximized on its logits; NAME_probability maximizes the probability.
        names = {u.name for u in self.units}
        for unit in list(self.units):
            twin = unit.name + PROBABILITY_SUFFIX
            if unit.probability and twin not in names:
                self.units.append(Unit(twin, unit.probability, None, 'probability'))
        self.short_names = [u.name for u in self.units]
        if len(set(self.short_names)) != len(self.short_names):
            raise ValueError('unit names repeat: %s' % ', '.join(sorted({n for n in self.short_names
                                                                          if self.short_names.count(n) > 1})))
        self.layer_tensors = [self._tensor(u.tensor, u.name) for u in self.units]
        self.pre_tensors = [self._tensor(u.pre, u.name) if u.pre else t for u, t in zip(self.units, self.layer_tensors)]
        self.layer_names = [t.op.name for t in self.layer_tensors]
        for unit, tensor in zip(self.units, self.layer_tensors):
            if tensor.shape.rank not in (2, 4) or tensor.shape[-1] is None:
                raise ValueError('unit %s (%s) has shape %s: expected a map [N, h, w, channels] or a vector [N, K]'
                                 % (unit.name, unit.tensor, tensor.shape))
        self.layer_channels = [int(t.shape[-1]) for t in self.layer_tensors]
        self.layer_min_sizes = self._smallest_inputs()
        self.description = description
        self.preprocess = preprocess
        # The graph's bytes in protobuf's deterministic order when nothing
        # better names the weights: node attributes are a map, whose default
        # order varies between processes.
        self.md5 = md5 or hashlib.md5(graph_def.SerializeToString(deterministic=True)).hexdigest()
        self.session = None   # made on first use by session(), one per network
        self.cache = {}       # ops built once, keyed by what they compute (cached_ops)

    def _smallest_inputs(self):
        """Per unit, the smallest input side it accepts: a map's own (geometry.smallest_input); a vector's,
        that of the maps it is computed from (every map on its path must be at least one pixel)."""
        maps = [t.name for t in self.layer_tensors if t.shape.rank == 4]
        vectors = {t.name: maps_before(t) for t in self.layer_tensors if t.shape.rank == 2}
        wanted = sorted(set(maps) | {name for names in vectors.values() for name in names})
        smallest = geometry.smallest_input(self.graph, self.input.name, wanted) if wanted else {}
        if self.input_size is not None:
            return [self.input_size if t.name in vectors else smallest[t.name] for t in self.layer_tensors]
        return [max([smallest[n] for n in vectors[t.name]] or [1]) if t.name in vectors else smallest[t.name]
                for t in self.layer_tensors]

    def logits_of(self, layer_index):
        """The index of the unit whose probabilities unit `layer_index` is or has (a classifier's logits, with
        NAME_probability beside it), or None where the network computes no probabilities there (classifier_of()
        also finds a head of bare logits)."""
        unit = self.units[layer_index]
        if unit.probability:
            return layer_index
        if unit.kind == 'probability' and unit.name.endswith(PROBABILITY_SUFFIX):
            base = unit.name[:-len(PROBABILITY_SUFFIX)]
            if base in self.short_names and self.units[self.short_names.index(base)].probability == unit.tensor:
                return self.short_names.index(base)
        return None

    def classifier_of(self, layer_index):
        """The index of the unit whose classes the network's verdict on a picture of unit `layer_index` reads,
        or None: logits_of()'s unit where the network has probabilities, else the unit itself where it is a
        vector of K >= 2 classes [N, K] that ends the network (logits without a softmax, as a PyTorch export
        ends; verdict.py takes their softmax). A vector that feeds another layer is no head, and has none."""
        logits = self.logits_of(layer_index)
        if logits is not None:
            return logits
        if self.is_vector(layer_index) and self.layer_channels[layer_index] >= 2 \
                and self.ends_graph(self.units[layer_index].tensor):
            return layer_index
        return None

    def ends_graph(self, tensor_name):
        """True when the value of tensor `tensor_name` feeds no op of the network's frozen graph (graph_def;
        ops the project built on it later do not count) but chains of PASS_THROUGH_OPS that feed nothing else."""
        nodes, users = self.cached_ops(('graph users',), lambda: graph_users(self.graph_def))
        tensor = _tensor_key(tensor_name)
        # Back to the op that computes the value: a route may name it again (Keras' units/NAME Identity).
        while tensor[0] in nodes and nodes[tensor[0]].op in PASS_THROUGH_OPS:
            node = nodes[tensor[0]]
            data = [name for name in node.input if not name.startswith('^')]
            tensor = _tensor_key(data[tensor[1] if node.op == 'IdentityN' else 0])
        stack, seen = [tensor], set()
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            for user, position in users.get(current, ()):
                if nodes[user].op not in PASS_THROUGH_OPS:
                    return False
                stack.append((user, position if nodes[user].op == 'IdentityN' else 0))
        return True

    def is_vector(self, layer_index):
        """True for a vector unit [N, K] (a Dense layer, logits), False for a map [N, h, w, C]."""
        return self.layer_tensors[layer_index].shape.rank == 2

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
        return self._field(layer_index, size)[0].side

    def receptive_field(self, layer_index, size=None):
        """(size, stride, offset) in input pixels of a unit (layer_index) for inputs of `size` (default: the
        fixed input size, else 224).

        Unit (y, x) sees input rows offset + stride * y ... offset + stride * y
        + size - 1, and the same for columns; offset is negative where the
        field starts in the padding. Exact for 'SAME' padding at this size. For
        a unit whose rows and columns differ (after a 1x7 kernel) it is the
        square that holds both. ValueError saying why for a unit whose field
        geometry.py cannot follow at this size.
        """
        rows, columns = self._field(layer_index, size or self.input_size or 224)
        offset = min(rows.offset, columns.offset)
        return max(rows.offset + rows.size, columns.offset + columns.size) - offset, rows.stride, offset

    def _field(self, layer_index, size):
        """(rows, columns) geometry.Fields of a unit for size x size inputs; ValueError saying why not."""
        if self.is_vector(layer_index):
            # One value per picture, computed from all of it.
            whole = geometry.Field(1, size, size, 0)
            return whole, whole
        name = self.layer_tensors[layer_index].name
        pairs, unknown = self.cached_ops(('geometry axes', size),
                                         lambda: geometry.walk_axes(self.graph, self.input.name, size))
        if name not in pairs:
            raise ValueError('the receptive field of %s is not known: %s' % (
                self.short_names[layer_index], unknown.get(name, 'geometry.py does not follow its path')))
        rows, columns = pairs[name]
        if rows.side != columns.side or rows.stride != columns.stride:
            raise ValueError('the receptive field of %s is not known: its map is %dx%d with units %d and %d '
                             'pixels apart, not square' % (self.short_names[layer_index], rows.side, columns.side,
                                                          rows.stride, columns.stride))
        return rows, columns

    def unit_line(self, layer_index, size, kind=None):
        """One line for --list-layers: name, kind, channels, output side and receptive field at size x size
        (rows x columns where they differ), or why the field is not known."""
        head = '%-32s %-20s %5d channels' % (self.short_names[layer_index], kind or self.units[layer_index].kind
                                             or '-', self.layer_channels[layer_index])
        if self.is_vector(layer_index):
            ends = ''
            if self.units[layer_index].probability:
                op = self.graph.get_tensor_by_name(self.units[layer_index].probability).op
                while op.type == 'Identity':
                    op = op.inputs[0].op
                ends = ' (logits of its %s)' % op.type
            return '%-32s %-20s %5d neurons   a vector%s, seen from the whole picture' % (
                self.short_names[layer_index], kind or self.units[layer_index].kind or '-',
                self.layer_channels[layer_index], ends)
        try:
            rows, columns = self._field(layer_index, size)
        except ValueError as error:
            return '%s  receptive field not known: %s' % (head, str(error).partition(' is not known: ')[2])
        field = '%d' % rows.size if rows.size == columns.size else '%dx%d' % (rows.size, columns.size)
        return '%s  %4dx%-4d  receptive field %s, stride %d' % (head, rows.side, rows.side, field, rows.stride)

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


def graph_users(graph_def):
    """({op name: NodeDef}, {(op name, output index): [(user op name, data input position)]}) of a GraphDef;
    control inputs ('^op') carry no value and are left out."""
    nodes = {node.name: node for node in graph_def.node}
    users = {}
    for node in graph_def.node:
        data = [name for name in node.input if not name.startswith('^')]
        for position, name in enumerate(data):
            users.setdefault(_tensor_key(name), []).append((node.name, position))
    return nodes, users


def _tensor_key(name):
    """('op', index) of a tensor name as a GraphDef input writes it: 'op:1' -> ('op', 1), 'op' -> ('op', 0)."""
    op, _, index = name.partition(':')
    return op, int(index) if index else 0


def maps_before(tensor):
    """Names of the 4-D tensors a vector is computed from where they stop being maps: the inputs of the
    first ops on its path whose output is not 4-D (a global pool, a flatten)."""
    found, seen, stack = set(), set(), [tensor]
    while stack:
        current = stack.pop()
        if current.name in seen:
            continue
        seen.add(current.name)
        for source in current.op.inputs:
            if source.dtype not in (tf.float32, tf.bfloat16, tf.float16):
                continue
            if source.shape.rank == 4:
                found.add(source.name)
            elif current.op.type != 'Placeholder':
                stack.append(source)
    return sorted(found)

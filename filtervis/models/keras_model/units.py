"""
Which parts of a Keras model are units: every layer with a 4-D output, the
default units among them (a conv's chain through its norm and activation,
and a block's output: a residual sum and its activation), the conv ops of a
SavedModel's graph, the ones geometry.py can follow, and their listing for
`--list-layers`.

    python visualize.py --model my.keras --preprocess tf --list-layers --all

    from filtervis.models.keras_model import units
    print('\\n'.join(units.unit_lines(net, all_layers=True)))   # net: from keras_model.load()

Unit names are the Keras layer names; their tensors are Identity ops named
'units/NAME' (and 'units/NAME/pre' before the activation), so that a frozen
graph keeps them under a name a user recognizes.
"""

import re

from filtervis.core import geometry
from filtervis.core import network
from filtervis.models import build
from filtervis.util import quiet

tf = quiet.import_tensorflow()   # tensorflow.compat.v1, graph mode

# A Dense layer on a map is a 1x1 convolution (ConvNeXt's pointwise convs).
CONV_KINDS = ('Conv2D', 'SeparableConv2D', 'DepthwiseConv2D', 'Conv2DTranspose', 'Dense')
NORM_KINDS = ('BatchNormalization', 'LayerNormalization')
# Block outputs, what users look at in a ResNet: a residual sum (an Add layer,
# ConvNeXt's `x + branch` op, InceptionResNetV2's x + scale * branch layer).
RESIDUAL_KINDS = ('Add', 'CustomScaleLayer')
ACTIVATION_KINDS = ('ReLU', 'ReLU6', 'Activation', 'LeakyReLU', 'PReLU', 'ELU', 'ThresholdedReLU')
# Ops a SavedModel's units start at, and the Keras class each stands for.
CONV_OPS = {'Conv2D': 'Conv2D', 'DepthwiseConv2dNative': 'DepthwiseConv2D', 'Conv2DBackpropInput': 'Conv2DTranspose'}
BIAS_OPS = ('BiasAdd', 'Add', 'AddV2')
NORM_OPS = ('FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3')


def units_of_calls(calls, outputs, tf2):
    """(units, defaults) from the calls trace.run_model recorded, inside the trace.

    units: [(name, unit tensor, pre tensor or None, kind)] for every layer
    with a 4-D output (its first call), as Identity ops named 'units/...';
    defaults: [(name, kind)], in network order: each conv's chain conv ->
    [BatchNormalization or LayerNormalization] -> [activation layer], and
    each residual sum's chain sum -> [activation layer], in which each layer
    is the only consumer of the one before, named after its last layer and
    of the kind of its first. outputs: the model's output tensors, which
    count as used outside.
    """
    consumers = {}
    for layer, _, inputs, _ in calls:
        for tensor in inputs:
            consumers.setdefault(id(tensor), []).append(layer)
    for tensor in outputs:
        consumers.setdefault(id(tensor), []).append(None)
    first = {}
    for call in calls:
        if call[0] not in first and type(call[0]).__name__ != 'InputLayer':
            first[call[0]] = call
    four_d = [call for call in first.values() if len(call[3]) == 1 and call[3][0].shape.rank == 4]
    # Inner names that clash with another layer's take the nested model's name.
    counts = {}
    for layer, _, _, _ in four_d:
        counts[layer.name] = counts.get(layer.name, 0) + 1
    units, names, used = [], {}, set()
    for layer, scope, inputs, outputs in four_d:
        name = layer.name
        if counts[name] > 1 and len(scope) > 1:
            name = '/'.join(scope[1:] + (layer.name,))
        names[layer] = name
        output = outputs[0]
        pre = inputs[0] if type(layer).__name__ in ACTIVATION_KINDS and len(inputs) == 1 else None
        op = output.op
        while op.type == 'Identity':
            op = op.inputs[0].op
        if pre is None and op.type in network.ACTIVATION_OPS:
            pre = op.inputs[0]
        safe = _unique(_safe_name(name), used)
        if output.dtype != tf2.float32:
            output = tf2.cast(output, tf2.float32)
            pre = None if pre is None else tf2.cast(pre, tf2.float32)
        unit_t = tf2.identity(output, name='units/' + safe)
        pre_t = tf2.identity(pre, name='units/' + safe + '/pre') if pre is not None else None
        units.append((name, unit_t, pre_t, type(layer).__name__, None))
    units.extend(_vector_units(first, names, used, tf2))

    by_layer = {call[0]: call for call in four_d}
    defaults = []
    for layer, _, _, outputs in four_d:
        kind = type(layer).__name__
        if kind not in CONV_KINDS and kind not in RESIDUAL_KINDS:
            continue
        end, tensor = layer, outputs[0]
        for allowed in ((NORM_KINDS, ACTIVATION_KINDS) if kind in CONV_KINDS else (ACTIVATION_KINDS,)):
            users = consumers.get(id(tensor), [])
            if len(users) != 1 or users[0] is None or type(users[0]).__name__ not in allowed:
                continue
            user_call = by_layer.get(users[0])
            if user_call is None or len(user_call[2]) != 1:
                continue
            end, tensor = users[0], user_call[3][0]
        defaults.append((names[end], kind))
    # A classifier's head and its other Dense layers: what a class looks like.
    for layer, _, _, outputs in first.values():
        if layer in names and outputs[0].shape.rank == 2 and (type(layer).__name__ == 'Dense'
                                                              or consumers.get(id(outputs[0])) == [None]):
            defaults.append((names[layer], type(layer).__name__))
    return units, defaults


def _vector_units(first, names, used, tf2):
    """Units of the layers whose one output is a vector [N, K] (Dense layers, pools, a classifier's head):
    [(name, unit tensor, pre tensor or None, kind, probability tensor or None)]; `names` gains layer: name.

    Where the layer ends in softmax or sigmoid, the unit is its logits (the activation's input) and the
    probabilities come beside them: an ascent on the probability stalls once the softmax saturates.
    """
    found = []
    for layer, scope, inputs, outputs in first.values():
        if len(outputs) != 1 or outputs[0].shape.rank != 2 or outputs[0].shape[-1] is None \
                or not outputs[0].dtype.is_floating:
            continue
        name = layer.name if layer.name not in names.values() else '/'.join(scope[1:] + (layer.name,))
        names[layer] = name
        output = tf2.cast(outputs[0], tf2.float32)
        op = outputs[0].op
        while op.type == 'Identity':
            op = op.inputs[0].op
        safe = _unique(_safe_name(name), used)
        probability_t = pre = None
        if op.type in ('Softmax', 'Sigmoid'):
            probability_t = tf2.identity(output, name='units/' + safe + '/probability')
            output = tf2.cast(op.inputs[0], tf2.float32)
        elif op.type in network.ACTIVATION_OPS:
            pre = tf2.identity(tf2.cast(op.inputs[0], tf2.float32), name='units/' + safe + '/pre')
        found.append((name, tf2.identity(output, name='units/' + safe), pre, type(layer).__name__, probability_t))
    return found


def units_of_ops(graph, scope):
    """[network.Unit] of a SavedModel's graph imported under `scope`: one per conv op, named by op name.

    Each conv op is followed, while it is the only consumer, through
    BatchToSpaceND (dilation), a bias, a batch norm and one activation op;
    that graph keeps no Keras layers. Adds the units' Identity ops to graph
    (the default graph when called).
    """
    units, used = [], set()
    for conv_op, end, pre in _op_chains(graph, scope):
        # Inlined calls leave their names in front of every op: not part of what the model calls it.
        name = re.sub(r'^((Stateful)?PartitionedCall(_\d+)?/)+', '', conv_op.name[len(scope) + 1:])
        safe = _unique(_safe_name(name), used)
        tensor = tf.identity(end, name='units/' + safe)
        pre_tensor = tf.identity(pre, name='units/' + safe + '/pre') if pre is not None else None
        units.append(network.Unit(name, tensor.name, pre_tensor.name if pre_tensor is not None else None,
                                  CONV_OPS[conv_op.type]))
    return units


def _op_chains(graph, scope):
    """[(conv op, end tensor, pre tensor)] for the conv ops under scope."""
    chains = []
    for op in graph.get_operations():
        if op.type not in CONV_OPS or not op.name.startswith(scope + '/'):
            continue
        tensor, pre = op.outputs[0], None
        for kinds in (('BatchToSpaceND',), BIAS_OPS, NORM_OPS, network.ACTIVATION_OPS):
            users = tensor.consumers()
            if len(users) == 1 and users[0].type in kinds:
                if kinds is network.ACTIVATION_OPS:
                    pre = tensor
                tensor = users[0].outputs[0]
        chains.append((op, tensor, pre))
    return chains


def _safe_name(name):
    """A TensorFlow node name made from a Keras name: characters outside [A-Za-z0-9_.-/] become '_'."""
    safe = re.sub(r'[^A-Za-z0-9_.\-/]', '_', name)
    safe = re.sub(r'/+', '/', safe).strip('/')
    return safe or '_'


def _unique(name, used):
    candidate, count = name, 1
    while candidate.lower() in used:   # TensorFlow compares node names without case
        candidate, count = '%s_%d' % (name, count), count + 1
    used.add(candidate.lower())
    return candidate


def followable(graph_def, input_name, units, defaults):
    """(units, defaults, left_out): the units geometry.py can follow, and {name: why} for the others.

    graph_def: the frozen graph; input_name: its input tensor ('images:0');
    units, defaults: lists of network.Unit.
    """
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name='')
    left_out = {}
    # Vectors see the whole picture: only maps have a field to follow.
    maps = [u for u in units if graph.get_tensor_by_name(u.tensor).shape.rank == 4]
    try:
        geometry.smallest_input(graph, input_name, [u.tensor for u in maps])
    except ValueError:   # GeometryError is one: find the units it is about, one by one
        for unit in maps:
            try:
                geometry.smallest_input(graph, input_name, [unit.tensor])
            except ValueError as error:
                left_out[unit.name] = str(error)
    return ([u for u in units if u.name not in left_out], [u for u in defaults if u.name not in left_out],
            left_out)


def unit_lines(net, all_layers=False):
    """One line per unit for `--list-layers`: name, layer type, channels, output side, receptive field.

    net: a Network from load(). all_layers=False lists the convolution units
    (load()'s default list, read from the cache stamp beside net.path when
    net holds all layers); True lists every unit of net. The output side is
    at the model's input size, or at 224 for a model that takes any size.
    Units left out because geometry.py cannot follow them come last, with why.
    """
    stamp = _stamp_of(net)
    defaults = {u['name'] for u in stamp['defaults']} if stamp else set(net.short_names)
    default_kind = {u['name']: u['kind'] for u in stamp['defaults']} if stamp else {}
    size = net.input_size or 224
    lines = []
    for index, unit in enumerate(net.units):
        if not all_layers and unit.name not in defaults:
            continue
        lines.append(net.unit_line(index, size, unit.kind if all_layers else default_kind.get(unit.name, unit.kind)))
    if stamp:
        left_out = stamp['left_out']
        for name in left_out if all_layers else stamp['left_out_defaults']:
            lines.append('%-32s (left out: %s)' % (name, left_out[name]))
    return lines


def _stamp_of(net):
    """The cache stamp beside net.path when it belongs to net, else None."""
    stamp = build.read_stamp(net.path) if net.path else None
    return stamp if stamp and stamp.get('model_md5') == net.md5 else None

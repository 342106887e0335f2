"""
Which tensors of an ONNX model are units, under which names, and their
listing for `--list-layers`. A unit is a feature map [N, h, w, C] (an ONNX
[N, C, H, W] tensor held NHWC). Units are named as PyTorch users know them:
by the module path the exporter recorded in the node's name
(`/layer3/layer3.1/conv2/Conv` is `layer3.1.conv2`), or by the node's own
name where the exporter recorded none (PyTorch 1.9: `Conv_41`).

    python visualize.py --model resnet18.onnx --preprocess torch --list-layers --all

    from filtervis.models.onnx_model import units
    units.module_path('/layer3/layer3.1/conv2/Conv')          # 'layer3.1.conv2'
    found = units.find(model.graph, translated.tensors)       # Found: all units, the defaults, ONNX names
    print('\\n'.join(units.unit_lines(net)))                  # net: from onnx_model.load()

By default one unit per convolution: the end of the chain Conv ->
[BatchNormalization] -> [activation], each the only consumer of the one
before (SiLU, x * Sigmoid(x), counts as an activation), named after the
conv, with the conv (or batch norm) output as its pre-activation; and one
per Gemm or MatMul with a vector output [N, K] (a classifier's head), whose
Softmax or Sigmoid makes it the logits with the probabilities beside it
(network.Unit.probability), as for Keras' Dense layers. With all_layers
every node output that is a feature map or a float vector is a unit.
"""

from dataclasses import dataclass

from filtervis.core import geometry, network
from filtervis.models import build
from filtervis.models.onnx_model import layout
from filtervis.util import quiet

tf = quiet.import_tensorflow()   # tensorflow.compat.v1, graph mode

CONV_OPS = ('Conv', 'ConvTranspose')
DENSE_OPS = ('Gemm', 'MatMul')
# Ops whose vector outputs are no activations to visualize (booleans, integers, shapes).
NOT_FLOAT_OPS = ('Equal', 'Greater', 'Less', 'GreaterOrEqual', 'LessOrEqual', 'And', 'Or', 'Not', 'Cast', 'Shape',
                 'Size', 'ArgMax', 'ArgMin')
ACTIVATION_OPS = ('Relu', 'LeakyRelu', 'PRelu', 'Elu', 'Selu', 'Clip', 'HardSwish', 'HardSigmoid', 'Sigmoid',
                  'Tanh', 'Softplus', 'Gelu', 'Mish')


@dataclass(frozen=True)
class Found:
    """The units of a translated model.

    units:    [network.Unit] every feature map a node makes, in node order
    defaults: [network.Unit] the convolution units, a subset of units under the same names
    onnx:     {unit name: the ONNX tensor it reads}
    """
    units: list
    defaults: list
    onnx: dict


def module_path(label):
    """The PyTorch module path in an exporter's node name, or the name itself where it holds none.

    '/layer3/layer3.1/conv2/Conv' -> 'layer3.1.conv2' (the last part names
    the op; a part that repeats the one before it with '.N' is a child of a
    Sequential); 'Conv_41' -> 'Conv_41'.
    """
    parts = [part for part in label.split('/') if part]
    if not label.startswith('/') or len(parts) < 2:
        return label.strip('/') or label
    parts = parts[:-1]
    path = previous = parts[0]
    for part in parts[1:]:
        path = path[:len(path) - len(previous)] + part if part.startswith(previous + '.') else path + '.' + part
        previous = part
    return path


def _label(node):
    return node.name or node.output[0]


def find(graph, tensors):
    """The Found of an onnx.GraphProto whose translation has these tensors (translate.Translated.tensors)."""
    nodes = list(graph.node)
    consumers = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for output in graph.output:
        consumers.setdefault(output.name, []).append(None)

    def is_map(name):
        return name in tensors and tensors[name][1] == layout.NHWC

    def activation_after(name):
        """(activation output, its node) when the only use of `name` is an activation (or a SiLU), else None."""
        users = consumers.get(name, [])
        if len(users) == 1 and users[0] is not None and users[0].op_type in ACTIVATION_OPS \
                and users[0].input[0] == name:
            return users[0].output[0], users[0]
        if len(users) == 2 and None not in users:
            sigmoid = next((u for u in users if u.op_type == 'Sigmoid'), None)
            multiply = next((u for u in users if u.op_type == 'Mul'), None)
            if sigmoid is not None and multiply is not None and \
                    set(multiply.input) == {name, sigmoid.output[0]} and \
                    consumers.get(sigmoid.output[0]) == [multiply]:
                return multiply.output[0], multiply
        return None

    def is_vector(name, node):
        return name in tensors and tensors[name][1] == (0, 1) and node.op_type not in NOT_FLOAT_OPS

    defaults, ends, taken, probabilities = [], {}, set(), {}
    for node in nodes:
        output = node.output[0] if node.output else ''
        if node.op_type in CONV_OPS and is_map(output):
            end, pre = output, None
            users = consumers.get(end, [])
            if len(users) == 1 and users[0] is not None and users[0].op_type == 'BatchNormalization' \
                    and is_map(users[0].output[0]):
                end = users[0].output[0]
            after = activation_after(end)
            if after is not None and is_map(after[0]):
                end, pre = after[0], end
            probability = None
        elif (node.op_type in DENSE_OPS and is_vector(output, node)) or (
                is_vector(output, node) and None in consumers.get(output, []) and output not in probabilities):
            end, pre, probability = output, None, None
            users = consumers.get(end, [])
            after = activation_after(end)
            if len(users) == 1 and users[0] is not None and users[0].op_type in ('Softmax', 'Sigmoid'):
                # The logits, with the probabilities beside them: an ascent on a saturated softmax stalls.
                probability = users[0].output[0]
            elif after is not None and is_vector(after[0], after[1]):
                end, pre = after[0], end
        else:
            continue
        name = _unique(module_path(_label(node)), taken)
        unit = network.Unit(name, tensors[end][0], tensors[pre][0] if pre else None, node.op_type,
                            tensors[probability][0] if probability else None)
        defaults.append(unit)
        ends[end] = unit
        if probability:
            probabilities[probability] = unit

    # Pre-activations of every activation node (and SiLU's Mul), for units that are not defaults.
    pre_of = {}
    for name in tensors:
        after = activation_after(name)
        if after is not None:
            pre_of[after[0]] = name
    # The image input (after the preprocessing) is no unit, nor is a node that passes it on; a
    # probability is its logits' twin (network.PROBABILITY_SUFFIX).
    units, onnx = [], {}
    listed = {tensors[i.name][0] for i in graph.input if i.name in tensors}
    listed |= {tensors[name][0] for name in probabilities}
    for node in nodes:
        for output in node.output:
            if not (is_map(output) or is_vector(output, node)) or tensors[output][0] in listed:
                continue
            listed.add(tensors[output][0])
            unit = ends.get(output)
            if unit is None:
                name = module_path(_label(node))
                if name in taken:
                    name = '%s/%s' % (name, _label(node).rstrip('/').split('/')[-1] if '/' in _label(node)
                                      else node.op_type)
                pre = pre_of.get(output)
                unit = network.Unit(_unique(name, taken), tensors[output][0],
                                    tensors[pre][0] if pre and pre in tensors else None, node.op_type)
            units.append(unit)
            onnx[unit.name] = output
    for probability, unit in probabilities.items():
        onnx[unit.name + network.PROBABILITY_SUFFIX] = probability
    return Found(units, defaults, onnx)


def followable(graph_def, input_name, size, found):
    """(units, defaults, left_out): the units of `found` geometry.py follows at the model's input size,
    and {name: why not} for the others, from one walk of the graph.

    A map must have a field; a vector sees the whole picture, and needs the
    maps it is computed from (where they stop being maps, as the Network
    reads them) to have one.
    """
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name='')
    pairs, unknown = geometry.walk_axes(graph, input_name, size)
    left_out = {}
    for unit in found.units:
        tensor = graph.get_tensor_by_name(unit.tensor)
        maps = network.maps_before(tensor) if tensor.shape.rank == 2 else [unit.tensor]
        missing = [name for name in maps if name not in pairs]
        if missing:
            left_out[unit.name] = unknown.get(missing[0], 'geometry.py does not follow its path')
    return ([u for u in found.units if u.name not in left_out], [u for u in found.defaults if u.name not in left_out],
            left_out)


def _unique(name, taken):
    candidate, count = name, 1
    while candidate in taken:
        count += 1
        candidate = '%s_%d' % (name, count)
    taken.add(candidate)
    return candidate


def unit_lines(net, all_layers=False):
    """One line per unit for `--list-layers`, each ending in onnx=TENSOR, the ONNX tensor the unit reads.

    net: a Network from onnx_model.load(). all_layers=False lists the
    convolution units; True every unit of net. Sizes are at the model's
    input size. Units left out because geometry.py cannot follow them come
    last, with why.
    """
    stamp = build.read_stamp(net.path) if net.path else None
    if not stamp or stamp.get('model_md5') != net.md5:
        raise ValueError('%s: its cache stamp is gone; load the model again' % net.description)
    defaults = {u['name']: u['kind'] for u in stamp['defaults']}
    lines = []
    for index, unit in enumerate(net.units):
        if not all_layers and unit.name not in defaults:
            continue
        line = net.unit_line(index, net.input_size, unit.kind if all_layers else defaults.get(unit.name, unit.kind))
        lines.append('%s  onnx=%s' % (line, stamp['onnx'][unit.name]))
    left_out = stamp['left_out']
    for name in left_out if all_layers else stamp['left_out_defaults']:
        lines.append('%-32s (left out: %s)  onnx=%s' % (name, left_out[name], stamp['onnx'][name]))
    return lines

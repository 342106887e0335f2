"""
An ONNX graph rebuilt as a tf.compat.v1 graph, node by node: the image input
`images:0` (float32 [N, H, W, C], pixels 0..255), the model's input scaling,
then each ONNX node as TensorFlow ops named after it (`/layer1/layer1.0/
conv1/Conv` becomes the op `layer1/layer1.0/conv1/Conv`). Nothing from the
file runs: its nodes are read as data and only the ops of OPS are built;
anything else is refused, naming the node.

    from filtervis.models.onnx_model import translate
    result = translate.translate(model, spec, 'torch')    # model: onnx.ModelProto, spec: formats.ImageInput
    result.graph_def                                      # tf.GraphDef
    result.tensors['/layer1/layer1.0/relu/Relu_output_0']  # ('layer1/layer1.0/relu/Relu:0', (0, 2, 3, 1))

Constants and shape arithmetic fold to numpy while the graph is built (the
input size is fixed), so the graph holds weights as constants and no shape
computation; layout.py says how 4-D tensors are held NHWC.
"""

import re
from dataclasses import dataclass

import numpy as np

from filtervis.models import preprocess as scaling
from filtervis.models.onnx_model import layout, ops_math, ops_shape, ops_spatial
from filtervis.models.onnx_model.layout import Mapped
from filtervis.util import quiet

tf = quiet.import_tensorflow()   # tensorflow.compat.v1, graph mode

INPUT_NAME = 'images'
OPS = {**ops_shape.OPS, **ops_math.OPS, **ops_spatial.OPS}


@dataclass(frozen=True)
class Translated:
    """An ONNX model as a TensorFlow graph.

    graph_def: tf.GraphDef; input images:0 float32 [N, size, size, channels], pixels 0..255
    tensors:   {ONNX tensor name: (TensorFlow tensor name, order)} for every tensor that depends on
               the image; order as layout.Mapped's ((0, 2, 3, 1): an NHWC map)
    """
    graph_def: object
    tensors: dict


def tf_name(label):
    """A TensorFlow op name made from an ONNX node name: '/layer1/layer1.0/conv1/Conv' -> 'layer1/layer1.0/conv1/Conv'."""
    name = re.sub(r'[^A-Za-z0-9_.\-/]', '_', label)
    name = re.sub(r'/+', '/', name).strip('/')
    if not name or not re.match(r'[A-Za-z0-9.]', name):
        name = 'n' + name
    return name


def attributes(onnx_node):
    """{name: value} of a node's attributes as plain Python and numpy values (strings decoded)."""
    from onnx import helper, numpy_helper
    attrs = {}
    for attribute in onnx_node.attribute:
        value = helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode('utf8')
        elif hasattr(value, 'data_type') and hasattr(value, 'dims'):   # a TensorProto
            value = numpy_helper.to_array(value)
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode('utf8') for v in value]
        attrs[attribute.name] = value
    return attrs


def translate(model, spec, preprocess, bgr=False):
    """The Translated of an onnx.ModelProto whose image input formats.image_input described (spec).

    preprocess: one of filtervis.models.preprocess.CHOICES, applied to the
    pixels before the model's first node; bgr: reverse the channels after it
    (for models trained on OpenCV's BGR images). Raises layout.Refused (a
    ValueError) naming the first node that cannot be translated.
    """
    from onnx import numpy_helper
    opset = next((entry.version for entry in model.opset_import if entry.domain in ('', 'ai.onnx')), 1)
    graph = tf.Graph()
    with graph.as_default():
        images_t = tf.placeholder(tf.float32, [None, spec.size, spec.size, spec.channels], name=INPUT_NAME)
        with tf.name_scope('preprocess'):
            x_t = scaling.scale(images_t, preprocess)
            if bgr:
                x_t = tf.reverse(x_t, axis=[3])
        values = {initializer.name: numpy_helper.to_array(initializer) for initializer in model.graph.initializer}
        values[spec.name] = Mapped(x_t, layout.NHWC)
        tensors = {spec.name: (x_t.name, layout.NHWC)}
        for onnx_node in model.graph.node:
            for output, value in zip(onnx_node.output, _translated(onnx_node, values, opset, spec.batch)):
                if not output:
                    continue
                values[output] = value
                if isinstance(value, Mapped):
                    tensors[output] = (value.t.name, value.order)
    return Translated(graph.as_graph_def(), tensors)


def _translated(onnx_node, values, opset, batch):
    """The values of one node's outputs, its ops added to the default graph under the node's name."""
    label = onnx_node.name or (onnx_node.output[0] if onnx_node.output else onnx_node.op_type)
    function = OPS.get(onnx_node.op_type)
    if function is None:
        raise layout.Refused('node %r is a %s, which this route does not import (docs/pytorch.md lists the ops '
                             'it does); re-export without it or ask for it to be supported'
                             % (label, onnx_node.op_type))
    inputs = []
    for name in onnx_node.input:
        if name and name not in values:
            raise layout.Refused('node %r (%s) reads %r, which no earlier node makes; the file is damaged or its '
                                 'nodes are not in order' % (label, onnx_node.op_type, name))
        inputs.append(values[name] if name else None)
    with tf.name_scope(tf_name(label)) as scope:
        node = layout.Node(onnx_node, attributes(onnx_node), opset, scope, batch)
        try:
            outputs = function(node, inputs)
        except layout.Refused:
            raise
        except (ValueError, TypeError, IndexError, KeyError, tf.errors.OpError) as error:
            # TensorFlow refusing shapes or types, or a missing attribute: the node, not a traceback.
            raise node.refuse('it could not be built (%s: %s)' % (type(error).__name__, _first_line(error)),
                              'check the model with onnx.checker.check_model') from None
    wanted = len([o for o in onnx_node.output if o])
    if len(outputs) < wanted:
        raise node.refuse('%d of its outputs are used; this route makes %d' % (wanted, len(outputs)))
    return [_value(output) for output in outputs]


def _value(output):
    """An op's output as a value: a bare tensor is in its rank's canonical order (NHWC for a map)."""
    if isinstance(output, tf.Tensor):
        return Mapped(output, layout.canonical(output.shape.rank))
    if isinstance(output, Mapped) or output is None:
        return output
    return np.asarray(output)


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__

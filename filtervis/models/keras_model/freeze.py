"""
A Keras model frozen into a GraphDef in memory, one function per route:
keras_file() for a .keras or .h5 model (loaded by Keras, traced layer by
layer), saved_model() for a SavedModel folder (its serving signature). Both
return a Frozen: the graph, whose input is `images:0` (float32 [N, H, W, C],
pixels 0..255, the model's scaling inside), its units, and what the cache
stamp records. Everything a user can get wrong raises ValueError here, before
anything is written.

    from filtervis.models.keras_model import freeze
    frozen = freeze.keras_file('fer.hdf5', 'h5', 'tf')        # a Frozen
    frozen = freeze.saved_model('exported/', 'unit')
    with freeze.tf2_mode():                                    # Keras 3 in this tf.compat.v1 process
        model = keras.models.load_model(path)

This is the only module that imports Keras, and only when a route runs: a
model taken from the cache never needs it.
"""

import contextlib
import os
import sys
from dataclasses import dataclass

from filtervis.core import network
from filtervis.models import preprocess as scaling   # apart from the routes' `preprocess` arguments
from filtervis.models.keras_model import formats, trace, units
from filtervis.util import quiet

tf = quiet.import_tensorflow()   # tensorflow.compat.v1, graph mode

INPUT_NAME = 'images'
# Layers that scale pixels themselves: a model starting with one defaults to preprocess 'none'.
SCALING_KINDS = ('Rescaling', 'Normalization')
# Convolutions over something other than an image.
OTHER_CONV_KINDS = ('Conv1D', 'Conv3D', 'SeparableConv1D', 'DepthwiseConv1D', 'Conv1DTranspose',
                    'Conv3DTranspose', 'ConvLSTM1D', 'ConvLSTM2D', 'ConvLSTM3D')
MODEL_KINDS = ('Model', 'Functional', 'Sequential')


@dataclass(frozen=True)
class Frozen:
    """A model frozen in memory, as a route returns it.

    graph_def: tf.GraphDef, input images:0 float32 [N, size, size, channels], pixels 0..255
    units:     [network.Unit] every unit found (every 4-D layer; a SavedModel's conv ops)
    defaults:  [network.Unit] the convolution units, load()'s default list
    preprocess: the scaling built into the graph, one of preprocess.CHOICES
    own_scaling: the model's first layer scales pixels (Rescaling, Normalization)
    size:      the input side, or None for a model that takes any size
    channels:  1 or 3
    source:    'Keras' or 'SavedModel', for descriptions
    refusal:   why safe mode would refuse the file (str; set only in an unsafe load), or None
    """
    graph_def: object   # tf.GraphDef
    units: list
    defaults: list
    preprocess: str
    own_scaling: bool
    size: int | None
    channels: int
    source: str
    refusal: str | None = None


def _keras():
    """Keras and TensorFlow's v2 API, imported only to build: a cached model never needs them."""
    import keras
    import tensorflow
    return keras, tensorflow


@contextlib.contextmanager
def tf2_mode():
    """A context in which Keras 3 and tf.function work as in a TensorFlow 2 process.

    The project's tf.compat.v1 import (quiet.py) turned off eager execution
    and TensorFlow 2's shapes, tensor equality and control flow for the whole
    process; Keras 3 needs them (with v1 shapes, Conv2DTranspose fails on a
    Dimension where it expects an int). They are switched on for the block
    and back to what they were after it.
    """
    _, tf2 = _keras()
    v1 = tf2.compat.v1
    shapes_v2 = isinstance(tf2.TensorShape([1])[0], int)
    flow_v2 = v1.control_flow_v2_enabled()
    equality = getattr(tf2.Tensor, '_USE_EQUALITY', True)
    v1.enable_v2_tensorshape()
    v1.enable_control_flow_v2()
    v1.enable_tensor_equality()
    try:
        with tf2.__internal__.eager_context.eager_mode():
            yield
    finally:
        if not shapes_v2:
            v1.disable_v2_tensorshape()
        if not flow_v2:
            v1.disable_control_flow_v2()
        if not equality:
            v1.disable_tensor_equality()


# ---------------------------------------------------------------------------
# Route 1: a .keras or .h5 file, traced layer by layer

def keras_file(path, fmt, preprocess, *, unsafe=False, quiet=True):
    """The Frozen of a .keras or .h5 model (fmt 'keras' or 'h5', from formats.model_format).

    preprocess: one of preprocess.CHOICES, or None for a model that scales
    pixels itself. unsafe: let Lambda layers and custom classes load, which
    runs code from the file. A unit's values are the layer's output as
    keras.Model(model.inputs, layer.output) computes it in inference mode.
    """
    keras, tf2 = _keras()
    name = _name(path)
    refusal = formats.refusal(path, fmt, lambda kind: kind in MODEL_KINDS or hasattr(keras.layers, kind))
    if refusal and not unsafe:
        raise formats.refused(name, refusal)
    with tf2_mode():
        model = _load_model(path, name, unsafe, keras)
        if len(model.inputs) != 1:
            raise ValueError('%s has %d inputs; only models with one image input are supported'
                             % (name, len(model.inputs)))
        size, channels = _image_input(model.inputs[0].shape, name, 'its input')
        own_scaling = _checked_layers(model, name, keras)
        preprocess = scaling.resolve(preprocess, name, own_scaling, channels)
        _say_freezing(name, quiet)
        concrete, found_units, found_defaults = _trace(model, size, channels, preprocess, keras, tf2)
        if not any(unit[1].shape.rank == 4 for unit in found_units):
            raise ValueError('%s has no layer with a 4-D output [N, h, w, channels]: it is no convolutional '
                             'network, and this tool shows what convolutions see' % name)
        graph_def = _without_custom_gradients(_constants(concrete).graph.as_graph_def())
    all_units = [network.Unit(unit, _tensor_name(tensor), _tensor_name(pre), kind, _tensor_name(probability))
                 for unit, tensor, pre, kind, probability in found_units]
    by_name = {u.name: u for u in all_units}
    defaults = [network.Unit(unit, by_name[unit].tensor, by_name[unit].pre, kind, by_name[unit].probability)
                for unit, kind in found_defaults]
    return Frozen(graph_def, all_units, defaults, preprocess, own_scaling, size, channels, 'Keras', refusal)


def _load_model(path, name, unsafe, keras):
    try:
        return keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as error:  # Keras raises many kinds for a file it cannot read
        raise ValueError('%s could not be loaded by Keras %s (%s: %s); check that it is a whole model '
                         'saved with model.save()' % (name, keras.__version__, type(error).__name__,
                                                      _first_line(error))) from None


def _checked_layers(model, name, keras):
    """Whether the model's first layer scales pixels; ValueError for a layer that is not over NHWC images."""
    layers = list(trace.flat_layers(model, keras))
    for layer in layers:
        kind = type(layer).__name__
        if kind in OTHER_CONV_KINDS:
            raise ValueError('%s: layer %r is a %s; only 2-D convolutions over images are supported'
                             % (name, layer.name, kind))
        if getattr(layer, 'data_format', 'channels_last') == 'channels_first':
            raise ValueError("%s: layer %r uses data_format 'channels_first'; only channels_last "
                             "(NHWC) models are supported" % (name, layer.name))
    first = next((layer for layer in layers if type(layer).__name__ != 'InputLayer'), None)
    return first is not None and type(first).__name__ in SCALING_KINDS


def _trace(model, size, channels, preprocess, keras, tf2):
    """(concrete function images -> units, units, defaults): images -> preprocessing -> every layer, once.

    units and defaults as units.units_of_calls gives them, with the traced
    function's tensors.
    """
    # The units are found inside the trace, where the layers' tensors live; tf.function traces forward once.
    found = {}

    def forward(images):
        calls = []
        outputs = trace.run_model(model, scaling.scale(images, preprocess), calls, keras, tf2)
        # Network order is the order of model.layers (nested models entered), as model.summary() shows it;
        # an op that is no layer (ConvNeXt's `x + branch`) stays after the layer that ran before it.
        order = {id(layer): index for index, layer in enumerate(trace.flat_layers(model, keras))}
        keys, key = [], (-1, 0)
        for call in calls:
            key = (order[id(call[0])], 0) if id(call[0]) in order else (key[0], key[1] + 1)
            keys.append(key)
        calls[:] = [calls[i] for i in sorted(range(len(calls)), key=keys.__getitem__)]
        found['units'], found['defaults'] = units.units_of_calls(calls, tf2.nest.flatten(outputs), tf2)
        return [tensor for unit in found['units'] for tensor in (unit[1], unit[2], unit[4]) if tensor is not None]

    function = tf2.function(forward, input_signature=[tf2.TensorSpec([None, size, size, channels],
                                                                       tf2.float32, name=INPUT_NAME)],
                            autograph=False)
    concrete = function.get_concrete_function()
    return concrete, found['units'], found['defaults']


# ---------------------------------------------------------------------------
# Route 2: a SavedModel folder, through its serving signature

def saved_model(path, preprocess, *, quiet=True):
    """The Frozen of a SavedModel folder (Keras 3 refuses them): its serving signature behind images:0.

    The units are the outputs of its convolution ops (through bias, batch
    norm and activation), named by op name, since that graph keeps no Keras
    layers; defaults and units are the same list.
    """
    _, tf2 = _keras()
    name = _name(path)
    with tf2_mode():
        try:
            loaded = tf2.saved_model.load(path)
        except Exception as error:  # TensorFlow raises many kinds for a folder it cannot read
            raise ValueError('%s could not be loaded as a SavedModel (%s: %s); save it again'
                             % (name, type(error).__name__, _first_line(error))) from None
        signatures = dict(loaded.signatures)
        if not signatures:
            raise ValueError('%s has no serving signature, so its graph cannot be frozen; save it with '
                             'model.export() or tf.saved_model.save(..., signatures=...)' % name)
        key = 'serving_default' if 'serving_default' in signatures else sorted(signatures)[0]
        signature = signatures[key]
        args, kwargs = signature.structured_input_signature
        specs = list(args) + list(kwargs.values())
        if len(specs) != 1:
            raise ValueError('%s: signature %s takes %d inputs; only models with one image input are supported'
                             % (name, key, len(specs)))
        size, channels = _image_input(specs[0].shape.as_list(), name, 'the input of signature %s' % key)
        preprocess = scaling.resolve(preprocess, name, False, channels)
        _say_freezing(name, quiet)
        # `loaded` holds the variables the signature reads, until they are constants.
        inner = _without_custom_gradients(_constants(signature).graph.as_graph_def())
        graph_def, found = _behind_images(inner, size, channels, preprocess, name)
    return Frozen(graph_def, found, found, preprocess, False, size, channels, 'SavedModel')


def _behind_images(inner, size, channels, preprocess, name):
    """(GraphDef, units): the signature's frozen graph fed from images:0 through the preprocessing."""
    placeholders = [node.name for node in inner.node if node.op == 'Placeholder']
    graph = tf.Graph()
    with graph.as_default():
        images = tf.placeholder(tf.float32, [None, size, size, channels], name=INPUT_NAME)
        tf.import_graph_def(inner, input_map={placeholders[0] + ':0': scaling.scale(images, preprocess)},
                            name='model')
        found = units.units_of_ops(graph, 'model')
        if not found:
            calls = sorted({op.type for op in graph.get_operations() if 'Call' in op.type})
            raise ValueError('%s: the frozen serving signature holds no convolution op%s, so no unit can be '
                             'reached; save the model as .keras instead' % (
                                 name, ' (only calls: %s)' % ', '.join(calls) if calls else ''))
    return graph.as_graph_def(), found


# ---------------------------------------------------------------------------
# What both routes share

def _name(path):
    """The model's file or folder name, which messages and descriptions use."""
    return os.path.basename(os.path.normpath(path))


def _image_input(shape, name, what):
    """(size, channels) of an input shape [N, H, W, C]; ValueError unless C is 1 or 3 and H = W."""
    shape = tuple(shape)
    if len(shape) != 4:
        raise ValueError('%s: %s has shape %s, rank %d; expected an image batch [N, H, W, C]'
                         % (name, what, shape, len(shape)))
    if shape[3] not in network.INPUT_CHANNELS:
        raise ValueError('%s: %s has %s channels (shape %s); only greyscale (1) and RGB (3) images are '
                         'supported' % (name, what, shape[3], shape))
    if shape[1] != shape[2]:
        raise ValueError('%s: %s is %sx%s; only square inputs (or inputs of any size) are supported'
                         % (name, what, shape[1], shape[2]))
    return shape[1], shape[3]


def _say_freezing(name, quiet):
    if not quiet:
        print('Freezing %s once (later loads read the cache)' % name, file=sys.stderr, flush=True)


def _constants(function):
    """The concrete function with its variables made constants."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    return convert_variables_to_constants_v2(function)


def _without_custom_gradients(graph_def):
    """graph_def with the IdentityN ops of tf.custom_gradient (Keras' swish, gelu) replaced by their inputs.

    Their gradient is a Python function registered in the process that
    traced the model; another process importing the graph would find no
    gradient. The plain ops beneath them have the ordinary gradient.
    """
    replaced = {}
    for node in graph_def.node:
        if node.op == 'IdentityN' and '_gradient_op_type' in node.attr:
            replaced[node.name] = [i for i in node.input if not i.startswith('^')]
    if not replaced:
        return graph_def
    result = tf.GraphDef()
    result.versions.CopyFrom(graph_def.versions)
    result.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        if node.name in replaced:
            node = tf.NodeDef(name=node.name, op='Identity', input=[replaced[node.name][0]])
            node.attr['T'].type = tf.float32.as_datatype_enum
            result.node.append(node)
            continue
        copy = result.node.add()
        copy.CopyFrom(node)
        for index, name in enumerate(copy.input):
            source, _, port = name.partition(':')
            if source in replaced and port not in ('', '0'):
                copy.input[index] = replaced[source][int(port)]
    return result


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _tensor_name(tensor):
    return None if tensor is None else tensor.name

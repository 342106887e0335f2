"""
Users' Keras models as Networks: a `.keras` file, a legacy HDF5 model (`.h5`,
`.hdf5`, also Keras 2 files) or a TensorFlow SavedModel folder is frozen once
into a GraphDef whose input is `images:0` (pixels 0..255, the scaling the
model expects inside the graph) and whose units are the model's layers under
their Keras names. This is the only module that uses Keras, and only to
build that graph: a model loaded before comes from the cache without Keras
running.

    python visualize.py --model fer-emotion-minixception.hdf5 --preprocess tf --layer activation_3
    python visualize.py --model my_model.keras --preprocess tf --list-layers --all

    from filtervis.models import keras_model
    net = keras_model.load('fer-emotion-minixception.hdf5', preprocess='tf')   # a network.Network
    net.short_names[:2]                        # ['activation_1', 'activation_2']: one unit per convolution
    keras_model.load(path, 'tf', all_layers=True)   # every layer with a 4-D output is a unit
    print('\\n'.join(keras_model.unit_lines(net)))

Units. By default one per convolution layer (Conv2D, SeparableConv2D,
DepthwiseConv2D, Conv2DTranspose), in the order of model.layers: the last
layer of the chain conv -> [BatchNormalization] -> [activation layer] in
which each layer is the only consumer of the one before, named after that
layer, with the conv's class as its kind. With all_layers=True every layer
with a 4-D output is a unit under its own name and class; both lists point
into the same frozen graph. Layers of a nested model are units too; where a
name is also used outside it, it is prefixed with the nested model's name
and '/'. A unit's values are the layer's output as
`keras.Model(model.inputs, layer.output)` computes it in inference mode.
Units behind an op geometry.py cannot follow (a transposed convolution, a
resize) are left out, and unit_lines(all_layers=True) says why.

Safety. Keras safe mode stays on: a Lambda layer or a custom class is refused
before anything from the file runs, unless the caller opts in with
unsafe=True (`--unsafe`), which runs code from the file.

Cache. The frozen graph is `keras-cache/FILE.tfmodel` beside the model
(FILE: the model's file or folder name), or, where that folder cannot be
written, under ~/.cache/cnn-filters/; beside it `FILE.tfmodel.json`, the
stamp: the model's md5, the preprocessing, the units. A changed model or
preprocessing builds it again.

SavedModel folders (Keras 3 refuses them) are frozen through their serving
signature: the units are the outputs of its convolution ops (through bias,
batch norm and activation), named by op name, since that graph keeps no
Keras layers.
"""

import contextlib
import hashlib
import inspect
import json
import os
import re
import sys
import zipfile
from dataclasses import asdict

from filtervis.util import files
from filtervis.core import geometry
from filtervis.core import network
from filtervis.util import quiet

tf = quiet.import_tensorflow()   # tensorflow.compat.v1, graph mode

PREPROCESS_CHOICES = ('caffe', 'unit', 'none', 'tf', 'torch')
PREPROCESS_MEANINGS = {
    'caffe': 'RGB->BGR minus the ImageNet mean (103.939, 116.779, 123.68)',
    'unit': 'pixels/255 (0..1)',
    'none': 'pixels as they are (0..255)',
    'tf': 'pixels/127.5 - 1 (-1..1)',
    'torch': 'pixels/255, minus (0.485, 0.456, 0.406), over (0.229, 0.224, 0.225)',
}
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)

# The version of the cache's layout and of the graphs it holds: a stamp of
# another format is built again.
CACHE_FORMAT = 1
CACHE_FOLDER = 'keras-cache'
INPUT_NAME = 'images'

CONV_KINDS = ('Conv2D', 'SeparableConv2D', 'DepthwiseConv2D', 'Conv2DTranspose')
NORM_KINDS = ('BatchNormalization',)
ACTIVATION_KINDS = ('ReLU', 'ReLU6', 'Activation', 'LeakyReLU', 'PReLU', 'ELU', 'ThresholdedReLU')
# Layers that scale pixels themselves: a model starting with one defaults to preprocess 'none'.
SCALING_KINDS = ('Rescaling', 'Normalization')
# Convolutions over something other than an image.
OTHER_CONV_KINDS = ('Conv1D', 'Conv3D', 'SeparableConv1D', 'DepthwiseConv1D', 'Conv1DTranspose',
                    'Conv3DTranspose', 'ConvLSTM1D', 'ConvLSTM2D', 'ConvLSTM3D')
MODEL_KINDS = ('Model', 'Functional', 'Sequential')
# Ops a SavedModel's units start at.
CONV_OPS = ('Conv2D', 'DepthwiseConv2dNative', 'Conv2DBackpropInput')
BIAS_OPS = ('BiasAdd', 'Add', 'AddV2')
NORM_OPS = ('FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3')

UNSAFE_HINT = ('opt in with --unsafe (command line) or unsafe=True (Python) only if you trust the file: '
               'that runs code from it')


# ---------------------------------------------------------------------------
# Which files are models

def is_model_path(path):
    """True for what load() takes: a .keras file, an .h5/.hdf5 full model, a SavedModel folder.

    False for a weight-only h5 (such as a VGG16 weight file, which takes
    --weights), a .tfmodel and anything else. A .keras/.h5 path that does not
    exist, or an h5 that is not HDF5 at all, counts as meant for load(),
    which then says what is wrong.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, 'saved_model.pb'))
    extension = os.path.splitext(path)[1].lower()
    if extension == '.keras':
        return True
    if extension in ('.h5', '.hdf5'):
        return _h5_kind(path) != 'weights'
    return False


def _h5_kind(path):
    """'model' (an h5 with a model_config), 'weights' (HDF5 without one) or 'unreadable'."""
    import h5py
    try:
        with h5py.File(path, 'r') as h5:
            return 'model' if 'model_config' in h5.attrs else 'weights'
    except OSError:
        return 'unreadable'


def _model_format(path):
    """'keras', 'h5' or 'savedmodel' for a model path; FileNotFoundError / ValueError with the next step."""
    name = os.path.basename(os.path.normpath(path))
    if not os.path.exists(path):
        raise FileNotFoundError('no Keras model at %s; check the path' % path)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, 'saved_model.pb')):
            return 'savedmodel'
        raise ValueError('%s is a folder without saved_model.pb, so not a SavedModel; give a .keras or .h5 '
                         'model file or a SavedModel folder' % path)
    extension = os.path.splitext(path)[1].lower()
    if extension == '.keras':
        try:
            with zipfile.ZipFile(path) as archive:
                if 'config.json' in archive.namelist():
                    return 'keras'
        except (zipfile.BadZipFile, OSError):
            pass
        raise ValueError('%s is not a Keras model file (no zip archive with a config.json: empty or corrupt); '
                         'save the model again with model.save(%r)' % (path, name))
    if extension in ('.h5', '.hdf5'):
        kind = _h5_kind(path)
        if kind == 'model':
            return 'h5'
        if kind == 'weights':
            raise ValueError('%s holds weights only (no model_config), not a whole model; for VGG16 weights '
                             'use --weights %s, for another network save the whole model with model.save()'
                             % (path, path))
        raise ValueError('%s is not a readable HDF5 file (corrupt, or not a model); save the model again '
                         'with model.save(%r)' % (path, name))
    raise ValueError('%s is not a Keras model: expected a .keras or .h5/.hdf5 file or a SavedModel folder '
                     '(a .tfmodel graph is loaded without keras_model)' % path)


def model_md5(path):
    """Hex md5 of a model file, or for a SavedModel folder of its saved_model.pb and variables files."""
    if not os.path.isdir(path):
        return files.md5sum(path)
    digest = hashlib.md5()
    variables = os.path.join(path, 'variables')
    names = ['saved_model.pb'] + sorted(os.path.relpath(os.path.join(folder, name), path)
                                        for folder, _, names in os.walk(variables) for name in names)
    for name in names:
        # The name goes in too, so that moving bytes between files changes the sum.
        digest.update(name.encode() + b'\0' + files.md5sum(os.path.join(path, name)).encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# Safe mode, read from the file's config before Keras sees it

def _model_config(path, fmt):
    """The model's config (parsed JSON) from the file, read without Keras; None for a SavedModel."""
    if fmt == 'keras':
        with zipfile.ZipFile(path) as archive:
            text = archive.read('config.json')
    elif fmt == 'h5':
        import h5py
        with h5py.File(path, 'r') as h5:
            text = h5.attrs['model_config']
    else:
        return None
    try:
        return json.loads(text.decode('utf8') if isinstance(text, bytes) else text)
    except ValueError as error:
        raise ValueError('%s: its model config is not valid JSON (%s); save the model again'
                         % (path, error)) from None


def unsafe_reason(config, known_layer=None):
    """Why safe mode refuses a model config (str), or None.

    A Lambda layer holds Python code; a class whose `module` is outside Keras
    (Keras 3 configs) or, in a legacy config without modules, a layer class
    for which known_layer(class_name) is False, is custom code.
    """
    found = []

    def visit(value, in_layers):
        if isinstance(value, dict):
            kind = value.get('class_name')
            label = (value.get('config') or {}).get('name') if isinstance(value.get('config'), dict) else None
            module = value.get('module')
            if kind == 'Lambda':
                found.append("layer %r is a Lambda, whose Python code is stored in the file" % label)
            elif isinstance(kind, str) and isinstance(module, str) and not module.startswith('keras'):
                found.append('%s is a custom class (module %s)' % ('%s %r' % (kind, label) if label else kind, module))
            elif (in_layers and isinstance(kind, str) and 'module' not in value and known_layer is not None
                  and not known_layer(kind)):
                found.append('layer %r is of class %s, unknown to Keras (custom code)' % (label, kind))
            for key, item in value.items():
                visit(item, key == 'layers')
        elif isinstance(value, list):
            for item in value:
                visit(item, in_layers)

    visit(config, False)
    if not found:
        return None
    more = ' (and %d more)' % (len(found) - 1) if len(found) > 1 else ''
    return 'Keras safe mode refuses it: %s%s' % (found[0], more)


# ---------------------------------------------------------------------------
# Loading

def load(path, preprocess=None, *, unsafe=False, cache_dir=None, threads=None, quiet=False, all_layers=False):
    """The Network of a Keras model file or SavedModel folder, frozen once and then taken from the cache.

    path: a .keras file, an .h5/.hdf5 full model or a SavedModel folder.
    preprocess: the input scaling the model was trained with, one of
      PREPROCESS_CHOICES; None is allowed only for a model whose first layer
      scales pixels itself (Rescaling, Normalization), and means 'none'.
    unsafe: allow Lambda layers and custom classes; that runs code from the file.
    cache_dir: where NAME.tfmodel and its stamp go (default: keras-cache beside the model).
    all_layers: every layer with a 4-D output is a unit, not only the convolution units.
    Returns a network.Network: input images:0 float32 [N, H, W, C], C = 1 or 3,
    pixels 0..255; H = W the model's input size, or None when it takes any size.
    ValueError (FileNotFoundError for a missing path) in one line with the
    next step; nothing is written for a model that fails.
    """
    path = os.path.abspath(os.fspath(path))
    fmt = _model_format(path)
    if preprocess is not None and preprocess not in PREPROCESS_CHOICES:
        raise ValueError('preprocess=%r: expected one of %s' % (preprocess, _preprocess_help()))
    md5 = model_md5(path)
    name = os.path.basename(os.path.normpath(path))
    candidates = [cache_dir] if cache_dir else _cache_folders(path)
    for folder in candidates:
        stamp = _reusable_stamp(folder, name, md5, preprocess, unsafe, path)
        if stamp is not None:
            return _network(os.path.join(folder, name + '.tfmodel'), stamp, all_layers, threads)

    # The graph is made in memory before the cache is touched: every error a
    # user can cause is raised there, and a failed load writes nothing.
    plan = _Plan(path, fmt, preprocess, unsafe, md5, quiet)
    folder = _writable_folder(candidates)
    graph_path = os.path.join(folder, name + '.tfmodel')
    with files.exclusive_lock(graph_path + '.lock', timeout=600, quiet=quiet):
        # Another process may have written the same graph while this one froze it.
        stamp = _reusable_stamp(folder, name, md5, plan.preprocess, unsafe, path)
        if stamp is None:
            data = plan.graph_def.SerializeToString()
            stamp = dict(plan.stamp, graph_md5=hashlib.md5(data).hexdigest())
            files.write_atomic(graph_path, lambda f: f.write(data))
            text = json.dumps(stamp, indent=1).encode()
            files.write_atomic(graph_path + '.json', lambda f: f.write(text))
    return _network(graph_path, stamp, all_layers, threads)


def _preprocess_help():
    return '; '.join('%s: %s' % (choice, PREPROCESS_MEANINGS[choice]) for choice in PREPROCESS_CHOICES)


def _resolve_preprocess(preprocess, path, own_scaling, channels):
    """The preprocessing to build with; ValueError when it is required or does not fit the input."""
    if preprocess is None:
        if own_scaling:
            return 'none'
        raise ValueError('%s: say how its inputs were scaled in training with --preprocess (preprocess=...): %s'
                         % (os.path.basename(path), _preprocess_help()))
    if channels == 1 and preprocess in ('caffe', 'torch'):
        raise ValueError("%s takes greyscale (1-channel) images; preprocess %r is defined for RGB only: use "
                         "'tf', 'unit' or 'none'" % (os.path.basename(path), preprocess))
    return preprocess


def _cache_folders(path):
    """Cache folders for a model, in order of preference: beside it, then under ~/.cache."""
    parent = os.path.dirname(os.path.normpath(path))
    home_cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    # The model's folder in the fallback's name keeps two x.h5 from different folders apart.
    key = hashlib.md5(parent.encode()).hexdigest()[:12]
    return [os.path.join(parent, CACHE_FOLDER), os.path.join(home_cache, 'filtervis', CACHE_FOLDER, key)]


def _writable_folder(candidates):
    """The first candidate folder that exists or can be made and is writable (made here)."""
    errors = []
    for folder in candidates:
        try:
            os.makedirs(folder, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
            errors.append('%s: not writable' % folder)
        except OSError as error:
            errors.append('%s: %s' % (folder, error.strerror or error))
    raise files.WriteError('cannot make a cache folder for the frozen graph (%s); pass cache_dir= a writable '
                           'folder' % '; '.join(errors))


def _reusable_stamp(folder, name, md5, preprocess, unsafe, path):
    """The stamp of a cached graph made from these bytes with this preprocessing, or None.

    The graph file is checked against the md5 in its stamp, so a graph whose
    stamp belongs to another build is never used. Raises the refusal a safe
    load of this model gives, and the preprocessing errors, without Keras.
    """
    graph_path = os.path.join(folder, name + '.tfmodel')
    try:
        with open(graph_path + '.json') as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return None
    if stamp.get('format') != CACHE_FORMAT or stamp.get('model_md5') != md5:
        return None
    if stamp.get('refusal') and not unsafe:
        raise ValueError('%s: %s; %s' % (name, stamp['refusal'], UNSAFE_HINT))
    wanted = _resolve_preprocess(preprocess, path, stamp['own_scaling'], stamp['input_channels'])
    if stamp.get('preprocess') != wanted:
        return None
    try:
        actual = files.md5sum(graph_path)
    except OSError:
        return None
    return stamp if actual == stamp.get('graph_md5') else None


def _network(graph_path, stamp, all_layers, threads):
    """The Network of a cached graph and its stamp."""
    units = [network.Unit(**u) for u in (stamp['units'] if all_layers else stamp['defaults'])]
    graph_def = network.load_graph_def(graph_path, fix='delete it so that it is built again')
    return network.Network(graph_def, units, input_name=INPUT_NAME + ':0', description=stamp['description'],
                           md5=stamp['model_md5'], preprocess=stamp['preprocess'], path=graph_path,
                           threads=threads)


# ---------------------------------------------------------------------------
# Building: Keras model -> one function images -> units -> frozen GraphDef

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


class _Plan:
    """A model loaded, checked and frozen in memory: .graph_def (GraphDef) and .stamp (dict) for the cache.

    Everything a user can get wrong (file, safe mode, input, preprocess, no
    unit) raises here, before the cache is touched, so that a failed load
    leaves nothing behind.
    """

    def __init__(self, path, fmt, preprocess, unsafe, md5, quiet=True):
        keras, tf2 = _keras()
        self.path, self.fmt, self.md5, self.unsafe = path, fmt, md5, unsafe
        self.name = os.path.basename(os.path.normpath(path))
        config = _model_config(path, fmt)
        self.refusal = unsafe_reason(config, lambda kind: kind in MODEL_KINDS or hasattr(keras.layers, kind)) \
            if config is not None else None
        if self.refusal and not unsafe:
            raise ValueError('%s: %s; %s' % (self.name, self.refusal, UNSAFE_HINT))
        with tf2_mode():
            if fmt == 'savedmodel':
                self._load_savedmodel(tf2)
            else:
                self._load_keras(keras)
            self.preprocess = _resolve_preprocess(preprocess, path, self.own_scaling, self.channels)
            if not quiet:
                print('Freezing %s once (later loads read the cache)' % self.name, file=sys.stderr, flush=True)
            if fmt == 'savedmodel':
                self._freeze_savedmodel()
            else:
                self._trace_function(keras, tf2)
                self._freeze_keras()
        self.graph_def, self.stamp = self._checked()

    # -- checks shared by both routes

    def _check_input(self, shape, what):
        shape = tuple(shape)
        if len(shape) != 4:
            raise ValueError('%s: %s has shape %s, rank %d; expected an image batch [N, H, W, C]'
                             % (self.name, what, shape, len(shape)))
        if shape[3] not in network.INPUT_CHANNELS:
            raise ValueError('%s: %s has %s channels (shape %s); only greyscale (1) and RGB (3) images are '
                             'supported' % (self.name, what, shape[3], shape))
        if shape[1] != shape[2]:
            raise ValueError('%s: %s is %sx%s; only square inputs (or inputs of any size) are supported'
                             % (self.name, what, shape[1], shape[2]))
        self.size, self.channels = shape[1], shape[3]

    # -- Keras files

    def _load_keras(self, keras):
        try:
            model = keras.models.load_model(self.path, compile=False, safe_mode=not self.unsafe)
        except Exception as error:  # Keras raises many kinds for a file it cannot read
            raise ValueError('%s could not be loaded by Keras %s (%s: %s); check that it is a whole model '
                             'saved with model.save()' % (self.name, keras.__version__, type(error).__name__,
                                                          _first_line(error))) from None
        self.model = model
        if len(model.inputs) != 1:
            raise ValueError('%s has %d inputs; only models with one image input are supported'
                             % (self.name, len(model.inputs)))
        self._check_input(model.inputs[0].shape, 'its input')
        layers = list(_flat_layers(model, keras))
        for layer in layers:
            kind = type(layer).__name__
            if kind in OTHER_CONV_KINDS:
                raise ValueError('%s: layer %r is a %s; only 2-D convolutions over images are supported'
                                 % (self.name, layer.name, kind))
            if getattr(layer, 'data_format', 'channels_last') == 'channels_first':
                raise ValueError("%s: layer %r uses data_format 'channels_first'; only channels_last "
                                 "(NHWC) models are supported" % (self.name, layer.name))
        first = next((layer for layer in layers if type(layer).__name__ != 'InputLayer'), None)
        self.own_scaling = first is not None and type(first).__name__ in SCALING_KINDS

    def _trace_function(self, keras, tf2):
        """Trace images -> preprocessing -> every layer once, into self.concrete; finds the units."""
        size, channels = self.size, self.channels
        self.found = None

        def forward(images):
            calls = []
            outputs = _run_model(self.model, _scale(images, self.preprocess, channels), calls, keras, tf2)
            # Network order is the order of model.layers (nested models entered), as model.summary() shows it.
            order = {id(layer): index for index, layer in enumerate(_flat_layers(self.model, keras))}
            calls.sort(key=lambda call: order.get(id(call[0]), len(order)))
            self.found = _units_of_calls(calls, tf2.nest.flatten(outputs), tf2)
            return [tensor for unit in self.found[0] for tensor in unit[1:3] if tensor is not None]

        function = tf2.function(forward, input_signature=[tf2.TensorSpec([None, size, size, channels],
                                                                           tf2.float32, name=INPUT_NAME)],
                                autograph=False)
        self.concrete = function.get_concrete_function()
        units, defaults = self.found
        if not units:
            raise ValueError('%s has no layer with a 4-D output [N, h, w, channels], so nothing to visualize'
                             % self.name)
        self.units, self.defaults = units, defaults

    def _checked(self):
        """(GraphDef, stamp dict): the frozen graph, and what the cache records of it, with the units
        geometry.py can follow."""
        graph_def = self.graph_def
        units, defaults, left_out = _followable(graph_def, self.units, self.defaults)
        if not defaults:
            raise ValueError('%s: no convolution unit whose receptive field geometry.py can follow (%s)'
                             % (self.name, '; '.join('%s: %s' % item for item in left_out.items()) or 'none'))
        stamp = {'format': CACHE_FORMAT, 'model': self.name, 'model_md5': self.md5, 'preprocess': self.preprocess,
                 'own_scaling': self.own_scaling, 'unsafe': self.unsafe, 'refusal': self.refusal,
                 'input_size': self.size, 'input_channels': self.channels,
                 'description': '%s (%s, preprocess %s)' % (self.name, 'SavedModel' if self.fmt == 'savedmodel'
                                                             else 'Keras', self.preprocess),
                 'units': [asdict(u) for u in units], 'defaults': [asdict(u) for u in defaults],
                 'left_out': left_out, 'left_out_defaults': [u.name for u in self.defaults if u.name in left_out]}
        return graph_def, stamp

    def _freeze_keras(self):
        """self.graph_def, self.units and self.defaults (network.Unit lists) from the traced function."""
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
        frozen = convert_variables_to_constants_v2(self.concrete)
        self.graph_def = _without_custom_gradients(frozen.graph.as_graph_def())
        self.units = [network.Unit(name, _tensor_name(tensor), _tensor_name(pre), kind)
                      for name, tensor, pre, kind in self.units]
        by_name = {u.name: u for u in self.units}
        self.defaults = [network.Unit(name, by_name[name].tensor, by_name[name].pre, kind)
                         for name, kind in self.defaults]

    # -- SavedModel folders

    def _load_savedmodel(self, tf2):
        try:
            loaded = tf2.saved_model.load(self.path)
        except Exception as error:  # TensorFlow raises many kinds for a folder it cannot read
            raise ValueError('%s could not be loaded as a SavedModel (%s: %s); save it again'
                             % (self.name, type(error).__name__, _first_line(error))) from None
        signatures = dict(loaded.signatures)
        if not signatures:
            raise ValueError('%s has no serving signature, so its graph cannot be frozen; save it with '
                             'model.export() or tf.saved_model.save(..., signatures=...)' % self.name)
        key = 'serving_default' if 'serving_default' in signatures else sorted(signatures)[0]
        self.signature = signatures[key]
        self.loaded = loaded   # keeps the variables alive
        args, kwargs = self.signature.structured_input_signature
        specs = list(args) + list(kwargs.values())
        if len(specs) != 1:
            raise ValueError('%s: signature %s takes %d inputs; only models with one image input are supported'
                             % (self.name, key, len(specs)))
        self._check_input(specs[0].shape.as_list(), 'the input of signature %s' % key)
        self.own_scaling = False

    def _freeze_savedmodel(self):
        """self.graph_def, self.units and self.defaults: the signature frozen behind images -> preprocessing,
        and its conv units."""
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
        frozen = convert_variables_to_constants_v2(self.signature)
        inner = _without_custom_gradients(frozen.graph.as_graph_def())
        placeholders = [node.name for node in inner.node if node.op == 'Placeholder']
        graph = tf.Graph()
        with graph.as_default():
            images = tf.placeholder(tf.float32, [None, self.size, self.size, self.channels], name=INPUT_NAME)
            tf.import_graph_def(inner, input_map={placeholders[0] + ':0': _scale(images, self.preprocess,
                                                                                  self.channels)}, name='model')
            chains = _op_chains(graph)
            if not chains:
                calls = sorted({op.type for op in graph.get_operations() if 'Call' in op.type})
                raise ValueError('%s: the frozen serving signature holds no convolution op%s, so no unit can be '
                                 'reached; save the model as .keras instead' % (
                                     self.name, ' (only calls: %s)' % ', '.join(calls) if calls else ''))
            units, used = [], set()
            for conv_op, end, pre in chains:
                # Inlined calls leave their names in front of every op: not part of what the model calls it.
                name = re.sub(r'^((Stateful)?PartitionedCall(_\d+)?/)+', '', conv_op.name[len('model/'):])
                safe = _unique(_safe_name(name), used)
                tensor = tf.identity(end, name='units/' + safe)
                pre_tensor = tf.identity(pre, name='units/' + safe + '/pre') if pre is not None else None
                units.append(network.Unit(name, tensor.name, pre_tensor.name if pre_tensor is not None else None,
                                          _KERAS_KIND.get(conv_op.type, conv_op.type)))
        self.graph_def, self.units, self.defaults = graph.as_graph_def(), units, units


_KERAS_KIND = {'Conv2D': 'Conv2D', 'DepthwiseConv2dNative': 'DepthwiseConv2D', 'Conv2DBackpropInput': 'Conv2DTranspose'}


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _tensor_name(tensor):
    return None if tensor is None else tensor.name


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


def _scale(images_t, preprocess, channels):
    """The model's input from images float32 [N, H, W, C], 0..255, by PREPROCESS_CHOICES."""
    if preprocess == 'tf':
        return images_t / 127.5 - 1.0
    if preprocess == 'unit':
        return images_t / 255.0
    if preprocess == 'torch':
        return (images_t / 255.0 - tf.constant(TORCH_MEAN, tf.float32)) / tf.constant(TORCH_STD, tf.float32)
    if preprocess == 'caffe':
        return tf.reverse(images_t, axis=[3]) - tf.constant(CAFFE_MEAN_BGR, tf.float32)
    return tf.identity(images_t)


def _is_graph_model(layer, keras):
    """True for a Functional or Sequential model, whose layers the walk enters."""
    if isinstance(layer, keras.Sequential):
        return True
    return isinstance(layer, keras.Model) and hasattr(layer, '_run_through_graph') and hasattr(layer, '_nodes_by_depth')


def _flat_layers(model, keras):
    """Every layer of model, nested models entered (and listed after their layers)."""
    for layer in model.layers:
        if _is_graph_model(layer, keras):
            yield from _flat_layers(layer, keras)
        yield layer


def _run_model(model, inputs, calls, keras, tf2, scope=()):
    """model's outputs on inputs, layer by layer in inference mode; each call is appended to `calls`.

    Runs the model's own graph walk (Functional._run_through_graph, what
    Functional.call uses), entering nested models so that their layers'
    outputs are seen, and records (layer, scope, inputs, outputs) per call.
    """
    if isinstance(model, keras.Sequential) and getattr(model, '_functional', None) is None:
        x = inputs
        for layer in model.layers:
            x = _call_layer(layer, [x], {}, calls, keras, tf2, scope + (model.name,))
        return x
    graph_model = model._functional if isinstance(model, keras.Sequential) else model
    inputs = graph_model._standardize_inputs(inputs)

    def operation_fn(layer):
        return lambda *args, **kwargs: _call_layer(layer, args, kwargs, calls, keras, tf2, scope + (model.name,))

    outputs = graph_model._run_through_graph(inputs, operation_fn=operation_fn)
    return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 else outputs


def _call_layer(layer, args, kwargs, calls, keras, tf2, scope):
    if _is_graph_model(layer, keras):
        x = args[0] if len(args) == 1 else list(args)
        outputs = _run_model(layer, x, calls, keras, tf2, scope)
    elif _dilation(layer) > 1 and type(layer).__name__ in ('Conv2D', 'DepthwiseConv2D', 'SeparableConv2D'):
        outputs = _dilated_conv(layer, args[0], tf2)
    else:
        if 'training' in inspect.signature(layer.call).parameters:
            kwargs = dict(kwargs, training=False)
        outputs = layer(*args, **kwargs)
    flat_inputs = [t for t in tf2.nest.flatten((args, kwargs)) if tf2.is_tensor(t)]
    calls.append((layer, scope, flat_inputs, tf2.nest.flatten(outputs)))
    return outputs


def _dilation(layer):
    rate = getattr(layer, 'dilation_rate', 1)
    return max(rate) if isinstance(rate, (tuple, list)) else rate


def _dilated_conv(layer, x, tf2):
    """A dilated Conv2D, DepthwiseConv2D or SeparableConv2D as one dilated Conv2D op each.

    Keras computes dilated convolutions through SpaceToBatchND and
    BatchToSpaceND, which moves pixels in a way geometry.py does not follow
    and bfloat16 cannot run; the Conv2D op with dilations gives the same
    values. A depthwise kernel becomes a block-diagonal Conv2D kernel, because
    the CPU gradient of DepthwiseConv2dNative with dilations is wrong.
    """
    kind = type(layer).__name__
    strides = [1] + list(layer.strides) + [1]
    dilations = [1] + list(layer.dilation_rate) + [1]
    padding = layer.padding.upper()

    def depthwise_as_conv(kernel):
        k_h, k_w, channels, multiplier = kernel.shape.as_list()
        eye = tf2.eye(channels, dtype=kernel.dtype)                                 # [C, C]
        full = kernel[:, :, :, None, :] * eye[None, None, :, :, None]              # [kh, kw, C, C, m]
        return tf2.reshape(full, [k_h, k_w, channels, channels * multiplier])

    if kind == 'Conv2D':
        if getattr(layer, 'groups', 1) != 1:
            raise ValueError('layer %r: a dilated Conv2D with groups > 1 is not supported' % layer.name)
        y = tf2.nn.conv2d(x, tf2.convert_to_tensor(layer.kernel), strides, padding, dilations=dilations)
    elif kind == 'DepthwiseConv2D':
        y = tf2.nn.conv2d(x, depthwise_as_conv(tf2.convert_to_tensor(layer.kernel)), strides, padding,
                          dilations=dilations)
    else:
        y = tf2.nn.conv2d(x, depthwise_as_conv(tf2.convert_to_tensor(layer.depthwise_kernel)), strides, padding,
                          dilations=dilations)
        y = tf2.nn.conv2d(y, tf2.convert_to_tensor(layer.pointwise_kernel), 1, 'VALID')
    if layer.use_bias:
        y = tf2.nn.bias_add(y, tf2.convert_to_tensor(layer.bias))
    return layer.activation(y) if layer.activation is not None else y


def _units_of_calls(calls, outputs, tf2):
    """(units, defaults) from the recorded calls, inside the trace.

    units: [(name, unit tensor, pre tensor or None, kind)] for every layer
    with a 4-D output (its first call), as Identity ops named 'units/...';
    defaults: [(name, conv kind)], the convolution units.
    """
    consumers = {}
    for layer, _, inputs, _ in calls:
        for tensor in inputs:
            consumers.setdefault(id(tensor), []).append(layer)
    for tensor in outputs:
        consumers.setdefault(id(tensor), []).append(None)   # the model's outputs are used outside
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
        units.append((name, unit_t, pre_t, type(layer).__name__))

    by_layer = {call[0]: call for call in four_d}
    defaults = []
    for layer, _, _, outputs in four_d:
        if type(layer).__name__ not in CONV_KINDS:
            continue
        end, tensor = layer, outputs[0]
        for allowed in (NORM_KINDS, ACTIVATION_KINDS):
            users = consumers.get(id(tensor), [])
            if len(users) != 1 or users[0] is None or type(users[0]).__name__ not in allowed:
                continue
            user_call = by_layer.get(users[0])
            if user_call is None or len(user_call[2]) != 1:
                continue
            end, tensor = users[0], user_call[3][0]
        defaults.append((names[end], type(layer).__name__))
    return units, defaults


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


def _followable(graph_def, units, defaults):
    """(units, defaults, left_out): the units geometry.py can follow, and {name: why} for the others."""
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name='')
    left_out = {}
    try:
        geometry.smallest_input(graph, INPUT_NAME + ':0', [u.tensor for u in units])
    except ValueError:   # GeometryError is one: find the units it is about, one by one
        for unit in units:
            try:
                geometry.smallest_input(graph, INPUT_NAME + ':0', [unit.tensor])
            except ValueError as error:
                left_out[unit.name] = str(error)
    return ([u for u in units if u.name not in left_out], [u for u in defaults if u.name not in left_out],
            left_out)


def _op_chains(graph):
    """[(conv op, end tensor, pre tensor)] for a frozen graph: each conv op followed, while it is the only
    consumer, through BatchToSpaceND (dilation), a bias, a batch norm and one activation op."""
    chains = []
    for op in graph.get_operations():
        if op.type not in CONV_OPS or not op.name.startswith('model/'):
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


# ---------------------------------------------------------------------------
# Listing

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
    if not net.path:
        return None
    try:
        with open(net.path + '.json') as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return None
    return stamp if stamp.get('model_md5') == net.md5 else None

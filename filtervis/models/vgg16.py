"""
VGG16 as a TensorFlow 1.x graph: the contract that the blog post's code
relies on, and VGG16's layout (its 13 conv layers and where the pools sit),
which lives here and nowhere else. `VGG16` is an adapter over
network.Network, so every module above takes it like any other network.

The model is a frozen GraphDef file, `vgg16.tfmodel`, in `data_dir` (the
environment variable VGG16_DIR wins when set). It is either the post's
original graph (`python download.py --source cadl`) or, by default, built here
from the 13 conv layers of a Keras VGG16 weight file (h5), which holds 59 MB
instead of 550: the classifier head is not needed to visualize conv filters.

    python download.py                     # fetch ImageNet conv weights, build vgg16.tfmodel
    python download.py --weights my.h5 --preprocess unit

    from filtervis.models import vgg16
    vgg16.maybe_download()
    model = vgg16.VGG16()
    layer_t = model.get_layer_tensors([5])[0]       # conv3_2, post-ReLU

Graph contract (what other code may rely on):
- `images:0`: float32 [N, H, W, 3], RGB, pixel values 0..255, any H and W;
  the preprocessing the weights were trained with lives inside the graph.
- `convX_Y/convX_Y:0`: the 13 conv layers after ReLU, `conv1_1` ... `conv5_3`;
  `convX_Y/BiasAdd:0` is the same layer before ReLU.
"""

import os

import numpy as np

from filtervis.core import network
from filtervis.models import build
from filtervis.models import preprocess as scaling   # apart from the functions' `preprocess` arguments
from filtervis.util import download, files, quiet

tf = quiet.import_tensorflow()   # tensorflow.compat.v1, graph mode, start-up lines held back


def _default_data_dir():
    """models/ in the clone when the package runs from one (beside visualize.py and vgg16.py, as the post has
    it), else ~/.cache/filtervis/models: an installed package never writes into site-packages."""
    clone = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if all(os.path.isfile(os.path.join(clone, name)) for name in ('visualize.py', 'vgg16.py')):
        return os.path.join(clone, 'models')
    cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(cache, 'filtervis', 'models')


# Where model files live. VGG16_DIR, when set, wins (read at call time, so a
# test or a notebook can point it elsewhere without re-importing).
data_dir = _default_data_dir()

MODEL_FILENAME = 'vgg16.tfmodel'
# Beside a graph built from h5 weights: which weights and preprocessing made
# it, so that new weights never meet a stale graph.
STAMP_SUFFIX = build.STAMP_SUFFIX

CONV_LAYERS = ('conv1_1', 'conv1_2',
               'conv2_1', 'conv2_2',
               'conv3_1', 'conv3_2', 'conv3_3',
               'conv4_1', 'conv4_2', 'conv4_3',
               'conv5_1', 'conv5_2', 'conv5_3')
# Keras names the same layers blockB_convC.
KERAS_NAMES = {name: 'block%s_conv%s' % tuple(name[4:].split('_')) for name in CONV_LAYERS}
# A 2x2 max pool (stride 2, 'VALID' as in Keras) follows the last conv of each block.
POOL_AFTER = ('conv1_2', 'conv2_2', 'conv3_3', 'conv4_3', 'conv5_3')


def model_dir():
    """The folder in use for model files: $VGG16_DIR if set, else `data_dir`."""
    return os.environ.get('VGG16_DIR') or data_dir


def model_path(dir=None):
    return os.path.join(dir or model_dir(), MODEL_FILENAME)


# ---------------------------------------------------------------------------
# Building a graph from conv weights

def build_graph_def(weights, preprocess='caffe'):
    """A frozen VGG16 GraphDef (the contract above) holding the given weights.

    weights: sequence of (kernel, bias) for the first len(weights) conv layers
      in order (conv1_1, conv1_2, ...), kernel float32 [3, 3, in, out]
      (any odd size works), bias float32 [out]. Fewer than 13 layers make a
      truncated VGG16; tests use that to build small models.
    preprocess: one of preprocess.VGG16_CHOICES: 'caffe' (RGB->BGR minus the
      ImageNet mean), 'unit' (pixels/255) or 'none' (the first conv sees raw 0..255).
    """
    scaling.check(preprocess, scaling.VGG16_CHOICES)
    if not 1 <= len(weights) <= len(CONV_LAYERS):
        raise ValueError('got %d conv layers of weights; VGG16 has 1 to %d' % (len(weights), len(CONV_LAYERS)))
    graph = tf.Graph()
    with graph.as_default():
        images = tf.placeholder(tf.float32, [None, None, None, 3], name='images')
        x = scaling.scale(images, preprocess)
        channels = 3
        for block_layer, (kernel, bias) in zip(CONV_LAYERS, weights):
            kernel = np.asarray(kernel, np.float32)
            bias = np.asarray(bias, np.float32)
            if kernel.ndim != 4 or kernel.shape[2] != channels or bias.shape != (kernel.shape[3],):
                raise ValueError(
                    'layer %s: kernel %s and bias %s do not fit; expected kernel [k, k, %d, out] and bias [out]'
                    % (block_layer, kernel.shape, bias.shape, channels))
            channels = kernel.shape[3]
            with tf.name_scope(block_layer):
                x = tf.nn.conv2d(x, tf.constant(kernel, name='filter'), [1, 1, 1, 1], 'SAME', name='Conv2D')
                x = tf.nn.bias_add(x, tf.constant(bias, name='biases'), name='BiasAdd')
                x = tf.nn.relu(x, name=block_layer)
            if block_layer in POOL_AFTER:
                x = tf.nn.max_pool2d(x, 2, 2, 'VALID', name='pool' + block_layer[4])
    return graph.as_graph_def()


def _attr_names(value):
    return [v.decode('utf8') if isinstance(v, bytes) else str(v) for v in value]


def read_h5_weights(path):
    """The 13 (kernel, bias) pairs of a Keras VGG16 weight file, conv1_1 first.

    Read the way Keras reads its own files: the root attribute `layer_names`,
    then on each layer group the attribute `weight_names`, which lists that
    layer's datasets in order (kernel, then bias). Dataset names differ between
    Keras versions ('block1_conv1_W_1:0', 'block1_conv1/kernel:0', ...), so
    none is hard-coded. Full models saved with model.save() keep the same
    layout under the group 'model_weights'.
    """
    import h5py
    try:
        h5 = h5py.File(path, 'r')
    except FileNotFoundError:
        raise
    except OSError as error:
        raise ValueError('%s is not a readable h5 weight file (%s); fetch it again, '
                         'e.g. `python download.py --force`' % (path, error)) from None
    with h5:
        root = h5['model_weights'] if 'model_weights' in h5 and 'layer_names' not in h5.attrs else h5
        if 'layer_names' not in root.attrs:
            raise ValueError('%s has no `layer_names` attribute: not a Keras weight file' % path)
        with_weights = []
        for layer in _attr_names(root.attrs['layer_names']):
            names = _attr_names(root[layer].attrs.get('weight_names', []))
            if names:
                with_weights.append((layer, [np.asarray(root[layer][n]) for n in names]))
    if len(with_weights) < len(CONV_LAYERS):
        raise ValueError('%s holds %d layers with weights; a VGG16 has %d conv layers (%s)'
                         % (path, len(with_weights), len(CONV_LAYERS), ', '.join(l for l, _ in with_weights)))
    weights, channels = [], 3
    # Files of the full model also hold the classifier (fc1, fc2, predictions): take the conv layers.
    for block_layer, (layer, arrays) in zip(CONV_LAYERS, with_weights):
        if len(arrays) != 2:
            raise ValueError('%s, layer %s (our %s): %d weight arrays, expected kernel and bias'
                             % (path, layer, block_layer, len(arrays)))
        kernel, bias = arrays
        if kernel.shape[:3] != (3, 3, channels) or bias.shape != kernel.shape[3:]:
            raise ValueError('%s, layer %s (our %s): kernel %s and bias %s; expected kernel [3, 3, %d, out] '
                             'and bias [out]' % (path, layer, block_layer, kernel.shape, bias.shape, channels))
        channels = kernel.shape[3]
        weights.append((kernel, bias))
    return weights


def convert_h5(weights_path, preprocess, out_path=None):
    """Build vgg16.tfmodel from an h5 weight file and record what made it.

    Returns the path of the graph. The stamp file beside it (`.json`) holds the
    weight file's name, size and md5 and the preprocessing, so maybe_download()
    rebuilds the graph when any of them changes.
    """
    out_path = out_path or model_path()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    build.write_graph(out_path, *_graph_and_stamp(weights_path, preprocess))
    return out_path


def _graph_and_stamp(weights_path, preprocess):
    """(GraphDef, stamp dict) of the graph built from an h5 weight file."""
    graph_def = build_graph_def(read_h5_weights(weights_path), preprocess)
    stamp = {'weights': os.path.basename(weights_path),
             'weights_path': os.path.abspath(weights_path),
             'size': os.path.getsize(weights_path),
             'md5': files.md5sum(weights_path),
             'preprocess': preprocess}
    return graph_def, stamp


def read_stamp(path=None):
    """What made the graph at `path` (dict), or None for a graph loaded as is."""
    return build.read_stamp(path or model_path())


def _stamp_matches(stamp, weights_path, preprocess):
    if not stamp or stamp.get('preprocess') != preprocess:
        return False
    if stamp.get('size') != os.path.getsize(weights_path):
        return False
    return stamp.get('md5') == files.md5sum(weights_path)


# ---------------------------------------------------------------------------
# Loading and checking a graph

REQUIRED_TENSORS = ('images:0',) + tuple('%s/%s:0' % (n, n) for n in CONV_LAYERS)


def load_graph_def(path):
    """Parse a frozen VGG16 GraphDef file; clear errors for missing or corrupt files."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            'no model at %s. Run `python download.py` to fetch the weights and build it '
            '(or `python download.py --weights FILE.h5 --preprocess %s` for your own), '
            'or set VGG16_DIR to the folder that holds vgg16.tfmodel.' % (path, '|'.join(scaling.VGG16_CHOICES)))
    graph_def = network.load_graph_def(path, fix='delete it and run `python download.py --force`')
    check_graph_def(graph_def, path)
    return graph_def


def check_graph_def(graph_def, path='the graph', required=('images:0', 'conv1_1/conv1_1:0')):
    """Raise ValueError unless graph_def holds the `required` tensors.

    Loading asks only for `images` and conv1_1, so that small test models load;
    a downloaded graph must hold all of REQUIRED_TENSORS.
    """
    names = {node.name for node in graph_def.node}
    missing = [t for t in required if t[:-2] not in names]
    if missing:
        raise ValueError('%s lacks the tensors %s that the VGG16 contract needs; delete it and run '
                         '`python download.py --force`' % (path, ', '.join(missing)))


def check_model(dir=None):
    """Problems with the model folder (list of str; [] when a usable model is there)."""
    path = model_path(dir)
    try:
        load_graph_def(path)
    except (FileNotFoundError, ValueError) as error:
        return [str(error)]
    problems = []
    stamp = read_stamp(path)
    recorded_sha256 = download.read_sha256_record(path)
    if recorded_sha256:
        problems += download.file_problems(path, sha256=recorded_sha256)
    if stamp:
        weights_path = stamp.get('weights_path', '')
        # A graph whose weight file moved away still works: nothing to check it against.
        if os.path.exists(weights_path) and not _stamp_matches(stamp, weights_path, stamp.get('preprocess')):
            problems.append('%s is stale: %s changed since the graph was built; run `python download.py '
                            '--weights %s --preprocess %s`' % (path, weights_path, weights_path,
                                                                stamp.get('preprocess')))
    return problems


def maybe_download(source=None, dir=None, url=None, md5=None, weights=None,
                   preprocess=None, force=False, quiet=False):
    """Make sure vgg16.tfmodel is ready in `dir` (default model_dir()); return its path.

    With no arguments, any valid vgg16.tfmodel already there is kept and no
    network is touched; otherwise the default source (Keras ImageNet conv
    weights, 59 MB) is fetched and converted. Naming a source, weights or a
    url asks for exactly that model: the graph is rebuilt when it came from
    other weights or another preprocessing.
    """
    dir = dir or model_dir()
    out_path = model_path(dir)
    if preprocess is not None:
        scaling.check(preprocess, scaling.VGG16_CHOICES)
    asked = source is not None or url is not None or weights is not None or preprocess is not None
    if not asked and not force and os.path.exists(out_path):
        load_graph_def(out_path)  # corrupt -> clear error instead of a later crash
        return out_path
    source = source or download.DEFAULT_SOURCE
    if source not in download.SOURCES:
        raise ValueError('source=%r: expected one of %s' % (source, ', '.join(download.SOURCES)))

    if weights is not None:
        if not os.path.exists(weights):
            raise FileNotFoundError('weight file %s does not exist' % weights)
        weights_path, preprocess = weights, preprocess or 'caffe'
    elif url is not None:
        if not md5:
            raise ValueError('url=%r needs md5=... so that the download can be verified' % url)
        name = os.path.basename(url.split('?')[0]) or 'weights.h5'
        weights_path = download.fetch([url], os.path.join(dir, name), md5=md5, force=force, quiet=quiet)
        preprocess = preprocess or 'caffe'
    else:
        spec = download.SOURCES[source]
        if spec.filename == MODEL_FILENAME:
            # The post's original graph: loaded as is, and checked for every
            # tensor of the contract before it is put in place.
            def validate(part_path):
                check_graph_def(load_graph_def(part_path), part_path, REQUIRED_TENSORS)
            stamp_path = out_path + STAMP_SUFFIX
            # A graph there that was built from h5 weights is not the post's graph:
            # with no checksum to tell them apart, the stamp (or a missing sha256 record) does.
            replace = force or os.path.exists(stamp_path) or (
                os.path.exists(out_path) and download.read_sha256_record(out_path) is None)
            path = download.fetch(list(spec.urls), out_path, size=spec.size, md5=spec.md5,
                                  validate=validate, record_sha256=True, force=replace, quiet=quiet)
            if os.path.exists(stamp_path):
                os.remove(stamp_path)
            return path
        weights_path = download.fetch(list(spec.urls), os.path.join(dir, spec.filename),
                                      size=spec.size, md5=spec.md5, force=force, quiet=quiet)
        preprocess = preprocess or spec.preprocess

    # The lock file lives in the model folder, which a new VGG16_DIR may not have yet.
    try:
        os.makedirs(dir, exist_ok=True)
    except OSError as error:
        raise ValueError('cannot create the model folder %s (%s); set VGG16_DIR to a folder you can write'
                         % (dir, error)) from None

    def make():
        if not quiet:
            print('building %s from %s (preprocess %s)' % (out_path, weights_path, preprocess))
        return _graph_and_stamp(weights_path, preprocess)

    # Under the lock: two processes building at once could leave the graph of one beside the stamp of the other.
    build.build_once(out_path, lambda stamp: _stamp_matches(stamp, weights_path, preprocess), make,
                     force=force, quiet=quiet)
    return out_path


# ---------------------------------------------------------------------------
# The wrapper

class VGG16(network.Network):
    """A VGG16 graph of its own, with the post's (Hvass-style) helper methods: a Network whose units are
    VGG16's conv layers after ReLU.

    model.graph     tf.compat.v1.Graph holding only this model (and the ops
                    the methods add once per layer)
    model.input     tensor `images:0`, float32 [N, H, W, 3], RGB 0..255
    model.layer_names   ['conv1_1/conv1_1', ..., 'conv5_3/conv5_3'] (post-ReLU)
    model.short_names   ['conv1_1', ..., 'conv5_3']
    model.layer_channels, model.layer_min_sizes   per layer index: filters,
                    smallest image side
    model.description   which weights made the graph, for captions
    model.weights_md5   md5 of the h5 weights the graph was built from, or of
                    the graph itself when it was loaded as is (also model.md5)
    model.preprocess    the stamp's preprocessing, or None for a graph loaded as is
    model.path      the graph file (absolute), or None for a graph given in memory
    Everything else (sessions, receptive fields, spec) is network.Network's.
    """

    tensor_name_input_image = 'images:0'

    def __init__(self, path=None, graph_def=None, description=None, threads=None):
        """Load `path` (default: vgg16.tfmodel in model_dir()), or use graph_def.

        threads: threads of the session's intra- and inter-op pools, >= 1, or
        None for TensorFlow's default (all cores). Several worker processes on
        one machine each take a share, so they do not fight over the cores.
        """
        if graph_def is None:
            path = os.path.abspath(path or model_path())
            graph_def = load_graph_def(path)
        else:
            check_graph_def(graph_def)
        names = {node.name for node in graph_def.node}
        # Test models may hold fewer than 13 layers; the order is VGG16's.
        units = [network.Unit(n, '%s/%s:0' % (n, n), '%s/BiasAdd:0' % n, 'Conv2D')
                 for n in CONV_LAYERS if '%s/%s' % (n, n) in names]
        stamp = read_stamp(path) if path else None
        if description is None:
            description = _describe(path) if path else 'VGG16 graph given in memory'
        # What made the pictures: the weights' md5 for a graph built from h5,
        # else the graph file's, else the graph's bytes (Network's default).
        md5 = (stamp or {}).get('md5') or (files.md5sum(path) if path else None)
        super().__init__(graph_def, units, input_name=self.tensor_name_input_image, description=description,
                         md5=md5, preprocess=(stamp or {}).get('preprocess'), path=path, threads=threads)

    def default_layer(self):
        """The post's demo layer, conv3_2 (index 5), where the graph has it."""
        return self.short_names.index('conv3_2') if 'conv3_2' in self.short_names else super().default_layer()

    @property
    def weights_md5(self):
        return self.md5

    def get_layer_tensors(self, layer_ids):
        """Post-ReLU tensors, float32 [N, h, w, channels], of the given layer indices."""
        return [self.layer_tensors[self.layer_index(i)] for i in layer_ids]

    def get_layer_names(self, layer_ids):
        return [self.layer_names[self.layer_index(i)] for i in layer_ids]

    def get_all_layer_names(self, startswith=None):
        """Names of every op in the graph, optionally only those starting with `startswith`."""
        names = [op.name for op in self.graph.get_operations()]
        if startswith is not None:
            names = [n for n in names if n.startswith(startswith)]
        return names


# Weight files this project knows by md5, so that a caption names what really
# made a picture, whatever the file is called.
KNOWN_WEIGHTS = {
    '6d6bbae143d832006294945121d1f1fc': 'VGG16, Keras ImageNet conv weights',
    '3372a1ab9f12dc81901e8e969b589c74': 'VGG16 conv weights fine-tuned on brain MRI (vgg16-mri-notop.h5), '
                                        'not the ImageNet model',
}


def _describe(path):
    stamp = read_stamp(path)
    if stamp:
        known = KNOWN_WEIGHTS.get(stamp.get('md5'))
        if known:
            return known
        return 'VGG16 conv weights from %s (preprocess %s)' % (stamp['weights'], stamp['preprocess'])
    return 'VGG16 graph %s, loaded as is' % os.path.basename(path)


if __name__ == '__main__':
    model = VGG16()
    print(model.description)
    for i, (name, tensor) in enumerate(zip(model.layer_names, model.layer_tensors)):
        print('%2d  %-18s %s' % (i, name, tensor.shape))

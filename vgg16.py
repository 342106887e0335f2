"""
VGG16 as a TensorFlow 1.x graph: the contract that the blog post's code and
every module above rely on, and the foundation they share: the model with its
session, the checks on layers and filters, and the objective every method
maximizes (the mean of a filter over its feature map).

The model is a frozen GraphDef file, `vgg16.tfmodel`, in `data_dir` (the
environment variable VGG16_DIR wins when set). It is either the post's
original graph (`python download.py --source cadl`) or, by default, built here
from the 13 conv layers of a Keras VGG16 weight file (h5), which holds 59 MB
instead of 550: the classifier head is not needed to visualize conv filters.

    python download.py                     # fetch ImageNet conv weights, build vgg16.tfmodel
    python download.py --weights my.h5 --preprocess unit

    import vgg16
    vgg16.maybe_download()
    model = vgg16.VGG16()
    layer_t = model.get_layer_tensors([5])[0]       # conv3_2, post-ReLU

Graph contract (what other code may rely on):
- `images:0`: float32 [N, H, W, 3], RGB, pixel values 0..255, any H and W;
  the preprocessing the weights were trained with lives inside the graph.
- `convX_Y/convX_Y:0`: the 13 conv layers after ReLU, `conv1_1` ... `conv5_3`;
  `convX_Y/BiasAdd:0` is the same layer before ReLU.
"""

import hashlib
import json
import math
import numbers
import os
import warnings
from dataclasses import dataclass

import numpy as np

import download
import quiet

tf = quiet.import_tensorflow()   # tensorflow.compat.v1, graph mode, start-up lines held back

# Where model files live. VGG16_DIR, when set, wins (read at call time, so a
# test or a notebook can point it elsewhere without re-importing).
data_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'models')

MODEL_FILENAME = 'vgg16.tfmodel'
# Beside a graph built from h5 weights: which weights and preprocessing made
# it, so that new weights never meet a stale graph.
STAMP_SUFFIX = '.json'

CONV_LAYERS = ('conv1_1', 'conv1_2',
               'conv2_1', 'conv2_2',
               'conv3_1', 'conv3_2', 'conv3_3',
               'conv4_1', 'conv4_2', 'conv4_3',
               'conv5_1', 'conv5_2', 'conv5_3')
# Keras names the same layers blockB_convC.
KERAS_NAMES = {name: 'block%s_conv%s' % tuple(name[4:].split('_')) for name in CONV_LAYERS}
# A 2x2 max pool (stride 2, 'VALID' as in Keras) follows the last conv of each block.
POOL_AFTER = ('conv1_2', 'conv2_2', 'conv3_3', 'conv4_3', 'conv5_3')

# Caffe-style input of the ImageNet weights: BGR minus the ImageNet mean.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
PREPROCESS_CHOICES = download.PREPROCESS_CHOICES


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
    preprocess: 'caffe' (RGB->BGR minus the ImageNet mean), 'unit' (pixels/255)
      or 'none' (the first conv sees raw 0..255).
    """
    if preprocess not in PREPROCESS_CHOICES:
        raise ValueError('preprocess=%r: expected one of %s' % (preprocess, ', '.join(PREPROCESS_CHOICES)))
    if not 1 <= len(weights) <= len(CONV_LAYERS):
        raise ValueError('got %d conv layers of weights; VGG16 has 1 to %d' % (len(weights), len(CONV_LAYERS)))
    graph = tf.Graph()
    with graph.as_default():
        images = tf.placeholder(tf.float32, [None, None, None, 3], name='images')
        if preprocess == 'caffe':
            x = tf.reverse(images, axis=[3]) - tf.constant(CAFFE_MEAN_BGR, tf.float32)
        elif preprocess == 'unit':
            x = images / 255.0
        else:
            x = tf.identity(images)
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
    graph_def = build_graph_def(read_h5_weights(weights_path), preprocess)
    stamp = {'weights': os.path.basename(weights_path),
             'weights_path': os.path.abspath(weights_path),
             'size': os.path.getsize(weights_path),
             'md5': download.md5sum(weights_path),
             'preprocess': preprocess}
    # Graph first, then stamp: a crash in between leaves a graph without a
    # stamp that matches, which the next call rebuilds.
    stamp_path = out_path + STAMP_SUFFIX
    if os.path.exists(stamp_path):
        os.remove(stamp_path)
    data = graph_def.SerializeToString()
    download.write_atomic(out_path, lambda f: f.write(data))
    download.write_atomic(stamp_path, lambda f: f.write(json.dumps(stamp, indent=1).encode('utf8')))
    return out_path


def read_stamp(path=None):
    """What made the graph at `path` (dict), or None for a graph loaded as is."""
    try:
        with open((path or model_path()) + STAMP_SUFFIX) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def _stamp_matches(stamp, weights_path, preprocess):
    if not stamp or stamp.get('preprocess') != preprocess:
        return False
    if stamp.get('size') != os.path.getsize(weights_path):
        return False
    return stamp.get('md5') == download.md5sum(weights_path)


# ---------------------------------------------------------------------------
# Loading and checking a graph

REQUIRED_TENSORS = ('images:0',) + tuple('%s/%s:0' % (n, n) for n in CONV_LAYERS)


def load_graph_def(path):
    """Parse a frozen GraphDef file; clear errors for missing or corrupt files."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            'no model at %s. Run `python download.py` to fetch the weights and build it '
            '(or `python download.py --weights FILE.h5 --preprocess unit|caffe|none` for your own), '
            'or set VGG16_DIR to the folder that holds vgg16.tfmodel.' % path)
    graph_def = tf.GraphDef()
    with open(path, 'rb') as f:
        data = f.read()
    try:
        graph_def.ParseFromString(data)
    except Exception as error:  # protobuf raises its own DecodeError
        raise ValueError('%s is not a valid frozen graph (%s: %s); delete it and run '
                         '`python download.py --force`' % (path, type(error).__name__, error)) from None
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
    if preprocess is not None and preprocess not in PREPROCESS_CHOICES:
        raise ValueError('preprocess=%r: expected one of %s' % (preprocess, ', '.join(PREPROCESS_CHOICES)))
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

    def fresh():
        return os.path.exists(out_path) and _stamp_matches(read_stamp(out_path), weights_path, preprocess)

    if force or not fresh():
        # The lock file lives in the model folder, which a new VGG16_DIR may not have yet.
        try:
            os.makedirs(dir, exist_ok=True)
        except OSError as error:
            raise ValueError('cannot create the model folder %s (%s); set VGG16_DIR to a folder you can write'
                             % (dir, error)) from None
        # Two processes building at once could leave the graph of one beside the stamp of the other.
        with download.exclusive_lock(out_path + '.lock', timeout=600, quiet=quiet):
            if force or not fresh():
                if not quiet:
                    print('building %s from %s (preprocess %s)' % (out_path, weights_path, preprocess))
                convert_h5(weights_path, preprocess, out_path)
    return out_path


# ---------------------------------------------------------------------------
# The model flags every command line shares

def add_model_arguments(parser):
    """--model, --weights, --preprocess and --precision on an argparse parser."""
    parser.add_argument('--model', default=None,
                        help='a vgg16.tfmodel file to use (default: the one in the model folder, '
                             '$VGG16_DIR or %s)' % data_dir)
    parser.add_argument('--weights', default=None,
                        help='build the graph from this Keras VGG16 h5 weight file first (see download.py)')
    parser.add_argument('--preprocess', choices=PREPROCESS_CHOICES, default=None,
                        help='with --weights: input scaling the weights were trained with: caffe '
                             '(BGR minus ImageNet mean, default), unit (pixels/255) or none')
    parser.add_argument('--precision', choices=PRECISION_CHOICES, default='auto',
                        help='precision of the convolutions: auto (bfloat16 where the CPU does it natively, '
                             'e.g. AVX-512 BF16, else float32; the default), float32 or bfloat16')


def model_path_from_args(args, quiet=False):
    """The graph file the flags of add_model_arguments() name, built from --weights first if given.

    ValueError for flags that exclude each other; the graph itself is
    checked when it is loaded.
    """
    if args.model:
        if args.weights or args.preprocess:
            raise ValueError('--model (a ready graph) and --weights/--preprocess (build one) exclude '
                             'each other; give one')
        return os.path.abspath(args.model)
    if args.weights or args.preprocess:
        if not args.weights:
            raise ValueError('--preprocess needs --weights FILE.h5')
        return maybe_download(weights=args.weights, preprocess=args.preprocess, quiet=quiet)
    return model_path()


# ---------------------------------------------------------------------------
# The wrapper

class VGG16:
    """A VGG16 graph of its own, with the post's (Hvass-style) helper methods.

    model.graph     tf.compat.v1.Graph holding only this model (and the ops
                    the methods add once per layer)
    model.input     tensor `images:0`, float32 [N, H, W, 3], RGB 0..255
    model.layer_names   ['conv1_1/conv1_1', ..., 'conv5_3/conv5_3'] (post-ReLU)
    model.short_names   ['conv1_1', ..., 'conv5_3']
    model.layer_channels, model.layer_min_sizes   per layer index: filters,
                    smallest image side
    model.description   which weights made the graph, for captions
    model.weights_md5   md5 of the h5 weights the graph was built from, or of
                    the graph itself when it was loaded as is
    model.path      the graph file (absolute), or None for a graph given in memory
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
        self.path = path
        self.threads = None if threads is None else check_int('threads', threads, 1)
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.import_graph_def(graph_def, name='')
        self.input = self.graph.get_tensor_by_name(self.tensor_name_input_image)
        ops = {op.name for op in self.graph.get_operations()}
        # Test models may hold fewer than 13 layers; the order is VGG16's.
        self.layer_names = ['%s/%s' % (n, n) for n in CONV_LAYERS if '%s/%s' % (n, n) in ops]
        self.layer_tensors = [self.graph.get_tensor_by_name(n + ':0') for n in self.layer_names]
        self.short_names = [n.split('/')[0] for n in self.layer_names]
        # Per layer index, so that code below the public entry points never
        # resolves a layer again: filters, and the smallest image side, 2 **
        # (pools before the layer).
        self.layer_channels = [int(t.shape[-1]) for t in self.layer_tensors]
        self.layer_min_sizes = [2 ** sum(1 for n in self.short_names[:i] if n in POOL_AFTER)
                                for i in range(len(self.short_names))]
        if description is None:
            description = _describe(path) if path else 'VGG16 graph given in memory'
        self.description = description
        stamp = read_stamp(path) if path else None
        # What made the pictures: the weights' md5 for a graph built from h5,
        # else the graph file's, else the graph's bytes in protobuf's
        # deterministic order (node attributes are a map, whose default
        # order varies between processes).
        if stamp and stamp.get('md5'):
            self.weights_md5 = stamp['md5']
        elif path:
            self.weights_md5 = download.md5sum(path)
        else:
            self.weights_md5 = hashlib.md5(graph_def.SerializeToString(deterministic=True)).hexdigest()
        self.session = None   # made on first use by session(), one per model
        self.cache = {}       # ops built once, keyed by what they compute

    def close(self):
        """Close the session opened for this model, if any."""
        if self.session is not None:
            self.session.close()
            self.session = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

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

    def create_feed_dict(self, image):
        """{images:0: image with a batch axis} for an image [H, W, 3] or a batch [N, H, W, 3].

        The array is not copied (np.expand_dims gives a view), so a caller who
        updates `image` in place, as the post's loop does, feeds the new pixels.
        """
        image = np.asarray(image)
        if image.ndim == 3:
            image = np.expand_dims(image, axis=0)
        if image.ndim != 4 or image.shape[-1] != 3:
            raise ValueError('image of shape %s: expected [H, W, 3] or [N, H, W, 3], RGB 0..255'
                             % (image.shape,))
        return {self.input: image}

    def layer_index(self, layer_id):
        """Index into layer_names of an int index or a name such as 'conv3_2' or 'conv3_2/conv3_2'.

        Public entry points resolve a layer once with this; everything below
        them takes the index.
        """
        count = len(self.layer_names)
        if isinstance(layer_id, (int, np.integer)) and not isinstance(layer_id, bool):
            if -count <= layer_id < count:
                return int(layer_id) % count
            raise ValueError('layer %d is out of range: this model has %d conv layers, 0..%d (%s ... %s)'
                             % (layer_id, count, count - 1, self.short_names[0], self.short_names[-1]))
        if isinstance(layer_id, str):
            short = layer_id.split('/')[0]
            if short in self.short_names:
                return self.short_names.index(short)
        raise ValueError('unknown layer %r: use an index 0..%d or one of %s'
                         % (layer_id, count - 1, ', '.join(self.short_names)))

    def min_size(self, layer_id):
        """Smallest image side the layer can take: 2 ** (pools before it)."""
        return self.layer_min_sizes[self.layer_index(layer_id)]

    def channels(self, layer_id):
        """Number of filters of a layer."""
        return self.layer_channels[self.layer_index(layer_id)]


def session(model):
    """The model's session, made on first use and kept (one per model).

    Sized by model.threads when set. The model's close() closes it. Both
    precisions share it: bfloat16 is written into the ops
    (channel_objective), not into the session's configuration.
    """
    if model.session is None:
        config = tf.ConfigProto()
        if model.threads is not None:
            config.intra_op_parallelism_threads = model.threads
            config.inter_op_parallelism_threads = model.threads
        model.session = tf.Session(graph=model.graph, config=config)
    return model.session


# ---------------------------------------------------------------------------
# Precision: float32, or bfloat16 convolutions where the CPU has them

PRECISION_CHOICES = ('auto', 'float32', 'bfloat16')
# Where Linux lists the CPU's features; read at call time, so a test can point
# it at a fake file. Elsewhere (macOS, Windows) it is absent: 'auto' is float32.
CPUINFO_PATH = '/proc/cpuinfo'
# Flags of x86 CPUs that multiply bfloat16 in hardware: AVX-512 BF16 (AMD Zen 4
# and later, Intel Cooper Lake) and AMX (Intel Sapphire Rapids and later).
# Without them oneDNN emulates bfloat16, which is slower than float32.
BF16_CPU_FLAGS = ('avx512_bf16', 'amx_bf16')


def cpu_has_bf16():
    """True when CPUINFO_PATH lists a flag of BF16_CPU_FLAGS; False when it does not or cannot be read."""
    try:
        with open(CPUINFO_PATH) as f:
            flags = {flag for line in f if line.startswith('flags') for flag in line.split(':', 1)[1].split()}
    except OSError:
        return False
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve_precision(precision):
    """'float32' or 'bfloat16' for precision 'auto' | 'float32' | 'bfloat16'.

    'auto' is bfloat16 only where the CPU does it natively (cpu_has_bf16()),
    else float32. On the 2-core AVX-512 BF16 build machine bfloat16 made the
    post's step about 1.8x faster, the regularized one 1.7x (README, Precision).
    """
    if precision not in PRECISION_CHOICES:
        raise ValueError('precision=%r: expected one of %s' % (precision, ', '.join(PRECISION_CHOICES)))
    if precision == 'auto':
        return 'bfloat16' if cpu_has_bf16() else 'float32'
    return precision


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


def check_feature_ids(model, layer_index, feature_ids):
    """Filter ids as a list of int, each within the channels of layer `layer_index` (an index)."""
    channels = model.layer_channels[layer_index]
    short = model.short_names[layer_index]
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


def check_size(model, layer_index, size):
    """size as int, or ValueError unless the image survives the pools before layer `layer_index`."""
    minimum = model.layer_min_sizes[layer_index]
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < minimum:
        raise ValueError('size=%r: %s needs images of at least %d pixels (it follows %d poolings; '
                         'the post uses 224)' % (size, model.short_names[layer_index], minimum,
                                                 int(math.log2(minimum))))
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
# The objective every method maximizes, and what an ascent gives back

def conv_parts(graph, layer_name, prefix=''):
    """The pieces of one conv layer of a VGG16 graph.

    Returns (input_t, kernel_t, bias_t, conv_op): the layer's input
    [N, h, w, in], its kernel [k, k, in, out] and bias [out], and the Conv2D
    op (for strides and padding). `prefix` is the import scope of a copy of
    the network (e.g. 'regularized/').
    """
    short = layer_name.split('/')[0]
    bias_add = graph.get_operation_by_name('%s%s/BiasAdd' % (prefix, short))
    conv_op = bias_add.inputs[0].op
    if conv_op.type != 'Conv2D':
        raise ValueError('%s: expected Conv2D before BiasAdd, found %s' % (short, conv_op.type))
    return conv_op.inputs[0], conv_op.inputs[1], bias_add.inputs[1], conv_op


def channel_objective(graph, layer_name, filter_ids_t, pre_relu=False, prefix='', precision='float32'):
    """Per-image objective, float32 [N]: mean activation of filter_ids_t[i] in image i.

    Computes only the wanted channels of the target layer: its kernel and bias
    columns are gathered and convolved with the layer's input, which gives the
    same values as the full layer at a fraction of the cost (conv3_2: 6 of 256
    channels). Image i gets N channels and keeps the i-th; N is small.
    precision: 'float32' (the graph's own layers) or 'bfloat16': every conv
    after conv1_1, with its bias, ReLU and pool, runs in bfloat16 on the same
    weights (bfloat16_layer_input); the mean is taken in float32 either way.
    Resolve 'auto' first (resolve_precision).
    """
    input_t, kernel_t, bias_t, conv_op = conv_parts(graph, layer_name, prefix)
    short = layer_name.split('/')[0]
    if precision == 'bfloat16' and short != CONV_LAYERS[0]:
        input_t = bfloat16_layer_input(graph, short, prefix)                # bfloat16 [N, h, w, in]
    kernel_sel_t = tf.cast(tf.gather(kernel_t, filter_ids_t, axis=3), input_t.dtype)   # [k, k, in, N]
    bias_sel_t = tf.cast(tf.gather(bias_t, filter_ids_t), input_t.dtype)              # [N]
    conv_t = tf.nn.conv2d(input_t, kernel_sel_t, strides=conv_op.get_attr('strides'),
                          padding=conv_op.get_attr('padding').decode())
    pre_t = tf.nn.bias_add(conv_t, bias_sel_t)                                # [N, h, w, N]
    count = tf.shape(filter_ids_t)[0]
    own_t = tf.gather(pre_t, tf.reshape(tf.range(count), [-1, 1]), axis=3, batch_dims=1)  # [N, h, w, 1]
    if not pre_relu:
        own_t = tf.nn.relu(own_t)
    # float32 before the mean: a bfloat16 sum of a 56x56 map would stop
    # growing once each new term is below half a unit of its 8-bit mantissa.
    return tf.reduce_mean(tf.cast(own_t, tf.float32), axis=[1, 2, 3])


def bfloat16_layer_input(graph, layer_short_name, prefix=''):
    """The input of a conv layer, bfloat16 [N, h, w, in], recomputed in bfloat16 from conv1_1's output.

    The graph's own kernels and biases (cast once; grappler folds the casts
    into constants), ReLUs and max pools, layer by layer from conv1_2 up to
    the layer's input. conv1_1 itself stays float32: it reads the pixels, and
    in bfloat16 (8 significant bits) a pixel near 128 would round to a whole
    grey level, which erases the post's start noise (uniform 0..1); with 3
    input channels it is 1.5 % of the FLOPs up to conv3_2.
    Gradients flow back through the casts, so tf.gradients to the float32
    image works unchanged. ValueError when the graph between two layers holds
    anything but VGG16's ReLU and optional max pool (then use 'float32').
    """
    first = CONV_LAYERS[0]
    x_t = tf.cast(graph.get_tensor_by_name('%s%s/%s:0' % (prefix, first, first)), tf.bfloat16)
    index = CONV_LAYERS.index(layer_short_name)
    for below, name in zip(CONV_LAYERS[:index], CONV_LAYERS[1:index + 1]):
        input_t, kernel_t, bias_t, conv_op = conv_parts(graph, name, prefix)
        relu_t = graph.get_tensor_by_name('%s%s/%s:0' % (prefix, below, below))
        pooled = input_t.op.type == 'MaxPool' and input_t.op.inputs[0] is relu_t
        if relu_t.op.type != 'Relu' or not (pooled or input_t is relu_t):
            raise ValueError("precision='bfloat16' rebuilds VGG16 layer by layer, but this graph feeds %s from "
                             "a %s op, not from %s's ReLU or a max pool of it; use precision='float32'"
                             % (name, input_t.op.type, below))
        if pooled:
            pool = input_t.op
            x_t = tf.nn.max_pool2d(x_t, pool.get_attr('ksize'), pool.get_attr('strides'),
                                   pool.get_attr('padding').decode())
        if name == layer_short_name:
            break
        x_t = tf.nn.conv2d(x_t, tf.cast(kernel_t, tf.bfloat16), strides=conv_op.get_attr('strides'),
                           padding=conv_op.get_attr('padding').decode())
        x_t = tf.nn.relu(tf.nn.bias_add(x_t, tf.cast(bias_t, tf.bfloat16)))
    return x_t


@dataclass
class Result:
    """What one ascent made, by either method (visualize.ascend, regularized.render).

    images:     float32 [N, size, size, 3], RGB, around 0..255 (not clipped)
    objectives: float32 [iters, N], the objective of each image before each step
    dead:       bool [N], True where the gradient was exactly zero at every
                step: the filter never saw the image, which is still the start
    precision:  'float32' or 'bfloat16', the precision that made the images
                (what 'auto' resolved to)
    """
    images: np.ndarray
    objectives: np.ndarray
    dead: np.ndarray
    precision: str = 'float32'


def warn_dead(model, layer_index, feature_ids, dead, hint):
    """The RuntimeWarning for filters whose gradient stayed exactly zero."""
    if dead.any():
        warnings.warn('%s filter(s) %s: the gradient was exactly zero at every step, so the image never '
                      'moved from its start (no unit of the filter is active on it).%s'
                      % (model.short_names[layer_index], [f for f, d in zip(feature_ids, dead) if d],
                         hint), RuntimeWarning, stacklevel=4)


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

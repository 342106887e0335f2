"""
load(): an ONNX model's Network, translated once (translate.py) and then
read from the cache without onnx. This module decides where the graph lives
and when a cached one is still the model's.

    from filtervis.models.onnx_model import cache
    net = cache.load('resnet18.onnx', preprocess='torch')       # also onnx_model.load
    net = cache.load('ddddocr-yolox-detector.onnx', 'none', bgr=True)

The graph is `onnx-cache/FILE.tfmodel` beside the model, or, where that
folder cannot be written, under ~/.cache/filtervis/onnx-cache/KEY/; beside it
`FILE.tfmodel.json`, the stamp: the model's md5 (with its external weight
files'), the preprocessing and channel order, the units and the ONNX tensor
each reads, the graph's md5. A changed model or preprocessing builds it
again (build.build_once, under a lock, so two processes never write the
same graph).
"""

import os
import sys
from dataclasses import asdict

from filtervis.core import network
from filtervis.models import build
from filtervis.models import preprocess as scaling   # apart from load()'s `preprocess` argument
from filtervis.models.onnx_model import formats, translate, units
from filtervis.util import files

# The version of the cache's layout and of the graphs it holds: a stamp of
# another format is built again.
CACHE_FORMAT = 1
CACHE_FOLDER = 'onnx-cache'


def load(path, preprocess=None, *, bgr=False, cache_dir=None, threads=None, quiet=False, all_layers=False):
    """The Network of an ONNX model file, translated once and then taken from the cache.

    path: a .onnx file (an NCHW CNN with one float32 image input of fixed
      square size, as torch.onnx.export writes it).
    preprocess: the input scaling the model was trained with, one of
      preprocess.CHOICES ('torch' for torchvision's models); required.
    bgr: the model takes its channels in BGR order (trained on OpenCV
      images); pictures stay RGB and are reversed inside the graph.
    cache_dir: where NAME.tfmodel and its stamp go (default: onnx-cache beside the model).
    all_layers: every node output that is a feature map is a unit, not only the convolution units.
    Returns a network.Network: input images:0 float32 [N, H, W, C], C = 1 or
    3, pixels 0..255, H = W the model's input size. ValueError
    (FileNotFoundError for a missing file) in one line with the next step;
    nothing is written for a model that fails.
    """
    path = os.path.abspath(os.fspath(path))
    name = os.path.basename(path)
    if not formats.is_model_path(path):
        raise ValueError('%s is not an ONNX model file: expected a .onnx file' % path)
    if not os.path.isfile(path):
        raise FileNotFoundError('no ONNX model at %s; check the path' % path)
    if preprocess is None:
        scaling.resolve(None, name, False, 3)   # raises, naming the choices
    scaling.check(preprocess)
    if bgr and preprocess == 'caffe':
        raise ValueError("%s: preprocess 'caffe' already reverses the channels to BGR; leave out --bgr (bgr=True)"
                         % name)
    file_md5 = files.md5sum(path)

    def fits(stamp):
        if stamp.get('format') != CACHE_FORMAT or stamp.get('file_md5') != file_md5:
            return False
        _check_channels(name, preprocess, bgr, stamp['input_channels'])
        try:
            same_model = stamp.get('model_md5') == formats.model_md5(path, stamp['external'], file_md5)
        except OSError:   # an external weight file is gone: building again says so
            return False
        return same_model and stamp.get('preprocess') == preprocess and stamp.get('bgr') == bgr

    candidates = [cache_dir] if cache_dir else build.cache_folders(path, CACHE_FOLDER)
    for folder in candidates:
        graph_path = os.path.join(folder, name + '.tfmodel')
        stamp = build.reusable_stamp(graph_path, fits, graph_md5=True)
        if stamp is not None:
            return _network(graph_path, stamp, all_layers, threads)

    # The graph is made in memory before the cache is touched: every error a
    # user can cause is raised there, and a failed load writes nothing.
    graph_def, new_stamp = _translated(path, name, preprocess, bgr, file_md5, quiet)
    graph_path = os.path.join(build.writable_folder(candidates, 'the translated graph'), name + '.tfmodel')
    # Another process may have built the same graph meanwhile: build_once then keeps that one.
    stamp = build.build_once(graph_path, fits, lambda: (graph_def, new_stamp), graph_md5=True, quiet=quiet)
    return _network(graph_path, stamp, all_layers, threads)


def _check_channels(name, preprocess, bgr, channels):
    scaling.resolve(preprocess, name, False, channels)   # a greyscale model refuses 'torch' and 'caffe'
    if bgr and channels != 3:
        raise ValueError('%s takes greyscale images; --bgr (bgr=True) is for 3-channel models' % name)


def _translated(path, name, preprocess, bgr, file_md5, quiet):
    """(GraphDef, stamp dict) of the model; ValueError when no convolution unit can be followed."""
    model, external = formats.read(path)
    spec = formats.image_input(model, name)
    _check_channels(name, preprocess, bgr, spec.channels)
    if not quiet:
        print('Importing %s once (later loads read the cache)' % name, file=sys.stderr, flush=True)
    translated = translate.translate(model, spec, preprocess, bgr)
    found = units.find(model.graph, translated.tensors)
    if not found.defaults:
        raise ValueError('%s has no convolution (Conv node) whose output is a feature map, so no unit to '
                         'visualize' % name)
    kept, defaults, left_out = units.followable(translated.graph_def, translate.INPUT_NAME + ':0', spec.size, found)
    if not defaults:
        raise ValueError('%s: no convolution unit whose receptive field geometry.py can follow (%s)'
                         % (name, '; '.join('%s: %s' % item for item in left_out.items())))
    opset = next((entry.version for entry in model.opset_import if entry.domain in ('', 'ai.onnx')), None)
    producer = ' '.join(p for p in (model.producer_name, model.producer_version) if p) or 'an unknown exporter'
    description = '%s (ONNX from %s, opset %s, preprocess %s%s)' % (name, producer, opset, preprocess,
                                                                    ', BGR' if bgr else '')
    stamp = {'format': CACHE_FORMAT, 'model': name, 'file_md5': file_md5, 'external': external,
             'model_md5': formats.model_md5(path, external, file_md5), 'preprocess': preprocess, 'bgr': bgr,
             'input_size': spec.size, 'input_channels': spec.channels, 'description': description,
             'units': [asdict(u) for u in kept], 'defaults': [asdict(u) for u in defaults],
             'left_out': left_out, 'left_out_defaults': [u.name for u in found.defaults if u.name in left_out],
             'onnx': found.onnx}
    return translated.graph_def, stamp


def _network(graph_path, stamp, all_layers, threads):
    """The Network of a cached graph and its stamp."""
    chosen = [network.Unit(**u) for u in (stamp['units'] if all_layers else stamp['defaults'])]
    graph_def = network.load_graph_def(graph_path, fix='delete it so that it is built again')
    return network.Network(graph_def, chosen, input_name=translate.INPUT_NAME + ':0',
                           description=stamp['description'], md5=stamp['model_md5'],
                           preprocess=stamp['preprocess'], path=graph_path, threads=threads)

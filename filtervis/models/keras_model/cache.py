"""
load(): a Keras model's Network, frozen once (freeze.py) and then read from
the cache without Keras. This module decides where the frozen graph lives
and when a cached one is still the model's.

    from filtervis.models.keras_model import cache
    net = cache.load('fer-emotion-minixception.hdf5', preprocess='tf')   # also keras_model.load

The frozen graph is `keras-cache/FILE.tfmodel` beside the model (FILE: the
model's file or folder name), or, where that folder cannot be written, under
~/.cache/filtervis/keras-cache/KEY/; beside it `FILE.tfmodel.json`, the
stamp: the model's md5, the preprocessing, the units, the graph's md5. A
changed model or preprocessing builds it again (build.build_once, under a
lock, so two processes never write the same graph).
"""

import os
from dataclasses import asdict

from filtervis.core import network
from filtervis.models import build
from filtervis.models import preprocess as scaling   # apart from load()'s `preprocess` argument
from filtervis.models.keras_model import formats, freeze, units

# The version of the cache's layout and of the graphs it holds: a stamp of
# another format is built again.
CACHE_FORMAT = 3
CACHE_FOLDER = 'keras-cache'


def load(path, preprocess=None, *, unsafe=False, cache_dir=None, threads=None, quiet=False, all_layers=False):
    """The Network of a Keras model file or SavedModel folder, frozen once and then taken from the cache.

    path: a .keras file, an .h5/.hdf5 full model or a SavedModel folder.
    preprocess: the input scaling the model was trained with, one of
      preprocess.CHOICES; None is allowed only for a model whose first layer
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
    fmt = formats.model_format(path)
    if preprocess is not None:
        scaling.check(preprocess)
    md5 = formats.model_md5(path)
    name = os.path.basename(os.path.normpath(path))

    def fits(stamp):
        return _stamp_fits(stamp, name, md5, preprocess, unsafe)

    candidates = [cache_dir] if cache_dir else build.cache_folders(path, CACHE_FOLDER)
    for folder in candidates:
        graph_path = os.path.join(folder, name + '.tfmodel')
        stamp = build.reusable_stamp(graph_path, fits, graph_md5=True)
        if stamp is not None:
            return _network(graph_path, stamp, all_layers, threads)

    # The graph is made in memory before the cache is touched: every error a
    # user can cause is raised there, and a failed load writes nothing.
    if fmt == 'savedmodel':
        frozen = freeze.saved_model(path, preprocess, quiet=quiet)
    else:
        frozen = freeze.keras_file(path, fmt, preprocess, unsafe=unsafe, quiet=quiet)
    new_stamp = _checked_stamp(frozen, name, md5, unsafe)
    graph_path = os.path.join(build.writable_folder(candidates, 'the frozen graph'), name + '.tfmodel')
    # Another process may have written the same graph while this one froze it: build_once then keeps that one.
    stamp = build.build_once(graph_path, fits, lambda: (frozen.graph_def, new_stamp), graph_md5=True, quiet=quiet)
    return _network(graph_path, stamp, all_layers, threads)


def _stamp_fits(stamp, name, md5, preprocess, unsafe):
    """True when a stamp records a graph of these bytes with this preprocessing.

    Raises the refusal a safe load of this model gives, and the
    preprocessing errors, from the stamp alone: without Keras.
    """
    if stamp.get('format') != CACHE_FORMAT or stamp.get('model_md5') != md5:
        return False
    if stamp.get('refusal') and not unsafe:
        raise formats.refused(name, stamp['refusal'])
    wanted = scaling.resolve(preprocess, name, stamp['own_scaling'], stamp['input_channels'])
    return stamp.get('preprocess') == wanted


def _checked_stamp(frozen, name, md5, unsafe):
    """The stamp (dict) of a freeze.Frozen, with the units geometry.py can follow; ValueError when none is
    a convolution unit."""
    kept, defaults, left_out = units.followable(frozen.graph_def, freeze.INPUT_NAME + ':0', frozen.units,
                                                frozen.defaults)
    if not defaults:
        raise ValueError('%s: no convolution unit whose receptive field geometry.py can follow (%s)'
                         % (name, '; '.join('%s: %s' % item for item in left_out.items()) or 'none'))
    return {'format': CACHE_FORMAT, 'model': name, 'model_md5': md5, 'preprocess': frozen.preprocess,
            'own_scaling': frozen.own_scaling, 'unsafe': unsafe, 'refusal': frozen.refusal,
            'input_size': frozen.size, 'input_channels': frozen.channels,
            'description': '%s (%s, preprocess %s)' % (name, frozen.source, frozen.preprocess),
            'units': [asdict(u) for u in kept], 'defaults': [asdict(u) for u in defaults],
            'left_out': left_out, 'left_out_defaults': [u.name for u in frozen.defaults if u.name in left_out]}


def _network(graph_path, stamp, all_layers, threads):
    """The Network of a cached graph and its stamp."""
    chosen = [network.Unit(**u) for u in (stamp['units'] if all_layers else stamp['defaults'])]
    graph_def = network.load_graph_def(graph_path, fix='delete it so that it is built again')
    return network.Network(graph_def, chosen, input_name=freeze.INPUT_NAME + ':0', description=stamp['description'],
                           md5=stamp['model_md5'], preprocess=stamp['preprocess'], path=graph_path,
                           threads=threads)

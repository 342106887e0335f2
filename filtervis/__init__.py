"""
filtervis: what does a filter (or any objective) of a CNN respond to? Pictures
made by gradient ascent (the blog post's method, a regularized one, and maco's
phase of a natural spectrum for deep modern networks),
measures of how readable they are, the real-image patches that excite each
filter, an atlas of every filter, class pictures, DeepDream and attribution
maps; for VGG16, any Keras CNN and PyTorch models exported to ONNX, on
TensorFlow 2 through tf.compat.v1 graphs.

    import filtervis
    net = filtervis.load_keras('my_model.keras', preprocess='tf')   # or filtervis.load_onnx('m.onnx', 'torch'), VGG16()
    result = filtervis.ascend(net, net.default_layer(), [0, 1, 2], 150, method='regularized', seed=0)
    fig = filtervis.plot_images(result.images)                       # a matplotlib Figure

The package's layers, bottom first (each imports only those before it):
    util/      files written whole, locks, downloads, quiet TensorFlow import, drawing (no TensorFlow)
    core/      the Network (a frozen graph with named units), its geometry, precision, unit tensors, checks
    optvis/    objectives, the render loop, the post's method, the regularized one, maco and its spectrum,
               the dispatcher
    models/    VGG16 and users' Keras models as Networks
    cluster.py where work runs (this process or Dask)
    analysis/  measures of a picture, real-image examples
    plots.py   Figures
    atlas/     every filter on one page
    cli/       the command lines (visualize, examples, atlas, download)

The names below are imported on first use, so that `import filtervis` costs
nothing until one is asked for (and the downloader needs no TensorFlow).
"""

__version__ = '1.0.0'

_PUBLIC = {
    'Network': 'filtervis.core.network',
    'Unit': 'filtervis.core.network',
    'VGG16': 'filtervis.models.vgg16',
    'load_keras': ('filtervis.models.keras_model', 'load'),
    'load_onnx': ('filtervis.models.onnx_model', 'load'),
    'ascend': 'filtervis.optvis.ascent',
    'visual': 'filtervis.optvis.ascent',
    'visualize_filters': 'filtervis.optvis.ascent',
    'render_objectives': 'filtervis.optvis.ascent',
    'BlogConfig': 'filtervis.optvis.blog',
    'RegularizedConfig': ('filtervis.optvis.regularized', 'Config'),
    'MacoConfig': ('filtervis.optvis.maco', 'Config'),
    'objectives': ('filtervis.optvis', 'objectives'),
    'measure_all': 'filtervis.analysis.measures',
    'find_examples': ('filtervis.analysis.examples', 'find'),
    'plot_images': 'filtervis.plots',
    'save_grid': 'filtervis.plots',
    'plot_found': 'filtervis.plots',
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    import importlib
    if name not in _PUBLIC:
        raise AttributeError('module filtervis has no attribute %r' % name)
    where = _PUBLIC[name]
    module, attribute = where if isinstance(where, tuple) else (where, name)
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)

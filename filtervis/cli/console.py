"""
The entry points of the console scripts that `pip install` makes, one per
command line:

    filtervis-visualize --model my_model.keras --preprocess tf --layer conv2d_3 --filters 0-5
    filtervis-examples DIR --model my_model.keras --preprocess tf
    filtervis-atlas OUT --model my_model.keras --preprocess tf --workers 2
    filtervis-download --weights vgg16_weights.h5 --preprocess caffe
    filtervis-attribute IMAGES... --model my_model.keras --preprocess tf --objective conv2d_3:5 --out DIR
    filtervis-spectrum DIR --channels 3 --out DIR-rgb.npy

From a clone, `python visualize.py`, `python examples.py`, `python atlas.py`,
`python download.py` and `python attribute.py` run the same main() functions;
`python -m filtervis.cli.spectrum` runs filtervis-spectrum's.

Each entry point imports TensorFlow first, quietly (--verbose shows its
start-up lines), and says in one line what to install when it is missing.
"""
import importlib
import sys


def _run(name, needs_tensorflow=True):
    if needs_tensorflow:
        from filtervis.util import quiet
        try:
            quiet.import_tensorflow(verbose='--verbose' in sys.argv[1:])
        except ImportError as error:
            missing = getattr(error, 'name', None) or 'tensorflow'
            print('error: %s cannot be imported (%s); install what filtervis needs with '
                  '`pip install filtervis` (from a clone: `pip install -r requirements.txt`)' % (missing, error),
                  file=sys.stderr)
            return 2
        quiet.one_line_warnings()
    return importlib.import_module('filtervis.cli.' + name).main()


def visualize():
    """filtervis-visualize: python visualize.py."""
    return _run('visualize')


def examples():
    """filtervis-examples: python examples.py."""
    return _run('examples')


def atlas():
    """filtervis-atlas: python atlas.py."""
    return _run('atlas')


def download():
    """filtervis-download: python download.py (TensorFlow only once the graph is built)."""
    return _run('download', needs_tensorflow=False)


def attribute():
    """filtervis-attribute: python attribute.py."""
    return _run('attribute')


def spectrum():
    """filtervis-spectrum: python -m filtervis.cli.spectrum (TensorFlow: optvis.regularized holds the colours)."""
    return _run('spectrum')

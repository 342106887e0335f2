"""
What does a filter of VGG16 respond to? Start from a noise image and change
it, by gradient ascent, so that the mean activation of one filter of one conv
layer grows; the image then shows the pattern the filter looks for.

This file is the blog post's `visualize` under the names the post and its
readers use, and the command line. The work is done in the package:
the post's method in filtervis/optvis/blog.py, the regularized one in
filtervis/optvis/regularized.py, the dispatcher in filtervis/optvis/ascent.py,
the plots in filtervis/plots.py, the command line in filtervis/cli/visualize.py.

    python visualize.py                                   # the post's demo: conv3_2, filters 0-5
    python visualize.py --layer conv3_2 --filters 0-5 --iters 150 --step-size 2 --out filters.png
    python visualize.py --weights ../shared/models/vgg16-mri-notop.h5 --preprocess unit
    python visualize.py --model my_model.keras --preprocess tf --list-layers

    from visualize import visual, visualize_filters
    image = visual(model, 'conv3_2', 0, 150, 2, seed=0)      # float32 [224, 224, 3]
"""
import sys

if __name__ == '__main__':
    from filtervis.cli import console
    sys.exit(console.visualize())

from filtervis.cli.visualize import main  # noqa: E402,F401
from filtervis.core.network import session  # noqa: E402,F401
from filtervis.optvis.ascent import (ascend, auto_batch_size, render_objectives, visual,  # noqa: E402,F401
                                     visualize_filters)
from filtervis.optvis.blog import cost, start_images  # noqa: E402,F401
from filtervis.plots import plot_image, plot_images, save_figure, save_grid  # noqa: E402,F401
from filtervis.util.pictures import normalize_image  # noqa: E402,F401

__all__ = ['ascend', 'auto_batch_size', 'cost', 'main', 'normalize_image', 'plot_image', 'plot_images', 'render_objectives',
           'save_figure', 'save_grid', 'session', 'start_images', 'visual', 'visualize_filters']

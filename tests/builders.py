"""Builders that tests share: small VGG16 graphs with random or hand-set filters, and a measure of
vertical and horizontal structure. Keras networks are built in keras_nets.py.

    from builders import make_model, random_weights, one_layer_model, SOBEL_X
    model = one_layer_model(SOBEL_X)        # conv1_1 only: one vertical-edge filter
"""
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from filtervis.models import vgg16  # noqa: E402

MRI_WEIGHTS = os.environ.get('VGG16_MRI_WEIGHTS',
                             os.path.join(ROOT, '..', 'shared', 'models', 'vgg16-mri-notop.h5'))
# Channels of the small test VGG16: all 13 layers, few filters each.
TINY_CHANNELS = (4, 4, 6, 6, 8, 8, 8, 8, 8, 8, 8, 8, 8)


def random_weights(channels=TINY_CHANNELS, seed=0):
    """He-initialised (kernel [3, 3, in, out], bias [out]) pairs for len(channels) layers."""
    rng = np.random.default_rng(seed)
    weights, fan_in = [], 3
    for out in channels:
        kernel = rng.normal(0, np.sqrt(2.0 / (9 * fan_in)), (3, 3, fan_in, out)).astype(np.float32)
        bias = rng.normal(0, 0.05, out).astype(np.float32)
        weights.append((kernel, bias))
        fan_in = out
    return weights


def make_model(weights, preprocess='unit', description='test model (random weights)'):
    return vgg16.VGG16(graph_def=vgg16.build_graph_def(weights, preprocess), description=description)


SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)


def one_layer_model(kernel, bias=0.0, preprocess='unit'):
    """A 1-layer VGG16 (conv1_1 only) with hand-set filters.

    kernel: [k, k] (one filter, the same on every colour), [k, k, 3] (one
    filter) or [k, k, 3, out]; bias: a number or [out].
    """
    kernel = np.asarray(kernel, np.float32)
    if kernel.ndim == 2:
        kernel = np.repeat(kernel[:, :, None], 3, axis=2)
    if kernel.ndim == 3:
        kernel = kernel[:, :, :, None]
    bias = np.broadcast_to(np.asarray(bias, np.float32), kernel.shape[3:]).copy()
    return make_model([(kernel, bias)], preprocess, description='test model (hand-set filter)')


def gradient_energy(image):
    """(horizontal, vertical): mean squared difference of neighbouring pixels of the grey image."""
    grey = np.asarray(image, np.float64).mean(axis=-1)
    return np.mean(np.diff(grey, axis=1) ** 2), np.mean(np.diff(grey, axis=0) ** 2)



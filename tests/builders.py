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




def classifier_model(size=32, classes=3, red_logit=0, seed=0):
    """A small classifier with a softmax head: conv 'redness' (R - G - B + 200, ReLU: alive on grey) and 3 random filters,
    a global mean, a Dense layer to `classes` logits, a softmax. Logit `red_logit` fires on red: its weight on
    the redness channel is 1, the others' -1. Units: 'conv' (a map) and 'predictions' (the logits, with the
    softmax as its probability).
    """
    from filtervis.core import network
    from filtervis.util import quiet
    tf = quiet.import_tensorflow()
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 0.2 / 255, (3, 3, 3, 4)).astype(np.float32)
    kernel[:, :, :, 0] = 0
    kernel[1, 1, :, 0] = [1.0 / 255, -1.0 / 255, -1.0 / 255]
    weights = rng.normal(0, 0.1, (4, classes)).astype(np.float32)
    weights[0, :] = -1.0
    weights[0, red_logit] = 1.0
    graph = tf.Graph()
    with graph.as_default():
        images_t = tf.placeholder(tf.float32, [None, size, size, 3], name='images')
        conv_t = tf.nn.conv2d(images_t, tf.constant(kernel), 1, 'SAME', name='conv/Conv2D')
        pre_t = tf.nn.bias_add(conv_t, tf.constant(np.array([200.0 / 255, 0, 0, 0], np.float32)), name='conv/BiasAdd')
        relu_t = tf.nn.relu(pre_t, name='conv/Relu')
        pooled_t = tf.reduce_mean(relu_t, axis=[1, 2], name='pool')
        logits_t = tf.nn.bias_add(tf.matmul(pooled_t, tf.constant(weights), name='predictions/MatMul'),
                                  tf.constant(np.zeros(classes, np.float32)), name='predictions/BiasAdd')
        tf.nn.softmax(logits_t, name='predictions/Softmax')
    units = [network.Unit('conv', 'conv/Relu:0', 'conv/BiasAdd:0', 'Conv2D'),
             network.Unit('predictions', 'predictions/BiasAdd:0', None, 'Dense', 'predictions/Softmax:0')]
    return network.Network(graph.as_graph_def(), units, description='test classifier (red fires logit %d)'
                           % red_logit)


def listing(out):
    """{relative path: bytes} of every file under out."""
    found = {}
    for folder, _, names in os.walk(out):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, 'rb') as f:
                found[os.path.relpath(path, out)] = f.read()
    return found

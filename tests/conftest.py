"""Shared fixtures: small models built by the tests with the contract's tensor names.

Nothing here needs the network. The real (MRI fine-tuned) VGG16 weights in
../shared/models are used only by tests that ask for `mri_model` or
`mri_weights`, and those skip when the file is absent.
"""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from filtervis.core import precision  # noqa: E402
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


@pytest.fixture(autouse=True)
def cpu_without_bf16(monkeypatch):
    """Every test sees a CPU without native bfloat16, so precision='auto' (the
    default) is float32 and the known answers hold on any machine; tests of
    bfloat16 ask for it by name (tests/test_precision.py)."""
    monkeypatch.setattr(precision, 'CPUINFO_PATH', os.devnull)


@pytest.fixture(scope='module')
def model_file(tmp_path_factory):
    """The small test VGG16 (random_weights, preprocess 'unit') saved as a .tfmodel file."""
    path = tmp_path_factory.mktemp('model') / 'tiny.tfmodel'
    path.write_bytes(vgg16.build_graph_def(random_weights(), 'unit').SerializeToString())
    return str(path)


@pytest.fixture(scope='session')
def tiny_model():
    """A 13-layer VGG16 with 4-8 random filters per layer, preprocess 'unit'."""
    return make_model(random_weights())


@pytest.fixture(scope='session')
def mri_weights():
    if not os.path.exists(MRI_WEIGHTS):
        pytest.skip('real weights %s absent' % MRI_WEIGHTS)
    return MRI_WEIGHTS


@pytest.fixture(scope='session')
def mri_model(mri_weights, tmp_path_factory):
    """The real VGG16 conv weights (fine-tuned on brain MRI), inputs scaled to 0..1."""
    path = vgg16.convert_h5(mri_weights, 'unit', str(tmp_path_factory.mktemp('mri') / 'vgg16.tfmodel'))
    return vgg16.VGG16(path)

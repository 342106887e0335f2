"""Fixtures, and the switch for the slow tests.

`python -m pytest` runs the fast tests (small models the tests build, no
real cluster, browser or notebook); `python -m pytest --runslow` runs every
test, as CI does. A test that needs the real networks in ../shared/models
asks for `mri_model`, `mri_weights` (or skips by itself) and skips when the
file is absent.
"""
import os

import pytest

from builders import MRI_WEIGHTS, make_model, random_weights
from filtervis.core import precision
from filtervis.models import vgg16


def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', default=False,
                     help='also run the tests marked slow (real Dask clusters, the browser, the notebook, '
                          'full-size and real networks)')


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes more than a few seconds; runs with --runslow')


def pytest_collection_modifyitems(config, items):
    if config.getoption('--runslow'):
        return
    skip = pytest.mark.skip(reason='slow: run with --runslow')
    for item in items:
        if 'slow' in item.keywords:
            item.add_marker(skip)


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

"""Every feature on a PyTorch-style model exported to ONNX, through the command lines, on the small CNN of
tests/onnx_nets.py (20x20 RGB, --preprocess torch): both methods raise the objective of 2 filters, the other
objectives and an expression across two units run, the dataset examples of a folder of 2 images are the
units' own values at the recorded places, and an atlas is made (on a real Dask cluster too, in a slow test,
where workers load the translated graph from its file and spec). The shared YOLOX detector exported from
PyTorch 1.9 gets its listing, its units against onnxruntime and a render in slow tests when ../shared/models
is there (a copy in a temporary folder, so that no cache is written into ../shared).
"""
import json
import os
import shutil

import numpy as np
import onnx
import pytest
from PIL import Image

import onnx_nets
import visualize
from filtervis import atlas
from filtervis.cli import atlas as atlas_cli
from filtervis.cli import examples as examples_cli
from filtervis.core import network
from filtervis.models import build, onnx_model

FLAGS = ['--preprocess', 'torch', '--precision', 'float32', '--quiet']


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """tiny.onnx, translated once here so that no command below says so."""
    path = str(tmp_path_factory.mktemp('tiny') / 'tiny.onnx')
    onnx.save(onnx_nets.tiny_cnn(), path)
    onnx_model.load(path, 'torch', quiet=True).close()
    return path


def rises(objectives):
    """True when every picture's objective ends higher than it starts (the mean of the last and first 3 steps,
    as the regularized method's random transforms make single steps noisy)."""
    return bool((objectives[-3:].mean(axis=0) > objectives[:3].mean(axis=0)).all())


@pytest.mark.parametrize('method', ['blog', 'regularized'])
def test_both_methods_raise_the_objective_of_two_filters(tiny, tmp_path, method):
    out, arrays = tmp_path / 'grid.png', tmp_path / 'grid.npz'
    assert visualize.main(['--model', tiny, '--layer', 'features.10', '--filters', '0-1', '--iters', '30',
                           '--method', method, '--seed', '0', '--out', str(out), '--npz', str(arrays)] + FLAGS) == 0
    with np.load(arrays) as saved:
        assert saved['images'].shape == (2, 20, 20, 3) and np.isfinite(saved['images']).all()
        assert list(saved['filter_ids']) == [0, 1] and str(saved['layer']) == 'features.10'
        assert rises(saved['objectives'])
        assert str(saved['weights']) == 'tiny.onnx (ONNX from onnx_nets, opset 17, preprocess torch)'
    assert out.stat().st_size > 0


def test_bfloat16_runs_the_translated_ops(tiny, tmp_path):
    """Past the first layer: a Pad, LeakyReLU written with ReLUs, a ceil_mode pool, a depthwise conv, Clip as
    ReLU6, a grouped conv, HardSwish and SiLU, all in bfloat16."""
    arrays = tmp_path / 'grid.npz'
    assert visualize.main(['--model', tiny, '--layer', 'features.10', '--filters', '0-1', '--iters', '20',
                           '--out', str(tmp_path / 'grid.png'), '--npz', str(arrays), '--preprocess', 'torch',
                           '--precision', 'bfloat16', '--quiet']) == 0
    with np.load(arrays) as saved:
        assert str(saved['precision']) == 'bfloat16' and rises(saved['objectives'])


def test_a_class_of_the_classifier_rises(tiny, tmp_path):
    """The Gemm head is the logits unit: a class picture raises its logit."""
    arrays = tmp_path / 'grid.npz'
    assert visualize.main(['--model', tiny, '--layer', 'classifier', '--filters', '0-1', '--iters', '30',
                           '--out', str(tmp_path / 'grid.png'), '--npz', str(arrays)] + FLAGS) == 0
    with np.load(arrays) as saved:
        assert rises(saved['objectives'])


@pytest.mark.parametrize('flags', [['--layer', 'features.3', '--objective', 'neuron'],
                                   ['--layer', 'features.6', '--objective', 'negative'],
                                   ['--objective', 'features.3:1 - 0.5 * features.10:2'],
                                   ['--layer', 'features.1', '--diversity', '2']])   # features.1: an --all unit
def test_other_objectives_run(tiny, tmp_path, flags):
    arrays = tmp_path / 'grid.npz'
    filters = ['--filters', '0'] if '--layer' in flags else []
    assert visualize.main(['--model', tiny, '--iters', '8', '--out', str(tmp_path / 'grid.png'), '--npz',
                           str(arrays)] + flags + filters + FLAGS) == 0
    with np.load(arrays) as saved:
        assert np.isfinite(saved['images']).all() and np.isfinite(saved['objectives']).all()


def write_photos(folder, count=2, side=30):
    rng = np.random.default_rng(0)
    os.makedirs(folder)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), np.uint8), 'RGB').save(
            os.path.join(folder, 'photo%d.png' % i))
    return str(folder)


def test_examples_of_a_folder_of_two_images_are_the_units_values(tiny, tmp_path):
    folder = write_photos(tmp_path / 'images')
    records_path, out = tmp_path / 'examples.json', tmp_path / 'examples.png'
    assert examples_cli.main([folder, '--model', tiny, '--layers', 'features.6,features.10', '--filters', '0-1',
                              '--k', '2', '--json', str(records_path), '--out', str(out)] + FLAGS) == 0
    records = json.loads(records_path.read_text())
    net = onnx_model.load(tiny, 'torch', quiet=True)
    session = network.session(net)

    def unit_map(layer, name, filter_id):
        """The unit's map of one filter for an image as a user reads it: RGB, resized to the input size."""
        image = Image.open(os.path.join(folder, name)).convert('RGB').resize((20, 20), Image.BICUBIC)
        unit = net.layer_tensors[net.layer_index(layer)]
        return session.run(unit, net.create_feed_dict(np.asarray(image, np.float32)))[0, :, :, filter_id]

    # One record per image where the filter is on (a filter off on an image has nothing to show there).
    expected = {(layer, f): sum(unit_map(layer, name, f).max() > 0 for name in ('photo0.png', 'photo1.png'))
                for layer in ('features.6', 'features.10') for f in (0, 1)}
    assert sorted(expected.items()) == sorted(
        ((layer, f), sum(1 for r in records if (r['layer'], r['filter']) == (layer, f))) for layer, f in expected)
    assert len(records) >= 4
    for record in records:
        values = unit_map(record['layer'], record['file'], record['filter'])
        assert record['activation'] == pytest.approx(values[record['y'], record['x']], rel=1e-5, abs=1e-6)
        assert record['activation'] == pytest.approx(values.max(), rel=1e-5, abs=1e-6)
    assert out.stat().st_size > 0


ATLAS = ['--layers', 'features.0,features.10', '--filters', '0-1', '--iters', '10', '--size', '20',
         '--batch-size', '2', '--views', 'channel,negative']


def catalog(out):
    with open(os.path.join(out, atlas.CATALOG_FILE)) as f:
        return [(entry['layer'], entry['filter']) for entry in json.load(f)]


def test_an_atlas_of_two_units(tiny, tmp_path):
    out = str(tmp_path / 'atlas')
    assert atlas_cli.main([out, '--model', tiny] + ATLAS + FLAGS) == 0
    assert catalog(out) == [(layer, f) for layer in ('features.0', 'features.10') for f in (0, 1)]
    with open(os.path.join(out, 'index.html')) as f:
        page = f.read()
    # The page's commands name the model by file name, with its preprocessing.
    assert '--model tiny.onnx --preprocess torch' in page


@pytest.mark.slow
def test_an_atlas_on_a_dask_cluster_equals_one_process(tiny, tmp_path):
    from dask.distributed import LocalCluster
    alone, spread = str(tmp_path / 'alone'), str(tmp_path / 'spread')
    assert atlas_cli.main([alone, '--model', tiny] + ATLAS + FLAGS) == 0
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        assert atlas_cli.main([spread, '--model', tiny, '--scheduler', local.scheduler_address] + ATLAS + FLAGS) == 0
    assert catalog(spread) == catalog(alone)
    pictures = sorted(os.path.relpath(os.path.join(folder, name), alone) for folder, _, names in os.walk(alone)
                      for name in names if name.endswith('.npz'))
    assert len(pictures) == 2 * 2 * 2      # units x filters x views
    for name in pictures:
        with np.load(os.path.join(alone, name)) as a, np.load(os.path.join(spread, name)) as b:
            assert a['image'].tobytes() == b['image'].tobytes()


@pytest.fixture(scope='module')
def yolox(tmp_path_factory):
    """A copy of the shared ONNX detector in a folder of the test's own (its cache goes there)."""
    if not os.path.exists(onnx_nets.SHARED_MODEL):
        pytest.skip('shared network %s absent' % onnx_nets.SHARED_MODEL)
    copy = str(tmp_path_factory.mktemp('yolox') / os.path.basename(onnx_nets.SHARED_MODEL))
    shutil.copyfile(onnx_nets.SHARED_MODEL, copy)
    return copy


YOLOX_FLAGS = ['--preprocess', 'none', '--bgr']


@pytest.mark.slow
def test_the_shared_detector_lists_its_backbone_units_with_their_onnx_tensors(yolox, capsys):
    assert visualize.main(['--model', yolox, '--list-layers'] + YOLOX_FLAGS) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith('ddddocr-yolox-detector.onnx (ONNX from pytorch 1.9, opset 11, preprocess none, '
                               'BGR): ')
    # The Focus step (every 2nd row and column at 4 offsets) before the first conv: stride 2 at the first unit.
    assert lines[1].split() == ['Conv_41', 'Conv', '24', 'channels', '208x208', 'receptive', 'field', '6,',
                                'stride', '2', 'onnx=507']
    assert all(' onnx=' in line for line in lines[1:])
    # The neck's units after the 2x upsampling are listed as left out, naming the Resize.
    assert any(line.startswith('Conv_167 ') and 'Resize_165' in line for line in lines)


@pytest.mark.slow
def test_the_shared_detectors_units_equal_onnxruntime(yolox):
    net = onnx_model.load(yolox, 'none', bgr=True, quiet=True, all_layers=True)
    onnx_names = build.read_stamp(net.path)['onnx']
    model = onnx.load(yolox)
    random = np.random.default_rng(0).uniform(0, 255, (1, 416, 416, 3)).astype(np.float32)
    for images in (random, onnx_nets.photos(416, count=2)):
        if not len(images):
            continue
        worst = onnx_nets.fidelity(model, images, 'none', [onnx_names[name] for name in net.short_names], bgr=True)
        assert len(worst) == len(net.units) and max(worst.values()) <= 1e-4


@pytest.mark.slow
def test_the_shared_detector_renders_two_filters_whose_objective_rises(yolox, tmp_path):
    arrays = tmp_path / 'grid.npz'
    assert visualize.main(['--model', yolox, '--layer', 'Conv_95', '--filters', '0-1', '--iters', '20',
                           '--method', 'regularized', '--size', '416', '--out', str(tmp_path / 'grid.png'),
                           '--npz', str(arrays), '--quiet', '--precision', 'float32'] + YOLOX_FLAGS) == 0
    with np.load(arrays) as saved:
        assert saved['images'].shape == (2, 416, 416, 3) and rises(saved['objectives'])

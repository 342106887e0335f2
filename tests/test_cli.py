"""The command line of visualize.py, run as a user would, in a subprocess."""
import os
import subprocess
import sys

import pytest

from filtervis.models import vgg16
from builders import ROOT, random_weights

SCRIPT = os.path.join(ROOT, 'visualize.py')


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('cli_models')
    (folder / 'vgg16.tfmodel').write_bytes(vgg16.build_graph_def(random_weights(seed=5), 'unit')
                                           .SerializeToString())
    return str(folder)


def run(args, model_dir, cwd):
    env = dict(os.environ, VGG16_DIR=model_dir, TF_CPP_MIN_LOG_LEVEL='2')
    return subprocess.run([sys.executable, SCRIPT] + args, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def is_png(path):
    with open(path, 'rb') as f:
        return f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
def test_no_arguments_renders_the_post_demo(model_dir, tmp_path):
    done = run([], model_dir, tmp_path)
    assert done.returncode == 0, done.stderr
    assert 'saved 6 filters of conv3_2 to filters.png' in done.stdout
    assert is_png(tmp_path / 'filters.png')
    assert '900/900' in done.stderr    # the tqdm bar: 6 filters x 150 steps


@pytest.mark.slow
def test_flags(model_dir, tmp_path):
    out = tmp_path / 'grid.png'
    done = run(['--layer', 'conv2_1', '--filters', '0,2-3', '--iters', '5', '--step-size', '1',
                '--size', '48', '--seed', '1', '--normalize', 'std', '--pre-relu', '--batch-size', '2',
                '--out', str(out), '--quiet'], model_dir, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == '' and is_png(out)


def test_npz_and_a_large_grid(model_dir, tmp_path, monkeypatch):
    import numpy as np
    import visualize
    monkeypatch.setenv('VGG16_DIR', model_dir)
    out, arrays = tmp_path / 'all.png', tmp_path / 'all.npz'
    assert visualize.main(['--layer', 'conv5_3', '--filters', '0-7, 0-7', '--iters', '2', '--size', '32',
                           '--seed', '0', '--out', str(out), '--npz', str(arrays), '--quiet']) == 0
    saved = np.load(arrays)
    assert saved['images'].shape == (16, 32, 32, 3) and saved['objectives'].shape == (2, 16)
    assert saved['filter_ids'].tolist() == list(range(8)) * 2 and str(saved['layer']) == 'conv5_3'
    assert is_png(out) and sorted(p.name for p in tmp_path.iterdir()) == ['all.npz', 'all.png']


def test_missing_output_folder_is_found_before_the_work(model_dir, tmp_path, monkeypatch, capsys):
    import visualize
    monkeypatch.setenv('VGG16_DIR', model_dir)
    assert visualize.main(['--out', str(tmp_path / 'no' / 'x.png'), '--quiet']) == 2
    err = capsys.readouterr().err
    assert 'cannot save' in err and 'does not exist' in err


@pytest.mark.slow
def test_help_explains_every_flag(model_dir, tmp_path):
    done = run(['--help'], model_dir, tmp_path)
    assert done.returncode == 0
    for flag in ['--layer', '--filters', '--iters', '--step-size', '--method', '--normalize', '--pre-relu',
                 '--size', '--seed', '--batch-size', '--out', '--cols', '--model', '--weights',
                 '--preprocess', '--npz', '--quiet']:
        assert flag in done.stdout


@pytest.mark.parametrize('args, message', [
    (['--layer', '13'], 'layer 13 is out of range'),
    (['--layer', 'conv6_1'], "unknown layer 'conv6_1'"),
    (['--filters', '0-9'], 'filter 8 is out of range: conv3_2 has 8 filters'),
    (['--filters', 'x'], "--filters 'x'"),
    (['--iters', '0'], 'iters=0'),
    (['--step-size', '-2'], 'step_size=-2.0'),
    (['--preprocess', 'unit'], '--preprocess needs --weights'),
    (['--filters', '5-3'], "--filters '5-3'"),
    (['--size', '2'], 'size=2: conv3_2 needs images of at least 4 pixels'),
    (['--method', 'regularized', '--step-size', '2'], '--step-size and --normalize belong to --method blog'),
    (['--model', 'x.tfmodel', '--weights', 'w.h5'], '--model (a ready graph or a Keras model) and --weights'),
    (['--weights', 'missing.h5'], 'missing.h5 does not exist'),
])
def test_bad_flags_exit_2_with_a_message(model_dir, tmp_path, monkeypatch, capsys, args, message):
    # In process (main() is what the script calls) to spare a TensorFlow start per case.
    import visualize
    monkeypatch.setenv('VGG16_DIR', model_dir)
    assert visualize.main(args + ['--out', str(tmp_path / 'x.png'), '--quiet']) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / 'x.png').exists()


@pytest.mark.slow
def test_missing_model_tells_how_to_get_one(tmp_path):
    done = run(['--quiet'], str(tmp_path), tmp_path)
    assert done.returncode == 2 and 'python download.py' in done.stderr

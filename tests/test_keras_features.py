"""Every feature on a Keras CNN of the user's own, through the command lines (visualize.main, examples_cli.main).

The networks are small and built here: a greyscale mini-Xception like the
shared fer network (fixed 24x24 input, conv -> batch norm -> ReLU, a separable
conv, a residual Add, a strided head conv), saved as legacy HDF5, and the same
network with two first-layer kernels set to 1e-34, as fer's conv2d_1 has.
Known answers: greyscale pictures and [N, H, W, 1] arrays; the listed units
and their geometry; dataset examples that are the unit's own values at the
recorded place of greyscale images; a refused size writes nothing; near-zero
kernels are reported dead, with finite pictures and measures. The shared fer
network gets the same checks when ../shared/models is there.
"""
import json
import os
import shutil
import re

import numpy as np
import pytest
from PIL import Image

from filtervis.analysis import examples
from filtervis.models import keras_model
import keras_nets
from filtervis.analysis import measures
from filtervis.core import network
import visualize
from builders import ROOT
from filtervis.cli import examples as examples_cli

FER = os.path.join(ROOT, '..', 'shared', 'models', 'fer-emotion-minixception.hdf5')
SIZE = 24
DEAD_CHANNELS = [0, 2]
TINY = 1e-34


def build_mini_fer(dead=False):
    """The greyscale test network, random weights from seed 0; dead=True: conv2d_1's DEAD_CHANNELS are 1e-34.

    The batch norm after conv2d_1 holds what training leaves for such a
    channel: a variance near 0 (its input was constant), so the tiny
    gradient is scaled up by 1/sqrt(epsilon) on its way back, and a negative
    offset, so the ReLU after it is off. The other channels' ReLU is on.
    """
    import keras
    keras.utils.set_random_seed(0)
    layers = keras.layers
    x = inputs = keras.Input((SIZE, SIZE, 1))
    x = layers.Conv2D(4, 3, use_bias=False, name='conv2d_1')(x)
    x = layers.BatchNormalization(name='batch_normalization_1')(x)
    shortcut = x = layers.Activation('relu', name='activation_1')(x)
    x = layers.SeparableConv2D(4, 3, padding='same', use_bias=False, name='separable_conv2d_1')(x)
    x = layers.BatchNormalization(name='batch_normalization_2')(x)
    x = layers.Add(name='add_1')([x, shortcut])
    x = layers.Activation('relu', name='activation_2')(x)
    x = layers.Conv2D(3, 3, strides=2, name='conv2d_2')(x)
    outputs = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, outputs, name='mini_fer')
    dead_mask = np.isin(np.arange(4), DEAD_CHANNELS) if dead else np.zeros(4, bool)
    kernel, = model.get_layer('conv2d_1').get_weights()
    kernel[..., dead_mask] = TINY
    model.get_layer('conv2d_1').set_weights([kernel])
    model.get_layer('batch_normalization_1').set_weights([
        np.ones(4, np.float32),                                     # gamma
        np.where(dead_mask, -0.5, 0.5).astype(np.float32),          # beta
        np.zeros(4, np.float32),                                    # moving mean
        np.where(dead_mask, 1e-6, 1.0).astype(np.float32)])         # moving variance
    return model


@pytest.fixture(scope='module')
def nets(tmp_path_factory):
    """{'live': path, 'dead': path} of the two networks saved as .h5, frozen (the graphs cached beside them)."""
    folder = tmp_path_factory.mktemp('own_network')
    paths = {}
    with keras_nets.eager():
        for kind in ('live', 'dead'):
            paths[kind] = keras_nets.save(build_mini_fer(kind == 'dead'), str(folder / ('mini_fer_%s.h5' % kind)))
    for path in paths.values():
        keras_model.load(path, 'tf', quiet=True).close()   # frozen now, so no command below says so
    return paths


@pytest.fixture(scope='module')
def fer(tmp_path_factory):
    """A copy of the shared fer model in a folder of the test's own, so its cache is written there,
    never into ../shared."""
    if not os.path.exists(FER):
        pytest.skip('shared network %s absent' % FER)
    copy = tmp_path_factory.mktemp('fer') / os.path.basename(FER)
    shutil.copyfile(FER, str(copy))
    # Frozen here, once, so that the tests see what a user sees on every later run: no 'Freezing' line.
    keras_model.load(str(copy), 'tf', quiet=True).close()
    return str(copy)


def model_flags(path):
    return ['--model', path, '--preprocess', 'tf']


def is_grey_png(path):
    """True when every pixel of the PNG has R = G = B (pictures drawn grey, captions black on white)."""
    pixels = np.asarray(Image.open(path).convert('RGB'), np.int16)
    return bool((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all())


def test_list_layers(nets, capsys):
    assert visualize.main(model_flags(nets['live']) + ['--list-layers']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == 'mini_fer_live.h5 (Keras, preprocess tf): 5 units; sizes for 24x24 pictures'
    # One unit per convolution, named after the last layer of its conv -> [BN] -> [activation] chain, and the
    # residual block's output (add -> activation); 24 - 2 = 22 px after the VALID 3x3 conv, 10 after the strided one.
    pattern = r'(\S+)\s+(\S+)\s+(\d+) channels\s+(\d+)x(\d+)\s+receptive field (\d+), stride (\d+)$'
    assert [re.match(pattern, line).groups() for line in lines[1:-1]] == [
        ('activation_1', 'Conv2D', '4', '22', '22', '3', '1'),
        ('batch_normalization_2', 'SeparableConv2D', '4', '22', '22', '5', '1'),
        ('activation_2', 'Add', '4', '22', '22', '5', '1'),
        ('conv2d_2', 'Conv2D', '3', '10', '10', '7', '2')]
    # The model's output, a vector of 3: a unit seen from the whole picture.
    assert lines[-1].split()[:3] == ['global_average_pooling2d_4', 'GlobalAveragePooling2D', '3'] or \
        re.match(r'global_average_pooling2d\S*\s+GlobalAveragePooling2D\s+3 neurons', lines[-1]), lines[-1]

    assert visualize.main(model_flags(nets['live']) + ['--list-layers', '--all']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(': 9 units; sizes for 24x24 pictures')
    assert [line.split()[:2] for line in lines[1:-1]] == [
        ['conv2d_1', 'Conv2D'], ['batch_normalization_1', 'BatchNormalization'], ['activation_1', 'Activation'],
        ['separable_conv2d_1', 'SeparableConv2D'], ['batch_normalization_2', 'BatchNormalization'],
        ['add_1', 'Add'], ['activation_2', 'Activation'], ['conv2d_2', 'Conv2D']]
    assert lines[-1].split()[1] == 'GlobalAveragePooling2D'


@pytest.mark.slow
@pytest.mark.parametrize('method', ['blog', 'regularized'])
@pytest.mark.parametrize('layer', ['batch_normalization_2', 'add_1'])   # a default unit; a layer that is none
def test_greyscale_pictures_and_arrays(nets, tmp_path, layer, method):
    out, arrays = tmp_path / 'grid.png', tmp_path / 'grid.npz'
    assert visualize.main(model_flags(nets['live']) + [
        '--layer', layer, '--filters', '0-3', '--method', method, '--iters', '8', '--seed', '0',
        '--out', str(out), '--npz', str(arrays), '--quiet']) == 0
    saved = np.load(arrays)
    assert saved['images'].dtype == np.float32 and saved['images'].shape == (4, SIZE, SIZE, 1)
    assert np.isfinite(saved['images']).all() and not saved['dead'].any()
    assert str(saved['layer']) == layer and str(saved['weights']) == 'mini_fer_live.h5 (Keras, preprocess tf)'
    # Each picture raised its filter.
    assert (saved['objectives'][-1] > saved['objectives'][0]).all()
    assert is_grey_png(out)


def write_images(folder):
    """5 greyscale PNGs of 30x30 (resized to 24 when read) and one RGB PNG (read as its grey)."""
    rng = np.random.default_rng(0)
    os.makedirs(folder)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (30, 30), np.uint8), 'L').save(os.path.join(folder, 'grey%d.png' % i))
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), np.uint8), 'RGB').save(os.path.join(folder, 'colour.png'))
    return str(folder)


def test_examples_on_a_greyscale_network(nets, tmp_path):
    folder = write_images(tmp_path / 'images')
    records_path, out = tmp_path / 'examples.json', tmp_path / 'examples.png'
    assert examples_cli.main([folder] + model_flags(nets['live']) + [
        '--layers', 'activation_1,add_1', '--filters', '0-1', '--k', '3', '--json', str(records_path),
        '--out', str(out), '--quiet']) == 0
    records = json.loads(records_path.read_text())
    assert len(records) == 2 * 2 * 3
    assert {r['layer'] for r in records} == {'activation_1', 'add_1'}   # Keras names, add_1 no default unit
    net = keras_model.load(nets['live'], 'tf', all_layers=True, quiet=True)
    session = network.session(net)
    for record in records:
        # What a user reads: the file as greyscale, resized to the network's input.
        image = Image.open(os.path.join(folder, record['file'])).convert('L').resize((SIZE, SIZE), Image.BICUBIC)
        unit = net.layer_tensors[net.layer_index(record['layer'])]
        values = session.run(unit, {net.input: np.asarray(image, np.float32)[None, :, :, None]})[0, :, :,
                                                                                                 record['filter']]
        # The unit's value at (y, x) of its map, the image's strongest.
        assert 0 <= record['y'] < values.shape[0] and 0 <= record['x'] < values.shape[1]
        assert record['activation'] == pytest.approx(values[record['y'], record['x']], rel=1e-5, abs=1e-6)
        assert record['activation'] == pytest.approx(values.max(), rel=1e-5, abs=1e-6)
    assert is_grey_png(out)


def test_a_fixed_size_network_refuses_another_size(nets, tmp_path, capsys, monkeypatch):
    folder = write_images(tmp_path / 'images')
    monkeypatch.chdir(tmp_path)
    flags = model_flags(nets['live']) + ['--filters', '0-3', '--size', '32']
    # The post's method and the regularized one show the network the picture itself (maco, a Keras file's
    # default, shows it crops of a larger picture: tests/test_maco.py).
    commands = [(visualize.main, flags + ['--method', 'blog', '--out', 'grid.png', '--npz', 'a.npz']),
                (visualize.main, flags + ['--method', 'regularized']),
                (examples_cli.main, [folder] + flags + ['--json', 'e.json'])]
    for main, argv in commands:
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert error == 'error: size=32: this network takes 24x24 images only; use size 24\n'
    assert sorted(os.listdir(tmp_path)) == ['images']


def test_an_unknown_layer_names_the_closest(nets, capsys):
    assert visualize.main(model_flags(nets['live']) + ['--layer', 'activaton_1']) == 2
    error = capsys.readouterr().err.strip()
    assert '\n' not in error and "unknown layer 'activaton_1'" in error
    # A layer that is no default unit loads them all; with this few, every name is listed.
    assert re.search(r'\(conv2d_1, batch_normalization_1, activation_1, separable_conv2d_1, '
                     r'batch_normalization_2, add_1, activation_2, conv2d_2, global_average_pooling2d\S*\)$', error)


def render_dead(path, tmp_path, layer, method, dead_channels):
    """visualize.main on all filters of `layer`: the npz, with the warning naming dead_channels checked."""
    arrays = tmp_path / ('%s-%s.npz' % (layer, method))
    pattern = r'%s filter\(s\) %s: the gradient was exactly zero' % (layer, re.escape(str(dead_channels)))
    with pytest.warns(RuntimeWarning, match=pattern):
        assert visualize.main(model_flags(path) + [
            '--layer', layer, '--filters', 'all', '--method', method, '--iters', '5', '--seed', '0',
            '--out', str(tmp_path / 'grid.png'), '--npz', str(arrays), '--quiet']) == 0
    return np.load(arrays)


def check_dead(net, layer, saved, dead_channels):
    assert np.flatnonzero(saved['dead']).tolist() == dead_channels
    assert np.isfinite(saved['images']).all() and np.isfinite(saved['objectives']).all()
    values = measures.measure_all(net, layer, list(range(net.channels(layer))), saved['images'])
    assert np.isfinite(values['activation']).all() and np.isfinite(values['dead_fraction']).all()
    assert (values['dead_fraction'][dead_channels] == 1).all()


# A 1e-34 kernel gives a gradient of ~1e-38 on these 22x22 maps (9 taps x 1e-34 / 484 / 127.5), just
# above the smallest normal float32, so TensorFlow does not flush it to zero as it does fer's ~2e-39 on
# 62x62 maps; it moves no pixel. render.run reports a picture dead when no pixel moved by 1e-3 grey
# levels, and measures.dead_fraction calls a largest gradient below 1e-30 all dead.


@pytest.mark.parametrize('layer, method', [
    ('activation_1', 'blog'),                                     # the default unit: its ReLU is off there
    ('conv2d_1', 'blog'),                                          # the conv itself, no default unit
    ('conv2d_1', 'regularized'),
    # The regularized method maximizes the unit before its ReLU, the batch norm's output; measured after it.
    ('activation_1', 'regularized'),
])
@pytest.mark.slow
def test_near_zero_kernels_are_reported_dead(nets, tmp_path, layer, method):
    net = keras_model.load(nets['dead'], 'tf', all_layers=True, quiet=True)
    check_dead(net, layer, render_dead(nets['dead'], tmp_path, layer, method, DEAD_CHANNELS), DEAD_CHANNELS)


# ---------------------------------------------------------------------------
# The shared fer network

@pytest.mark.slow
@pytest.mark.parametrize('method', ['blog', 'regularized'])
def test_fer_first_layer_reports_its_dead_channels(fer, tmp_path, method):
    saved = render_dead(fer, tmp_path, 'conv2d_1', method, [0, 5])
    net = keras_model.load(fer, 'tf', all_layers=True, quiet=True)
    assert saved['images'].shape == (8, 64, 64, 1)
    check_dead(net, 'conv2d_1', saved, [0, 5])


def test_fer_refuses_another_size(fer, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert visualize.main(model_flags(fer) + ['--method', 'blog', '--size', '100', '--out', 'grid.png']) == 2
    assert capsys.readouterr().err == 'error: size=100: this network takes 64x64 images only; use size 64\n'
    assert os.listdir(tmp_path) == []

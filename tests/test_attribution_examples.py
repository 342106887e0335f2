"""Attribution maps of dataset examples (analysis/attribution/patches.py, methods.gradient_x_input) and
examples.py --attribution, on small hand-built networks with known answers.

Known answers: gradient x input of a network that is linear on the image
(one conv whose ReLU is always on) equals a NumPy computation and sums to
f(image) - f(black); Grad-CAM at a filter's own unit is the channel's own map
after ReLU, bilinearly resized, divided by its positions; a hand-set filter
that fires on a bright square puts the mass of both maps' crops on the
square; the crops are the patches' boxes; the graph does not grow; bad
methods and Grad-CAM on a vector unit are refused; a greyscale network's
maps are drawn over grey patches in RGB; the command line draws each patch
beside its map and names the method in --json, and without the flag writes
what it wrote before.
"""
import json
import os

import numpy as np
import pytest
from PIL import Image

from builders import classifier_model, make_model, one_layer_model
from filtervis import plots
from filtervis.analysis import attribution, examples
from filtervis.analysis.attribution.methods import upsample
from filtervis.cli import examples as examples_cli
from filtervis.core import network
from filtervis.models import vgg16
from filtervis.util import pictures

SIDE = 32
# The bright square of `square_folder`: rows and columns 8..15 of a 32 px image.
SQUARE = (slice(8, 16), slice(8, 16))


def write_png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(image, np.uint8)).save(path)


def dark(seed):
    """Dark grey noise, 0..60: below the bright detector's threshold everywhere."""
    return np.random.default_rng(seed).integers(0, 61, (SIDE, SIDE, 3)).astype(np.uint8)


def bright_weights():
    """conv1_1 fires on a bright pixel, relu(mean of its colours / 255 - 0.5); conv1_2 and, after the 2x2
    pool, conv2_1 pass it on (centre tap 1). conv2_1's unit (y, x) sees rows 2y - 4 .. 2y + 5 (10 px)."""
    first = np.zeros((3, 3, 3, 1), np.float32)
    first[1, 1, :, 0] = 1.0 / 3
    identity = np.zeros((3, 3, 1, 1), np.float32)
    identity[1, 1, 0, 0] = 1.0
    return [(first, np.array([-0.5], np.float32)), (identity, np.zeros(1, np.float32)),
            (identity, np.zeros(1, np.float32))]


@pytest.fixture(scope='module')
def bright_model():
    return make_model(bright_weights(), description='test model (bright-pixel detector)')


@pytest.fixture(scope='module')
def square_folder(tmp_path_factory):
    """square.png: a white 8x8 square at SQUARE on dark noise; spot.png: a light grey 2x2 spot; two dark images."""
    folder = tmp_path_factory.mktemp('square')
    image = dark(0)
    image[SQUARE] = 255
    write_png(str(folder / 'square.png'), image)
    image = dark(1)
    image[20:22, 4:6] = 200
    write_png(str(folder / 'spot.png'), image)
    for seed in (2, 3):
        write_png(str(folder / ('dark%d.png' % seed)), dark(seed))
    return str(folder)


def test_gradient_x_input_of_a_linear_net_equals_numpy():
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 1, (3, 3, 3)).astype(np.float32)
    # A bias far above what the kernel can take away from 0..1 pixels: the ReLU is always on, the net linear.
    net = one_layer_model(kernel, bias=100.0)
    images = rng.uniform(0, 255, (3, 12, 12, 3)).astype(np.float32)
    maps = attribution.gradient_x_input(net, images, 'conv1_1:0', batch_size=2)
    assert maps.shape == (3, 12, 12) and maps.dtype == np.float32
    # d mean(conv(image / 255)) / d pixel: every output position whose 3x3 window (zero padding) holds the pixel
    # adds its tap's weight, over 255 and the 144 positions.
    gradient = np.zeros((12, 12, 3))
    for y in range(12):
        for x in range(12):
            for dy in range(3):
                for dx in range(3):
                    py, px = y + dy - 1, x + dx - 1
                    if 0 <= py < 12 and 0 <= px < 12:
                        gradient[py, px] += kernel[dy, dx]
    gradient /= 255.0 * 144
    expected = (images * gradient).sum(axis=3)
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)
    # Linear: the map sums to f(image) - f(black).
    sess = network.session(net)
    values = sess.run(net.layer_tensors[0], {net.input: images}).mean(axis=(1, 2, 3))
    black = sess.run(net.layer_tensors[0], {net.input: np.zeros_like(images)}).mean()
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), values - black, rtol=1e-4)


def test_gradcam_of_an_example_is_the_channel_resized_and_cropped(tiny_model, tmp_path):
    rng = np.random.default_rng(1)
    for i in range(3):
        write_png(str(tmp_path / ('noise%d.png' % i)), rng.integers(0, 256, (SIDE, SIDE, 3)))
    index = tiny_model.layer_index('conv3_1')
    found = examples.find(tiny_model, str(tmp_path), [index], k=2, filters=[0, 3], size=SIDE, progress=False)
    assert len(found.records) == 4
    maps = attribution.example_maps(tiny_model, str(tmp_path), found.records, 'gradcam', size=SIDE, batch_size=1)
    patches = examples.patches(tiny_model, str(tmp_path), found.records, SIDE)
    side, stride, offset = examples.receptive_field(tiny_model, index, SIDE)
    sess = network.session(tiny_model)
    for record, patch_map, patch in zip(found.records, maps, patches):
        assert patch_map.shape == patch.shape[:2] == (side, side) and patch_map.dtype == np.float32
        image = examples.load_image(os.path.join(str(tmp_path), record['file']), SIDE)
        unit = sess.run(tiny_model.layer_tensors[index], {tiny_model.input: image[None]})[0, :, :, record['filter']]
        full = upsample(np.maximum(unit, 0)[None] / unit.size, SIDE)[0]
        expected = examples.crop(full, offset + stride * record['y'], offset + stride * record['x'], side)
        np.testing.assert_allclose(patch_map, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize('method, share', [('gradcam', 0.85), ('gradient-x-input', 0.999)])
def test_the_maps_of_a_bright_square_lie_on_the_square(bright_model, square_folder, method, share):
    found = examples.find(bright_model, square_folder, ['conv2_1'], k=4, size=SIDE, progress=False)
    # The dark images never turn the detector on: two examples, the square first, at the first unit of its 4x4.
    assert [(r['file'], r['y'], r['x']) for r in found.records] == [('square.png', 4, 4), ('spot.png', 10, 2)]
    maps = attribution.example_maps(bright_model, square_folder, found.records, method, size=SIDE)
    square_map = maps[0]
    assert square_map.shape == (10, 10)
    # The patch covers rows and columns 4..13 of the image, the square 8..15: its part is [4:, 4:] of the patch.
    on_square = np.zeros((10, 10), bool)
    on_square[4:, 4:] = True
    mass = np.abs(square_map)
    assert mass.sum() > 0 and mass[on_square].sum() >= share * mass.sum()
    # The spot's patch, rows 16..25 and columns 0..9, holds the 2x2 spot at rows 4..5, columns 4..5.
    spot = np.abs(maps[1])
    assert spot.sum() > 0 and spot[3:7, 3:7].sum() >= share * spot.sum()
    if method == 'gradient-x-input':
        # Only the square's pixels reach an active unit, each as the max of its pool window.
        assert (square_map >= 0).all() and (square_map[~on_square] == 0).all()


def test_example_maps_build_their_ops_once(bright_model, square_folder):
    found = examples.find(bright_model, square_folder, ['conv1_1', 'conv2_1'], k=2, size=SIDE, progress=False)
    for method in attribution.EXAMPLE_METHODS:
        attribution.example_maps(bright_model, square_folder, found.records, method, size=SIDE)
    count = len(bright_model.graph.get_operations())
    for _ in range(2):
        for method in attribution.EXAMPLE_METHODS:
            attribution.example_maps(bright_model, square_folder, found.records, method, size=SIDE)
    assert len(bright_model.graph.get_operations()) == count


def test_bad_methods_and_vector_units_are_refused(bright_model, square_folder):
    with pytest.raises(ValueError, match="attribution 'gradient': expected gradcam or gradient-x-input"):
        attribution.check_example_method('gradient')
    found = examples.find(bright_model, square_folder, ['conv2_1'], k=1, size=SIDE, progress=False)
    with pytest.raises(ValueError, match="attribution 'smoothgrad'"):
        attribution.example_maps(bright_model, square_folder, found.records, 'smoothgrad', size=SIDE)
    net = classifier_model()
    index = net.layer_index('predictions')
    with pytest.raises(ValueError, match='predictions is a vector .*; use gradient-x-input'):
        attribution.check_example_method('gradcam', net, [0, index])
    assert attribution.check_example_method('gradient-x-input', net, [index]) == 'gradient-x-input'
    # gradient-x-input has no unit of its own to read: a vector unit's examples get maps.
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    assert attribution.gradient_x_input(net, images, 'predictions:0').shape == (2, 32, 32)


def test_overlay_draws_the_map_over_the_grey_patch():
    patch = np.full((4, 4, 1), 200.0, np.float32)
    zero = pictures.overlay(patch, np.zeros((4, 4), np.float32))
    assert zero.shape == (4, 4, 3) and zero.dtype == np.float32 and 0 <= zero.min() and zero.max() <= 255
    signed = np.zeros((4, 4), np.float32)
    signed[0, 0], signed[3, 3] = 1.0, -1.0
    tile = pictures.overlay(np.full((4, 4, 3), 128.0, np.float32), signed)
    # Red where positive, blue where negative, the same grey-ish white at 0 everywhere else.
    assert tile[0, 0, 0] > tile[0, 0, 2] + 20 and tile[3, 3, 2] > tile[3, 3, 0] + 20
    np.testing.assert_allclose(tile[1, 1], tile[2, 2])


def test_plot_found_puts_each_map_beside_its_patch(bright_model, square_folder):
    found = examples.find(bright_model, square_folder, ['conv2_1'], k=4, size=SIDE, progress=False)
    maps = attribution.example_maps(bright_model, square_folder, found.records, 'gradcam', size=SIDE)
    fig = plots.plot_found(bright_model, square_folder, found, maps=maps, map_label='gradcam')
    assert len(fig.axes) == 2 * len(found.records)
    labels = [ax.get_xlabel() for ax in fig.axes]
    assert labels[1] == labels[3] == 'gradcam' and labels[0].startswith('square')
    with pytest.raises(ValueError, match='1 maps for 2 records'):
        plots.plot_found(bright_model, square_folder, found, maps=maps[:1])


@pytest.fixture(scope='module')
def bright_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('bright') / 'bright.tfmodel')
    with open(path, 'wb') as f:
        f.write(vgg16.build_graph_def(bright_weights(), 'unit').SerializeToString())
    return path


def test_command_line_draws_the_maps_and_names_the_method(bright_file, square_folder, tmp_path, capsys):
    flags = [square_folder, '--model', bright_file, '--layers', 'conv2_1', '--filters', '0', '--size', str(SIDE),
             '--quiet']
    plain_out, plain_json = str(tmp_path / 'plain.png'), str(tmp_path / 'plain.json')
    assert examples_cli.main(flags + ['--out', plain_out, '--json', plain_json]) == 0
    with open(plain_json) as f:
        plain = json.load(f)
    assert [sorted(r) for r in plain] == [['activation', 'file', 'filter', 'layer', 'rank', 'x', 'y']] * 2
    for method in attribution.EXAMPLE_METHODS:
        out, records = str(tmp_path / (method + '.png')), str(tmp_path / (method + '.json'))
        assert examples_cli.main(flags + ['--out', out, '--json', records, '--attribution', method]) == 0
        with open(records) as f:
            data = json.load(f)
        assert data == [dict(r, attribution=method) for r in plain]
        # Two tiles per example: the figure is wider than the plain one.
        with Image.open(out) as figure, Image.open(plain_out) as plain_figure:
            assert figure.width > plain_figure.width
    assert capsys.readouterr().err == ''


@pytest.mark.parametrize('flags, message', [
    (['--attribution', 'gradient'], "error: attribution 'gradient': expected gradcam or gradient-x-input"),
    (['--attribution', ''], "error: attribution '': expected gradcam or gradient-x-input"),
])
def test_command_line_refuses_a_bad_method_in_one_line_and_writes_nothing(bright_file, square_folder, tmp_path,
                                                                          capsys, flags, message):
    out, records = str(tmp_path / 'ex.png'), str(tmp_path / 'ex.json')
    code = examples_cli.main([square_folder, '--model', bright_file, '--size', str(SIDE), '--out', out,
                              '--json', records, '--quiet'] + flags)
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == message and os.listdir(str(tmp_path)) == []



def test_a_greyscale_network_gets_maps_and_rgb_overlays(tmp_path):
    from filtervis.util import quiet
    tf = quiet.import_tensorflow()
    graph = tf.Graph()
    with graph.as_default():
        images_t = tf.placeholder(tf.float32, [None, None, None, 1], name='images')
        kernel = np.random.default_rng(2).normal(0, 0.6, (3, 3, 1, 2)).astype(np.float32)
        pre_t = tf.nn.bias_add(tf.nn.conv2d(images_t / 255.0, tf.constant(kernel), 1, 'SAME'),
                               tf.constant(np.full(2, 0.05, np.float32)), name='grey/BiasAdd')
        tf.nn.relu(pre_t, name='grey/Relu')
    net = network.Network(graph.as_graph_def(), [network.Unit('grey', 'grey/Relu:0', 'grey/BiasAdd:0', 'Conv2D')],
                          description='greyscale test network')
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)).save(str(tmp_path / ('g%d.png' % i)))
    found = examples.find(net, str(tmp_path), ['grey'], k=2, size=SIDE, progress=False)
    for method in attribution.EXAMPLE_METHODS:
        maps = attribution.example_maps(net, str(tmp_path), found.records, method, size=SIDE)
        assert [m.shape for m in maps] == [(3, 3)] * len(found.records) and all(np.isfinite(m).all() for m in maps)
        fig = plots.plot_found(net, str(tmp_path), found, maps=maps, map_label=method)
        assert len(fig.axes) == 2 * 2 * 2
    patch = examples.patches(net, str(tmp_path), found.records[:1], SIDE)[0]
    assert patch.shape == (3, 3, 1) and pictures.overlay(patch, maps[0]).shape == (3, 3, 3)

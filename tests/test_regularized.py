"""regularized.py on small models: behaviour (what the pictures show, that the
objective rises, determinism, a graph that does not grow), not pixels."""
import importlib.util
import os
import re

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from filtervis.analysis import measures
from filtervis.optvis import regularized
import visualize
from builders import ROOT, gradient_energy, one_layer_model

SIZE = 48


# ---------------------------------------------------------------------------
# Config

def test_default_config_is_valid_and_hashable():
    config = regularized.Config()
    assert config.pre_relu is True and config.learning_rate == 0.05
    assert hash(config) == hash(regularized.Config())
    assert regularized.Config(scale_range=[0.9, 1.1]).scale_range == (0.9, 1.1)


@pytest.mark.parametrize('field, value', [
    ('learning_rate', 0), ('learning_rate', float('nan')), ('learning_rate', '0.05'),
    ('decay_power', -1), ('decay_power', 5),
    ('decorrelate', 1), ('pre_relu', 'yes'),
    ('pad', -1), ('jitter', 2.5), ('final_jitter', True),
    ('scale_range', (1.1, 0.9)), ('scale_range', (0.1, 1.0)), ('scale_range', 1.0), ('scale_range', (1, 2, 3)),
    ('rotation_degrees', -5), ('rotation_degrees', 200),
    ('init_std', -0.1), ('adam_beta1', 1.0), ('adam_beta2', -0.5), ('adam_epsilon', 0),
])
def test_bad_config_value_names_the_field(field, value):
    with pytest.raises(ValueError, match=r'Config\.%s=.*expected' % field):
        regularized.Config(**{field: value})


def test_render_rejects_bad_arguments(tiny_model):
    with pytest.raises(ValueError, match='regularized.Config'):
        regularized.render(tiny_model, 0, [0], 2, config={'learning_rate': 0.1}, size=16)
    with pytest.raises(ValueError, match='seed=-1'):
        regularized.render(tiny_model, 0, [0], 2, seed=-1, size=16)
    with pytest.raises(ValueError, match='too small'):
        regularized.render(tiny_model, 0, [0], 2, size=4, config=regularized.Config(pad=0))
    with pytest.raises(ValueError, match='iters=0'):
        regularized.render(tiny_model, 0, [0], 0, size=16)
    with pytest.raises(ValueError, match='batch_size=0'):
        regularized.render(tiny_model, 0, [0], 1, size=16, batch_size=0)
    with pytest.raises(ValueError, match='out of range'):
        regularized.render(tiny_model, 'conv1_1', [4], 1, size=16)


def test_benchmark_without_the_weights_says_so_and_exits_1(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('methods', os.path.join(ROOT, 'benchmarks', 'methods.py'))
    methods = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(methods)
    assert methods.main(['--weights', str(tmp_path / 'absent.h5'), '--out-dir', str(tmp_path)]) == 1
    assert 'absent.h5 are absent' in capsys.readouterr().err


# ---------------------------------------------------------------------------
# Transform

def test_transform_without_moves_is_the_identity():
    config = regularized.Config(pad=0, jitter=0, final_jitter=0, scale_range=(1, 1), rotation_degrees=0)
    image = np.random.default_rng(0).uniform(size=(2, 20, 20, 3)).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        out_t = regularized.random_transform(tf.constant(image), tf.constant([3, 1], tf.int64), 20, config)
        np.testing.assert_allclose(sess.run(out_t), image, atol=1e-6)


def test_jitter_is_a_crop_of_the_grey_padded_image_and_depends_on_the_seed():
    config = regularized.Config(pad=3, jitter=4, final_jitter=0, scale_range=(1, 1), rotation_degrees=0)
    image = np.random.default_rng(0).uniform(size=(1, 12, 12, 3)).astype(np.float32)
    padded = np.pad(image, [(0, 0), (3, 3), (3, 3), (0, 0)], constant_values=regularized.PAD_VALUE)
    crops = {(y, x): padded[:, y:y + 14, x:x + 14] for y in range(5) for x in range(5)}
    offsets = set()
    with tf.Graph().as_default(), tf.Session() as sess:
        seed_t = tf.placeholder(tf.int64, [2])
        out_t = regularized.random_transform(tf.constant(image), seed_t, 12, config)
        for step in range(8):
            out = sess.run(out_t, {seed_t: [0, step]})
            assert out.shape == (1, 14, 14, 3) and regularized.transformed_size(12, config) == 14
            matches = [offset for offset, crop in crops.items() if np.allclose(out, crop, atol=1e-6)]
            assert len(matches) == 1
            offsets.add(matches[0])
            np.testing.assert_array_equal(out, sess.run(out_t, {seed_t: [0, step]}))
    assert len(offsets) > 1


# ---------------------------------------------------------------------------
# Render

def test_result_shapes_types_and_range(tiny_model):
    result = regularized.render(tiny_model, 2, [0, 3, 0], 3, seed=1, size=SIZE, batch_size=2)
    assert result.images.shape == (3, SIZE, SIZE, 3) and result.images.dtype == np.float32
    assert 0 <= result.images.min() and result.images.max() <= 255
    assert result.objectives.shape == (3, 3) and result.objectives.dtype == np.float32
    assert result.dead.shape == (3,) and result.dead.dtype == bool and not result.dead.any()


def test_objective_rises(tiny_model):
    # The filters of the random test model answer weakly (objectives near +-0.5),
    # so a clear rise is a few hundredths for each, a tenth on average.
    result = regularized.render(tiny_model, 5, [0, 1, 2, 3], 40, seed=0, size=SIZE, batch_size=4)
    first, last = result.objectives[0], result.objectives[-10:].mean(axis=0)
    assert np.all(last - first > 0.03) and np.mean(last - first) > 0.1, (first, last)


def test_same_seed_same_picture_other_seed_other_picture(tiny_model):
    first = regularized.render(tiny_model, 3, [1, 2], 10, seed=5, size=SIZE, batch_size=2).images
    again = regularized.render(tiny_model, 3, [1, 2], 10, seed=5, size=SIZE, batch_size=2).images
    other = regularized.render(tiny_model, 3, [1, 2], 10, seed=6, size=SIZE, batch_size=2).images
    np.testing.assert_allclose(first, again, atol=1e-5)
    assert np.abs(first - other).max() > 1


def test_a_filter_gets_the_same_picture_alone_or_in_a_batch(tiny_model):
    batch = regularized.render(tiny_model, 3, [4, 1, 5], 10, seed=2, size=SIZE, batch_size=3).images
    alone = regularized.render(tiny_model, 3, [1], 10, seed=2, size=SIZE, batch_size=1).images
    np.testing.assert_allclose(batch[1], alone[0], atol=1e-3)


@pytest.mark.slow
def test_seed_none_draws_from_numpys_generator(tiny_model):
    np.random.seed(3)
    first = regularized.render(tiny_model, 1, [0], 2, size=16).images
    np.random.seed(3)
    again = regularized.render(tiny_model, 1, [0], 2, size=16).images
    fresh = regularized.render(tiny_model, 1, [0], 2, size=16).images
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - fresh).max() > 0


@pytest.mark.slow
def test_graph_does_not_grow_across_calls(tiny_model):
    regularized.render(tiny_model, 4, [0, 1], 2, seed=0, size=32, batch_size=2)
    count = len(tiny_model.graph.get_operations())
    for ids, batch_size in (([2], 1), ([0, 1, 2], 3), ([5, 6], 1)):
        regularized.render(tiny_model, 4, ids, 2, seed=1, size=32, batch_size=batch_size)
    assert len(tiny_model.graph.get_operations()) == count


@pytest.mark.slow
def test_copies_share_the_weights_of_the_model(tiny_model):
    regularized.render(tiny_model, 12, [0], 1, seed=0, size=32)
    copies = [op for op in tiny_model.graph.get_operations()
              if op.name.startswith('regularized_conv5_3/') and op.type == 'Const' and op.name.endswith('filter')]
    assert copies == []


def test_visualize_ascend_dispatches_to_render(tiny_model):
    result = visualize.ascend(tiny_model, 'conv1_2', [0, 1], 3, seed=0, size=24, method='regularized',
                              config=regularized.Config(learning_rate=0.1))
    direct = regularized.render(tiny_model, 1, [0, 1], 3, seed=0, size=24, batch_size=2,
                                config=regularized.Config(learning_rate=0.1))
    np.testing.assert_allclose(result.images, direct.images, atol=1e-5)


@pytest.mark.parametrize('config', [
    regularized.Config(decorrelate=False, decay_power=0),
    regularized.Config(pad=0, jitter=0, final_jitter=0, scale_range=(1, 1), rotation_degrees=0, pre_relu=False),
    regularized.Config(scale_range=(0.5, 2.0), rotation_degrees=180, init_std=0.5),
], ids=['pixel-basis', 'no-transforms', 'wide-transforms'])
@pytest.mark.slow
def test_other_configs_render_and_rise(tiny_model, config):
    result = regularized.render(tiny_model, 5, [0, 2], 30, seed=0, size=32, batch_size=2, config=config)
    assert np.isfinite(result.images).all() and 0 <= result.images.min() and result.images.max() <= 255
    assert np.all(result.objectives[-5:].mean(axis=0) > result.objectives[0])


def test_a_filter_that_sees_nothing_is_reported_dead():
    model = one_layer_model(np.zeros((3, 3)))
    with pytest.warns(RuntimeWarning, match='exactly zero'):
        result = regularized.render(model, 0, [0], 3, seed=0, size=16)
    assert result.dead.tolist() == [True]


# ---------------------------------------------------------------------------
# What the pictures show

def test_vertical_edge_filter_gives_vertical_stripes():
    # A linear filter's pre-ReLU mean depends only on the picture's border,
    # so the picture is made for the filter after its ReLU. The edge detector
    # is 7 rows tall: Sobel's 3 rows answer to edges tilted by 30 degrees almost
    # as well as to upright ones, and so would its picture.
    kernel = np.zeros((7, 7), np.float32)
    kernel[:, 2], kernel[:, 4] = -1, 1
    model = one_layer_model(kernel / 7)
    result = regularized.render(model, 0, [0], 100, seed=0, size=64,
                                config=regularized.Config(pre_relu=False))
    horizontal, vertical = gradient_energy(result.images[0])
    assert horizontal > 3 * vertical

    model = one_layer_model(kernel.T / 7)
    result = regularized.render(model, 0, [0], 100, seed=0, size=64,
                                config=regularized.Config(pre_relu=False))
    horizontal, vertical = gradient_energy(result.images[0])
    assert vertical > 3 * horizontal


def test_red_filter_gives_a_red_picture():
    model = one_layer_model(np.array([[[1.0, -1.0, -1.0]]]))
    result = regularized.render(model, 0, [0], 150, seed=0, size=32)
    red, green, blue = result.images[0].mean(axis=(0, 1))
    assert red > green + 100 and red > blue + 100, (red, green, blue)
    # A grey picture gives 0.5 - 0.5 - 0.5 = -0.5 on pixels scaled to 0..1.
    assert measures.activation(model, 0, [0], result.images, pre_relu=True)[0] > 0


@pytest.mark.slow
def test_mri_conv3_2_filter_0_has_no_dead_area(mri_model):
    """The post's picture of conv3_2 filter 0 leaves its centre dead; the regularized one does not."""
    blog = visualize.ascend(mri_model, 'conv3_2', [0], 100, 2, seed=0, size=128).images
    ours = regularized.render(mri_model, 5, [0], 100, seed=0, size=128).images
    dead_blog, dead_ours = (measures.dead_fraction(mri_model, 5, [0], images)[0] for images in (blog, ours))
    assert dead_blog > 0.2 and dead_ours == 0
    assert measures.activation(mri_model, 5, [0], ours)[0] > 3 * measures.activation(mri_model, 5, [0], blog)[0]


def test_module_docstring_has_usage():
    assert re.search(r'python \S+\.py', regularized.__doc__) and re.search(r'python \S+\.py', measures.__doc__)

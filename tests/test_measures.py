"""measures.py on known answers, with 1-layer models whose filters are set by hand."""
import math
import re

import numpy as np
import pytest

from filtervis.analysis import measures
from builders import SOBEL_X, make_model, one_layer_model


def numpy_conv_same(image, kernel, bias):
    """image [H, W, 3], kernel [k, k, 3, out]: the 'SAME' (zero padded) convolution plus bias, [H, W, out]."""
    k = kernel.shape[0]
    r = k // 2
    padded = np.pad(image, [(r, r), (r, r), (0, 0)])
    height, width = image.shape[:2]
    out = np.zeros((height, width, kernel.shape[3]), np.float64) + bias
    for dy in range(k):
        for dx in range(k):
            out += padded[dy:dy + height, dx:dx + width] @ kernel[dy, dx]
    return out


def test_activation_equals_numpy_for_a_one_layer_model():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 3, 2)).astype(np.float32)
    bias = np.array([0.1, -0.3], np.float32)
    model = one_layer_model(kernel, bias, preprocess='unit')
    images = rng.uniform(0, 255, size=(3, 20, 24, 3)).astype(np.float32)
    ids = [1, 0, 1]
    pre = np.array([numpy_conv_same(im / 255.0, kernel, bias)[:, :, f] for im, f in zip(images, ids)])
    np.testing.assert_allclose(measures.activation(model, 0, ids, images), np.maximum(pre, 0).mean(axis=(1, 2)),
                               rtol=1e-4)
    np.testing.assert_allclose(measures.activation(model, 'conv1_1', ids, images, pre_relu=True),
                               pre.mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)


def half_dark_model():
    # Every weight 1 and bias -20 on pixels scaled to 0..1: a unit is on only
    # where more than 20 of its 27 inputs are bright, so a black pixel, and a
    # pixel whose every unit reaches into the black half, is never seen.
    return one_layer_model(np.ones((3, 3)), -20.0)


def test_dead_fraction_of_a_half_black_picture_is_one_half():
    image = np.zeros((1, 64, 64, 3), np.float32)
    image[:, :, 32:] = 255
    model = half_dark_model()
    assert measures.dead_fraction(model, 0, [0], image)[0] == pytest.approx(0.5)
    assert measures.dead_fraction(model, 0, [0], image[:, :, ::-1])[0] == pytest.approx(0.5)
    assert measures.dead_fraction(model, 0, [0], np.full_like(image, 255))[0] == 0


def test_a_picture_the_filter_cannot_see_is_all_dead_and_has_no_robustness():
    model = half_dark_model()
    black = np.zeros((2, 32, 40, 3), np.float32)
    values = measures.measure_all(model, 0, [0, 0], black)
    assert values['dead_fraction'].tolist() == [1.0, 1.0]
    assert values['activation'].tolist() == [0.0, 0.0]
    assert np.isnan(values['blur_robustness']).all()
    assert measures.caption(values, 0) == 'act 0 · dead 1.00 · blur n/a'


def test_partial_blocks_at_the_edges_count():
    # 36 px = 4 full blocks and a partial one of 4 px; the bright columns are
    # 20..35, so blocks 0 and 1 (0..15) are dead, block 2 (16..23) is not, as
    # the units at columns 21.. reach back to column 20: 2 of 5 block columns.
    image = np.zeros((1, 36, 36, 3), np.float32)
    image[:, :, 20:] = 255
    assert measures.dead_fraction(half_dark_model(), 0, [0], image)[0] == pytest.approx(2 / 5)


def test_blur_keeps_a_flat_picture():
    rng = np.random.default_rng(1)
    model = make_model([(rng.normal(size=(3, 3, 3, 4)).astype(np.float32), np.full(4, 0.5, np.float32)),
                        (rng.normal(size=(3, 3, 4, 5)).astype(np.float32), np.full(5, 0.2, np.float32))])
    flat = np.full((5, 24, 24, 3), 0.0, np.float32) + np.array([200, 30, 90], np.float32)
    np.testing.assert_allclose(measures.blur(model, flat), flat, rtol=1e-6)
    values = measures.measure_all(model, 'conv1_2', [0, 1, 2, 3, 4], flat)
    seen = values['activation'] > 0
    assert seen.sum() >= 2
    np.testing.assert_allclose(values['blur_robustness'][seen], 1.0, atol=1e-4)


def test_blur_robustness_noise_loses_most_a_smooth_pattern_keeps_most():
    model = one_layer_model(SOBEL_X, 0.0)
    noise = np.random.default_rng(2).uniform(0, 255, size=(1, 64, 64, 3)).astype(np.float32)
    x = np.arange(64, dtype=np.float32)
    stripes = np.broadcast_to((127.5 + 100 * np.sin(2 * np.pi * x / 32))[None, None, :, None], (1, 64, 64, 3))
    noise_kept, = measures.blur_robustness(model, 0, [0], noise)
    stripes_kept, = measures.blur_robustness(model, 0, [0], stripes)
    assert noise_kept < 0.5 and stripes_kept > 0.9, (noise_kept, stripes_kept)


def test_gaussian_kernel_sums_to_one_and_has_sigma_one():
    weights = measures.gaussian_kernel()
    x = np.arange(-measures.BLUR_RADIUS, measures.BLUR_RADIUS + 1)
    assert weights.sum() == pytest.approx(1, abs=1e-6)
    assert math.sqrt((weights * x ** 2).sum()) == pytest.approx(measures.BLUR_SIGMA, rel=1e-3)


def test_measure_all_and_captions(tiny_model):
    images = np.random.default_rng(3).uniform(0, 255, size=(3, 32, 32, 3)).astype(np.float32)
    images[2] = images[0]
    values = measures.measure_all(tiny_model, 'conv2_2', [0, 5, 0], images)
    assert sorted(values) == ['activation', 'blur_robustness', 'dead_fraction']
    for array in values.values():
        assert array.shape == (3,) and array.dtype == np.float32
    np.testing.assert_allclose(values['activation'], measures.activation(tiny_model, 3, [0, 5, 0], images))
    np.testing.assert_allclose(values['dead_fraction'], measures.dead_fraction(tiny_model, 3, [0, 5, 0], images))
    np.testing.assert_allclose(values['blur_robustness'],
                               measures.blur_robustness(tiny_model, 3, [0, 5, 0], images), equal_nan=True)
    assert values['activation'][0] == values['activation'][2]
    for line in measures.captions(values):
        assert re.fullmatch(r'act \S+ · dead \d\.\d\d · blur (\d+\.\d\d|n/a)', line)
    fixed = {'activation': np.array([50.31]), 'dead_fraction': np.array([0.0]),
             'blur_robustness': np.array([0.7])}
    assert measures.caption(fixed, 0) == 'act 50.3 · dead 0.00 · blur 0.70'


def test_ops_are_built_once(tiny_model):
    images = np.random.default_rng(4).uniform(0, 255, size=(10, 16, 16, 3)).astype(np.float32)
    measures.measure_all(tiny_model, 4, list(range(8)) + [0, 1], images)
    count = len(tiny_model.graph.get_operations())
    measures.measure_all(tiny_model, 4, [7] * 10, images[::-1])
    measures.measure_all(tiny_model, 4, [1], images[:1])
    assert len(tiny_model.graph.get_operations()) == count


@pytest.mark.parametrize('images, ids, message', [
    (np.zeros((2, 16, 16)), [0, 0], r'expected \[N, H, W, 3\]'),
    (np.zeros((2, 16, 16, 3)), [0], '2 images for 1 filter ids'),
    (np.zeros((1, 6, 16, 3)), [0], 'at least 8x8'),
    (np.full((1, 16, 16, 3), np.nan), [0], 'NaN'),
    (np.zeros((1, 16, 16, 3)), [9], 'out of range'),
])
def test_bad_input_raises(tiny_model, images, ids, message):
    for measure in (measures.activation, measures.dead_fraction, measures.blur_robustness, measures.measure_all):
        with pytest.raises(ValueError, match=message):
            measure(tiny_model, 0, ids, images)

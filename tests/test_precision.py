"""precision='auto' | 'float32' | 'bfloat16' on small models.

float32 keeps the fast path's equality with the post's plain math; bfloat16
stays within a tolerance derived below and still climbs; 'auto' follows the
CPU's flags (conftest.py makes every other test see a CPU without bfloat16).

    pytest tests/test_precision.py -q
"""
import re

import numpy as np
import pytest

from filtervis.core import network

from filtervis.core import units
from filtervis.optvis import objectives
from filtervis.core import precision
from filtervis.util import quiet
from filtervis.optvis import regularized
from filtervis.models import vgg16
import visualize
from builders import make_model, random_weights
from test_fast_path import STEP_SIZE, Reference

tf = quiet.import_tensorflow()

SIZE = 32
ITERS = 5
# bfloat16 keeps 8 significant bits: one rounding changes a value by at most
# U = 2**-9 of itself. Target conv1_2 before its ReLU, so the only bfloat16 op
# is that one conv (conv1_1 and everything after the objective are float32),
# and the gradient of a pre-ReLU mean does not depend on the image beyond
# conv1_1's float32 ReLU. Its gradient is rounded twice (the kernel, then the
# backward conv's output; its input, 1/(h*w), is a power of two), so it is
# off by at most about 2U of its size. A step moves a pixel by
# STEP_SIZE * g / max|g|; an error of 2U in g and in max|g| moves it by at
# most 2 * 2U * STEP_SIZE more or less, and steps add up:
BF16_ATOL = ITERS * 2 * (2 * 2 ** -9) * STEP_SIZE    # 0.078 grey levels; measured 0.022


@pytest.fixture
def cpu_with_bf16(tmp_path, monkeypatch):
    path = tmp_path / 'cpuinfo'
    path.write_text('processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16\n')
    monkeypatch.setattr(precision, 'CPUINFO_PATH', str(path))


@pytest.mark.parametrize('flags, expected', [
    ('fpu sse2 avx2 avx512f avx512_vnni', 'float32'),
    ('fpu sse2 avx512f avx512_bf16', 'bfloat16'),
    ('fpu sse2 amx_tile amx_bf16', 'bfloat16'),
    (None, 'float32'),   # no /proc/cpuinfo: not Linux
])
def test_auto_follows_the_cpu_flags(tmp_path, monkeypatch, flags, expected):
    path = tmp_path / 'cpuinfo'
    if flags is not None:
        path.write_text('processor\t: 0\nmodel name\t: test CPU\nflags\t\t: %s\n' % flags)
    monkeypatch.setattr(precision, 'CPUINFO_PATH', str(path))
    assert precision.resolve_precision('auto') == expected
    assert precision.resolve_precision('float32') == 'float32'
    assert precision.resolve_precision('bfloat16') == 'bfloat16'


def test_auto_is_float32_on_a_cpu_without_bf16_and_the_result_says_so(tiny_model):
    # conftest.py points CPUINFO_PATH at an empty file for every test.
    assert visualize.ascend(tiny_model, 1, [0], 1, seed=0, size=SIZE).precision == 'float32'
    result = regularized.render(tiny_model, 1, [0], 1, seed=0, size=SIZE)
    assert result.precision == 'float32'


@pytest.mark.parametrize('bad', ['float16', 'bf16', None, 32])
def test_bad_precision_names_the_value_and_the_choices(tiny_model, bad):
    message = r'precision=%r: expected one of auto, float32, bfloat16' % (bad,)
    with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
        visualize.ascend(tiny_model, 1, [0], 1, size=SIZE, precision=bad)
    with pytest.raises(ValueError, match='expected one of auto, float32, bfloat16'):
        regularized.render(tiny_model, 1, [0], 1, size=SIZE, precision=bad)


@pytest.mark.slow
def test_forced_float32_keeps_the_fast_path_equal_to_the_post_on_a_bf16_cpu(tiny_model, cpu_with_bf16):
    assert precision.resolve_precision('auto') == 'bfloat16'
    reference = Reference(tiny_model)
    try:
        start = visualize.start_images([0, 3], SIZE, seed=1)
        result = visualize.ascend(tiny_model, 'conv3_1', [0, 3], ITERS, STEP_SIZE, init=start, size=SIZE,
                                  pre_relu=True, precision='float32')
        assert result.precision == 'float32'
        for i, feature_id in enumerate([0, 3]):
            image, _ = reference.ascend(4, feature_id, start[i], ITERS, pre_relu=True)
            np.testing.assert_allclose(result.images[i], image, atol=1e-3)
    finally:
        reference.close()


def test_bfloat16_images_stay_within_the_derived_tolerance(tiny_model):
    ids = list(range(tiny_model.layer_channels[1]))
    single, half = (visualize.ascend(tiny_model, 'conv1_2', ids, ITERS, STEP_SIZE, seed=0, size=SIZE,
                                     pre_relu=True, precision=precision) for precision in ('float32', 'bfloat16'))
    assert half.precision == 'bfloat16'
    difference = np.abs(half.images - single.images).max()
    # Not equal: the bfloat16 path really ran.
    assert 0 < difference <= BF16_ATOL


@pytest.mark.slow
def test_bfloat16_still_climbs_on_a_deep_layer_with_both_methods(tiny_model):
    blog = visualize.ascend(tiny_model, 'conv5_3', [0, 1, 2], 10, STEP_SIZE, seed=0, size=SIZE, pre_relu=True,
                            precision='bfloat16')
    assert (blog.objectives[-1] > blog.objectives[0]).all()
    smooth = regularized.render(tiny_model, 'conv5_3', [0, 1, 2], 20, seed=0, size=SIZE, batch_size=3,
                                precision='bfloat16')
    assert smooth.precision == 'bfloat16'
    # Random transforms make single steps noisy: compare the first and last five.
    assert (smooth.objectives[-5:].mean(axis=0) > smooth.objectives[:5].mean(axis=0)).all()


def test_precisions_share_one_session_and_the_graph_stops_growing():
    model = make_model(random_weights())
    for name in ('float32', 'bfloat16'):
        visualize.ascend(model, 4, [0, 1], 1, seed=0, size=SIZE, pre_relu=True, precision=name)
        regularized.render(model, 4, [0, 1], 1, seed=0, size=SIZE, precision=name)
    count = len(model.graph.get_operations())
    shared = network.session(model)
    for name in ('float32', 'bfloat16', 'float32', 'bfloat16'):
        visualize.ascend(model, 'conv3_1', [2], 2, seed=1, size=SIZE, pre_relu=True, precision=name)
        regularized.render(model, 4, [1], 2, seed=1, size=SIZE, precision=name)
    assert len(model.graph.get_operations()) == count
    assert network.session(model) is shared and model.session is shared


def test_bfloat16_falls_back_to_float32_in_one_line_where_the_path_has_an_op_it_cannot_run():
    graph_def = vgg16.build_graph_def(random_weights(), 'unit')
    # An op without a bfloat16 path in the builder, between conv1_2 and conv2_1.
    extra = graph_def.node.add(name='conv1_2/extra', op='Softsign', input=['pool1'])
    extra.attr['T'].type = 1   # DT_FLOAT
    next(n for n in graph_def.node if n.name == 'conv2_1/Conv2D').input[0] = 'conv1_2/extra'
    model = vgg16.VGG16(graph_def=graph_def, description='test model with an extra op')
    with pytest.warns(RuntimeWarning, match=r'^conv2_1: bfloat16 does not apply \(conv1_2/extra is a Softsign op'
                                            r'.*\); running float32$'):
        result = visualize.ascend(model, 'conv2_1', [0], 2, size=SIZE, precision='bfloat16')
    assert result.precision == 'float32'
    reference = visualize.ascend(model, 'conv2_1', [0], 2, size=SIZE, precision='float32', seed=0)
    again = visualize.ascend(model, 'conv2_1', [0], 2, size=SIZE, precision='bfloat16', seed=0)
    assert np.array_equal(again.images, reference.images)   # float32, bit for bit
    # The layers below the extra op still run in bfloat16.
    assert visualize.ascend(model, 'conv1_2', [0], 1, size=SIZE, precision='bfloat16').precision == 'bfloat16'


def bfloat16_convs(graph):
    return sorted(op.name for op in graph.get_operations()
                  if op.type == 'Conv2D' and op.get_attr('T') == tf.bfloat16)


def test_one_bfloat16_copy_per_op_however_many_terms_read_the_path():
    model = make_model(random_weights())
    # The layers after the first one up to conv3_2, the unit's own conv left out (the fast path convolves
    # conv3_1's copy itself): conv1_2, conv2_1, conv2_2, conv3_1.
    before = bfloat16_convs(model.graph)
    visualize.ascend(model, 'conv3_2', [0], 1, size=SIZE, precision='bfloat16')
    chain = bfloat16_convs(model.graph)
    assert len(chain) - len(before) == 4 + 1     # the chain, and the fast path's conv
    # A diversity group reads the whole unit (every 2nd row and column), an expression a second layer on the
    # same path: each adds its own conv, and no op of the chain is copied again.
    visualize.ascend(model, 'conv3_2', [0], 1, size=SIZE, precision='bfloat16', diversity=2)
    visualize.render_objectives(model, [objectives.parse('conv3_2:1 - 0.5 * conv4_1:2')], 1, size=SIZE,
                                precision='bfloat16')
    # Every copy, under whichever import scope (bfloat16, bfloat16_1, ...) it landed in.
    copies = [re.split(r'/bfloat16(?:_\d+)?/', name)[1] for name in bfloat16_convs(model.graph)
              if re.search(r'/bfloat16(?:_\d+)?/', name)]
    assert sorted(set(copies)) == sorted(copies), copies
    assert set(copies) == {'conv%s/Conv2D' % n for n in ('1_2', '2_1', '2_2', '3_1', '3_2', '3_3')}
    # And the values are those of a chain copied on its own.
    fresh = make_model(random_weights())
    sess, images = network.session(model), np.random.default_rng(0).uniform(0, 255, (1, SIZE, SIZE, 3))
    with model.graph.as_default():
        shared, = units.bfloat16_chain(model, [model.layer_tensors[model.layer_index('conv4_1')]])
    with fresh.graph.as_default():
        alone, = precision.bfloat16_tensors(fresh.graph, fresh.input,
                                            [fresh.layer_tensors[fresh.layer_index('conv4_1')]])
    np.testing.assert_array_equal(sess.run(shared, {model.input: images}),
                                  network.session(fresh).run(alone, {fresh.input: images}))

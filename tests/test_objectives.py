"""objectives.py: neuron, negative, direction, diversity and sums of them, with known answers.

- negative: a bright-left/dark-right edge filter gives opposite-signed horizontal
  gradients in its positive and negative pictures, each raising its own objective;
- neuron: with the post's method the pixels outside the unit's receptive field never change;
- direction: a one-hot direction gives the channel's pictures bit for bit;
- arithmetic: value(a - 0.5 b) = value(a) - 0.5 value(b);
- diversity: a push makes a group differ more, and keeps most of the activation (MRI weights).
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from filtervis.analysis import measures
from filtervis.core import network
from filtervis.optvis import objectives as obj
import visualize
from builders import MRI_WEIGHTS, ROOT, make_model, one_layer_model, random_weights
from test_network import UNITS, residual_graph_def

# Fires on bright-left / dark-right edges: left column minus right column.
LEFT_MINUS_RIGHT = np.array([[1, 0, -1]] * 3, np.float32)


@pytest.fixture(scope='module')
def tiny():
    return make_model(random_weights())


def horizontal_slope(image):
    """Mean of grey[y, x + 1] - grey[y, x]: negative where the picture darkens to the right."""
    return float(np.diff(np.asarray(image, np.float64).mean(axis=-1), axis=1).mean())


def test_negative_pictures_have_the_opposite_edge_and_raise_their_own_objective():
    model = one_layer_model(LEFT_MINUS_RIGHT, 0.0, 'none')
    positive = visualize.ascend(model, 0, [0], 30, 2.0, seed=0, size=32)
    negative = visualize.ascend(model, 0, [0], 30, 2.0, seed=0, size=32, objective='negative', pre_relu=True)
    assert horizontal_slope(positive.images[0]) < 0 < horizontal_slope(negative.images[0])
    for result in (positive, negative):
        assert result.objectives[-1, 0] > result.objectives[0, 0]
    # The negative picture's objective is minus the channel's mean before its ReLU:
    # positive once the filter is pushed below zero, off.
    assert negative.objectives[-1, 0] > 0
    values = measures.measure_objectives(model, [-obj.channel(0, 0)], negative.images, pre_relu=True)
    assert values['activation'][0] == pytest.approx(negative.objectives[-1, 0], rel=0.05)


def test_a_neuron_changes_only_the_pixels_in_its_receptive_field(tiny):
    size = 48
    index = tiny.layer_index('conv2_2')
    result = visualize.ascend(tiny, index, [0, 3], 20, 2.0, seed=0, size=size, objective='neuron', pre_relu=True)
    start = visualize.start_images([0, 3], size, seed=0)
    field, stride, offset = tiny.receptive_field(index, size)
    centre = tiny.output_side(index, size) // 2
    first = max(offset + stride * centre, 0)
    last = min(offset + stride * centre + field, size)
    inside = np.zeros((size, size), bool)
    inside[first:last, first:last] = True
    changed = np.abs(result.images - start).max(axis=-1) > 0              # [2, size, size]
    assert not changed[:, ~inside].any()
    assert changed[:, inside].mean() > 0.5
    assert (result.objectives[-1] > result.objectives[0]).all()


@pytest.mark.parametrize('layer', ['conv3_1', 'conv1_2'])
def test_a_one_hot_direction_gives_the_channels_pictures_bit_for_bit_on_the_fast_path(tiny, layer):
    index = tiny.layer_index(layer)
    channels = tiny.layer_channels[index]
    start = visualize.start_images([0, 1, 2], 32, seed=4)
    channel = visualize.ascend(tiny, index, [0, 1, 2], 6, 2.0, size=32, init=start, pre_relu=True)
    onehots = [obj.direction(layer, np.eye(channels)[f]) for f in (0, 1, 2)]
    direction = visualize.render_objectives(tiny, onehots, 6, step_size=2.0, size=32, init=start, pre_relu=True)
    assert np.array_equal(channel.images, direction.images)
    assert np.array_equal(channel.objectives, direction.objectives)


def test_a_one_hot_direction_gives_the_channels_pictures_bit_for_bit_on_a_unit_without_the_fast_path():
    net = network.Network(residual_graph_def(), UNITS)
    start = visualize.start_images([1, 5], 24, seed=2)
    channel = visualize.ascend(net, 'd', [1, 5], 6, 2.0, size=24, init=start)
    direction = visualize.render_objectives(net, [obj.direction('d', np.eye(8)[f]) for f in (1, 5)], 6,
                                            step_size=2.0, size=24, init=start)
    assert np.array_equal(channel.images, direction.images)


def test_a_direction_raises_its_projection(tiny):
    vector = np.array([1.0, -1.0, 0.5, 0, 0, 0, 0, 0])
    result = visualize.render_objectives(tiny, [obj.direction('conv3_2', vector)], 10, step_size=2.0, seed=0,
                                         size=32, method='blog')
    assert result.objectives[-1, 0] > result.objectives[0, 0]


def test_arithmetic_is_the_arithmetic_of_the_values(tiny):
    pictures = np.random.default_rng(0).uniform(0, 255, (2, 40, 40, 3)).astype(np.float32)
    a, b = obj.channel('conv3_2', 1), obj.channel('conv4_1', 7)
    combined = measures.measure_objectives(tiny, [a - 0.5 * b] * 2, pictures)['activation']
    alone_a = measures.measure_objectives(tiny, [a] * 2, pictures)['activation']
    alone_b = measures.measure_objectives(tiny, [b] * 2, pictures)['activation']
    np.testing.assert_allclose(combined, alone_a - 0.5 * alone_b, rtol=1e-6, atol=1e-7)
    neuron = obj.neuron('conv2_1', 2, 3, 4)
    two = measures.measure_objectives(tiny, [2 * neuron - (-neuron)] * 2, pictures)['activation']
    one = measures.measure_objectives(tiny, [neuron] * 2, pictures)['activation']
    np.testing.assert_allclose(two, 3 * one, rtol=1e-6, atol=1e-7)


def test_a_batch_of_one_form_shares_its_ops_and_the_graph_does_not_grow(tiny):
    def expressions(weight):
        return [obj.channel('conv3_2', 1) - weight * obj.channel('conv4_1', 7),
                obj.channel('conv3_2', 4) - weight * obj.channel('conv4_1', 2)]
    for method in ('blog', 'regularized'):
        visualize.render_objectives(tiny, expressions(0.5), 2, seed=0, size=32, method=method)
    count = len(tiny.graph.get_operations())
    for method in ('blog', 'regularized'):
        result = visualize.render_objectives(tiny, expressions(0.7), 3, seed=1, size=32, method=method)
        assert result.images.shape == (2, 32, 32, 3)
    assert len(tiny.graph.get_operations()) == count


def test_diversity_groups_start_apart_and_weight_0_is_the_plain_start(tiny):
    plain = visualize.ascend(tiny, 'conv3_2', [2, 5], 3, 2.0, seed=0, size=32)
    groups = visualize.ascend(tiny, 'conv3_2', [2, 5], 3, 2.0, seed=0, size=32, diversity=3, diversity_weight=0)
    assert groups.images.shape == (6, 32, 32, 3)
    # Picture 0 of each group is the filter's plain picture; the others start elsewhere.
    assert np.array_equal(groups.images[[0, 3]], plain.images)
    assert not np.array_equal(groups.images[0], groups.images[1])
    # A group is the same in any batch.
    again = visualize.ascend(tiny, 'conv3_2', [5], 3, 2.0, seed=0, size=32, diversity=3, diversity_weight=0,
                             batch_size=1)
    np.testing.assert_array_equal(again.images, groups.images[3:])


def test_the_diversity_measure(tiny):
    picture = np.random.default_rng(1).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    assert measures.diversity(tiny, 'conv2_1', np.repeat(picture, 3, axis=0)) == pytest.approx(0, abs=1e-6)
    different = np.random.default_rng(2).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    different[1] = 255 - different[1]
    different[2, :16] = 0
    assert measures.diversity(tiny, 'conv2_1', different) > 1e-3
    with pytest.raises(ValueError, match='2 or more pictures'):
        measures.diversity(tiny, 'conv2_1', picture)


@pytest.fixture(scope='module')
def mri(tmp_path_factory):
    if not os.path.exists(MRI_WEIGHTS):
        pytest.skip('real weights %s absent' % MRI_WEIGHTS)
    from filtervis.models import vgg16
    path = vgg16.convert_h5(MRI_WEIGHTS, 'unit', str(tmp_path_factory.mktemp('mri') / 'vgg16.tfmodel'))
    return vgg16.VGG16(path)


@pytest.mark.slow
@pytest.mark.parametrize('layer', ['conv3_2', 'conv4_3'])
def test_diversity_pushes_a_group_apart_and_keeps_most_of_the_activation(mri, layer):
    """Measured on the MRI weights with the regularized method and its default weight."""
    options = dict(seed=0, size=96, method='regularized', precision='float32', diversity=4, batch_size=8)
    plain = visualize.ascend(mri, layer, [0, 1], 60, diversity_weight=0, **options)
    pushed = visualize.ascend(mri, layer, [0, 1], 60, **options)
    index = mri.layer_index(layer)
    objs = [obj.channel(index, f) for f in (0, 1) for _ in range(4)]
    kept = (measures.measure_objectives(mri, objs, pushed.images)['activation']
            / measures.measure_objectives(mri, objs, plain.images)['activation'])
    assert kept.min() >= 0.7
    for group in (slice(0, 4), slice(4, 8)):
        assert measures.diversity(mri, index, pushed.images[group]) > measures.diversity(mri, index,
                                                                                        plain.images[group])


# --- expressions and the command line --------------------------------------

def test_expressions_parse_without_eval():
    parsed = obj.parse('conv3_2:0 - 0.5 * conv4_1:7')
    assert parsed == obj.channel('conv3_2', 0) - 0.5 * obj.channel('conv4_1', 7)
    assert obj.parse('-(a:1 + 2*b:2@3,4)') == -(obj.channel('a', 1) + 2 * obj.neuron('b', 2, 3, 4))
    assert obj.parse('1e-1 * x.y/z_1:3') == 0.1 * obj.channel('x.y/z_1', 3)
    assert str(parsed) == 'conv3_2:0 - 0.5 * conv4_1:7'
    for text, message in (('__import__("os")', r"bad token '__import__\(\"os\"\)'"),
                          ('conv3_2:0 ** 2', r"unexpected '\*'"), ('conv3_2', "bad token 'conv3_2'"),
                          ('conv3_2:0 * conv4_1:1', 'one side of \\* must be a number'),
                          ('conv3_2:0 + 1', 'a constant changes no picture'), ('(conv3_2:0', 'without its \\)'),
                          ('2 * 3', 'is a number'), ('', 'empty'), ('conv3_2:0 -', 'ends too early')):
        with pytest.raises(ValueError, match=message):
            obj.parse(text)


def test_objectives_resolve_on_a_network_with_clear_errors(tiny):
    for objective, message in ((obj.channel('conv9_9', 0), "unknown layer 'conv9_9'"),
                               (obj.channel('conv3_2', 8), 'filter 8 is out of range: conv3_2 has 8 filters'),
                               (obj.neuron('conv3_2', 0, 8, 0), r'position \(8, 0\) is outside the map of conv3_2'),
                               (obj.direction('conv3_2', [1, 0]), 'direction on conv3_2: 2 values for 8 channels')):
        with pytest.raises(ValueError, match=message):
            obj.bind(tiny, objective, 32)
    with pytest.raises(ValueError, match='different forms'):
        visualize.render_objectives(tiny, [obj.channel('conv3_2', 0), obj.neuron('conv3_2', 0)], 1, size=32)


def run_cli(tmp_path, *args):
    model_path = str(tmp_path / 'tiny.tfmodel')
    if not os.path.exists(model_path):
        from filtervis.models import vgg16
        with open(model_path, 'wb') as f:
            f.write(vgg16.build_graph_def(random_weights(), 'unit').SerializeToString())
    out = tmp_path / 'out'
    out.mkdir(exist_ok=True)
    command = [sys.executable, os.path.join(ROOT, 'visualize.py'), '--model', model_path, '--size', '32',
               '--iters', '3', '--quiet', '--out', str(out / 'f.png'), '--npz', str(out / 'f.npz'),
               '--precision', 'float32'] + list(args)
    return subprocess.run(command, cwd=str(tmp_path), capture_output=True, text=True, timeout=300), out


@pytest.mark.slow
def test_command_line_views_and_expression(tmp_path):
    done, out = run_cli(tmp_path, '--layer', 'conv3_2', '--filters', '0-1', '--diversity', '3')
    assert done.returncode == 0, done.stderr
    saved = np.load(str(out / 'f.npz'))
    assert saved['images'].shape == (6, 32, 32, 3)
    assert saved['filter_ids'].tolist() == [0, 0, 0, 1, 1, 1] and saved['group_index'].tolist() == [0, 1, 2] * 2
    done, out = run_cli(tmp_path, '--objective', 'conv3_2:0 - 0.5 * conv4_1:7')
    assert done.returncode == 0, done.stderr
    assert np.load(str(out / 'f.npz'))['images'].shape == (1, 32, 32, 3)
    for view in ('negative', 'neuron'):
        done, out = run_cli(tmp_path, '--layer', 'conv3_2', '--filters', '0-3', '--objective', view)
        assert done.returncode == 0, done.stderr
        assert str(np.load(str(out / 'f.npz'))['objective']) == view


@pytest.mark.parametrize('args, message', [
    (['--objective', 'conv9_9:0'], "unknown layer 'conv9_9'"),
    (['--objective', 'conv3_2:99'], 'filter 99 is out of range'),
    (['--objective', 'conv3_2:0@40,0'], r'position \(40, 0\) is outside the map of conv3_2'),
    (['--objective', 'conv3_2:0 + os.system(1)'], "bad token 'os.system\\(1\\)'"),
    (['--layer', 'conv3_2', '--filters', '5', '--diversity', '0'], '--diversity 0: expected 2 or more'),
    (['--objective', 'conv3_2:0', '--diversity', '4'], 'an expression renders one picture'),
    (['--layer', 'conv3_2', '--filters', '9'], 'filter 9 is out of range'),
    (['--diversity-weight', '2'], '--diversity-weight needs --diversity N'),
])
def test_bad_objectives_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, args, message):
    model_path = str(tmp_path / 'tiny.tfmodel')
    from filtervis.models import vgg16
    with open(model_path, 'wb') as f:
        f.write(vgg16.build_graph_def(random_weights(), 'unit').SerializeToString())
    out = tmp_path / 'out'
    out.mkdir()
    code = visualize.main(['--model', model_path, '--size', '32', '--iters', '2', '--quiet', '--out',
                           str(out / 'f.png'), '--npz', str(out / 'f.npz')] + args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith('error: ') and re.search(message, lines[0]), lines
    assert os.listdir(str(out)) == []


def test_an_expression_with_layer_or_filters_and_scattered_groups_are_refused(tiny, tmp_path, capsys):
    model_path = str(tmp_path / 'tiny.tfmodel')
    from filtervis.models import vgg16
    with open(model_path, 'wb') as f:
        f.write(vgg16.build_graph_def(random_weights(), 'unit').SerializeToString())
    for extra in (['--layer', 'conv1_1'], ['--filters', '0-3']):
        code = visualize.main(['--model', model_path, '--size', '32', '--iters', '2', '--quiet', '--out',
                               str(tmp_path / 'f.png'), '--objective', 'conv3_2:0'] + extra)
        assert code == 2 and 'leave out --layer and --filters' in capsys.readouterr().err
    assert not os.path.exists(str(tmp_path / 'f.png'))
    with pytest.raises(ValueError, match='must be next to each other'):
        visualize.render_objectives(tiny, [obj.channel('conv3_2', f) for f in (0, 1, 2)], 1, size=32,
                                    groups=[0, 1, 0])

"""network.py: the model-agnostic core, on hand-built graphs that are not VGG16.

Known answers: receptive fields equal a brute-force measurement through the
Network; the objective equals NumPy's mean of the unit's channel on both of
its paths (fast and general); ascent raises it on every kind of unit; the
graph does not grow; a spec round trip gives the same network.
"""
import numpy as np
import pytest

from filtervis.core import network

from filtervis.core import units
from filtervis.core import precision
from filtervis.util import quiet
import visualize
from builders import SOBEL_X, gradient_energy, make_model, random_weights

tf = quiet.import_tensorflow()


def residual_graph_def(seed=0):
    """A small graph with what VGG16 lacks: a strided depthwise conv, ReLU6, a dilated conv, a residual Add
    of two paths with different fields, a concat, a conv without bias and a unit with no activation."""
    rng = np.random.default_rng(seed)

    def weights(*shape):
        return tf.constant(rng.normal(0, 0.3, shape).astype(np.float32))
    graph = tf.Graph()
    with graph.as_default():
        images = tf.placeholder(tf.float32, [None, None, None, 3], name='images')
        x = images / 127.5 - 1.0
        # Positive biases: every channel of the first layer is alive on the grey start.
        a = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, weights(3, 3, 3, 4), 1, 'SAME'), tf.abs(weights(4))), name='a')
        b = tf.nn.relu6(tf.nn.depthwise_conv2d(a, weights(3, 3, 4, 1), [1, 2, 2, 1], 'SAME', name='b_pre'), name='b')
        long_path = tf.nn.conv2d(b, weights(3, 3, 4, 4), 1, 'SAME', dilations=2)
        short_path = tf.nn.conv2d(b, weights(1, 1, 4, 4), 1, 'SAME')
        c = tf.nn.relu(tf.add(long_path, short_path), name='c')
        d = tf.concat([c, tf.nn.max_pool2d(b, 3, 1, 'SAME')], axis=3, name='d')
        tf.nn.conv2d(d, weights(3, 3, 8, 5), 2, 'VALID', name='e')
    return graph.as_graph_def()


UNITS = [network.Unit('a', 'a:0', 'BiasAdd:0', 'Conv2D'), network.Unit('b', 'b:0', 'b_pre:0', 'DepthwiseConv2D'),
         network.Unit('c', 'c:0', 'Add:0', 'Add'), network.Unit('d', 'd:0', None, 'Concatenate'),
         network.Unit('e', 'e:0', None, 'Conv2D')]


@pytest.fixture(scope='module')
def residual_net():
    return network.Network(residual_graph_def(), UNITS, description='hand-built residual test graph',
                           preprocess='tf')


def brute_force_rows(net, index, side, unit_row):
    """The input rows whose change moves unit (unit_row, middle column) of unit `index`, by perturbing each row."""
    sess = network.session(net)
    base = np.full((1, side, side, 3), 128.0, np.float32)
    batch = np.repeat(base, side + 1, axis=0)
    for row in range(side):
        batch[row + 1, row, :, :] += 100.0
    values = sess.run(net.layer_tensors[index], {net.input: batch})
    column = values.shape[2] // 2
    changed = np.abs(values[1:, unit_row, column, :] - values[0, unit_row, column, :]).max(axis=1) > 1e-5
    return set(np.flatnonzero(changed))


@pytest.mark.parametrize('index', range(5))
def test_receptive_fields_equal_a_brute_force_measurement(residual_net, index):
    side = 31
    size, stride, offset = residual_net.receptive_field(index, side)
    rows = residual_net.output_side(index, side)
    for unit_row in sorted({0, rows // 2, rows - 1}):
        first = offset + stride * unit_row
        expected = set(range(max(first, 0), min(first + size, side)))
        seen = brute_force_rows(residual_net, index, side, unit_row)
        # A perturbation can cancel inside the net (a ReLU that stays off), never reach beyond the field.
        assert seen <= expected, (residual_net.short_names[index], unit_row)
        assert len(seen) >= 0.8 * len(expected)


def test_vgg16_fields_stay_what_they_were():
    model = make_model(random_weights())
    fields = {name: model.receptive_field(model.layer_index(name), 224)[0]
              for name in ('conv1_1', 'conv1_2', 'conv3_3', 'conv5_3')}
    assert fields == {'conv1_1': 3, 'conv1_2': 5, 'conv3_3': 40, 'conv5_3': 196}
    assert [model.min_size(i) for i in range(13)] == [1, 1, 2, 2, 4, 4, 4, 8, 8, 8, 16, 16, 16]


@pytest.mark.parametrize('pre_relu', [False, True])
@pytest.mark.parametrize('index', range(5))
def test_the_objective_is_the_mean_of_the_units_channel(residual_net, index, pre_relu):
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (3, 21, 21, 3)).astype(np.float32)
    ids = [0, 3, 1]
    key = ('test_objective', index, pre_relu)
    ids_t, objective_t = residual_net.cached_ops(key, lambda: (
        lambda ids_t: (ids_t, units.channel_objective(residual_net, index, ids_t, pre_relu)))(
            tf.placeholder(tf.int32, [None])))
    sess = network.session(residual_net)
    got = sess.run(objective_t, {residual_net.input: images, ids_t: ids})
    maps = sess.run((residual_net.pre_tensors if pre_relu else residual_net.layer_tensors)[index],
                    {residual_net.input: images})
    expected = [maps[i, :, :, f].mean() for i, f in enumerate(ids)]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['a', 'b', 'c', 'd', 'e'])
def test_ascent_raises_the_objective_on_every_kind_of_unit(residual_net, name):
    for method in ('blog', 'regularized'):
        result = visualize.ascend(residual_net, name, [0, 1], 8, seed=0, size=24, method=method,
                                  pre_relu=True, precision='float32')
        assert (result.objectives[-1] > result.objectives[0]).all(), (name, method)


def test_bfloat16_runs_the_residual_net_and_agrees_with_float32(residual_net):
    with residual_net.graph.as_default():
        half = precision.bfloat16_tensors(residual_net.graph, residual_net.input, residual_net.layer_tensors)
    # The first layer stays float32; everything after it is the bfloat16 copy.
    assert [t.dtype for t in half] == [tf.float32] + [tf.bfloat16] * 4
    images = np.random.default_rng(2).uniform(0, 255, (2, 23, 23, 3)).astype(np.float32)
    sess = network.session(residual_net)
    single = sess.run(residual_net.layer_tensors, {residual_net.input: images})
    halved = sess.run(half, {residual_net.input: images})
    for s, h in zip(single, halved):
        scale = np.abs(s).max()
        assert np.abs(s - h.astype(np.float32)).max() <= 0.05 * scale
    result = visualize.ascend(residual_net, 'e', [0, 1], 5, seed=0, size=24, precision='bfloat16', pre_relu=True)
    assert result.precision == 'bfloat16' and (result.objectives[-1] > result.objectives[0]).all()


def test_the_graph_does_not_grow_across_calls(residual_net):
    for method in ('blog', 'regularized'):
        visualize.ascend(residual_net, 'c', [0], 2, seed=0, size=24, method=method)
    count = len(residual_net.graph.get_operations())
    for method in ('blog', 'regularized'):
        for ids in ([1], [0, 2, 3]):
            visualize.ascend(residual_net, 'c', ids, 2, seed=1, size=24, method=method)
    assert len(residual_net.graph.get_operations()) == count


def test_a_spec_and_the_graph_file_make_the_same_network(residual_net, tmp_path):
    path = str(tmp_path / 'residual.tfmodel')
    with open(path, 'wb') as f:
        f.write(residual_graph_def().SerializeToString())
    spec = residual_net.spec()
    again = network.Network.from_spec(path, spec)
    assert again.short_names == residual_net.short_names and again.md5 == residual_net.md5
    assert again.preprocess == 'tf' and again.layer_min_sizes == residual_net.layer_min_sizes
    first = visualize.ascend(residual_net, 'd', [2], 3, seed=0, size=24).images
    second = visualize.ascend(again, 'd', [2], 3, seed=0, size=24).images
    assert np.array_equal(first, second)
    with pytest.raises(ValueError, match='spec format 99'):
        network.Network.from_spec(path, dict(spec, format=99))


def test_unknown_units_and_bad_inputs_get_clear_errors(residual_net):
    many = [network.Unit('unit_%02d' % i, 'a:0') for i in range(20)]
    net = network.Network(residual_graph_def(), many)
    with pytest.raises(ValueError, match=r"unknown layer 'unit_5'.*closest: (unit_\d\d, ){2}unit_\d\d\)") as error:
        net.layer_index('unit_5')
    assert 'unit_05' in str(error.value)
    with pytest.raises(ValueError, match=r'layer 9 is out of range: this network has 5 units, 0..4'):
        residual_net.layer_index(9)
    with pytest.raises(ValueError, match=r"unit x: the graph has no tensor 'nothing:0'"):
        network.Network(residual_graph_def(), [network.Unit('x', 'nothing:0')])
    with pytest.raises(ValueError, match='unit names repeat: a'):
        network.Network(residual_graph_def(), [UNITS[0], UNITS[0]])
    with pytest.raises(ValueError, match='no units'):
        network.Network(residual_graph_def(), [])


@pytest.mark.slow
def test_a_greyscale_input_and_a_fixed_size(tmp_path):
    graph = tf.Graph()
    with graph.as_default():
        images = tf.placeholder(tf.float32, [None, 20, 20, 1], name='images')
        kernel = np.zeros((3, 3, 1, 2), np.float32)
        kernel[:, :, 0, 0] = SOBEL_X                 # vertical edges
        kernel[:, :, 0, 1] = SOBEL_X.T               # horizontal edges
        tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(images, kernel, 1, 'SAME'), np.zeros(2, np.float32)), name='edge')
    net = network.Network(graph.as_graph_def(), [network.Unit('edge', 'edge:0', 'BiasAdd:0')])
    assert (net.input_channels, net.input_size) == (1, 20)
    result = visualize.ascend(net, 'edge', [0, 1], 50, 2.0, seed=0, size=20)
    assert result.images.shape == (2, 20, 20, 1)
    # Sobel-x looks for changes along x: vertical structure; its transpose, horizontal.
    horizontal, vertical = gradient_energy(result.images[0])
    assert horizontal > 5 * vertical
    horizontal, vertical = gradient_energy(result.images[1])
    assert vertical > 5 * horizontal
    with pytest.raises(ValueError, match=r'size=24: this network takes 20x20 images only'):
        visualize.ascend(net, 'edge', [0], 1, size=24)
    regularized_pictures = visualize.ascend(net, 'edge', [0, 1], 3, seed=0, size=20, method='regularized')
    assert regularized_pictures.images.shape == (2, 20, 20, 1)


def test_inputs_that_are_not_images_are_refused():
    for shape, message in (([None, 8, 8, 2], '2 channels: only greyscale'), ([None, 8, 3], 'expected an image batch'),
                           ([None, 8, 6, 3], 'only square inputs')):
        graph = tf.Graph()
        with graph.as_default():
            images = tf.placeholder(tf.float32, shape, name='images')
            tf.identity(images, name='out')
        with pytest.raises(ValueError, match=message):
            network.Network(graph.as_graph_def(), [network.Unit('out', 'out:0')])


def test_cached_ops_builds_once(residual_net):
    calls = []
    for _ in range(3):
        residual_net.cached_ops(('test_once',), lambda: calls.append(1) or tf.constant(1.0))
    assert calls == [1]


@pytest.mark.slow
def test_auto_keeps_a_path_with_depthwise_convolutions_in_float32(residual_net, tmp_path, monkeypatch):
    # A CPU that claims bfloat16: 'auto' resolves to bfloat16, but depthwise convolutions run slower in it.
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('flags\t\t: fpu avx512f avx512_bf16\n')
    monkeypatch.setattr(precision, 'CPUINFO_PATH', str(cpuinfo))
    with pytest.warns(RuntimeWarning, match=r"^c: bfloat16 does not apply \(b_pre is a DepthwiseConv2dNative "
                                            r"op, whose bfloat16 kernel is slower than float32 here; --precision "
                                            r"bfloat16 forces it\); running float32$"):
        auto = visualize.ascend(residual_net, 'c', [0], 2, seed=0, size=24, precision='auto')
    assert auto.precision == 'float32'
    assert visualize.ascend(residual_net, 'c', [0], 2, seed=0, size=24, precision='bfloat16').precision == 'bfloat16'
    assert visualize.ascend(residual_net, 'a', [0], 2, seed=0, size=24, precision='auto').precision == 'bfloat16'


def sampling_graph_def(seed=1):
    """Conv + bias (+ ReLU) units with every padding the sampled path must reproduce: SAME at strides 1 and 2
    (odd and even kernels, so uneven pads), VALID, EXPLICIT, a dilation; free input size."""
    rng = np.random.default_rng(seed)

    def weights(*shape):
        return tf.constant(rng.normal(0, 0.3, shape).astype(np.float32))
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, None, None, 3], name='images') / 127.5 - 1.0
        x = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, weights(3, 3, 3, 4), 1, 'SAME'), weights(4)), name='same')
        x = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, weights(2, 2, 4, 4), 1, 'SAME'), weights(4)), name='even')
        x = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, weights(3, 3, 4, 5), 2, 'SAME'), weights(5)), name='strided')
        x = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, weights(3, 3, 5, 4), 1, [[0, 0], [2, 1], [0, 2], [0, 0]]),
                                      weights(4)), name='explicit')
        x = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, weights(3, 3, 4, 4), 1, 'SAME', dilations=2), weights(4)),
                       name='dilated')
        tf.nn.bias_add(tf.nn.conv2d(x, weights(3, 3, 4, 3), 1, 'VALID'), weights(3), name='linear')
    return graph.as_graph_def()


@pytest.mark.slow
def test_sampled_values_are_the_units_values_at_every_nth_row_and_column():
    names = ('same', 'even', 'strided', 'explicit', 'dilated', 'linear')
    net = network.Network(sampling_graph_def(), [network.Unit(n, n + ':0') for n in names],
                          description='hand-built padding test graph')
    sess = network.session(net)
    rng = np.random.default_rng(0)
    for side in (23, 24):
        images = rng.uniform(0, 255, (2, side, side, 3)).astype(np.float32)
        for index, name in enumerate(names):
            whole = sess.run(units.unit_values(net, index), {net.input: images})
            for every in (2, 3):
                with net.graph.as_default():
                    sampled_t = units.sampled_values(net, index, every)
                # Only the sampled positions are computed: the conv runs at `every` times its own stride.
                conv_op = sampled_t.op.inputs[0].op.inputs[0].op if name != 'linear' else sampled_t.op.inputs[0].op
                assert conv_op.type == 'Conv2D' and conv_op.get_attr('padding') == b'VALID'
                assert conv_op.get_attr('strides')[1] == every * (2 if name == 'strided' else 1)
                sampled = sess.run(sampled_t, {net.input: images})
                assert sampled.shape == whole[:, ::every, ::every].shape, (name, side, every)
                np.testing.assert_allclose(sampled, whole[:, ::every, ::every], rtol=1e-5, atol=1e-5,
                                           err_msg='%s at %d px, every %d' % (name, side, every))
    # In bfloat16 (units after the first layer): the bfloat16 unit's values, within bfloat16's rounding.
    images = rng.uniform(0, 255, (2, 24, 24, 3)).astype(np.float32)
    for index in range(1, len(names)):
        with net.graph.as_default():
            whole_t = units.unit_values(net, index, precision_name='bfloat16')
            sampled_t = units.sampled_values(net, index, 2, precision_name='bfloat16')
            assert sampled_t.dtype == tf.bfloat16
            fetches = [tf.cast(whole_t, tf.float32), tf.cast(sampled_t, tf.float32)]
        whole, sampled = sess.run(fetches, {net.input: images})
        np.testing.assert_allclose(sampled, whole[:, ::2, ::2], rtol=2 ** -7, atol=2 ** -7 * np.abs(whole).max())
    # A unit that is not conv + bias: the whole unit, sliced.
    residual = network.Network(residual_graph_def(), UNITS, preprocess='tf')
    images = rng.uniform(0, 255, (1, 17, 17, 3)).astype(np.float32)
    sess = network.session(residual)
    with residual.graph.as_default():
        sampled_t = units.sampled_values(residual, 1, 2)
    whole, sampled = sess.run([units.unit_values(residual, 1), sampled_t], {residual.input: images})
    np.testing.assert_array_equal(sampled, whole[:, ::2, ::2])

"""geometry.py against brute force: which input pixels really move which output units.

The graphs brute-forced here have strictly positive weights and no ReLU, so
no perturbation cancels or is clipped away. `brute_force` runs it once on a batch holding a
random positive image and one copy per pixel with that pixel pushed up; the
units that moved must be exactly the walked field clipped to the image, for
every unit, border units included (where a wrong SAME padding would show).
"""
import numpy as np
import pytest

from filtervis.core import geometry
from filtervis.core.geometry import Field, GeometryError
from filtervis.util import quiet

tf = quiet.import_tensorflow()

CHANNELS = 3
# Far above the image (0.5..1), so that a pushed pixel moves every unit that sees it well past float32 noise.
PUSH = 1000.0


def brute_force(graph, output_t, side, seed=0):
    """changed [side, side, h, w] bool: whether unit (uy, ux) of output_t moves when input pixel (y, x) is pushed."""
    images = np.random.default_rng(seed).uniform(0.5, 1.0, (1, side, side, CHANNELS)).astype(np.float32)
    images = np.repeat(images, side * side + 1, axis=0)
    pixels = np.arange(side * side)
    images[1 + pixels, pixels // side, pixels % side, :] += PUSH
    with tf.Session(graph=graph) as session:
        out = session.run(output_t, {'images:0': images})
    moved = np.abs(out[1:] - out[:1]).max(axis=3)
    changed = moved > 1e-5 * np.abs(out[0]).max()
    return changed.reshape(side, side, out.shape[1], out.shape[2])


def _seen(field, side):
    """[side, field.side] bool: whether each input row (or column) lies in each unit's field."""
    units = np.arange(field.side)
    pixels = np.arange(side)[:, None]
    return (pixels >= field.offset + field.stride * units) & (pixels <= field.offset + field.stride * units
                                                               + field.size - 1)


def assert_field(field, changed, columns=None):
    """The units that moved are the field's rows x columns clipped to the image, for every unit.

    field: the Field of rows, and of columns too unless `columns` is given.
    """
    columns = columns or field
    side, _, h, w = changed.shape
    assert (field.side, columns.side) == (h, w)
    expected = _seen(field, side)[:, None, :, None] & _seen(columns, side)[None, :, None, :]
    wrong = np.argwhere(np.any(expected != changed, axis=(0, 1)))
    assert not len(wrong), 'units %s see other pixels than %s x %s' % (wrong[:5].tolist(), field, columns)


def build_graph(build, image_side):
    """(graph, output_t) of `build(images_t, rng)` on an images placeholder of any side."""
    graph = tf.Graph()
    with graph.as_default():
        images_t = tf.placeholder(tf.float32, [None, None, None, CHANNELS], name='images')
        output_t = build(images_t, np.random.default_rng(image_side))
    return graph, output_t


def check(build, image_side, **expected):
    """Build a graph with `build(images_t, rng)` -> output_t, walk it and brute-force it at `image_side`."""
    graph, output_t = build_graph(build, image_side)
    field = geometry.walk(graph, 'images:0', image_side)[output_t.name]
    assert_field(field, brute_force(graph, output_t, image_side))
    for name, value in expected.items():
        assert getattr(field, name) == value, field
    return field


def check_axes(build, image_side):
    """check() for a tensor whose rows and columns differ: walk_axes' pair against brute force; returns it."""
    graph, output_t = build_graph(build, image_side)
    pairs, unknown = geometry.walk_axes(graph, 'images:0', image_side)
    assert output_t.name in pairs, unknown.get(output_t.name)
    rows, columns = pairs[output_t.name]
    assert_field(rows, brute_force(graph, output_t, image_side), columns)
    return rows, columns


def kernel(rng, k, channels_in, channels_out=CHANNELS):
    """Positive weights [k, k, in, out] summing to about 1 per output, so activations stay near the image's."""
    return tf.constant(rng.uniform(0.5, 1.5, (k, k, channels_in, channels_out)) / (k * k * channels_in),
                       tf.float32)


def conv(x, rng, k, stride=1, padding='SAME', dilation=1):
    return tf.nn.conv2d(x, kernel(rng, k, int(x.shape[3])), stride, padding, dilations=dilation)


@pytest.mark.parametrize('side', [17, 32])
def test_conv_3x3_stride_1_same(side):
    check(lambda x, rng: conv(x, rng, 3), side, side=side, size=3, stride=1, offset=-1)


@pytest.mark.parametrize('side, offset', [(17, -1), (18, 0)])
def test_conv_3x3_stride_2_same_pads_odd_and_even_inputs_differently(side, offset):
    # Odd: 2 rows of padding, one before; even: 1 row, after.
    check(lambda x, rng: conv(x, rng, 3, stride=2), side, side=(side + 1) // 2, size=3, stride=2, offset=offset)


def test_conv_5x5_stride_2_valid():
    check(lambda x, rng: conv(x, rng, 5, stride=2, padding='VALID'), 21, side=9, size=5, stride=2, offset=0)


def test_conv_explicit_padding():
    check(lambda x, rng: conv(x, rng, 3, stride=2, padding=[[0, 0], [2, 1], [2, 1], [0, 0]]), 20,
          side=11, size=3, stride=2, offset=-2)


def test_dilated_conv():
    # A 3x3 conv first fills the holes a dilated kernel leaves, so that the field is a solid square.
    check(lambda x, rng: conv(conv(x, rng, 3), rng, 3, dilation=2), 19, side=19, size=7, stride=1, offset=-3)


@pytest.mark.parametrize('side', [19, 20])
def test_depthwise_conv_3x3_stride_2(side):
    def build(x, rng):
        return tf.nn.depthwise_conv2d(x, kernel(rng, 3, CHANNELS, 2), [1, 2, 2, 1], 'SAME')
    check(build, side, size=3, stride=2)


def test_max_pool_2x2_valid():
    check(lambda x, rng: tf.nn.max_pool2d(x, 2, 2, 'VALID'), 17, side=8, size=2, stride=2, offset=0)


@pytest.mark.parametrize('side', [17, 18])
def test_avg_pool_3x3_stride_2_same(side):
    check(lambda x, rng: tf.nn.avg_pool2d(x, 3, 2, 'SAME'), side, side=(side + 1) // 2, size=3, stride=2)


@pytest.mark.parametrize('value', [0.0, 2.0], ids=['Pad', 'PadV2'])
def test_pad_then_valid_conv(value):
    def build(x, rng):
        return conv(tf.pad(x, [[0, 0], [3, 1], [3, 1], [0, 0]], constant_values=value), rng, 3, stride=2,
                    padding='VALID')
    check(build, 18, side=10, size=3, stride=2, offset=-3)


def test_mirror_pad_moves_the_field_like_pad():
    graph = tf.Graph()
    with graph.as_default():
        images_t = tf.placeholder(tf.float32, [None, None, None, CHANNELS], name='images')
        padded_t = tf.pad(images_t, [[0, 0], [3, 1], [3, 1], [0, 0]], mode='REFLECT')
    assert padded_t.op.type == 'MirrorPad'
    assert geometry.walk(graph, 'images:0', 18)[padded_t.name] == Field(22, 1, 1, -3)


def test_residual_add_is_the_union_of_the_paths():
    def build(x, rng):
        return conv(x, rng, 1) + conv(conv(x, rng, 3), rng, 3)
    check(build, 17, side=17, size=5, stride=1, offset=-2)


@pytest.mark.parametrize('side', [17, 18])
def test_projection_shortcut(side):
    def build(x, rng):
        return conv(x, rng, 1, stride=2) + conv(conv(x, rng, 3, stride=2), rng, 3)
    check(build, side, side=(side + 1) // 2, size=7, stride=2)


def test_concat_along_channels_is_the_union_of_the_paths():
    def build(x, rng):
        return tf.concat([conv(x, rng, 1, stride=2), conv(x, rng, 5, stride=2)], axis=3)
    check(build, 17, side=9, size=5, stride=2, offset=-2)


@pytest.mark.parametrize('keras_style', [False, True])
def test_squeeze_and_excite_sees_the_whole_input(keras_style):
    def build(x, rng):
        x = conv(x, rng, 3)
        if keras_style:   # pooled to [N, C], a dense layer, reshaped to [N, 1, 1, C]
            pooled = tf.reduce_mean(x, [1, 2])
            scale = tf.reshape(tf.matmul(pooled, kernel(rng, 1, CHANNELS)[0, 0]), [-1, 1, 1, CHANNELS])
        else:
            scale = conv(tf.reduce_mean(x, [1, 2], keepdims=True), rng, 1)
        return x * scale
    field = check(build, 17, side=17, stride=1)
    assert field.offset + 16 * field.stride <= 0 and field.offset + field.size >= 17


def test_training_batch_norm_sees_the_whole_input():
    graph = tf.Graph()
    with graph.as_default():
        images_t = tf.placeholder(tf.float32, [None, None, None, CHANNELS], name='images')
        x = conv(images_t, np.random.default_rng(0), 3)
        normed_t = tf.nn.fused_batch_norm(x, tf.ones([CHANNELS]), tf.zeros([CHANNELS]), is_training=True)[0]
    # The 3x3 conv's field, widened so that every unit's range holds the whole 17-pixel image.
    assert geometry.walk(graph, 'images:0', 17)[normed_t.name] == Field(17, 33, 1, -16)


def test_channel_slices_and_flips_pass_the_field_through():
    def build(x, rng):
        x = tf.reverse(x, axis=[3])[..., ::-1][:, :, :, :2]
        left, right = tf.split(tf.concat([x, x[:, :, :, :1]], axis=-1), [1, 2], axis=3)
        return conv(tf.concat([right, left], axis=3), rng, 3)
    check(build, 17, side=17, size=3, stride=1, offset=-1)


def test_kernels_of_1x3_and_3x1_are_followed_apart():
    graph = tf.Graph()
    with graph.as_default():
        images_t = tf.placeholder(tf.float32, [None, None, None, CHANNELS], name='images')
        rng = np.random.default_rng(0)
        wide_t = tf.nn.conv2d(images_t, kernel(rng, 3, CHANNELS)[1:2], 1, 'VALID')
        square_t = tf.nn.conv2d(wide_t, kernel(rng, 3, CHANNELS)[:, 1:2], 1, 'VALID')
    fields = geometry.walk(graph, 'images:0', 17)
    assert wide_t.name not in fields   # 17 rows that see 1 pixel, 15 columns that see 3
    assert fields[square_t.name] == Field(15, 3, 1, 0)
    assert geometry.smallest_input(graph, 'images:0', [wide_t.name, square_t.name]) == {wide_t.name: 3,
                                                                                          square_t.name: 3}


# ---------------------------------------------------------------------------
# Per-pixel and shifting ops of the Keras Applications families

def dense(x, rng, channels_out=CHANNELS):
    """Keras' Dense on a map: tf.tensordot over the channel axis (Reshape to [N*h*w, C], MatMul, Reshape back)."""
    weights = tf.constant(rng.uniform(0.5, 1.5, (int(x.shape[3]), channels_out)) / int(x.shape[3]), tf.float32)
    return tf.nn.bias_add(tf.tensordot(x, weights, [[3], [0]]), tf.ones([channels_out]))


def test_dense_over_channels_is_per_pixel():
    def build(x, rng):
        return conv(dense(conv(x, rng, 3), rng, 5), rng, 3)
    check(build, 17, side=17, size=5, stride=1, offset=-2)
    graph, output_t = build_graph(lambda x, rng: dense(x, rng), 8)
    assert {'Reshape', 'MatMul'} <= {op.type for op in graph.get_operations()}
    assert geometry.walk(graph, 'images:0', 8)[output_t.name] == Field(8, 1, 1, 0)


@pytest.mark.parametrize('reshape', [
    lambda x: tf.reshape(tf.reshape(x, [-1, CHANNELS]), [-1, 17, 17, CHANNELS]),   # sides from a constant
    lambda x: tf.reshape(tf.reshape(x, [-1, CHANNELS]), tf.shape(tf.transpose(x, [0, 2, 1, 3]))),
    lambda x: tf.reshape(tf.reshape(x, [-1, 17 * CHANNELS]), [-1, 17, 17, CHANNELS]),   # rows, not pixels
], ids=['constant_sides', 'other_shape', 'rows'])
def test_reshapes_other_than_a_dense_layer_are_not_followed(reshape):
    graph, output_t = build_graph(lambda x, rng: conv(reshape(conv(x, rng, 3)), rng, 3), 17)
    pairs, unknown = geometry.walk_axes(graph, 'images:0', 17)
    assert output_t.name not in pairs and 'Reshape' in unknown[output_t.name]


def layer_norm(x):
    """LayerNormalization over channels, as Keras builds it: moments over the last axis."""
    mean, variance = tf.nn.moments(x, axes=[3], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + 1e-3) * tf.constant([1.0, 1.5, 2.0]) + 0.5


@pytest.mark.parametrize('gelu', [
    lambda x: 0.5 * x * (1 + tf.math.erf(x / np.sqrt(2.0))),
    lambda x: 0.5 * x * tf.math.erfc(-x / np.sqrt(2.0)),                          # as Keras 3 builds it
    lambda x: 0.5 * x * (1 + tf.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))),   # the approximation
], ids=['erf', 'erfc', 'tanh'])
def test_layer_norm_over_channels_and_gelu_are_per_pixel(gelu):
    check(lambda x, rng: conv(gelu(layer_norm(conv(x, rng, 3))), rng, 3), 17, side=17, size=5, stride=1, offset=-2)


def test_multiplies_by_per_channel_and_broadcast_tensors_are_per_pixel():
    def build(x, rng):
        per_channel = tf.constant(rng.uniform(0.5, 2.0, CHANNELS), tf.float32)                  # LayerScale
        per_pixel = tf.constant(rng.uniform(0.5, 2.0, (1, 17, 17, 1)), tf.float32)               # a fixed mask
        return conv(conv(x, rng, 3) * per_channel * per_pixel + tf.ones([1, 1, 1, CHANNELS]), rng, 3)
    check(build, 17, side=17, size=5, stride=1, offset=-2)


@pytest.mark.parametrize('crop, side, offset', [
    (lambda x: x[:, 1:, 1:, :], 14, 0),                         # Cropping2D(((1, 0), (1, 0)))
    (lambda x: x[:, 2:-1, 2:-1, :], 12, 1),
    (lambda x: tf.slice(x, [0, 3, 3, 0], [-1, 10, 10, -1]), 8, 2),
    (lambda x: x[..., 1:-1, 1:-1, :], 13, 0),                   # an ellipsis before the spatial axes
], ids=['first_row', 'both_ends', 'slice', 'ellipsis'])
def test_constant_crops_shift_the_field(crop, side, offset):
    # A 3x3 SAME conv (offset -1) before the crop, a VALID one after it: a
    # padding after a crop would lie inside the image, where no Field is exact
    # for the border units (see geometry's docstring).
    check(lambda x, rng: conv(crop(conv(x, rng, 3)), rng, 3, padding='VALID'), 17, side=side, size=5, stride=1,
          offset=offset)


def test_nasnet_shift_pads_crops_and_pools():
    # NASNet's second path: ZeroPadding2D(((0, 1), (0, 1))), Cropping2D(((1, 0), (1, 0))), a 1x1 pool of stride 2.
    def build(x, rng):
        shifted = tf.pad(conv(x, rng, 3), [[0, 0], [0, 1], [0, 1], [0, 0]])[:, 1:, 1:, :]
        return tf.nn.avg_pool2d(shifted, 1, 2, 'VALID')
    check(build, 16, side=8, size=3, stride=2, offset=0)


@pytest.mark.parametrize('side', [16, 17])
def test_every_second_row_and_column_doubles_the_stride(side):
    def build(x, rng):
        return x[:, 1::2, 1::2, :]
    check(build, side, side=side // 2, size=1, stride=2, offset=1)


def test_focus_interleaves_four_strided_slices():
    # YOLOX's Focus: the four phases of a 2x2 grid side by side in channels, then a conv.
    def build(x, rng):
        phases = [x[:, row::2, column::2, :] for column in (0, 1) for row in (0, 1)]
        return conv(tf.concat(phases, axis=3), rng, 3)
    check(build, 16, side=8, size=6, stride=2, offset=-2)


def test_asymmetric_zero_padding_shifts_rows_and_columns_apart():
    def build(x, rng):
        return conv(tf.pad(x, [[0, 0], [0, 1], [2, 1], [0, 0]]), rng, 3, stride=2, padding='VALID')
    rows, columns = check_axes(build, 17)
    assert (rows, columns) == (Field(8, 3, 2, 0), Field(9, 3, 2, -2))


def test_a_1x7_conv_has_rows_and_columns_of_different_sizes():
    # InceptionV3's factorized 7x7: rows and columns differ between the 1x7 and the 7x1 conv.
    def build(x, rng):
        return tf.nn.conv2d(x, kernel(rng, 3, CHANNELS)[1:2], 1, 'SAME')    # a 1x3 kernel
    assert check_axes(build, 15) == (Field(15, 1, 1, 0), Field(15, 3, 1, -1))


def test_a_unit_without_a_square_map_is_listed_with_why():
    from filtervis.core import network
    # A VALID 1x3 conv: 16 rows, 14 columns, which no side and no square field describe.
    graph, output_t = build_graph(lambda x, rng: tf.nn.conv2d(x, kernel(rng, 3, CHANNELS)[1:2], 1, 'VALID'), 16)
    units = [network.Unit('wide', output_t.name), network.Unit('image', 'images:0')]
    net = network.Network(graph.as_graph_def(), units)
    assert net.unit_line(0, 16).endswith('receptive field not known: its map is 16x14 with units 1 and 1 pixels '
                                         'apart, not square')
    with pytest.raises(ValueError, match='receptive field of wide is not known'):
        net.receptive_field(0, 16)
    # The other units keep theirs.
    assert net.unit_line(1, 16).endswith('16x16    receptive field 1, stride 1')


VGG16_BLOCKS = (2, 2, 3, 3, 3)


def vgg16_like(images_t):
    """Conv output tensors of a VGG16-shaped chain (3x3 SAME convs, 2x2 VALID pools after each block)."""
    rng, x, convs = np.random.default_rng(0), images_t, []
    for convs_in_block in VGG16_BLOCKS:
        for _ in range(convs_in_block):
            x = tf.nn.relu(tf.nn.bias_add(conv(x, rng, 3), tf.ones([CHANNELS])))
            convs.append(x)
        x = tf.nn.max_pool2d(x, 2, 2, 'VALID')
    return convs


def test_vgg16_fields_sides_and_smallest_inputs():
    graph = tf.Graph()
    with graph.as_default():
        images_t = tf.placeholder(tf.float32, [None, None, None, CHANNELS], name='images')
        convs = vgg16_like(images_t)
    names = [t.name for t in convs]
    fields = geometry.walk(graph, 'images:0', 224)
    # VGG16's known receptive fields at conv1_1, conv1_2, conv3_3 and conv5_3.
    assert [fields[names[i]].size for i in (0, 1, 6, 12)] == [3, 5, 40, 196]
    assert fields[names[6]] == Field(56, 40, 4, -18)
    with tf.Session(graph=graph) as session:
        shapes = [out.shape[1] for out in session.run(convs, {images_t: np.zeros((1, 37, 37, CHANNELS))})]
    assert [geometry.walk(graph, 'images:0', 37)[name].side for name in names] == shapes
    smallest = geometry.smallest_input(graph, 'images:0', names)
    block_of = np.repeat(np.arange(len(VGG16_BLOCKS)), VGG16_BLOCKS)
    assert [smallest[name] for name in names] == [2 ** block for block in block_of]


@pytest.mark.parametrize('move', [
    lambda x: tf.image.resize(x, [40, 40]),
    lambda x: tf.nn.space_to_depth(x, 2),
    lambda x: tf.transpose(x, [0, 2, 1, 3]),
    lambda x: tf.reshape(x, [-1, 17, 17, CHANNELS]),
    lambda x: x[:, ::-1, :, :],
    lambda x: tf.reverse(x, axis=[1]),
], ids=['resize', 'space_to_depth', 'transpose', 'reshape', 'reversing_slice', 'flip'])
def test_ops_that_move_pixels_leave_downstream_tensors_out(move):
    graph = tf.Graph()
    with graph.as_default():
        images_t = tf.placeholder(tf.float32, [None, None, None, CHANNELS], name='images')
        rng = np.random.default_rng(0)
        before_t = conv(images_t, rng, 3)
        moved_t = move(before_t)
        after_t = conv(moved_t, rng, 3)
    fields = geometry.walk(graph, 'images:0', 17)
    assert before_t.name in fields and moved_t.name not in fields and after_t.name not in fields
    assert moved_t.op.name in geometry.walk_axes(graph, 'images:0', 17)[1][after_t.name]
    with pytest.raises(GeometryError, match='%s depends on %s' % (after_t.name, moved_t.op.name)):
        geometry.smallest_input(graph, 'images:0', [before_t.name, after_t.name])


@pytest.mark.parametrize('name, build, reason', [
    ('nchw', lambda x, rng: tf.nn.conv2d(x, kernel(rng, 3, CHANNELS), 1, 'SAME', data_format='NCHW', name='nchw'),
     'nchw .* NCHW'),
    ('rows', lambda x, rng: tf.concat([x, x], axis=1, name='rows'), 'rows .* along rows'),
    # Both 8x8 on a 16-pixel input, one unit every 2 pixels and one every pixel.
    ('sum', lambda x, rng: tf.add(tf.nn.max_pool2d(x, 2, 2, 'VALID'), conv(x, rng, 9, padding='VALID'), name='sum'),
     'sum .* 1 and 2 input pixels apart'),
])
def test_ops_no_field_describes_leave_only_their_own_path_out(name, build, reason):
    graph = tf.Graph()
    with graph.as_default():
        images_t = tf.placeholder(tf.float32, [None, None, None, CHANNELS], name='images')
        rng = np.random.default_rng(0)
        bad_t = build(images_t, rng)
        after_t = tf.nn.relu(bad_t)
        good_t = conv(images_t, rng, 3)
    fields = geometry.walk(graph, 'images:0', 16)
    # One op no Field describes never stops the walk: the tensors beside it keep theirs.
    assert good_t.name in fields and bad_t.name not in fields and after_t.name not in fields
    with pytest.raises(GeometryError, match=reason):
        geometry.smallest_input(graph, 'images:0', [after_t.name])
    assert geometry.smallest_input(graph, 'images:0', [good_t.name]) == {good_t.name: 1}


def test_smallest_input_refuses_bad_names_and_too_small_limits():
    graph = tf.Graph()
    with graph.as_default():
        images_t = tf.placeholder(tf.float32, [None, None, None, CHANNELS], name='images')
        rng = np.random.default_rng(0)
        x = images_t
        for _ in range(3):
            x = conv(x, rng, 5, padding='VALID')
        flat_t = tf.reduce_mean(x, [1, 2])
        other_t = tf.placeholder(tf.float32, [None, 4, 4, 1], name='other')
    assert geometry.smallest_input(graph, 'images:0', [x.name]) == {x.name: 13}
    assert geometry.walk(graph, 'images:0', 12)[x.name].side == 0
    with pytest.raises(ValueError, match='%s: no square input of up to 12 pixels' % x.name):
        geometry.smallest_input(graph, 'images:0', [x.name], limit=12)
    with pytest.raises(ValueError, match='not a feature map'):
        geometry.smallest_input(graph, 'images:0', [flat_t.name])
    with pytest.raises(ValueError, match='other:0 does not depend on images:0'):
        geometry.smallest_input(graph, 'images:0', [other_t.name])
    with pytest.raises(ValueError, match="no tensor 'missing:0'"):
        geometry.smallest_input(graph, 'images:0', ['missing:0'])
    with pytest.raises(ValueError, match='one string'):
        geometry.smallest_input(graph, 'images:0', x.name)
    with pytest.raises(ValueError, match='size=0'):
        geometry.walk(graph, 'images:0', 0)
    with pytest.raises(ValueError, match='expected an image batch'):
        geometry.walk(graph, flat_t.name, 16)


def test_a_600_op_residual_graph():
    blocks = 150
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, None, None, CHANNELS], name='images')
        rng = np.random.default_rng(0)
        for _ in range(blocks):   # Conv2D, BiasAdd, Relu, AddV2 and two constants
            x = x + tf.nn.relu(tf.nn.bias_add(conv(x, rng, 3), tf.ones([CHANNELS])))
    assert len(graph.get_operations()) == 1 + 6 * blocks
    fields = geometry.walk(graph, 'images:0', 32)
    assert len(fields) == 1 + 4 * blocks
    assert fields[x.name] == Field(32, 1 + 2 * blocks, 1, -blocks)

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


def assert_field(field, changed):
    """The units that moved are the field's rows x columns clipped to the image, for every unit."""
    side, _, h, w = changed.shape
    assert (field.side, field.side) == (h, w)
    units = np.arange(h)
    pixels = np.arange(side)[:, None]
    rows = (pixels >= field.offset + field.stride * units) & (pixels <= field.offset + field.stride * units
                                                               + field.size - 1)   # [side, h]
    expected = rows[:, None, :, None] & rows[None, :, None, :]
    wrong = np.argwhere(np.any(expected != changed, axis=(0, 1)))
    assert not len(wrong), 'units %s see other pixels than %s' % (wrong[:5].tolist(), field)


def check(build, image_side, **expected):
    """Build a graph with `build(images_t, rng)` -> output_t, walk it and brute-force it at `image_side`."""
    graph = tf.Graph()
    with graph.as_default():
        images_t = tf.placeholder(tf.float32, [None, None, None, CHANNELS], name='images')
        output_t = build(images_t, np.random.default_rng(image_side))
    field = geometry.walk(graph, 'images:0', image_side)[output_t.name]
    assert_field(field, brute_force(graph, output_t, image_side))
    for name, value in expected.items():
        assert getattr(field, name) == value, field
    return field


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
    lambda x: x[:, 1:, 1:, :],
    lambda x: tf.reverse(x, axis=[1]),
], ids=['resize', 'space_to_depth', 'transpose', 'reshape', 'strided_slice', 'flip'])
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
    with pytest.raises(GeometryError, match='%s depends on %s' % (after_t.name, moved_t.op.name)):
        geometry.smallest_input(graph, 'images:0', [before_t.name, after_t.name])


def test_ops_no_field_describes_raise():
    graph = tf.Graph()
    with graph.as_default():
        images_t = tf.placeholder(tf.float32, [None, None, None, CHANNELS], name='images')
        rng = np.random.default_rng(0)
        tf.nn.conv2d(images_t, kernel(rng, 3, CHANNELS), 1, 'SAME', data_format='NCHW', name='nchw')
    with pytest.raises(GeometryError, match='nchw .* NCHW'):
        geometry.walk(graph, 'images:0', 16)
    graph = tf.Graph()
    with graph.as_default():
        images_t = tf.placeholder(tf.float32, [None, None, None, CHANNELS], name='images')
        tf.concat([images_t, images_t], axis=1, name='rows')
    with pytest.raises(GeometryError, match='rows .* along rows'):
        geometry.walk(graph, 'images:0', 16)
    graph = tf.Graph()
    with graph.as_default():
        images_t = tf.placeholder(tf.float32, [None, None, None, CHANNELS], name='images')
        # Both 8x8 on a 16-pixel input, one unit every 2 pixels and one every pixel.
        tf.add(tf.nn.max_pool2d(images_t, 2, 2, 'VALID'), conv(images_t, rng, 9, padding='VALID'), name='sum')
    with pytest.raises(GeometryError, match='sum .* 1 and 2 input pixels apart'):
        geometry.walk(graph, 'images:0', 16)


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

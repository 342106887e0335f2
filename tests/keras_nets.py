"""
Small Keras networks for tests/test_keras_model.py, built here and saved as
.keras and .h5, what Keras itself computes for each of their layers, and
which input pixels really move a unit (the brute-force receptive field).

Between them the networks hold every layer type keras_model has to get
right: Conv2D with and without bias and with a fused activation, BatchNorm,
ReLU, ReLU6, PReLU, LeakyReLU and swish, SeparableConv2D and DepthwiseConv2D,
dilation, stride 2, SAME and VALID padding, Add and Concatenate, a nested
functional backbone (with a layer name that clashes with an outer one), a
1-channel Sequential model with a Rescaling layer, a nested Sequential, a
Conv2DTranspose, a Lambda, a hand-set vertical-edge filter, and what the
Keras Applications families add: 1x3 and 3x1 kernels, a constant crop after
an asymmetric ZeroPadding2D, grouped convolutions, LayerNormalization, a
Dense layer on a map, GELU and a residual `x + branch` op (ConvNeXt's).
Inputs are 16-32 pixels so that freezing takes a second.

    import keras_nets
    with keras_nets.eager():
        model = keras_nets.build('dilated')
        outputs = keras_nets.layer_outputs(model, images_scaled, ['conv_a', 'dw'])

The test process runs TensorFlow in tf.compat.v1 graph mode (quiet.py), in
which Keras 3 does not work; every function here runs inside eager().
"""

import numpy as np

from filtervis.core import network
from filtervis.models import keras_model

# The networks build() makes, and the preprocessing each loads with (None: its own Rescaling).
NETS = ('basic', 'dilated', 'residual', 'grey', 'transpose', 'lambda', 'edge', 'modern')
PREPROCESS = {'basic': 'unit', 'dilated': 'tf', 'residual': 'torch', 'grey': None, 'transpose': 'unit',
              'lambda': 'unit', 'edge': 'unit', 'modern': 'tf'}
# Saved as .keras only: Keras 3 does not load a legacy .h5 back with an op that is no layer (`x + branch`).
KERAS_ONLY = ('modern',)
VERTICAL_EDGE = np.array([[-1, 0, 1]] * 3, np.float32)   # [3, 3]: responds to dark-left, bright-right edges


def eager():
    """A context in which Keras runs (keras_model.tf2_mode: what the tf.compat.v1 import turned off, back on)."""
    return keras_model.tf2_mode()


def _keras():
    import keras
    return keras


def build(name, seed=0):
    """The Keras model `name` (one of NETS), with random weights (BatchNorm statistics too) from seed."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    if name == 'basic':
        # Conv with fused ReLU and bias; conv without bias -> BN -> ReLU; stride 2 SAME -> LeakyReLU; swish.
        x = inputs = keras.Input((24, 24, 3))
        x = layers.Conv2D(6, 3, padding='same', activation='relu', name='fused')(x)
        x = layers.Conv2D(6, 3, padding='valid', use_bias=False, name='nobias')(x)
        x = layers.BatchNormalization(name='bn')(x)
        x = layers.ReLU(name='relu')(x)
        x = layers.Conv2D(8, 3, strides=2, padding='same', name='strided')(x)
        x = layers.LeakyReLU(negative_slope=0.1, name='leaky')(x)
        x = layers.MaxPooling2D(2, name='pool')(x)
        x = layers.Conv2D(8, 3, padding='same', name='last')(x)
        x = layers.Activation('swish', name='swish')(x)
        x = layers.GlobalAveragePooling2D()(x)
        outputs = layers.Dense(3, name='head')(x)
    elif name == 'dilated':
        # Dilation in all three conv types; ReLU6, PReLU; SAME and VALID.
        x = inputs = keras.Input((32, 32, 3))
        x = layers.Conv2D(4, 3, dilation_rate=2, padding='same', name='conv_a')(x)
        x = layers.ReLU(6.0, name='relu6')(x)
        x = layers.DepthwiseConv2D(3, dilation_rate=2, padding='same', depth_multiplier=2, name='dw')(x)
        x = layers.PReLU(name='prelu')(x)
        x = layers.SeparableConv2D(6, 3, dilation_rate=2, padding='valid', name='sep_dil')(x)
        x = layers.SeparableConv2D(6, 3, strides=2, padding='same', name='sep')(x)
        x = layers.BatchNormalization(name='sep_bn')(x)
        outputs = layers.ReLU(name='sep_relu')(x)
    elif name == 'residual':
        # Any input size; a nested backbone whose layer 'conv' clashes with an outer one; Add, Concatenate.
        inner_in = keras.Input((None, None, 4))
        y = layers.Conv2D(4, 3, padding='same', name='conv')(inner_in)
        y = layers.BatchNormalization(name='inner_bn')(y)
        y = layers.ReLU(name='inner_relu')(y)
        y = layers.DepthwiseConv2D(3, padding='same', name='inner_dw')(y)
        y = layers.Add(name='inner_add')([y, inner_in])
        backbone = keras.Model(inner_in, y, name='backbone')
        x = inputs = keras.Input((None, None, 3))
        x = layers.Conv2D(4, 3, padding='same', name='conv')(x)
        x = layers.BatchNormalization(name='stem_bn')(x)
        x = layers.Activation('relu', name='stem_relu')(x)
        x = backbone(x)
        a = layers.Conv2D(4, 1, name='branch_a')(x)
        b = layers.Conv2D(4, 3, padding='same', strides=2, name='branch_b')(x)
        a = layers.MaxPooling2D(2, padding='same', name='pool_a')(a)
        x = layers.Concatenate(name='concat')([a, b])
        x = layers.Conv2D(6, 3, padding='same', activation='relu', name='top')(x)
        outputs = layers.GlobalAveragePooling2D()(x)
    elif name == 'grey':
        # A Sequential model with 1 channel and its own scaling: loads with preprocess None ('none').
        model = keras.Sequential([keras.Input((16, 16, 1)), layers.Rescaling(1 / 255.0, name='scale'),
                                  layers.Conv2D(4, 3, padding='same', name='grey_conv'),
                                  layers.ReLU(name='grey_relu')], name=name)
        return model
    elif name == 'transpose':
        # A nested Sequential block, then a transposed convolution, which geometry.py does not follow.
        block = keras.Sequential([keras.Input((14, 14, 4)), layers.Conv2D(4, 3, padding='same', name='block_conv'),
                                  layers.BatchNormalization(name='block_bn')], name='block')
        x = inputs = keras.Input((16, 16, 3))
        x = layers.Conv2D(4, 3, name='down')(x)
        x = block(x)
        x = layers.Conv2DTranspose(4, 3, strides=2, name='up')(x)
        outputs = layers.ReLU(name='up_relu')(x)
    elif name == 'lambda':
        x = inputs = keras.Input((16, 16, 3))
        x = layers.Conv2D(4, 3, padding='same', name='before')(x)
        x = layers.Lambda(lambda t: t * 2.0, name='double')(x)
        outputs = layers.Conv2D(4, 3, padding='same', name='after')(x)
    elif name == 'edge':
        x = inputs = keras.Input((32, 32, 3))
        outputs = layers.Conv2D(1, 3, padding='same', name='edge')(x)
    elif name == 'modern':
        # InceptionV3's factorized kernel, NASNet's shift, ConvNeXt's block.
        x = inputs = keras.Input((20, 20, 3))
        x = layers.Conv2D(8, (1, 3), padding='same', name='wide')(x)
        x = layers.BatchNormalization(name='wide_bn')(x)
        x = layers.ReLU(name='wide_relu')(x)
        x = layers.Conv2D(8, (3, 1), padding='same', name='tall')(x)
        x = layers.ZeroPadding2D(((0, 1), (0, 1)), name='pad')(x)
        x = layers.Cropping2D(((1, 0), (1, 0)), name='crop')(x)
        x = layers.Conv2D(8, 3, strides=2, groups=2, name='grouped')(x)
        shortcut = x
        x = layers.Conv2D(8, 5, padding='same', groups=8, name='depthwise_conv')(x)
        x = layers.LayerNormalization(epsilon=1e-6, name='layernorm')(x)
        x = layers.Dense(16, name='pointwise_conv_1')(x)
        x = layers.Activation('gelu', name='gelu')(x)
        x = layers.Dense(8, name='pointwise_conv_2')(x)
        x = shortcut + x
        outputs = layers.GlobalAveragePooling2D()(x)
    else:
        raise ValueError('unknown test network %r: expected one of %s' % (name, ', '.join(NETS)))
    model = keras.Model(inputs, outputs, name=name)
    _randomize_batch_norms(model, np.random.default_rng(seed))
    if name == 'edge':
        kernel = np.repeat(VERTICAL_EDGE[:, :, None, None], 3, axis=2)   # [3, 3, 3, 1]
        model.get_layer('edge').set_weights([kernel, np.zeros(1, np.float32)])
    return model


def _randomize_batch_norms(model, rng):
    """Moving statistics and scales away from 0 and 1, so that inference mode differs from training mode."""
    keras = _keras()
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _randomize_batch_norms(layer, rng)
        elif isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, channels).astype(np.float32),    # gamma
                               rng.normal(0, 0.2, channels).astype(np.float32),       # beta
                               rng.normal(0, 0.3, channels).astype(np.float32),       # moving mean
                               rng.uniform(0.5, 2.0, channels).astype(np.float32)])   # moving variance


def calibrate_batch_norms(model, inputs):
    """Set each BatchNormalization's moving mean and variance to its input's on `inputs` (scaled pictures
    [N, H, W, C]), in network order, as training would leave them.

    With weights=None the moving statistics are 0 and 1, and a deep MobileNet's activations fade to
    1e-12, too small for a gradient step to move a pixel; calibrated, each normalizes what it gets.
    """
    keras = _keras()
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            values = np.asarray(keras.Model(model.inputs, layer.input)([inputs], training=False))
            gamma, beta, _, _ = layer.get_weights()
            layer.set_weights([gamma, beta, values.mean(axis=(0, 1, 2)), values.var(axis=(0, 1, 2))])


def bad_model(kind):
    """A model keras_model.load() must refuse: 'conv1d', 'rank3', 'two_channels', 'four_channels', 'no_unit'."""
    keras = _keras()
    layers = keras.layers
    if kind == 'conv1d':
        x = inputs = keras.Input((16, 16, 3))
        x = layers.Reshape((256, 3))(x)
        outputs = layers.Conv1D(4, 3, name='conv1d')(x)
    elif kind == 'rank3':
        x = inputs = keras.Input((16, 3))
        outputs = layers.Dense(4)(x)
    elif kind in ('two_channels', 'four_channels'):
        x = inputs = keras.Input((16, 16, 2 if kind == 'two_channels' else 4))
        outputs = layers.Conv2D(4, 3)(x)
    elif kind == 'no_unit':
        x = inputs = keras.Input((16, 16, 3))
        x = layers.Flatten()(x)
        outputs = layers.Dense(4)(x)
    else:
        raise ValueError('unknown bad model %r' % kind)
    return keras.Model(inputs, outputs, name=kind)


def save(model, path):
    """model.save(path): .keras (zip) or .h5 (legacy HDF5) by the extension."""
    model.save(path)
    return path


def layer_outputs(model, inputs, names):
    """{unit name: what Keras computes for that layer}, float32 [N, h, w, C], on `inputs` (already scaled).

    A top-level layer: keras.Model(model.inputs, layer.output). A layer of a
    nested model (unit name 'inner/layer' or the plain name of a layer only
    the nested model has): the nested model's own sub-model on what the outer
    model feeds it. One multi-output model per group keeps this fast.
    """
    keras = _keras()
    groups = {}
    for name in names:
        layer, nested = _find(model, name)
        groups.setdefault(nested, []).append((name, layer))
    results = {}
    for nested, members in groups.items():
        if nested is None:
            # A nested model's own .output is inside it; its output in the outer model is its call's.
            outputs = [layer._inbound_nodes[0].outputs[0] if isinstance(layer, keras.Model) else layer.output
                       for _, layer in members]
            # Inputs as a list, the structure model.inputs has, so that Keras does not warn.
            values = keras.Model(model.inputs, outputs)([inputs], training=False)
        else:
            # The tensor the outer model feeds the nested one (its only call).
            feeding = keras.Model(model.inputs, nested._inbound_nodes[0].input_tensors[0])
            inner = keras.Model(nested.inputs, [layer.output for _, layer in members])
            values = inner([feeding([inputs], training=False)], training=False)
        values = values if isinstance(values, (list, tuple)) else [values]
        results.update((name, np.asarray(value)) for (name, _), value in zip(members, values))
    return results


def _find(model, name):
    """(layer, nested model or None) for a unit name."""
    keras = _keras()
    prefix, _, short = name.rpartition('/')
    # operations: the layers and the ops that are no layer (ConvNeXt's `x + branch`).
    for layer in getattr(model, 'operations', model.layers):
        if not prefix and layer.name == name:
            return layer, None
    for layer in model.layers:
        if isinstance(layer, keras.Model) and (not prefix or layer.name == prefix):
            for inner in getattr(layer, 'operations', layer.layers):
                if inner.name == short:
                    return inner, layer
    raise KeyError('no layer %r in %s' % (name, model.name))


def brute_force_field(net, index, size, seeds=(0, 1, 2)):
    """([first, last] rows, [first, last] columns) of the input pixels whose change moves the middle unit.

    Pixels along the column through the centre of the unit's field (then the
    row) are flipped one per image; the unit's pre-activation is compared,
    and bases from several seeds are pooled, so that a ReLU that stays off
    does not hide a pixel.
    """
    side = net.output_side(index, size)
    middle = side // 2
    centres = [min(max(f.offset + f.stride * middle + f.size // 2, 0), size - 1) for f in net._field(index, size)]
    session = network.session(net)
    spans = []
    for axis in (0, 1):
        changed = np.zeros(size, bool)
        for seed in seeds:
            base = np.random.default_rng(seed).uniform(0, 255, (size, size, net.input_channels)).astype(np.float32)
            batch = np.repeat(base[None], size + 1, axis=0)
            for position in range(size):
                pixel = (position, centres[1]) if axis == 0 else (centres[0], position)
                batch[position + 1][pixel] = 255.0 - batch[position + 1][pixel]
            values = session.run(net.pre_tensors[index], {net.input: batch})[:, middle, middle, :]
            changed |= np.abs(values[1:] - values[0]).max(axis=1) > 1e-6 * np.abs(values).max()
        found = np.nonzero(changed)[0]
        spans.append((found.min(), found.max()) if len(found) else None)
    return spans, middle


def gradient_field(net, index, size, count=8, seed=0):
    """([first, last] rows, [first, last] columns) of the input pixels the middle unit depends on, and the
    middle unit's index: where the gradient of its pre-activation (channels summed with random positive
    weights) is not 0 on any of `count` random pictures.

    For deep networks, where an edge pixel moves the unit by less than
    float32 resolves of its value (brute_force_field would miss it), while
    its gradient, however small, is not 0.
    """
    middle = net.output_side(index, size) // 2

    def build():
        pre_t = net.pre_tensors[index][:, middle, middle, :]                                    # [N, C]
        weights = np.random.default_rng(seed).uniform(0.5, 1.5, int(pre_t.shape[-1])).astype(np.float32)
        return network.tf.gradients(network.tf.reduce_sum(pre_t * weights), net.input)[0]    # [N, H, W, C]

    gradient_t = net.cached_ops(('test gradient field', index, size, seed), build)
    images = np.random.default_rng(seed).uniform(0, 255, (count, size, size, net.input_channels))
    seen = np.abs(network.session(net).run(gradient_t, {net.input: images.astype(np.float32)})).max(axis=(0, 3)) > 0
    rows, columns = np.nonzero(seen.any(axis=1))[0], np.nonzero(seen.any(axis=0))[0]
    return [(rows.min(), rows.max()), (columns.min(), columns.max())], middle

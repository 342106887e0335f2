"""Every keras.applications family through keras_model, built with weights=None at a small input size.

Per family: `--list-layers` exits 0 and lists every convolution layer as a
unit with its receptive field (none left out, none unknown); a few units
equal what Keras computes for them; the receptive field of a unit up to
half-way in equals the pixels its gradient reaches; the objective of two
filters of a deep unit rises over a few steps. Slow (a family takes 5-60 s to build and freeze):

    python -m pytest -q -p no:cacheprovider --runslow tests/test_keras_applications.py
"""
import numpy as np
import pytest

import keras_nets
from filtervis.core import network
from filtervis.models import keras_model

# One network per family, at a small side it accepts (InceptionV3 and InceptionResNetV2 need 75, Xception 71).
FAMILIES = {'ConvNeXtTiny': 32, 'DenseNet121': 32, 'EfficientNetB0': 32, 'EfficientNetV2B0': 32,
            'InceptionV3': 75, 'InceptionResNetV2': 75, 'MobileNet': 32, 'MobileNetV2': 32,
            'MobileNetV3Small': 32, 'MobileNetV3Large': 32, 'NASNetMobile': 32, 'ResNet50': 32,
            'ResNet50V2': 32, 'VGG16': 32, 'Xception': 71}
# Families whose random activations fade away in the deep layers unless their batch norms are calibrated.
FADING = ('MobileNet', 'MobileNetV2', 'MobileNetV3Small', 'MobileNetV3Large')
CONV_KINDS = ('Conv2D', 'SeparableConv2D', 'DepthwiseConv2D')
TOLERANCE = 1e-4   # max |frozen - Keras| relative to the unit's max |value|, float32


def build(name, size, folder):
    """(path of the saved .keras file, the Keras model, names of its convolution layers)."""
    import keras
    from filtervis.models.keras_model import trace
    with keras_nets.eager():
        keras.utils.set_random_seed(0)
        model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3))
        path = str(folder / ('%s.keras' % name))
        model.save(path)
        convs = [layer.name for layer in trace.flat_layers(model, keras) if type(layer).__name__ in CONV_KINDS]
    return path, model, convs


def test_family_names_are_keras_applications():
    import keras
    assert all(hasattr(keras.applications, name) for name in FAMILIES)


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(FAMILIES))
def test_family(name, tmp_path, capsys):
    import visualize
    size = FAMILIES[name]
    path, model, convs = build(name, size, tmp_path)

    assert visualize.main(['--model', path, '--preprocess', 'tf', '--list-layers', '--quiet']) == 0
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    net = keras_model.load(path, 'tf', quiet=True)
    # Every map is listed with its field (vectors, the classifier's head, see the whole picture).
    maps = [index for index in range(len(net.units)) if not net.is_vector(index)]
    assert all('receptive field' in listed[net.short_names[i]] and 'not known' not in listed[net.short_names[i]]
               for i in maps), listed
    # Each conv layer is one default unit (named after the end of its chain), of the conv's kind.
    assert sum(unit.kind in CONV_KINDS for unit in net.units) == len(convs)

    # A few maps against Keras: first, middle, last, and the first block output.
    blocks = [index for index, unit in enumerate(net.units) if unit.kind in ('Add', 'CustomScaleLayer')]
    chosen = sorted({maps[0], net.default_layer(), maps[-1]} | set(blocks[:1]))
    images = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    values = network.session(net).run([net.layer_tensors[i] for i in chosen], {net.input: images})
    with keras_nets.eager():
        expected = keras_nets.layer_outputs(model, images / 127.5 - 1, [net.short_names[i] for i in chosen])
    for index, value in zip(chosen, values):
        reference = expected[net.short_names[index]]
        error = np.abs(value - reference).max()
        assert error <= TOLERANCE * np.abs(reference).max(), (net.short_names[index], error)

    # The field of the deepest unit up to the middle whose middle unit sees no border (there, rows no unit
    # of an earlier map sees, such as the last row after a stride-2 VALID stem, would be counted: see
    # geometry.py), rows and columns, against the pixels its gradient reaches.
    inside = [index for index in range(net.default_layer() + 1)
              if all(0 < f.offset + f.stride * (f.side // 2) and f.offset + f.stride * (f.side // 2) + f.size < size
                     for f in net._field(index, size))]
    spans, centre = keras_nets.gradient_field(net, inside[-1], size)
    expected_spans = [(f.offset + f.stride * centre, f.offset + f.stride * centre + f.size - 1)
                      for f in net._field(inside[-1], size)]
    assert list(spans) == expected_spans, (net.short_names[inside[-1]], spans, expected_spans)

    if name in FADING:
        # Calibrated only now: dividing by the variance of a nearly constant input amplifies float32's
        # rounding past the tolerance above.
        with keras_nets.eager():
            keras_nets.calibrate_batch_norms(model, images / 127.5 - 1)
            path = str(tmp_path / 'calibrated.keras')
            model.save(path)
        net = keras_model.load(path, 'tf', quiet=True)
    # Two filters of a deep unit. With random weights a squeeze-and-excite gate can be the same for every
    # picture (MobileNetV3): the unit is the one nearest 3/4 of the way whose two most active filters are
    # on and differ between two pictures.
    values = network.session(net).run([net.layer_tensors[i] for i in maps], {net.input: images})
    means = dict(zip(maps, [value.mean(axis=(1, 2)) for value in values]))
    tops = {i: np.argsort(mean[0])[-2:] for i, mean in means.items()}
    lively = [i for i in maps if i >= net.default_layer() and means[i][0, tops[i]].min() > 0
              and (np.abs(means[i][0] - means[i][1])[tops[i]] > 1e-3 * means[i][0, tops[i]]).all()]
    assert lively, 'no unit past the middle responds to the picture'
    deep = min(lively, key=lambda i: abs(i - 3 * len(net.units) // 4))
    filters = [int(f) for f in tops[deep]]
    # From the picture they were measured on, where both are on; before the activation, which a ReLU6
    # at its cap would leave without a gradient.
    result = visualize.ascend(net, deep, filters, 4, seed=0, size=size, precision='float32', init=images[0],
                              pre_relu=True)
    assert result.images.shape == (2, size, size, 3)
    # A ReLU6 at its cap everywhere leaves a filter no gradient: it may stay, the other must rise.
    rise = result.objectives[-1] - result.objectives[0]
    assert (rise >= 0).all() and (rise > 0).any(), (net.short_names[deep], result.objectives)

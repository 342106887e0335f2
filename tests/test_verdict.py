"""The network's verdict on a class picture for every classifier (filtervis/analysis/verdict.py,
Network.classifier_of): a head of bare logits that ends the network (a PyTorch export's, a Keras Dense
without softmax) is judged by a softmax the project takes, and says so; a softmax head keeps its own; a
hidden Dense layer that feeds another layer, and a head of one neuron, get no verdict; --probability still
finds no probabilities on a head without softmax.

Slow (--runslow): EfficientNet-Lite0's `_fc` (ImageNet logits, no softmax in the file) sees the shared
photo of a cat as a cat.

    python -m pytest tests/test_verdict.py
    python -m pytest tests/test_verdict.py --runslow
"""
import os

import numpy as np
import onnx
import pytest

import onnx_nets
from builders import ROOT, classifier_model
from filtervis.analysis import examples, verdict
from filtervis.cli import visualize as visualize_cli
from filtervis.core import network
from filtervis.models import keras_model, onnx_model
from keras_nets import eager

SHARED = os.path.join(ROOT, '..', 'shared')
EFFICIENTNET = os.path.join(SHARED, 'models', 'efficientnet-lite0-imagenet.onnx')
CAT_PHOTO = os.path.join(SHARED, 'data', 'photos', 'chelsea.png')
# ImageNet's cats: tabby, tiger cat, Persian, Siamese, Egyptian cat.
IMAGENET_CATS = range(281, 286)


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def pictures(count=2, side=24, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (count, side, side, 3)).astype(np.float32)


def unit_values(net, index, images):
    return network.session(net).run(net.layer_tensors[index], net.create_feed_dict(images))


@pytest.fixture(scope='module')
def keras_heads(tmp_path_factory):
    """{'logits': a Keras model ending in Dense(5) without softmax, after a hidden Dense(8) with no activation;
    'score': one ending in Dense(1)}, loaded as Networks."""
    folder = tmp_path_factory.mktemp('keras_heads')
    with eager():
        import keras
        keras.utils.set_random_seed(0)
        for name, head in (('logits', 5), ('score', 1)):
            inputs = keras.Input((24, 24, 3))
            x = keras.layers.Conv2D(6, 3, activation='relu', name='conv')(inputs)
            x = keras.layers.GlobalAveragePooling2D(name='pool')(x)
            if head > 1:
                x = keras.layers.Dense(8, name='hidden')(x)
            keras.Model(inputs, keras.layers.Dense(head, name=name)(x)).save(str(folder / (name + '.keras')))
    return {name: keras_model.load(str(folder / (name + '.keras')), 'unit', quiet=True)
            for name in ('logits', 'score')}


def test_a_keras_head_without_softmax_is_judged_by_a_softmax_of_its_logits(keras_heads):
    net = keras_heads['logits']
    index = net.layer_index('logits')
    assert net.classifier_of(index) == index and net.logits_of(index) is None
    images = pictures()
    values = verdict.verdict(net, index, [0, 3], images, copies=4)
    expected = softmax(unit_values(net, index, images).astype(np.float64))
    rows = np.arange(2)
    assert values['top1'].tolist() == np.argmax(expected, axis=1).tolist()
    assert np.allclose(values['top1_probability'], expected[rows, values['top1']], atol=1e-6)
    assert np.allclose(values['target_probability'], expected[rows, [0, 3]], atol=1e-6)
    assert values['softmax_by_project'].tolist() == [True, True]
    assert verdict.caption(values, 0).split('\n')[0].endswith(' (softmax by filtervis)')


def test_a_hidden_dense_layer_and_a_single_neuron_get_no_verdict(keras_heads):
    # hidden's value feeds the head; the frozen graph also reads it as units/hidden, which feeds nothing.
    net = keras_heads['logits']
    assert net.classifier_of(net.layer_index('hidden')) is None
    assert net.classifier_of(net.layer_index('conv')) is None
    score = keras_heads['score']
    assert score.layer_channels[score.layer_index('score')] == 1
    assert score.classifier_of(score.layer_index('score')) is None


def test_probability_still_says_a_head_without_softmax_has_none(keras_heads):
    net = keras_heads['logits']
    with pytest.raises(ValueError, match='--probability: logits ends in no softmax or sigmoid'):
        visualize_cli.probability_unit(net, net.layer_index('logits'))


def test_a_softmax_head_keeps_the_networks_own_probabilities():
    net = classifier_model()
    index = net.layer_index('predictions')
    assert net.classifier_of(index) == index == net.classifier_of(index + 1) == net.logits_of(index)
    assert net.classifier_of(net.layer_index('conv')) is None
    images = pictures(side=32)
    values = verdict.verdict(net, index, [0, 1], images, copies=4)
    own = network.session(net).run(net.graph.get_tensor_by_name('predictions/Softmax:0'), {net.input: images})
    assert np.allclose(values['target_probability'], own[[0, 1], [0, 1]], atol=1e-6)
    assert values['softmax_by_project'].tolist() == [False, False]
    assert 'filtervis' not in verdict.caption(values, 0)


def test_the_verdict_is_savable_and_per_picture_like_its_other_values(keras_heads, tmp_path):
    # visualize.py saves it with **values in --npz; the atlas indexes each value per picture as float64.
    net = keras_heads['logits']
    values = verdict.verdict(net, 'logits', [1, 2, 4], pictures(3), copies=2)
    assert all(value.shape == (3,) for value in values.values())
    assert {key: value.astype(np.float64)[2] for key, value in values.items()}['softmax_by_project'] == 1.0
    np.savez(str(tmp_path / 'v.npz'), **values)
    assert np.load(str(tmp_path / 'v.npz'))['softmax_by_project'].tolist() == [True] * 3


def gemm_head():
    """An ONNX CNN as PyTorch exports a classifier: ... global pool, Flatten, Gemm (8) + ReLU, Gemm (5), no
    Softmax: the logits are the graph's output."""
    net = onnx_nets.Net()
    x = onnx_nets.conv(net, net.input, 3, 8, name='/features/features.0/Conv', pads=[1, 1, 1, 1])
    x = net.add('Relu', [x], name='/features/features.1/Relu')
    x = net.add('GlobalAveragePool', [x], name='/avgpool/GlobalAveragePool')
    x = net.add('Flatten', [x], name='/Flatten')
    x = net.add('Gemm', [x, net.weight(8, 8), net.weight(8, scale=0.1)], name='/hidden/Gemm', transB=1)
    x = net.add('Relu', [x], name='/hidden/Relu')
    return net.model([net.add('Gemm', [x, net.weight(5, 8), net.weight(5, scale=0.1)], name='/_fc/Gemm',
                               transB=1)])


def test_an_onnx_gemm_head_without_softmax_is_judged(tmp_path):
    path = str(tmp_path / 'gemm.onnx')
    onnx.save(gemm_head(), path)
    net = onnx_model.load(path, 'torch', quiet=True)
    index = net.layer_index('_fc')
    assert net.classifier_of(index) == index and net.logits_of(index) is None
    assert net.classifier_of(net.layer_index('hidden')) is None
    images = pictures(side=20)
    values = verdict.verdict(net, index, [2, 4], images, copies=2)
    expected = softmax(unit_values(net, index, images).astype(np.float64))
    assert np.allclose(values['target_probability'], expected[[0, 1], [2, 4]], atol=1e-6)
    assert values['softmax_by_project'].all()


def test_an_onnx_softmax_head_is_its_logits_with_probabilities(tmp_path):
    path = str(tmp_path / 'tiny.onnx')
    onnx.save(onnx_nets.tiny_cnn(), path)
    net = onnx_model.load(path, 'torch', quiet=True)
    index = net.layer_index('classifier')
    assert net.classifier_of(index) == net.logits_of(index) == index
    assert not verdict.verdict(net, index, [0], pictures(1, side=20), copies=2)['softmax_by_project'].any()


@pytest.mark.slow
def test_efficientnet_sees_the_cat_photo_as_a_cat(tmp_path):
    if not os.path.exists(EFFICIENTNET):
        pytest.skip('shared network %s absent' % EFFICIENTNET)
    net = onnx_model.load(EFFICIENTNET, 'tf', quiet=True, cache_dir=str(tmp_path))
    index = net.layer_index('_fc')
    assert net.classifier_of(index) == index and net.logits_of(index) is None
    photo = examples.load_image(CAT_PHOTO, net.input_size)[None]
    values = verdict.verdict(net, index, [285], photo)
    assert int(values['top1'][0]) in IMAGENET_CATS and values['softmax_by_project'][0]
    assert values['target_probability'][0] > 0.1


# ---------------------------------------------------------------------------
# visualize.py: pending its one-line change (model.classifier_of where it calls model.logits_of for the verdict)

def test_visualize_npz_holds_the_verdict_of_a_head_without_softmax(keras_heads, tmp_path, monkeypatch):
    monkeypatch.setattr(visualize_cli.model_flags, 'network_from_args', lambda args, **options: keras_heads['logits'])
    npz = tmp_path / 'v.npz'
    assert visualize_cli.main(['--layer', 'logits', '--filters', '0,3', '--iters', '3', '--seed', '0', '--out',
                               str(tmp_path / 'v.png'), '--npz', str(npz), '--quiet', '--precision', 'float32']) == 0
    saved = np.load(str(npz))
    assert saved['softmax_by_project'].tolist() == [True, True]
    assert ((saved['target_probability'] > 0) & (saved['target_probability'] < 1)).all()

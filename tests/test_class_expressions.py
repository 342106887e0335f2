"""Classes of --classes by name in objective expressions (model_flags.expression_classes): LAYER:NAME, and
LAYER:"NAME" for any name with spaces, quotes or other signs, in sums as any LAYER:N; the syntax checked
before the network loads; one line of error, exit 2, for a name that is no class, a class without
--classes, a quote left open. Then attribute.py, which uses it, and visualize.py (the test_visualize_*
group, pending its wiring in cli/visualize.py).

Slow (--runslow): attribute.py on EfficientNet-Lite0 with ImageNet's `_fc:"Egyptian cat"`.

    python -m pytest tests/test_class_expressions.py
    python -m pytest tests/test_class_expressions.py --runslow
"""
import argparse
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from builders import ROOT, classifier_model
from filtervis.analysis import attribution, examples
from filtervis.cli import attribute, model_flags
from filtervis.cli import visualize as visualize_cli
from filtervis.core import network
from filtervis.models import onnx_model
from filtervis.optvis import objectives

SHARED = os.path.join(ROOT, '..', 'shared')
EFFICIENTNET = os.path.join(SHARED, 'models', 'efficientnet-lite0-imagenet.onnx')
IMAGENET_CLASSES = os.path.join(SHARED, 'models', 'imagenet-classes.txt')
CAT_PHOTO = os.path.join(SHARED, 'data', 'photos', 'chelsea.png')
# Names as ImageNet's are written: spaces, '-' and "'"; the last one needs no quotes.
NAMES = ['tabby', 'tiger cat', 'Egyptian cat', "jack-o'-lantern", 'great_white-shark']
# Class names as an expression writes them, and the expression of indices each stands for.
NAMED_CLASSES = [
    ('predictions:"Egyptian cat"', 'predictions:2'),
    ('predictions:"jack-o\'-lantern"', 'predictions:3'),
    ('2 * predictions:"tiger cat" - predictions:tabby', '2 * predictions:1 - predictions:0'),
    ('predictions:great_white-shark', 'predictions:4'),
]


@pytest.fixture(scope='module')
def net():
    """The hand-built classifier (tests/builders.py) with a head of 5 logits, 'predictions', after 'conv'."""
    return classifier_model(classes=len(NAMES))


@pytest.fixture()
def classes(tmp_path):
    path = tmp_path / 'classes.txt'
    path.write_text('\n'.join(NAMES) + '\n', encoding='utf-8')
    return argparse.Namespace(classes=str(path))


@pytest.mark.parametrize('text, expected', [
    ('predictions:"tiger cat"', 'predictions:1'),
    ('predictions:"Egyptian cat"', 'predictions:2'),
    ('predictions:"jack-o\'-lantern"', 'predictions:3'),
    ('predictions:great_white-shark', 'predictions:4'),
    ('predictions:tabby', 'predictions:0'),
    ('predictions:"tabby"', 'predictions:0'),
    ('2 * predictions:"tiger cat" - predictions:tabby', '2 * predictions:1 - predictions:0'),
    ('(predictions:"Egyptian cat" + conv:3) * 0.5', '(predictions:2 + conv:3) * 0.5'),
    ('conv:3 - 0.5 * conv:1@2,2', 'conv:3 - 0.5 * conv:1@2,2'),
])
def test_class_names_become_their_neurons(net, classes, text, expected):
    assert model_flags.expression_classes(text, classes, net) == expected
    # Checked alone (no network) it parses, and names the same units.
    early = objectives.parse(model_flags.expression_classes(text))
    assert [term.layer for _, term in early.terms] == [term.layer for _, term in objectives.parse(expected).terms]


def test_a_sum_of_two_classes_is_their_weighted_logits(net, classes):
    text = model_flags.expression_classes('2 * predictions:"tiger cat" - predictions:tabby', classes, net)
    assert objectives.parse(text) == 2 * objectives.channel('predictions', 1) - objectives.channel('predictions', 0)


@pytest.mark.parametrize('text, message', [
    ('predictions:"tiger cat', 'the " at character 13 is never closed'),
    ('predictions:tabby + "tiger cat"', 'the quoted name at character 21 follows no unit'),
    ('predictions:tiger cat', "'cat' at character 19 goes on from the class predictions:tiger"),
    ('predictions:tabby-predictions:cat', 'put spaces around a minus between two classes'),
    ('predictions:"tiger cat" + 2 x', "bad token 'x' at character 29"),
])
def test_the_syntax_fails_before_the_network_loads_and_names_the_users_text(text, message):
    with pytest.raises(ValueError) as error:
        model_flags.expression_classes(text)
    assert message in str(error.value) and repr(text) in str(error.value)


def test_bad_classes_name_what_is_wrong(net, classes):
    with pytest.raises(ValueError, match=r"'Egyptian kat' is no class of predictions in --classes \(tabby, tiger "
                                         r'cat, .*\); closest: predictions:"Egyptian cat"'):
        model_flags.expression_classes('predictions:"Egyptian kat"', classes, net)
    with pytest.raises(ValueError, match='predictions:tabby names a class of predictions: give --classes FILE'):
        model_flags.expression_classes('predictions:tabby', argparse.Namespace(classes=None), net)
    with pytest.raises(ValueError, match='give --classes FILE'):
        model_flags.expression_classes('predictions:tabby', None, net)
    with pytest.raises(ValueError, match='conv:tabby names a class of conv, but --classes .* names the neurons of '
                                         'predictions, predictions_probability'):
        model_flags.expression_classes('conv:tabby', classes, net)
    with pytest.raises(ValueError, match="unknown layer 'head'"):
        model_flags.expression_classes('head:tabby', classes, net)


def test_class_ref_quotes_only_the_names_that_need_it():
    assert model_flags.class_ref('_fc', 'tabby') == '_fc:tabby'
    assert model_flags.class_ref('_fc', 'Egyptian cat') == '_fc:"Egyptian cat"'
    assert model_flags.class_ref('p', 'great_white-shark') == 'p:great_white-shark'
    assert model_flags.class_ref('p', '3d') == 'p:"3d"'


# ---------------------------------------------------------------------------
# attribute.py

@pytest.fixture()
def attribute_run(net, tmp_path, monkeypatch, capsys):
    """run(objective, *flags) -> (exit code, stderr) of attribute.py on two red-square images of the classifier;
    its --npz is tmp_path/maps.npz."""
    monkeypatch.setattr(model_flags, 'network_from_args', lambda args, **options: net)
    monkeypatch.chdir(tmp_path)
    images = np.full((2, 32, 32, 3), 128, np.uint8)
    images[0, 4:12, 4:12] = images[1, 20:28, 10:18] = (255, 0, 0)
    for number, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / ('red%d.png' % number))
    (tmp_path / 'classes.txt').write_text('\n'.join(NAMES) + '\n', encoding='utf-8')

    def run(objective, *flags):
        capsys.readouterr()
        code = attribute.main(['red0.png', 'red1.png', '--method', 'gradient', '--out', 'maps', '--npz', 'maps.npz',
                               '--quiet', '--objective', objective] + list(flags))
        return code, capsys.readouterr().err
    return run


@pytest.mark.parametrize('objective, expression', NAMED_CLASSES)
def test_attribute_explains_a_class_by_its_name(net, attribute_run, tmp_path, objective, expression):
    assert attribute_run(objective, '--classes', 'classes.txt') == (0, '')
    saved = np.load(tmp_path / 'maps.npz')
    assert saved['objectives'].tolist() == [objective]
    images = np.stack([examples.load_image(str(tmp_path / n), 32) for n in ('red0.png', 'red1.png')])
    expected = attribution.attribute(net, images, expression, ['gradient'])
    assert np.allclose(saved['objective'], expected.values, rtol=1e-5)
    assert np.allclose(saved['maps'][:, 0], expected.maps[:, 0], rtol=1e-4, atol=1e-9)


def test_attribute_labels_filters_by_name_as_expressions(attribute_run, tmp_path):
    assert attribute_run('predictions', '--filters', 'tabby,4', '--classes', 'classes.txt')[0] == 0
    assert np.load(tmp_path / 'maps.npz')['objectives'].tolist() == ['predictions:tabby',
                                                                     'predictions:great_white-shark']


@pytest.mark.parametrize('objective, flags, message', [
    ('predictions:"Egyptian kat"', ['--classes', 'classes.txt'], "'Egyptian kat' is no class of predictions"),
    ('predictions:"Egyptian cat"', [], 'give --classes FILE'),
    ('predictions:"Egyptian cat - predictions:tabby', ['--classes', 'classes.txt'], 'is never closed'),
    ('predictions:Egyptian cat', ['--classes', 'classes.txt'], 'goes in double quotes'),
])
def test_attribute_bad_class_expressions_are_one_line_exit_2(attribute_run, tmp_path, objective, flags, message):
    code, err = attribute_run(objective, *flags)
    assert code == 2 and message in err and err.count('\n') == 1, err
    assert not (tmp_path / 'maps').exists() and not (tmp_path / 'maps.npz').exists()


def test_attribute_checks_the_quotes_before_the_network_loads(attribute_run, monkeypatch):
    def no_load(args, **options):
        raise AssertionError('the network was loaded')
    monkeypatch.setattr(model_flags, 'network_from_args', no_load)
    code, err = attribute_run('predictions:"Egyptian cat', '--classes', 'classes.txt')
    assert code == 2 and 'the " at character 13 is never closed' in err


@pytest.mark.slow
def test_attribute_on_efficientnet_explains_an_imagenet_class_by_its_name(tmp_path, monkeypatch):
    if not os.path.exists(EFFICIENTNET):
        pytest.skip('shared network %s absent' % EFFICIENTNET)
    model = str(tmp_path / os.path.basename(EFFICIENTNET))   # its cache goes beside the copy, not into ../shared
    shutil.copyfile(EFFICIENTNET, model)
    monkeypatch.chdir(tmp_path)
    assert attribute.main([CAT_PHOTO, '--model', model, '--preprocess', 'tf', '--classes', IMAGENET_CLASSES,
                           '--objective', '_fc:"Egyptian cat"', '--method', 'gradient', '--out', 'maps', '--npz',
                           'cat.npz', '--precision', 'float32', '--quiet']) == 0
    saved = np.load(str(tmp_path / 'cat.npz'))
    assert saved['objectives'].tolist() == ['_fc:"Egyptian cat"']
    net = onnx_model.load(model, 'tf', quiet=True)
    logits = network.session(net).run(net.layer_tensors[net.layer_index('_fc')],
                                      {net.input: examples.load_image(CAT_PHOTO, 224)[None]})[0]
    assert np.isclose(saved['objective'][0], logits[285], rtol=1e-4)
    assert np.isfinite(saved['maps']).all() and saved['maps'].shape == (1, 1, 224, 224)


# ---------------------------------------------------------------------------
# visualize.py: pending its wiring (model_flags.expression_classes where it parses --objective)

@pytest.fixture()
def visualize_run(net, tmp_path, monkeypatch, capsys):
    """run(objective, *flags) -> (exit code, stderr, the --npz's arrays or None) of 3 steps of visualize.py."""
    monkeypatch.setattr(model_flags, 'network_from_args', lambda args, **options: net)
    (tmp_path / 'classes.txt').write_text('\n'.join(NAMES) + '\n', encoding='utf-8')

    def run(objective, *flags):
        npz = tmp_path / 'v.npz'
        if npz.exists():
            npz.unlink()
        capsys.readouterr()
        code = visualize_cli.main(['--objective', objective, '--iters', '3', '--seed', '0', '--out',
                                   str(tmp_path / 'v.png'), '--npz', str(npz), '--quiet', '--precision', 'float32']
                                  + [str(tmp_path / f) if f == 'classes.txt' else f for f in flags])
        return code, capsys.readouterr().err, dict(np.load(str(npz))) if npz.exists() else None
    return run


@pytest.mark.parametrize('objective, expression', NAMED_CLASSES)
def test_visualize_renders_a_class_by_its_name_as_its_index(visualize_run, objective, expression):
    code, err, named = visualize_run(objective, '--classes', 'classes.txt')
    assert (code, err) == (0, '')
    _, _, indexed = visualize_run(expression)
    assert np.array_equal(named['images'], indexed['images'])
    assert np.array_equal(named['objectives'], indexed['objectives'])
    assert str(named['objective']) == objective


@pytest.mark.parametrize('objective, flags, message', [
    ('predictions:"Egyptian kat"', ['--classes', 'classes.txt'], "'Egyptian kat' is no class of predictions"),
    ('predictions:"Egyptian cat"', [], 'give --classes FILE'),
    ('predictions:"Egyptian cat - predictions:tabby', ['--classes', 'classes.txt'], 'is never closed'),
])
def test_visualize_bad_class_expressions_are_one_line_exit_2(visualize_run, tmp_path, objective, flags, message):
    code, err, saved = visualize_run(objective, *flags)
    assert code == 2 and message in err and err.count('\n') == 1, err
    assert saved is None and not (tmp_path / 'v.png').exists()

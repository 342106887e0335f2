"""Classes: vector units (Dense layers, a classifier's logits), the logit as the objective of a softmax head,
the network's verdict on a class picture, --classes names, and the dataset examples of a vector."""
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import visualize
from builders import ROOT, classifier_model
from filtervis.analysis import examples, verdict
from filtervis.core import network
from filtervis.optvis import ascent, dream
from keras_nets import eager

FER = os.path.join(ROOT, '..', 'shared', 'models', 'fer-emotion-minixception.hdf5')


@pytest.fixture(scope='module')
def classifier():
    return classifier_model()


def test_a_vector_unit_is_a_one_by_one_map_seen_from_the_whole_picture(classifier):
    index = classifier.layer_index('predictions')
    assert classifier.is_vector(index) and classifier.layer_channels[index] == 3
    assert classifier.receptive_field(index, 32) == (32, 32, 0)
    assert classifier.layer_min_sizes[index] == 32
    assert classifier.short_names == ['conv', 'predictions', 'predictions_probability']
    assert classifier.logits_of(index) == index == classifier.logits_of(index + 1)
    assert classifier.logits_of(0) is None
    line = classifier.unit_line(index, 32)
    assert '3 neurons' in line and 'logits of its Softmax' in line


def test_the_logit_keeps_rising_where_the_probability_is_already_one(classifier):
    result = ascent.ascend(classifier, 'predictions', [0], 80, 8, seed=0, size=32, precision='float32')
    probability = verdict.verdict(classifier, 'predictions', [0], result.images)['target_probability'][0]
    logits = result.objectives[:, 0]
    assert probability > 0.999
    # The last 20 steps, where the softmax is saturated, still raise the logit.
    assert (np.diff(logits[-20:]) > 0).all() and logits[-1] > logits[-20] + 0.1
    # On the probability itself the ascent stalls: its gradient has vanished.
    stalled = ascent.ascend(classifier, 'predictions_probability', [0], 80, 8, seed=0, size=32, precision='float32')
    assert stalled.objectives[-1, 0] - stalled.objectives[-20, 0] < 1e-3


@pytest.mark.parametrize('method', ['blog', 'regularized'])
def test_the_class_picture_of_a_red_detector_is_red_and_the_network_says_so(classifier, method):
    step = 2 if method == 'blog' else None
    result = ascent.ascend(classifier, 'predictions', [0], 60, step, seed=0, size=32, method=method,
                           precision='float32')
    red, green, blue = result.images[0].reshape(-1, 3).mean(axis=0)
    assert red > green + 60 and red > blue + 60
    values = verdict.verdict(classifier, 'predictions', [0], result.images)
    assert values['top1'][0] == 0 and values['jitter_kept'][0] == 1.0


def test_the_verdict_on_known_pictures(classifier):
    red = np.zeros((1, 32, 32, 3), np.float32)
    red[..., 0] = 255
    grey = np.full((1, 32, 32, 3), 128, np.float32)
    values = verdict.verdict(classifier, 'predictions', [0, 0], np.concatenate([red, grey]))
    assert values['top1'][0] == 0 and values['jitter_kept'][0] == 1.0
    assert values['target_probability'][0] > values['target_probability'][1]
    assert verdict.caption(values, 0, ['red', 'b', 'c']).startswith('seen as red ')
    assert verdict.caption(values, 0).endswith('· kept 32/32')
    with pytest.raises(ValueError, match='is a map, not a vector of classes'):
        verdict.verdict(classifier, 'conv', [0], red)


def test_dataset_examples_of_a_logit_are_whole_pictures_ranked_by_it(classifier, tmp_path):
    for name, colour in (('red.png', (250, 10, 10)), ('pink.png', (250, 150, 150)), ('green.png', (10, 250, 10))):
        Image.fromarray(np.full((40, 40, 3), colour, np.uint8)).save(str(tmp_path / name))
    found = examples.find(classifier, str(tmp_path), ['predictions'], k=3, filters={1: [0]}, progress=False,
                          precision='float32')
    assert [r['file'] for r in found.records] == ['red.png', 'pink.png', 'green.png']
    assert all((r['y'], r['x']) == (0, 0) for r in found.records)
    tile = examples.patch(classifier, str(tmp_path), found.records[0], found.size)
    assert tile.shape == (32, 32, 3) and tile[..., 0].min() == 250


def test_dream_refuses_a_vector(classifier):
    with pytest.raises(ValueError, match='a dream needs a layer with a map of the picture'):
        dream.check_layers(classifier, ['predictions'])


@pytest.fixture(scope='module')
def keras_classifier(tmp_path_factory):
    """A small Keras classifier whose head is Dense(4, activation='softmax'), saved as .keras, and Keras's
    own logits and probabilities on two pictures."""
    folder = tmp_path_factory.mktemp('keras_classifier')
    path = str(folder / 'classifier.keras')
    pictures = np.random.default_rng(1).uniform(0, 255, (2, 24, 24, 3)).astype(np.float32)
    with eager():
        import keras
        inputs = keras.Input((24, 24, 3))
        x = keras.layers.Rescaling(1 / 255.0)(inputs)
        x = keras.layers.Conv2D(6, 3, activation='relu', name='conv')(x)
        x = keras.layers.GlobalAveragePooling2D(name='pool')(x)
        outputs = keras.layers.Dense(4, activation='softmax', name='predictions')(x)
        model = keras.Model(inputs, outputs)
        model.layers[-1].set_weights([np.random.default_rng(2).normal(0, 3, (6, 4)).astype(np.float32),
                                      np.zeros(4, np.float32)])
        model.save(path)
        head = model.get_layer('predictions')
        logits = np.asarray(keras.Model(inputs, head.input)(pictures)) @ head.get_weights()[0] + head.get_weights()[1]
        probabilities = np.asarray(model(pictures))
    return path, pictures, logits, probabilities


def test_a_keras_softmax_heads_unit_is_its_logits(keras_classifier):
    from filtervis.models import keras_model
    path, pictures, logits, probabilities = keras_classifier
    net = keras_model.load(path, quiet=True)
    index = net.layer_index('predictions')
    assert net.is_vector(index) and net.units[index].probability
    session = network.session(net)
    ours, theirs = session.run([net.layer_tensors[index], net.layer_tensors[index + 1]
                                if net.short_names[index + 1] == 'predictions_probability'
                                else net.layer_tensors[net.layer_index('predictions_probability')]],
                               net.create_feed_dict(pictures))
    assert np.abs(ours - logits).max() < 1e-5 * max(1.0, np.abs(logits).max())
    assert np.abs(theirs - probabilities).max() < 1e-5


def test_classes_on_the_command_line(keras_classifier, tmp_path, capsys):
    path, _, _, _ = keras_classifier
    classes = tmp_path / 'classes.txt'
    classes.write_text('cat\ndog\nbird\nfish\n')
    npz, out = tmp_path / 'c.npz', tmp_path / 'c.png'
    argv = ['--model', path, '--layer', 'predictions', '--iters', '5', '--out', str(out), '--npz', str(npz),
            '--quiet', '--precision', 'float32', '--classes', str(classes)]
    assert visualize.main(argv + ['--filters', 'dog,fish']) == 0
    saved = np.load(str(npz))
    assert saved['filter_ids'].tolist() == [1, 3]
    for field in ('top1', 'top1_probability', 'target_probability', 'jitter_kept'):
        assert saved[field].shape == (2,)
    assert ((saved['jitter_kept'] >= 0) & (saved['jitter_kept'] <= 1)).all()
    assert visualize.main(argv + ['--filters', 'dog', '--probability']) == 0
    assert str(np.load(str(npz))['layer']) == 'predictions_probability'
    out.unlink()
    npz.unlink()
    capsys.readouterr()
    wrong = tmp_path / 'wrong.txt'
    wrong.write_text('cat\ndog\n')
    for flags, message in ((['--filters', 'horse'], "'horse' is no class of --classes (cat, dog, bird, fish)"),
                           (['--classes', str(wrong), '--filters', '0'], 'wrong.txt has 2 lines, but the vector '
                                                                          'units have'),
                           (['--layer', 'conv', '--probability'], '--probability: conv ends in no softmax')):
        assert visualize.main(argv + flags) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and message in err, err
    assert not out.exists() and not npz.exists()


@pytest.mark.slow
def test_fer_class_pictures_are_seen_as_their_class(tmp_path):
    if not os.path.exists(FER):
        pytest.skip('shared network %s absent' % FER)
    model = tmp_path / 'fer.hdf5'
    shutil.copyfile(FER, str(model))
    npz = tmp_path / 'fer.npz'
    assert visualize.main(['--model', str(model), '--preprocess', 'tf', '--layer', 'predictions', '--filters',
                           '3,4', '--method', 'regularized', '--iters', '60', '--seed', '0', '--out',
                           str(tmp_path / 'fer.png'), '--npz', str(npz), '--quiet', '--precision', 'float32']) == 0
    saved = np.load(str(npz))
    assert saved['top1'].tolist() == [3, 4]
    assert (saved['target_probability'] > 0.5).all()


def test_the_atlas_names_classes_and_records_the_verdict(keras_classifier, tmp_path):
    import json
    from filtervis import atlas
    from filtervis.cli import atlas as atlas_cli
    path, _, _, _ = keras_classifier
    classes = tmp_path / 'classes.txt'
    classes.write_text('cat\ndog\nbird\nfish\n')
    out = tmp_path / 'atlas'
    assert atlas_cli.main([str(out), '--model', path, '--layers', 'predictions', '--filters', '1-2', '--iters', '5',
                           '--method', 'blog', '--classes', str(classes), '--quiet', '--precision', 'float32']) == 0
    with open(str(out / atlas.CATALOG_FILE)) as f:
        catalog = json.load(f)
    assert [(e['filter'], e['name']) for e in catalog] == [(1, 'dog'), (2, 'bird')]
    for entry in catalog:
        assert 0 <= entry['top1'] < 4 and entry['top1_name'] in ('cat', 'dog', 'bird', 'fish')
        assert 0 <= entry['jitter_kept'] <= 1 and 0 <= entry['target_probability'] <= 1
    # The names are beside atlas.json, not in it: a run without --classes adds to the same atlas.
    assert 'classes' not in json.loads((out / atlas.ATLAS_FILE).read_text())
    assert atlas_cli.main([str(out), '--model', path, '--layers', 'predictions', '--filters', '3', '--iters', '5',
                           '--method', 'blog', '--quiet', '--precision', 'float32']) == 0

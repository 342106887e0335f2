"""atlas.py and the maco method: which method an atlas takes without --method, and maco pictures larger than a
fixed-size network's input, on a small Keras file (24 px input) and the small VGG16 graph.

Known answers: a new atlas of a Keras file without --method records the table's regularized (cli/maco.py,
DEFAULT_METHODS); with --method maco it records maco, writes its pictures as PNG and lists them in its catalog; a
new atlas of the VGG16 graph without --method records regularized, as before there was maco. An atlas resumed without --method keeps the method of its
atlas.json (its new pictures are those a fresh atlas of that method makes, byte for byte, and a diversity view
added later keeps that method's weight); an explicit other --method is refused in one line naming the difference.
maco pictures of 48 px on the 24 px network are 48 px in the atlas, and their measures and verdict are those of
the pictures resized to 24 px; a size below the input side, a --step-size for maco and a run whose 8 crops do not
fit in memory are refused in one line, with nothing written.

    python -m pytest tests/test_atlas_maco.py -q      # about 15 s on 2 cores
"""
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

import keras_nets
from builders import listing
from filtervis import atlas
from filtervis.analysis import measures, verdict
from filtervis.cli import atlas as atlas_cli
from filtervis.core import memory
from filtervis.models import keras_model
from filtervis.optvis import ascent, maco
from filtervis.util import pictures

# float32 by name: 'auto' could pick bfloat16, which a Keras Dense head does not run in.
TINY = ['--iters', '2', '--precision', 'float32', '--quiet']
# The 'basic' test network: a fixed 24 px input; swish a map unit (smallest input 5 px), head its 3 logits.
SIDE = 24


@pytest.fixture(scope='module')
def keras_path(tmp_path_factory):
    with keras_nets.eager():
        return keras_nets.save(keras_nets.build('basic'), str(tmp_path_factory.mktemp('keras') / 'basic.keras'))


@pytest.fixture(scope='module')
def keras_net(keras_path):
    return keras_model.load(keras_path, keras_nets.PREPROCESS['basic'], quiet=True)


def keras_run(out, keras_path, *flags):
    return atlas_cli.main([out, '--model', keras_path, '--preprocess', keras_nets.PREPROCESS['basic']] + TINY
                          + list(flags))


def read(out, name):
    with open(os.path.join(out, name)) as f:
        return json.load(f)


def refused(capsys, code):
    """The one error line of a run that returned `code`, which must be 2."""
    error = capsys.readouterr().err
    assert code == 2 and len(error.strip().splitlines()) == 1, (code, error)
    return error.strip()


# ---------------------------------------------------------------------------
# The method of a new atlas

def test_a_new_atlas_of_a_keras_file_takes_maco_when_asked(keras_path, tmp_path):
    out = str(tmp_path / 'atlas')
    assert keras_run(out, keras_path, '--layers', 'swish', '--filters', '0-1', '--method', 'maco') == 0
    header = atlas.read_header(out)
    assert header['settings']['method'] == 'maco' and header['settings']['size'] == SIDE
    assert '--method maco' in header['command']
    catalog = read(out, atlas.CATALOG_FILE)
    assert [(e['layer'], e['filter']) for e in catalog] == [('swish', 0), ('swish', 1)]
    for entry in catalog:
        with Image.open(os.path.join(out, entry['png'])) as picture:
            assert picture.format == 'PNG' and picture.size == (SIDE, SIDE)


def test_a_new_atlas_of_a_keras_file_takes_the_tables_method(keras_path, tmp_path):
    # The Keras networks here read better with the regularized method (docs/maco.md): the table's choice.
    out = str(tmp_path / 'atlas')
    assert keras_run(out, keras_path, '--layers', 'swish', '--filters', '0') == 0
    assert atlas.read_header(out)['settings']['method'] == 'regularized'
    assert len(read(out, atlas.CATALOG_FILE)) == 1


def test_a_new_atlas_of_vgg16_stays_regularized(model_file, tmp_path):
    out = str(tmp_path / 'atlas')
    assert atlas_cli.main([out, '--model', model_file, '--layers', 'conv1_1', '--filters', '0', '--size', '16']
                          + TINY) == 0
    header = atlas.read_header(out)
    assert header['settings']['method'] == 'regularized' and '--method regularized' in header['command']
    assert header['settings']['diversity_weight'] == ascent.DEFAULT_DIVERSITY_WEIGHT['regularized']


def test_help_names_the_atlas_default_of_each_kind_of_model():
    text = ' '.join(atlas_cli.build_parser().format_help().split())
    assert 'vgg16: regularized; keras: regularized; onnx: maco' in text


def test_a_step_size_for_a_new_maco_atlas_is_refused(keras_path, tmp_path, capsys):
    out = str(tmp_path / 'atlas')
    error = refused(capsys, keras_run(out, keras_path, '--layers', 'swish', '--filters', '0', '--step-size', '3',
                                      '--method', 'maco'))
    assert 'step_size=3.0 belongs to the blog method; the maco method has none' in error
    assert not os.path.exists(out)


# ---------------------------------------------------------------------------
# Resumed: the method of atlas.json

BLOG = ['--layers', 'swish', '--batch-size', '2']


def test_a_resumed_atlas_keeps_its_method(keras_path, tmp_path, capsys):
    out = str(tmp_path / 'atlas')
    assert keras_run(out, keras_path, '--filters', '0-1', '--method', 'blog', *BLOG) == 0
    header = atlas.read_header(out)
    assert header['settings']['method'] == 'blog'
    # More filters and another view, without --method: blog goes on (its diversity weight too), same atlas.
    assert keras_run(out, keras_path, '--filters', '0-3', *BLOG) == 0
    assert keras_run(out, keras_path, '--filters', '0-3', '--views', 'channel,diversity2', *BLOG) == 0
    assert atlas.read_header(out) == dict(header, settings=dict(header['settings'], views=['channel', 'diversity2']))
    catalog = read(out, atlas.CATALOG_FILE)
    assert [e['filter'] for e in catalog] == [0, 1, 2, 3]
    assert all([v['view'] for v in e['views']] == ['channel', 'diversity2'] for e in catalog)
    # The pictures added are those of a blog atlas made at once.
    fresh = str(tmp_path / 'fresh')
    assert keras_run(fresh, keras_path, '--filters', '0-3', '--views', 'channel,diversity2', '--method', 'blog',
                     *BLOG) == 0
    got, want = listing(out), listing(fresh)
    npz = sorted(name for name in want if name.endswith('.npz'))
    assert sorted(name for name in got if name.endswith('.npz')) == npz and len(npz) == 12
    for name in npz:
        assert got[name] == want[name], name

    # An explicit other method is another atlas: refused, one line, nothing changed.
    before = listing(out)
    error = refused(capsys, keras_run(out, keras_path, '--filters', '0-3', '--method', 'maco', *BLOG))
    assert "method: 'blog' there, 'maco' now" in error and atlas.ATLAS_FILE in error
    error = refused(capsys, keras_run(out, keras_path, '--filters', '0-3', '--method', 'regularized', *BLOG))
    assert "method: 'blog' there, 'regularized' now" in error
    assert listing(out) == before


# ---------------------------------------------------------------------------
# maco pictures larger than the network's input

def test_maco_pictures_larger_than_the_input_are_measured_at_its_side(keras_path, keras_net, tmp_path):
    out = str(tmp_path / 'atlas')
    assert keras_run(out, keras_path, '--layers', 'swish,head', '--filters', '0-1', '--size', '48',
                     '--method', 'maco') == 0
    header = atlas.read_header(out)
    assert header['settings']['method'] == 'maco' and header['settings']['size'] == 48
    catalog = read(out, atlas.CATALOG_FILE)
    assert [(e['layer'], e['filter']) for e in catalog] == [('swish', 0), ('swish', 1), ('head', 0), ('head', 1)]
    for entry in catalog:
        with Image.open(os.path.join(out, entry['png'])) as picture:
            assert picture.format == 'PNG' and picture.size == (48, 48)
        with np.load(os.path.join(out, entry['npz'])) as npz:
            image = npz['image']
        assert image.shape == (48, 48, 3)
        for key in ('activation', 'dead_fraction'):
            assert isinstance(entry[key], float) and math.isfinite(entry[key]), (entry['layer'], key, entry[key])
        # Blur robustness is a ratio to the activation: none (NaN) where that is not above 0.
        robustness = entry['blur_robustness']
        assert robustness is None if entry['activation'] <= 0 else math.isfinite(robustness), entry
        # The measures are those of the picture as the network is shown it: resized to its input side.
        index = keras_net.layer_index(entry['layer'])
        seen = pictures.resized(image[None], maco.seen_side(keras_net, 48))
        assert seen.shape == (1, SIDE, SIDE, 3)
        values = measures.measure_objectives(keras_net, [ascent.filter_objective('channel', index, entry['filter'])],
                                             seen)
        for key in ('activation', 'dead_fraction', 'blur_robustness'):
            value = float(values[key][0])
            assert (entry[key] is None and math.isnan(value)) or (
                entry[key] == pytest.approx(value, rel=1e-4, abs=1e-6)), (entry['layer'], key, entry[key], value)
        # The head is the network's output: its pictures also get the verdict, on the resized picture.
        if entry['layer'] == 'head':
            judged = verdict.verdict(keras_net, keras_net.classifier_of(index), [entry['filter']], seen)
            assert entry['top1'] == int(judged['top1'][0])
            for key in ('top1_probability', 'target_probability', 'jitter_kept'):
                assert math.isfinite(entry[key]) and 0 <= entry[key] <= 1, key
        else:
            assert 'top1' not in entry


def test_a_size_below_the_input_of_the_head_is_refused(keras_path, tmp_path, capsys):
    out = str(tmp_path / 'atlas')
    error = refused(capsys, keras_run(out, keras_path, '--layers', 'head', '--size', '20'))
    assert 'size=20: head needs images of at least 24 pixels' in error
    assert not os.path.exists(out)


def test_a_size_below_the_input_is_refused_for_every_unit(keras_path, tmp_path, capsys):
    out = str(tmp_path / 'atlas')
    error = refused(capsys, keras_run(out, keras_path, '--layers', 'swish', '--size', '20', '--method', 'maco'))
    assert '20' in error and '24' in error
    assert not os.path.exists(out)


def test_the_memory_check_counts_the_crops(keras_path, keras_net, tmp_path, monkeypatch, capsys):
    index = keras_net.layer_index('swish')
    crops = maco.Config().crops
    one, every = (memory.estimate(keras_net, [index], 48, 2, 2, 'maco', crops=count, seen=SIDE).total
                  for count in (1, crops))
    assert every > one
    # What one crop per picture needs is free, what the atlas's 8 crops need is not.
    free = int((one + every) / 2 / memory.HEADROOM)
    monkeypatch.setattr(memory, 'available', lambda: (free, 'MemAvailable on this machine'))
    out = str(tmp_path / 'atlas')
    error = refused(capsys, keras_run(out, keras_path, '--layers', 'swish', '--filters', '0-1', '--batch-size', '2',
                                      '--size', '48', '--method', 'maco'))
    assert 'a task of swish needs about' in error
    assert '2 picture(s) of 48x48, %d crop(s) of %dx%d each on swish' % (crops, SIDE, SIDE) in error
    assert not os.path.exists(out)

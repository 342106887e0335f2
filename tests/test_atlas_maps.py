"""atlas.py --examples DIR --attribution METHOD: a map tile beside each example tile, on the small 13-layer model.

Known answers: an atlas without --attribution writes the files it wrote
before there were maps (the same names and bytes as one with maps, less the
map tiles and their fields, and a page without the toggle's code); with it,
each example has a map tile, an overlay of its filter's map over its patch,
named in the examples JSON and the catalog with the method, and the page
gains the patch / map toggle. A run with another --attribution (or none) on
the same folder is no other atlas: it renders nothing again and rewrites the
examples with its maps. Bad input is one line, exit 2, nothing written.
(The toggle in a browser: tests/test_atlas_page.py.)
"""
import json
import os

import numpy as np
import pytest
from PIL import Image

from filtervis import atlas
from filtervis.analysis import attribution, examples
from filtervis.atlas import page as atlas_page
from filtervis.cli import atlas as atlas_cli
from filtervis.models import vgg16
from filtervis.util import pictures
from builders import listing

RUN = ['--layers', 'conv1_1,conv2_1', '--filters', '0-2', '--method', 'blog', '--size', '32', '--iters', '3',
       '--batch-size', '3', '--precision', 'float32', '--quiet']
# What differs between any two runs: the random id of a new atlas, and how long each task took.
RUN_DEPENDENT = {'atlas_id', 'seconds'}


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(str(folder / ('im%d.png' % i)))
    return str(folder)


def make_atlas(out, model_file, images, *flags):
    assert atlas_cli.main([out, '--model', model_file, '--examples', images] + RUN + list(flags)) == 0
    return out


@pytest.fixture(scope='module')
def plain(model_file, images, tmp_path_factory):
    return make_atlas(str(tmp_path_factory.mktemp('plain') / 'atlas'), model_file, images)


@pytest.fixture(scope='module')
def mapped(model_file, images, tmp_path_factory):
    return make_atlas(str(tmp_path_factory.mktemp('mapped') / 'atlas'), model_file, images, '--attribution', 'gradcam')


def without(value, keys):
    """A JSON value with the keys dropped from every object in it."""
    if isinstance(value, dict):
        return {k: without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [without(v, keys) for v in value]
    return value


def read(out, name):
    with open(os.path.join(out, name)) as f:
        return json.load(f)


def test_without_attribution_the_atlas_is_what_it_was(plain, mapped):
    got, with_maps = listing(plain), listing(mapped)
    maps = sorted(name for name in with_maps if name.endswith('-map.png'))
    assert len(maps) == sum(len(e['examples']) for e in read(mapped, atlas.CATALOG_FILE)) > 0
    # The same files but the map tiles, and no file that names a map.
    assert sorted(got) == sorted(set(with_maps) - set(maps))
    assert not any('-map' in name for name in got)
    for name, data in got.items():
        if name.endswith('.json'):
            # The same JSON but the run-dependent fields, and the maps' fields the plain atlas never has.
            assert b'"map"' not in data and b'"attribution"' not in data, name
            assert without(json.loads(data), RUN_DEPENDENT) == without(json.loads(with_maps[name]),
                                                                       RUN_DEPENDENT | {'map', 'attribution'}), name
        elif name != atlas.PAGE_FILE:
            assert data == with_maps[name], name
    # The examples JSON keeps its keys and order; the page is page.html filled in, without the toggle's code.
    for name in got:
        if name.endswith('-examples.json'):
            record = json.loads(got[name])
            assert list(record) == ['folder', 'images', 'examples']
            assert all(list(example) == ['png', 'file', 'activation'] for example in record['examples'])
    header, catalog = atlas.read_header(plain), read(plain, atlas.CATALOG_FILE)
    with open(atlas_page.PAGE_TEMPLATE, encoding='utf8') as f:
        template = f.read()
    page = got[atlas.PAGE_FILE].decode('utf8')
    start = template.index(atlas_page.PAGE_DATA)
    assert page == atlas.page_html(header, catalog)
    assert page.startswith(template[:start]) and page.endswith(template[start + len(atlas_page.PAGE_DATA):])
    assert 'example-toggle' not in page and 'example-toggle' in with_maps[atlas.PAGE_FILE].decode('utf8')


def test_each_example_gets_its_map_over_its_patch(mapped, images, model_file):
    catalog = read(mapped, atlas.CATALOG_FILE)
    net = vgg16.VGG16(model_file)
    with_examples = [entry for entry in catalog if entry.get('examples')]
    assert with_examples and all(entry['attribution'] == 'gradcam' for entry in with_examples)
    entry = with_examples[-1]
    record = read(mapped, '%s/%04d-examples.json' % (entry['layer'], entry['filter']))
    assert record['attribution'] == 'gradcam' and record['examples'] == entry['examples']
    # The tile is the overlay of the example's map on its patch, as the Python functions give them (the atlas
    # reads the images at the network's size, 224 px here, whatever size its pictures have).
    found = examples.find(net, images, [entry['layer']], k=atlas.tasks.EXAMPLES_K, filters=[entry['filter']],
                          precision='float32', progress=False)
    maps = attribution.example_maps(net, images, found.records, 'gradcam', size=found.size, precision='float32')
    patches = examples.patches(net, images, found.records, found.size)
    assert [r['file'] for r in found.records] == [e['file'] for e in entry['examples']]
    for example, patch, patch_map in zip(entry['examples'], patches, maps):
        assert example['map'] == example['png'][:-len('.png')] + '-map.png'
        with Image.open(os.path.join(mapped, example['map'])) as tile:
            assert tile.mode == 'RGB' and tile.size == patch.shape[:2]
            expected = np.round(pictures.overlay(patch, patch_map)).astype(np.uint8)
            np.testing.assert_array_equal(np.asarray(tile), expected)


def test_another_attribution_on_the_same_atlas_rewrites_the_maps_and_renders_nothing(model_file, images, tmp_path):
    out = make_atlas(str(tmp_path / 'atlas'), model_file, images, '--attribution', 'gradcam')
    records = {name: data for name, data in listing(out).items() if '/task-' in name}
    header = read(out, atlas.ATLAS_FILE)
    make_atlas(out, model_file, images, '--attribution', 'gradient-x-input')
    after = listing(out)
    # The pictures are done: no task ran again, and atlas.json knows nothing of the maps.
    assert {name: data for name, data in after.items() if '/task-' in name} == records
    assert read(out, atlas.ATLAS_FILE) == header and 'attribution' not in json.dumps(header)
    catalog = read(out, atlas.CATALOG_FILE)
    assert {entry['attribution'] for entry in catalog if entry.get('examples')} == {'gradient-x-input'}
    # Without --attribution the examples are written again without maps, and the page loses its toggle.
    make_atlas(out, model_file, images)
    catalog = read(out, atlas.CATALOG_FILE)
    assert not any('attribution' in entry or any('map' in e for e in entry.get('examples', [])) for entry in catalog)
    with open(os.path.join(out, atlas.PAGE_FILE), encoding='utf8') as f:
        assert 'example-toggle' not in f.read()


@pytest.mark.parametrize('flags, message', [
    (['--examples', 'IMAGES', '--attribution', 'gradient'],
     "error: attribution 'gradient': expected gradcam or gradient-x-input"),
    (['--attribution', 'gradcam'], 'error: --attribution gradcam draws the maps of the examples: give --examples DIR too'),
    (['--attribution', 'nonsense'], "error: attribution 'nonsense': expected gradcam or gradient-x-input"),
])
def test_bad_input_says_what_and_leaves_nothing(model_file, images, tmp_path, capsys, flags, message):
    out = str(tmp_path / 'out')
    flags = [images if flag == 'IMAGES' else flag for flag in flags]
    assert atlas_cli.main([out, '--model', model_file, '--quiet'] + flags) == 2
    error = capsys.readouterr().err
    assert error.strip() == message
    assert not os.path.exists(out)

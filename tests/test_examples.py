"""examples.py: top patches from real images, on hand-set filters and generated PNGs with known answers."""
import json
import os
import random

import numpy as np
import pytest
from PIL import Image

from filtervis import cluster
from filtervis.analysis import examples
from filtervis.core import network
from filtervis.util import files, quiet
from filtervis.models import vgg16

tf = quiet.import_tensorflow()
from builders import make_model, one_layer_model, random_weights
from filtervis import plots
from filtervis.cli import examples as examples_cli

# R - G - B at every position of a 5x5 window: large only where a patch is pure red.
RED_KERNEL = np.tile(np.array([1.0, -1.0, -1.0], np.float32), (5, 5, 1))
SIDE = 32


@pytest.fixture(scope='module')
def red_model():
    return one_layer_model(RED_KERNEL)


def write_png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(image, np.uint8)).save(path)


def background(seed, side=SIDE):
    """Reddish noise, R 100..200, G and B 0..50: every 5x5 window scores above 0 and at most
    25 * 200 / 255 = 19.6 < 25 for pure red."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.integers(100, 201, (side, side, 1)),
                           rng.integers(0, 51, (side, side, 2))], axis=2).astype(np.uint8)


def red_detector_response(image, y, x):
    """relu of the unit (y, x) of RED_KERNEL on image [H, W, 3] 0..255, 'unit' preprocessing, zero padding."""
    padded = np.pad(np.asarray(image, np.float64) / 255.0, ((2, 2), (2, 2), (0, 0)))
    window = padded[y:y + 5, x:x + 5]
    return max(0.0, float((window[..., 0] - window[..., 1] - window[..., 2]).sum()))


@pytest.fixture(scope='module')
def red_folder(tmp_path_factory):
    """6 noise images in two sub-folders; b/square.png has a 5x5 red square centred at (12, 22)."""
    folder = tmp_path_factory.mktemp('red')
    for i in range(5):
        write_png(str(folder / ('a' if i < 3 else 'b') / ('noise%d.png' % i)), background(i))
    image = background(10)
    image[10:15, 20:25] = (255, 0, 0)
    write_png(str(folder / 'b' / 'square.png'), image)
    return str(folder)


def test_receptive_fields_of_vgg16_are_read_from_the_graph():
    # Any channel counts: the field depends only on kernels, strides and padding.
    model = make_model(random_weights((2,) * 13))
    fields = {name: examples.receptive_field(model, i) for i, name in enumerate(model.short_names)}
    assert fields['conv1_1'] == (3, 1, -1)
    assert fields['conv1_2'] == (5, 1, -2)
    assert fields['conv3_3'] == (40, 4, -18)
    assert fields['conv5_3'] == (196, 16, -90)
    assert [fields[n][0] for n in model.short_names] == [3, 5, 10, 14, 24, 32, 40, 60, 76, 92, 132, 164, 196]


def test_a_unit_sees_nothing_outside_its_receptive_field():
    model = make_model(random_weights((4, 4, 4, 4, 4, 4, 4), seed=3))
    index = model.layer_index('conv3_3')
    side, stride, offset = examples.receptive_field(model, index)
    y, x = 5, 6
    top, left = offset + stride * y, offset + stride * x
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    changed = rng.uniform(0, 255, image.shape).astype(np.float32)
    changed[:, top:top + side, left:left + side] = image[:, top:top + side, left:left + side]
    layer_t = model.layer_tensors[index]
    sess = network.session(model)
    before, after = sess.run(layer_t, {model.input: image}), sess.run(layer_t, {model.input: changed})
    np.testing.assert_allclose(after[0, y, x], before[0, y, x], rtol=1e-5, atol=1e-5)
    assert not np.allclose(after, before)    # the change reached other units


def test_the_planted_red_square_is_the_top_example(red_model, red_folder):
    found = examples.find(red_model, red_folder, ['conv1_1'], k=3, size=SIDE, progress=False)
    assert found.count == 6 and found.skipped == [] and found.size == SIDE
    assert [r['rank'] for r in found.records] == [0, 1, 2]
    best = found.records[0]
    assert (best['layer'], best['filter'], best['file'], best['y'], best['x']) == ('conv1_1', 0, 'b/square.png', 12, 22)
    image = np.asarray(Image.open(os.path.join(red_folder, 'b', 'square.png')), np.float32)
    assert best['activation'] == pytest.approx(red_detector_response(image, 12, 22), rel=1e-5)
    assert best['activation'] == pytest.approx(25.0, rel=1e-5)
    # At most one entry per image, strongest first; each equals the NumPy response at its unit.
    assert len({r['file'] for r in found.records}) == 3
    activations = [r['activation'] for r in found.records]
    assert activations == sorted(activations, reverse=True)
    for record in found.records[1:]:
        image = np.asarray(Image.open(os.path.join(red_folder, record['file'])), np.float32)
        assert record['activation'] == pytest.approx(red_detector_response(image, record['y'], record['x']),
                                                     rel=1e-4, abs=1e-5)
    # The patch is the unit's receptive field, centred on the square: the square itself.
    tile = examples.patch(red_model, red_folder, best, size=SIDE)
    assert tile.shape == (5, 5, 3) and tile.dtype == np.float32
    np.testing.assert_array_equal(tile, np.broadcast_to([255.0, 0.0, 0.0], (5, 5, 3)))


def test_a_filter_that_never_fires_has_no_examples(red_folder):
    model = one_layer_model(RED_KERNEL, bias=-100.0)
    found = examples.find(model, red_folder, [0], size=SIDE, progress=False)
    assert found.count == 6 and found.records == [] and found.filters == [('conv1_1', 0)]
    (_, _, tiles, _), = plots.rows_of(model, red_folder, found)
    assert tiles.shape == (0, 5, 5, 3)
    fig = plots.plot_found(model, red_folder, found, synthetic_images=np.zeros((1, 8, 8, 3)))
    assert 'off on every image' in [t.get_text() for ax in fig.axes for t in ax.texts]


def test_rows_follow_the_filters_asked_for_repeats_too(red_model, red_folder):
    # As visualize --filters 0,0 asks: two pictures of filter 0, so two rows of its examples.
    found = examples.find(red_model, red_folder, [0], k=2, filters=[0, 0], size=SIDE, progress=False)
    assert found.filters == [('conv1_1', 0)] and len(found.records) == 2
    rows = plots.rows_of(red_model, red_folder, found, [(0, 0), ('conv1_1', 0)])
    assert [(layer, f, len(records)) for layer, f, _, records in rows] == [('conv1_1', 0, 2)] * 2
    np.testing.assert_array_equal(rows[0][2], rows[1][2])
    fig = plots.plot_found(red_model, red_folder, found, np.zeros((2, 8, 8, 3)), filters=[(0, 0), (0, 0)])
    assert len(fig.axes) == 2 * (1 + 2)
    with pytest.raises(ValueError, match='did not look for examples of conv1_1 filter 1'):
        plots.rows_of(red_model, red_folder, found, [(0, 1)])


@pytest.mark.parametrize('side, dtype', [(6, 'float32'), (7, 'bfloat16'), (112, 'float32'), (112, 'bfloat16'),
                                         (9, 'block'), (10, 'block')])
def test_max_and_position_finds_the_first_largest_unit(side, dtype):
    # Values 0..3: every map has many equal maxima, and the first in row-major order must win.
    maps = np.random.default_rng(side).integers(0, 4, (3, side, side, 5)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        maps_t = tf.constant(maps, tf.bfloat16 if dtype == 'bfloat16' else tf.float32)
        ops = examples._block_search(maps_t, side) if dtype == 'block' else examples.max_and_position(maps_t, side)
        values, positions = tf.Session(graph=graph).run(ops)
    flat = maps.reshape(3, side * side, 5)
    np.testing.assert_array_equal(values, flat.max(axis=1))
    np.testing.assert_array_equal(positions, flat.argmax(axis=1))


def test_a_corner_patch_is_padded_and_ties_go_to_the_first_unit(tmp_path):
    # A 3x3 square in the corner fits whole in the window of units (0..2, 0..2): nine equal units.
    image = np.zeros((SIDE, SIDE, 3), np.uint8)
    image[0:3, 0:3] = (255, 0, 0)
    write_png(str(tmp_path / 'corner.png'), image)
    model = one_layer_model(RED_KERNEL)
    best = examples.find(model, str(tmp_path), [0], k=1, size=SIDE, progress=False).records[0]
    assert (best['y'], best['x'], best['activation']) == (0, 0, pytest.approx(9.0))
    tile = examples.patch(model, str(tmp_path), best, size=SIDE)
    expected = np.zeros((5, 5, 3), np.float32)
    expected[2:, 2:] = (255, 0, 0)
    np.testing.assert_array_equal(tile, expected)


@pytest.fixture(scope='module')
def mixed_folder(tmp_path_factory):
    """14 noise images; copy*.png repeat noise3.png, so their activations tie exactly."""
    folder = tmp_path_factory.mktemp('mixed')
    for i in range(12):
        write_png(str(folder / ('noise%02d.png' % i)), background(i))
    for name in ('copy1.png', 'sub/copy0.png'):
        write_png(str(folder / name), background(3))
    return str(folder)


@pytest.fixture(scope='module')
def small_model(tmp_path_factory):
    """3 random layers, loaded from a file so that Dask workers can load it too."""
    path = str(tmp_path_factory.mktemp('small') / 'vgg16.tfmodel')
    with open(path, 'wb') as f:
        f.write(vgg16.build_graph_def(random_weights((4, 4, 5)), 'unit').SerializeToString())
    return vgg16.VGG16(path)


def test_any_batching_or_split_gives_the_same_examples(small_model, mixed_folder):
    layers, options = [0, 2], dict(k=4, size=SIDE)
    reference = examples.find(small_model, mixed_folder, layers, batch_size=16, progress=False, **options)
    assert len(reference.records) == (4 + 5) * 4
    for batch_size in (1, 3):
        found = examples.find(small_model, mixed_folder, layers, batch_size=batch_size, progress=False, **options)
        assert found.records == reference.records
    # Chunks scanned in any order and merged in any order.
    files = examples.list_images(mixed_folder)
    filters = examples.check_filters(small_model, layers, None)
    rng = random.Random(0)
    for _ in range(3):
        cuts = sorted(rng.sample(range(1, len(files)), 3))
        chunks = [(start, files[start:stop]) for start, stop in zip([0] + cuts, cuts + [len(files)])]
        rng.shuffle(chunks)
        partials = [examples.scan(small_model, mixed_folder, chunk, start, layers, filters, batch_size=2, **options)
                    for start, chunk in chunks]
        merged = partials[0]
        for partial in partials[1:]:
            merged = examples.merge_partials(partial, merged, options['k'])
        assert examples._records(small_model, merged.tops, filters, files, layers) == reference.records


@pytest.mark.slow
def test_two_dask_workers_give_the_same_examples(small_model, mixed_folder):
    layers, options = [0, 2], dict(k=4, size=SIDE, batch_size=2, progress=False)
    reference = examples.find(small_model, mixed_folder, layers, **options)
    with cluster.connect(workers=2) as client:
        for chunk_size in (2, 5, None):
            found = examples.find(small_model, mixed_folder, layers, client=client, chunk_size=chunk_size,
                                  **options)
            assert found.records == reference.records and found.count == 14


def test_bfloat16_follows_the_precision_switch(small_model, mixed_folder):
    options = dict(k=4, size=SIDE, progress=False)
    single = examples.find(small_model, mixed_folder, [0, 2], precision='float32', **options)
    half = examples.find(small_model, mixed_folder, [0, 2], precision='bfloat16', **options)
    assert (single.precision, half.precision) == ('float32', 'bfloat16')
    # conv1_1 reads the pixels in float32 either way; later layers keep 8 significant bits.
    assert [r for r in half.records if r['layer'] == 'conv1_1'] == [r for r in single.records
                                                                    if r['layer'] == 'conv1_1']
    def strongest(found, filter_id):
        return [r['activation'] for r in found.records if (r['layer'], r['filter']) == ('conv2_1', filter_id)]
    for filter_id in range(5):
        values, values_bf16 = strongest(single, filter_id), strongest(half, filter_id)
        count = min(len(values), len(values_bf16))    # a unit near 0 may round to 0 and drop out
        assert count >= 2
        np.testing.assert_allclose(values_bf16[:count], values[:count], rtol=0.03, atol=2e-3)
    again = examples.find(small_model, mixed_folder, [0, 2], precision='bfloat16', batch_size=3, **options)
    assert again.records == half.records


def test_ties_break_by_file_name(small_model, mixed_folder):
    found = examples.find(small_model, mixed_folder, [0], k=14, filters=[1], size=SIDE, progress=False)
    same = [r['file'] for r in found.records if r['file'] in ('copy1.png', 'noise03.png', 'sub/copy0.png')]
    assert same == ['copy1.png', 'noise03.png', 'sub/copy0.png']
    ranks = [r['file'] for r in found.records]
    assert ranks.index('noise03.png') == ranks.index('copy1.png') + 1


def test_find_builds_its_ops_once(small_model, mixed_folder):
    examples.find(small_model, mixed_folder, [0, 1, 2], k=2, size=SIDE, progress=False)
    count = len(small_model.graph.get_operations())
    for _ in range(3):
        examples.find(small_model, mixed_folder, [0, 1, 2], k=2, size=SIDE, progress=False)
    assert len(small_model.graph.get_operations()) == count


def test_bad_files_are_skipped_and_counted(tmp_path):
    write_png(str(tmp_path / 'good.png'), background(0))
    Image.fromarray(background(1)[:, :, 0]).save(str(tmp_path / 'grey.jpg'))    # greyscale JPEG reads fine
    data = open(str(tmp_path / 'good.png'), 'rb').read()
    (tmp_path / 'cut.png').write_bytes(data[:len(data) // 2])
    (tmp_path / 'notes.jpg').write_text('not a picture')
    (tmp_path / 'readme.txt').write_text('ignored: not an image name')
    brightness = one_layer_model(np.ones((3, 3), np.float32))    # fires on grey too
    found = examples.find(brightness, str(tmp_path), [0], k=9, size=SIDE, progress=False)
    assert found.count == 2
    assert found.skipped == ['cut.png', 'notes.jpg'] and len(found.reasons) == 2
    assert {r['file'] for r in found.records} == {'good.png', 'grey.jpg'}


def test_bad_folders_say_what_is_wrong(red_model, tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        examples.find(red_model, str(tmp_path / 'nowhere'), [0], progress=False)
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('no images here')
    with pytest.raises(ValueError, match='no PNG or JPEG files under'):
        examples.find(red_model, str(tmp_path / 'empty'), [0], progress=False)
    (tmp_path / 'broken').mkdir()
    (tmp_path / 'broken' / 'a.png').write_bytes(b'\x89PNG\r\n\x1a\n broken')
    with pytest.raises(ValueError, match='none of the 1 image files'):
        examples.find(red_model, str(tmp_path / 'broken'), [0], progress=False)
    with pytest.raises(ValueError, match='is a file, not a folder'):
        examples.find(red_model, str(tmp_path / 'broken' / 'a.png'), [0], progress=False)


def test_bad_arguments_name_the_value(red_model, red_folder):
    with pytest.raises(ValueError, match='k=0'):
        examples.find(red_model, red_folder, [0], k=0, progress=False)
    with pytest.raises(ValueError, match='filter 3 is out of range'):
        examples.find(red_model, red_folder, [0], filters=[3], progress=False)
    with pytest.raises(ValueError, match='unknown layer'):
        examples.find(red_model, red_folder, ['conv9_9'], progress=False)


def test_images_become_rgb_squares_of_the_model_size(tmp_path):
    grey = np.tile(np.arange(64, dtype=np.uint8)[None, :], (32, 1))            # 32 rows, 64 columns
    Image.fromarray(grey).save(str(tmp_path / 'wide.png'))
    image = examples.load_image(str(tmp_path / 'wide.png'), 16)
    assert image.shape == (16, 16, 3) and image.dtype == np.float32
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    # Halved, then the middle 16 of 32 columns: values near 16..47, increasing left to right.
    assert 14 <= image[0, 0, 0] <= 19 and 44 <= image[0, -1, 0] <= 49


def test_16_bit_and_float_greyscale_read_like_their_8_bit_version(tmp_path):
    # Pillow's convert('RGB') clips 16-bit values at 255: the picture came out almost all white.
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8)[None, :], (64, 1))    # 64x64, 0..252 left to right
    Image.fromarray(grey).save(str(tmp_path / 'grey8.png'))
    Image.fromarray(grey.astype(np.uint16) * 257).save(str(tmp_path / 'grey16.png'))
    assert Image.open(str(tmp_path / 'grey16.png')).mode in ('I;16', 'I')    # older Pillow: 'I'
    # Float greyscale has no fixed range: stretched from its own min..max (here 0..0.5) to 0..255.
    Image.fromarray(grey.astype(np.float32) / 504).save(str(tmp_path / 'float.tif'))
    assert Image.open(str(tmp_path / 'float.tif')).mode == 'F'
    expected = examples.load_image(str(tmp_path / 'grey8.png'), 32)
    assert expected.max() > 200 and expected.min() < 50
    for name, scale in (('grey16.png', 1.0), ('float.tif', 255 / 252)):
        image = examples.load_image(str(tmp_path / name), 32)
        assert image.shape == (32, 32, 3) and image.dtype == np.float32
        np.testing.assert_allclose(image, expected * scale, atol=1.01)


def test_plot_examples_draws_a_row_per_filter():
    patches = [np.zeros((3, 5, 5, 3), np.float32), np.full((2, 5, 5, 3), 255, np.float32)]
    fig = plots.plot_examples(np.zeros((2, 8, 8, 3)), patches, [['a', 'b', 'c'], ['d', 'e']],
                                 row_labels=['f0', 'f1'], title='t')
    assert len(fig.axes) == 2 * 4
    with pytest.raises(ValueError, match='1 synthetic pictures for 2 rows'):
        plots.plot_examples(np.zeros((1, 8, 8, 3)), patches)


def test_command_line_writes_figure_and_records(red_folder, tmp_path, capsys):
    model_path = str(tmp_path / 'red.tfmodel')
    with open(model_path, 'wb') as f:
        f.write(vgg16.build_graph_def([(RED_KERNEL[:, :, :, None], np.zeros(1, np.float32))], 'unit')
                .SerializeToString())
    (tmp_path / 'images').mkdir()
    write_png(os.path.join(str(tmp_path / 'images'), 'square.png'), np.full((SIDE, SIDE, 3), (255, 0, 0)))
    (tmp_path / 'images' / 'bad.png').write_text('not a picture')
    out, records = str(tmp_path / 'ex.png'), str(tmp_path / 'ex.json')
    code = examples_cli.main([str(tmp_path / 'images'), '--model', model_path, '--layers', 'conv1_1',
                          '--filters', '0', '--size', str(SIDE), '--out', out, '--json', records, '--verbose'])
    assert code == 0 and os.path.getsize(out) > 0
    data = json.load(open(records))
    assert [(r['layer'], r['filter'], r['rank'], r['file'], r['y'], r['x']) for r in data] == [
        ('conv1_1', 0, 0, 'square.png', 2, 2)]
    assert data[0]['activation'] == pytest.approx(25.0)
    err = capsys.readouterr().err
    assert 'skipped 1 of 2 files' in err and 'bad.png' in err
    code = examples_cli.main([str(tmp_path / 'nowhere'), '--model', model_path, '--out', out])
    assert code == 2 and 'does not exist' in capsys.readouterr().err


def test_command_line_checks_where_it_saves_before_the_scan(red_folder, tmp_path, capsys, monkeypatch):
    model_path = str(tmp_path / 'red.tfmodel')
    with open(model_path, 'wb') as f:
        f.write(vgg16.build_graph_def([(RED_KERNEL[:, :, :, None], np.zeros(1, np.float32))], 'unit')
                .SerializeToString())
    (tmp_path / 'a_file').write_text('x')
    # The image folder does not exist either: the output is checked first, before any image is read.
    for out, json_path, message in ((str(tmp_path / 'ok.png'), str(tmp_path), 'it is a folder'),
                                    (str(tmp_path), None, 'it is a folder'),
                                    (str(tmp_path / 'a_file' / 'ex.png'), None, 'a_file is a file, not a folder'),
                                    (str(tmp_path / 'ok.png'), str(tmp_path / 'ok.png'), 'give two files')):
        argv = [str(tmp_path / 'no-images'), '--model', model_path, '--out', out, '--quiet']
        code = examples_cli.main(argv + (['--json', json_path] if json_path else []))
        err = capsys.readouterr().err
        assert code == 2 and err.startswith('error: ') and message in err and 'Traceback' not in err
    # What the file system refuses while saving (full disk, no permission) is one line too.
    def refuse(path, write):
        raise PermissionError(13, 'Permission denied', path)
    monkeypatch.setattr(files, 'write_atomic', refuse)
    code = examples_cli.main([red_folder, '--model', model_path, '--layers', 'conv1_1', '--filters', '0',
                          '--size', str(SIDE), '--out', str(tmp_path / 'ex.png'), '--json', str(tmp_path / 'ex.json'),
                          '--quiet'])
    assert code == 2 and 'error: [Errno 13] Permission denied' in capsys.readouterr().err


def test_visualize_draws_the_examples_beside_each_picture(red_folder, tmp_path, capsys):
    import visualize
    model_path = str(tmp_path / 'red.tfmodel')
    with open(model_path, 'wb') as f:
        f.write(vgg16.build_graph_def([(RED_KERNEL[:, :, :, None], np.zeros(1, np.float32))], 'unit')
                .SerializeToString())
    out = str(tmp_path / 'both.png')
    code = visualize.main(['--model', model_path, '--layer', 'conv1_1', '--filters', '0', '--iters', '2',
                           '--pre-relu', '--size', str(SIDE), '--examples', red_folder, '--out', out, '--quiet'])
    assert code == 0 and os.path.getsize(out) > 0
    # The same filter twice: two pictures, each with the filter's examples (failed after the ascent).
    os.remove(out)
    code = visualize.main(['--model', model_path, '--layer', 'conv1_1', '--filters', '0,0', '--iters', '2',
                           '--pre-relu', '--size', str(SIDE), '--examples', red_folder, '--out', out, '--quiet'])
    assert code == 0 and os.path.getsize(out) > 0, capsys.readouterr().err
    code = visualize.main(['--model', model_path, '--layer', 'conv1_1', '--examples', str(tmp_path / 'none'),
                           '--out', out, '--quiet'])
    assert code == 2 and 'does not exist' in capsys.readouterr().err

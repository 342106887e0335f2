"""Start from a photo, and DeepDream: known answers (step 0 is the photo; tiles give the whole picture's
gradient; tile borders do not show; two tile sizes dream alike; the objective rises), the command line,
and bad input."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import visualize
from builders import ROOT, make_model, random_weights
from filtervis.core import memory, network
from filtervis.models import vgg16
from filtervis.optvis import ascent, dream
from filtervis.util.images import load_image, read_image

PHOTOS = os.path.join(ROOT, '..', 'shared', 'data', 'photos')
FER = os.path.join(ROOT, '..', 'shared', 'models', 'fer-emotion-minixception.hdf5')


@pytest.fixture(scope='module')
def photo_file(tmp_path_factory):
    """A photo-like picture 150 x 220: smooth colour fields with edges and texture (its own, no download)."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:150, 0:220]
    picture = np.stack([128 + 90 * np.sin(x / 17.0), 128 + 90 * np.cos(y / 11.0), 128 + 60 * np.sin((x + y) / 9.0)],
                       axis=-1)
    picture[40:90, 60:140] = [230, 40, 40]
    picture += rng.normal(0, 8, picture.shape)
    path = tmp_path_factory.mktemp('photo') / 'photo.png'
    Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(str(path))
    return str(path)


@pytest.fixture(scope='module')
def net():
    return make_model(random_weights(seed=4))


# --- start from a photo -----------------------------------------------------------

@pytest.mark.parametrize('method', ['blog', 'regularized'])
def test_zero_steps_from_a_photo_give_the_photo_back(net, photo_file, method):
    photo = load_image(photo_file, 64)
    result = ascent.ascend(net, 'conv3_2', [0, 1], 0, size=64, init=photo, method=method, seed=0)
    assert result.images.shape == (2, 64, 64, 3)
    assert np.abs(result.images - photo).max() <= 1.0          # within one grey level
    assert not result.dead.any()
    moved = ascent.ascend(net, 'conv3_2', [0], 5, size=64, init=photo, method=method, seed=0)
    assert moved.objectives[-1, 0] > moved.objectives[0, 0]


def test_a_greyscale_network_reads_the_start_as_greyscale(photo_file):
    assert load_image(photo_file, 32, channels=1).shape == (32, 32, 1)
    grey, rgb = read_image(photo_file, channels=1), read_image(photo_file)
    # Pillow's luma: 0.299 R + 0.587 G + 0.114 B, to a grey level.
    assert np.abs(grey[..., 0] - rgb @ np.array([0.299, 0.587, 0.114])).max() <= 1.0


def test_start_on_the_command_line_file_folder_and_bad_input(model_file, photo_file, tmp_path, capsys):
    out, npz = tmp_path / 'f.png', tmp_path / 'f.npz'
    argv = ['--model', model_file, '--layer', 'conv2_1', '--filters', '0-1', '--size', '48', '--iters', '0',
            '--out', str(out), '--npz', str(npz), '--quiet', '--precision', 'float32']
    assert visualize.main(argv + ['--start', photo_file]) == 0
    images = np.load(str(npz))['images']
    assert np.abs(images - load_image(photo_file, 48)).max() == 0
    folder = tmp_path / 'starts'
    folder.mkdir()
    shutil.copy(photo_file, str(folder / 'a.png'))
    Image.fromarray(np.full((60, 60, 3), 200, np.uint8)).save(str(folder / 'b.png'))
    assert visualize.main(argv + ['--start', str(folder)]) == 0
    images = np.load(str(npz))['images']
    assert np.abs(images[1] - 200).max() == 0 and np.abs(images[0] - load_image(photo_file, 48)).max() == 0
    out.unlink()
    npz.unlink()
    capsys.readouterr()
    (folder / 'c.png').write_bytes(b'not a picture')
    for start, message in ((str(folder), 'holds 3 images for 2 filters'),
                           (str(tmp_path / 'missing.jpg'), 'no such file or folder')):
        assert visualize.main(argv + ['--start', start]) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and message in err, err
    (folder / 'a.png').unlink()
    assert visualize.main(argv + ['--start', str(folder)]) == 2
    assert 'c.png: cannot read it as a picture' in capsys.readouterr().err
    assert not out.exists() and not npz.exists()


# --- DeepDream: tiles ------------------------------------------------------------

def test_tiles_with_margins_give_the_whole_pictures_gradient(net, photo_file):
    photo = read_image(photo_file)
    indices = dream.check_layers(net, ['conv3_2'])
    cut = dream.tiling(net, indices, dream.DreamConfig(tile=64, margin=40), *photo.shape[:2])
    assert (cut.tile, cut.margin, cut.stride) == (64, 40, 4)
    ops = dream.dream_ops(net, indices)
    session = network.session(net)
    whole = session.run(ops.grad_t, {net.input: photo[None]})[0]
    tiled, _ = dream.tiled_gradient(net, ops, photo, cut, (12, 28), session)
    # The tiles' objective is each tile's mean: the same gradient up to one factor. Away from the
    # picture's edges (where tiles see mirrored pixels and the whole picture zero padding) they agree.
    inside = (slice(40, -40), slice(40, -40))
    scale = np.abs(whole[inside]).mean() / np.abs(tiled[inside]).mean()
    assert np.abs(tiled[inside] * scale - whole[inside]).max() < 1e-4 * np.abs(whole[inside]).max()
    # A grid shifted by part of the pools' stride would see other pixels pooled together: not allowed.
    shifted = dream.tiling(net, indices, dream.DreamConfig(tile=62, margin=10), 100, 100)
    assert (shifted.tile, shifted.margin) == (64, 12)


def test_tile_borders_do_not_show_in_the_gradient_averaged_over_the_random_offsets(net, photo_file):
    photo = read_image(photo_file)
    indices = dream.check_layers(net, ['conv3_3'])
    cut = dream.tiling(net, indices, dream.DreamConfig(tile=64), *photo.shape[:2])
    assert (cut.tile, cut.margin) == (64, 16)     # the default margin: a quarter of the tile
    ops = dream.dream_ops(net, indices)
    session = network.session(net)
    rng = np.random.default_rng(0)
    border, inside = [], []
    rows, cols = np.mgrid[0:photo.shape[0], 0:photo.shape[1]]
    for _ in range(40):
        dy, dx = (int(v) * cut.stride for v in rng.integers(0, cut.tile // cut.stride, 2))
        grad, _ = dream.tiled_gradient(net, ops, photo, cut, (dy, dx), session)
        magnitude = np.abs(grad).sum(axis=-1)
        y, x = (rows + dy) % cut.tile, (cols + dx) % cut.tile
        on_border = (y == 0) | (y == cut.tile - 1) | (x == 0) | (x == cut.tile - 1)
        border.append(magnitude[on_border].mean())
        inside.append(magnitude[~on_border].mean())
    assert abs(np.mean(border) / np.mean(inside) - 1) < 0.10


def test_two_tile_sizes_dream_alike_and_the_objective_rises(net, photo_file):
    photo = read_image(photo_file)

    def run(tile, steps):
        return dream.dream(net, photo, ['conv3_2'], dream.DreamConfig(octaves=2, steps=steps, tile=tile))
    small, large = run(128, 4), run(512, 4)
    before_last = run(512, 3)
    assert small.picture.shape == photo.shape and small.tiling.tile == 128 and large.tiling.tile == 512
    step_change = np.abs(large.picture - before_last.picture).mean()
    assert np.abs(small.picture - large.picture).mean() < step_change
    assert (np.diff(large.objectives, axis=1) > 0).all()


def test_a_photo_too_large_for_memory_is_refused_with_the_size_that_fits(net, monkeypatch):
    monkeypatch.setattr(memory, 'available', lambda: (200 << 20, 'MemAvailable on this machine'))
    photo = np.zeros((3000, 4000, 3), np.float32)
    with pytest.raises(ValueError) as raised:
        dream.dream(net, photo, ['conv3_2'], dream.DreamConfig(tile=128))
    message = str(raised.value)
    assert 'a dream on a 4000x3000 photo needs about' in message and 'only 0.2 GB is free' in message
    side = int(message.split('at most ')[1].split()[0])
    assert 1000 < side < 4000
    assert '\n' not in message


def test_dream_on_the_command_line_writes_the_photo_size_with_its_settings(model_file, photo_file, tmp_path, capsys):
    out = tmp_path / 'dream.png'
    argv = ['--model', model_file, '--start', photo_file, '--dream', 'conv3_1,conv3_2', '--iters', '2',
            '--octaves', '2', '--tile', '64', '--out', str(out), '--quiet', '--precision', 'float32']
    assert visualize.main(argv) == 0
    with Image.open(str(out)) as picture:
        assert picture.size == (220, 150) and picture.mode == 'RGB'
        settings = json.loads(picture.text['filtervis-dream'])
    assert settings['layers'] == ['conv3_1', 'conv3_2'] and settings['tile'] == 64 and settings['octaves'] == 2
    assert settings['network'] == vgg16.VGG16(model_file).description
    out.unlink()
    for flags, message in ((['--dream', 'conv3_2', '--start', str(tmp_path)], 'takes one photo'),
                           (['--dream', 'conv3_2'], 'needs a photo to dream on'),
                           (['--dream', 'conv3_2', '--start', photo_file, '--filters', '0-1'], 'leave out --filters'),
                           (['--tile', '64'], '--tile goes with --dream')):
        assert visualize.main(['--model', model_file, '--out', str(out), '--quiet'] + flags) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and message in err, err
    assert not out.exists()


@pytest.mark.slow
def test_dream_on_a_greyscale_keras_network_and_a_real_photo(tmp_path):
    if not os.path.exists(FER) or not os.path.isdir(PHOTOS):
        pytest.skip('needs ../shared/models and ../shared/data')
    model = tmp_path / 'fer.hdf5'
    shutil.copyfile(FER, str(model))
    out = tmp_path / 'dream.png'
    photo = os.path.join(PHOTOS, 'astronaut.png')
    assert visualize.main(['--model', str(model), '--preprocess', 'tf', '--start', photo, '--dream',
                           'conv2d_3', '--iters', '2', '--octaves', '2', '--out', str(out), '--quiet']) == 0
    with Image.open(str(out)) as picture, Image.open(photo) as original:
        assert picture.mode == 'L' and picture.size == original.size
        settings = json.loads(picture.text['filtervis-dream'])
    # A network of one input size (64 px) dreams in tiles of its own size.
    assert settings['tile'] + 2 * settings['margin'] == 64

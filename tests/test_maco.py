"""maco.py, the phase-only method, on small models: the magnitude never changes, a planted pattern appears
and its importance is where the pattern is, every objective rises, the same seed gives the same picture
alone or in a batch, the graph does not grow, a photo start returns the photo; and its command line."""
import os

import numpy as np
import pytest

from filtervis.core import memory
from filtervis.core import network as network_module
from filtervis.optvis import ascent, maco, objectives, spectrum
import visualize
from builders import one_layer_model

SIZE = 48
FAST = maco.Config(crops=2, crop_scale=(0.9, 0.7))


def flat_magnitude(size, channels=3):
    """A 1/f magnitude [C, S, S // 2 + 1], the shape of a natural spectrum, without reading a file."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    frequency = np.maximum(np.sqrt(fx * fx + fy * fy), 1.0 / size)
    return np.repeat((1.0 / frequency)[None], channels, axis=0).astype(np.float32)


def render(model, layer, filters, iters, size=SIZE, config=FAST, **options):
    options.setdefault('spectrum', flat_magnitude(size, model.input_channels))
    return ascent.ascend(model, layer, filters, iters, method='maco', size=size, seed=0, config=config, **options)


# ---------------------------------------------------------------------------
# Config and the parametrization

@pytest.mark.parametrize('field, value', [
    ('learning_rate', 0), ('optimizer', 'sgd'), ('crops', 0), ('crops', 2.5), ('crop_scale', (0, 0.5)),
    ('crop_scale', (0.5, 1.5)), ('crop_scale', 0.5), ('noise', -1), ('contrast', 0), ('pre_relu', 1),
    ('adam_beta1', 1.0), ('adam_epsilon', 0),
])
def test_bad_config_value_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        maco.Config(**{field: value})


def test_config_is_hashable_and_keeps_a_tuple():
    assert maco.Config(crop_scale=[0.8, 0.4]).crop_scale == (0.8, 0.4)
    assert hash(maco.Config()) == hash(maco.Config())


@pytest.mark.parametrize('size', [16, 15])
def test_the_hermitian_phase_keeps_the_magnitude_where_a_raw_phase_does_not(size):
    import tensorflow.compat.v1 as tf
    rng = np.random.default_rng(0)
    magnitude = flat_magnitude(size, 1)[None]                                         # [1, 1, S, W]
    phase = rng.normal(size=magnitude.shape).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default(), tf.Session() as session:
        phase_t = maco._hermitian_phase(tf.constant(phase), size)
        fixed = session.run(phase_t)
    for used, holds in ((phase, False), (fixed, True)):
        picture = np.fft.irfft2(magnitude[0, 0] * np.exp(1j * used[0, 0]), s=(size, size))
        ratio = np.abs(np.fft.rfft2(picture)) / magnitude[0, 0]
        ratio[0, 0] = 1                                                               # DC: free
        assert (np.abs(ratio - 1).max() < 1e-6) == holds


@pytest.mark.parametrize('size', [SIZE, 33])
def test_the_magnitude_never_changes(tiny_model, size):
    # Not a plain 1/f: another weight per column, so that a scale c cannot come from the radius alone.
    magnitude = flat_magnitude(size) * np.linspace(0.5, 1.5, size // 2 + 1)[None, None, :].astype(np.float32)
    config = maco.Config(crops=2, crop_scale=(1.0, 0.8))
    ascent.ascend(tiny_model, 'conv2_1', [0, 1, 2], 12, method='maco', size=size, seed=1, config=config,
                  spectrum=magnitude, batch_size=3)
    form = objectives.bind(tiny_model, objectives.channel('conv2_1', 0), size).form
    ops = maco.maco_ops(tiny_model, form, config, size, 'float32')
    planes = network_module.session(tiny_model).run(ops.picture.planes_t)           # [3, C, S, S]
    assert planes.shape == (3, 3, size, size)
    coefficients = np.fft.rfft2(planes.astype(np.float64))
    ratio = np.abs(coefficients) / magnitude[None]
    ratio[:, :, 0, 0] = np.nan                                                       # DC: the mean, removed
    scale = np.nanmedian(ratio, axis=(2, 3), keepdims=True)                          # c per picture and channel
    relative = np.abs(ratio / scale - 1)
    assert np.nanmax(relative) < 1e-5, np.nanmax(relative)
    # The phases moved: the pictures are not their starts.
    starts = np.stack([maco.start_phase(1, f, size, 3) for f in (0, 1, 2)])
    assert not np.allclose(np.angle(coefficients[:, :, 1:5, 1:5]), starts[:, :, 1:5, 1:5], atol=0.1)


def test_an_uneven_magnitude_is_made_even_on_the_hermitian_columns():
    magnitude = flat_magnitude(16) * np.linspace(0.5, 1.5, 16)[None, :, None]
    magnitude[:, 0, 0] = 0
    even = maco.natural_magnitude(magnitude)
    rows = maco.mirror_rows(16)
    assert not np.allclose(magnitude[:, rows, 0], magnitude[:, :, 0])
    np.testing.assert_allclose(even[:, rows, 0][:, 1:], even[:, 1:, 0])
    np.testing.assert_allclose(even[:, rows, 8][:, 1:], even[:, 1:, 8])
    np.testing.assert_allclose(even[:, :, 3], magnitude[:, :, 3])
    # The constant term: the root of the energy elsewhere (a picture's mean may move by one std).
    full = np.fft.irfft2(even[0] * np.exp(1j * 0), s=(16, 16))
    assert even[0, 0, 0] == pytest.approx(np.sqrt(((np.abs(np.fft.fft2(full)) ** 2).sum() - even[0, 0, 0] ** 2)),
                                          rel=1e-5)


def test_photo_spectrum_is_the_photo_at_step_zero(tiny_model):
    rng = np.random.default_rng(3)
    photo = np.clip(rng.normal(128, 60, (SIZE, SIZE, 3)), 0, 255).astype(np.float32)
    photo[:8] = 0
    photo[-8:] = 255
    result = render(tiny_model, 'conv1_2', [0, 1], 0, init=photo)
    assert np.abs(result.images - photo[None]).max() < 1.0
    assert np.abs(result.images - photo[None]).mean() < 0.1


# ---------------------------------------------------------------------------
# What the pictures show

def test_a_red_detector_draws_red():
    # The magnitude fixes how much of each frequency there is, not where or in which colour: the phases must
    # bring red patches out of the noise. The detector counts clearly red pixels only (post-ReLU, biased).
    kernel = np.zeros((1, 1, 3, 1), np.float32)
    kernel[0, 0, :, 0] = [1.0, -0.5, -0.5]
    model = one_layer_model(kernel, -0.1, 'unit')
    config = maco.Config(crops=2, crop_scale=(0.9, 0.7), pre_relu=False, contrast=1.0)
    start = render(model, 0, [0], 1, config=maco.Config(crops=2, crop_scale=(0.9, 0.7), pre_relu=False, contrast=1.0,
                                                        learning_rate=1e-9)).images[0]
    result = render(model, 0, [0], 32, config=config)
    redness = np.array([1.0, -0.5, -0.5])
    red_start, red_end = ((start @ redness) > 40).mean(), ((result.images[0] @ redness) > 40).mean()
    assert red_end > 4 * red_start and red_end > 0.08, (red_start, red_end)
    assert result.objectives[-1, 0] > 3 * result.objectives[0, 0]


def test_importance_is_largest_where_the_planted_pattern_is():
    # A red detector (post-ReLU, biased so only clearly red pixels count) on a grey photo with a red square:
    # the gradient reaches only the square, so the importance map must sit there.
    kernel = np.zeros((1, 1, 3, 1), np.float32)
    kernel[0, 0, :, 0] = [1.0, -0.5, -0.5]
    model = one_layer_model(kernel, -0.3, 'unit')
    rng = np.random.default_rng(0)
    photo = np.clip(rng.normal(128, 10, (SIZE, SIZE, 3)), 0, 255).astype(np.float32)
    top, left = 9, 27
    photo[top:top + 12, left:left + 12] = [180, 90, 90]
    result = render(model, 0, [0], 24, init=photo, config=maco.Config(crops=2, crop_scale=(1.0, 1.0), noise=0,
                                                                      pre_relu=False))
    importance = result.importance[0]
    assert importance.shape == (SIZE, SIZE) and importance.max() == pytest.approx(1.0)
    inside = np.zeros((SIZE, SIZE), bool)
    inside[top:top + 12, left:left + 12] = True
    assert importance[inside].mean() > 10 * importance[~inside].mean()
    peak = np.unravel_index(np.argmax(importance), importance.shape)
    assert inside[peak]
    # Feature accentuation: the objective rises while the picture stays the photo, within a few grey levels.
    assert result.objectives[-1, 0] > result.objectives[0, 0]
    assert np.abs(result.images[0] - photo).mean() < 8


@pytest.mark.parametrize('objective', ['channel', 'neuron', 'negative'])
def test_the_objective_rises(tiny_model, objective):
    result = render(tiny_model, 'conv3_1', [0, 3], 24, objective=objective)
    assert (result.objectives[-4:].mean(axis=0) > result.objectives[:2].mean(axis=0)).all()


def test_expressions_directions_and_diversity_rise(tiny_model):
    expression = objectives.parse('conv3_1:0 - 0.5 * conv2_2:1')
    direction = objectives.direction('conv3_1', np.arange(1, 9, dtype=np.float64))
    result = ascent.render_objectives(tiny_model, [expression], 24, method='maco', size=SIZE, seed=0,
                                      config=FAST, spectrum=flat_magnitude(SIZE))
    assert result.objectives[-4:].mean() > result.objectives[:2].mean()
    result = ascent.render_objectives(tiny_model, [direction], 24, method='maco', size=SIZE, seed=0,
                                      config=FAST, spectrum=flat_magnitude(SIZE))
    assert result.objectives[-4:].mean() > result.objectives[:2].mean()
    pushed = render(tiny_model, 'conv3_1', [2], 16, diversity=2)
    alone = render(tiny_model, 'conv3_1', [2], 16, diversity=2, diversity_weight=0)
    assert pushed.images.shape == (2, SIZE, SIZE, 3)
    assert not np.allclose(pushed.images, alone.images)


def test_a_greyscale_network(tmp_path):
    import keras_nets
    from filtervis.models import keras_model
    net = keras_model.load(save_keras('grey', str(tmp_path / 'grey.keras')), keras_nets.PREPROCESS['grey'],
                           quiet=True)
    assert net.input_channels == 1 and net.input_size == 16
    result = ascent.ascend(net, 'grey_relu', [0, 1], 16, method='maco', size=32, seed=0, config=FAST,
                           spectrum=flat_magnitude(32, 1))
    assert result.images.shape == (2, 32, 32, 1) and result.importance.shape == (2, 32, 32)
    assert (result.objectives[-3:].mean(axis=0) > result.objectives[:2].mean(axis=0)).all()


def test_bfloat16_rises(tiny_model):
    result = render(tiny_model, 'conv3_1', [0, 3], 16, precision='bfloat16')
    assert result.precision == 'bfloat16'
    assert (result.objectives[-3:].mean(axis=0) > result.objectives[:2].mean(axis=0)).all()


# ---------------------------------------------------------------------------
# Determinism, batches and the graph

def test_same_seed_same_picture_alone_or_in_a_batch(tiny_model):
    batch = render(tiny_model, 'conv3_2', [0, 1, 2], 6, batch_size=3).images
    alone = render(tiny_model, 'conv3_2', [1], 6, batch_size=1).images
    np.testing.assert_allclose(batch[1], alone[0], atol=1e-2)
    other = ascent.ascend(tiny_model, 'conv3_2', [1], 6, method='maco', size=SIZE, seed=5, config=FAST,
                          spectrum=flat_magnitude(SIZE)).images
    assert np.abs(other[0] - alone[0]).mean() > 1


def test_the_graph_does_not_grow(tiny_model):
    render(tiny_model, 'conv2_2', [0], 2)
    count = len(tiny_model.graph.get_operations())
    for i in range(5):
        render(tiny_model, 'conv2_2', [i % 4, (i + 1) % 4], 2)
    assert len(tiny_model.graph.get_operations()) == count


def test_a_picture_larger_than_a_fixed_networks_input(tmp_path):
    net = keras_file_network(tmp_path)
    assert net.input_size == 24
    result = ascent.ascend(net, 'head', [0, 2], 8, method='maco', size=60, seed=0, config=FAST,
                           spectrum=flat_magnitude(60))
    assert result.images.shape == (2, 60, 60, 3) and result.importance.shape == (2, 60, 60)
    assert (result.objectives[-1] > result.objectives[0]).all()
    with pytest.raises(ValueError, match='24x24 images only'):
        ascent.ascend(net, 'head', [0], 2, method='regularized', size=60)
    for unit in ('head', 'swish'):
        with pytest.raises(ValueError, match='at least 24'):
            ascent.ascend(net, unit, [0], 2, method='maco', size=20)


def save_keras(name, path):
    import keras_nets
    with keras_nets.eager():
        return keras_nets.save(keras_nets.build(name), path)


def keras_file_network(tmp_path):
    from filtervis.models import keras_model
    return keras_model.load(save_keras('basic', str(tmp_path / 'basic.keras')), 'tf', quiet=True)


def test_memory_check_names_the_crops_that_fit(tiny_model, monkeypatch):
    monkeypatch.setattr(memory, 'available', lambda: (400 << 20, 'MemAvailable on this machine'))
    with pytest.raises(ValueError, match=r'4 picture\(s\) of 224x224, 64 crop\(s\) of 224x224 each'):
        ascent.ascend(tiny_model, 'conv5_3', [0, 1, 2, 3], 1, method='maco', size=224, seed=0,
                      config=maco.Config(crops=64), spectrum=flat_magnitude(224), batch_size=4)


# ---------------------------------------------------------------------------
# The command line

@pytest.fixture(scope='module')
def keras_path(tmp_path_factory):
    return save_keras('basic', str(tmp_path_factory.mktemp('maco') / 'basic.keras'))


def write_images(folder, count=2, side=40, seed=0):
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(os.path.join(folder, '%d.png' % i))


def test_command_line_npz_importance_and_transparency(keras_path, tmp_path):
    out, arrays = tmp_path / 'grid.png', tmp_path / 'grid.npz'
    assert visualize.main(['--model', keras_path, '--preprocess', 'tf', '--layer', 'head', '--filters', '0,2',
                           '--method', 'maco', '--size', '48', '--iters', '6', '--crops', '2', '--crop-scale',
                           '0.9,0.6', '--transparency', '--seed', '0', '--out', str(out), '--npz', str(arrays),
                           '--quiet']) == 0
    saved = np.load(arrays)
    assert saved['images'].shape == (2, 48, 48, 3)
    assert saved['images'].min() >= 0 and saved['images'].max() <= 255
    assert saved['importance'].shape == (2, 48, 48) and saved['importance'].dtype == np.float32
    assert saved['importance'].min() >= 0 and saved['importance'].max() == pytest.approx(1.0)
    assert str(saved['method']) == 'maco'
    # The head is the network's output: the verdict is there, on the pictures resized to 24 px.
    assert saved['top1'].shape == (2,) and saved['jitter_kept'].shape == (2,)


@pytest.mark.parametrize('kind, method', [('keras', 'regularized'), ('onnx', 'maco')])
def test_command_line_default_method_follows_the_table(keras_path, tmp_path, kind, method):
    import onnx
    import onnx_nets
    path, layer = keras_path, 'last'
    if kind == 'onnx':
        path, layer = str(tmp_path / 'tiny.onnx'), 'features.10'
        onnx.save(onnx_nets.tiny_cnn(), path)
    arrays = tmp_path / 'x.npz'
    assert visualize.main(['--model', path, '--preprocess', 'tf', '--layer', layer, '--filters', '0',
                           '--iters', '2', '--out', str(tmp_path / 'x.png'), '--npz', str(arrays), '--quiet']) == 0
    saved = np.load(arrays)
    assert str(saved['method']) == method and ('importance' in saved) == (method == 'maco')
    # The maco flags go with maco only: on a unit whose default is another method they say so.
    if method != 'maco':
        assert visualize.main(['--model', path, '--preprocess', 'tf', '--layer', layer, '--filters', '0',
                               '--iters', '2', '--crops', '2', '--out', str(tmp_path / 'y.png'), '--quiet']) == 2


def test_command_line_start_photo_iters_0_returns_the_photo(keras_path, tmp_path):
    from filtervis.util.images import load_image
    write_images(str(tmp_path / 'photo'), 1, 64)
    photo = str(tmp_path / 'photo' / '0.png')
    arrays = tmp_path / 'p.npz'
    assert visualize.main(['--model', keras_path, '--preprocess', 'tf', '--layer', 'last', '--filters', '3',
                           '--method', 'maco', '--start', photo, '--iters', '0', '--size', '48',
                           '--out', str(tmp_path / 'p.png'), '--npz', str(arrays), '--quiet']) == 0
    assert np.abs(np.load(arrays)['images'][0] - load_image(photo, 48)).max() <= 1.0


def test_command_line_spectrum_of_a_folder(keras_path, tmp_path, monkeypatch):
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    write_images(str(tmp_path / 'mine'), 2, 40)
    assert visualize.main(['--model', keras_path, '--preprocess', 'tf', '--layer', 'last', '--filters', '0',
                           '--method', 'maco', '--spectrum', str(tmp_path / 'mine'), '--iters', '2', '--crops', '1',
                           '--out', str(tmp_path / 's.png'), '--quiet']) == 0
    assert (tmp_path / 's.png').exists()


@pytest.mark.parametrize('flags, message', [
    (['--method', 'maco', '--spectrum', 'EMPTY'], 'no PNG or JPEG'),
    (['--method', 'blog', '--transparency'], 'importance map'),
    (['--method', 'regularized', '--crops', '4'], 'go(es) with --method maco'),
    (['--method', 'maco', '--size', '20'], 'at least 24'),
    (['--method', 'maco', '--size', '20', '--layer', 'swish'], 'at least 24'),
    (['--method', 'maco', '--spectrum', 'IMAGES', '--start', 'PHOTO'], 'own spectrum'),
    (['--method', 'maco', '--transparency', '--examples', 'IMAGES'], '--examples'),
    (['--dream', 'swish', '--start', 'PHOTO', '--crops', '2'], '--crops'),
    (['--method', 'maco', '--crops', '0'], '--crops 0'),
    (['--method', 'maco', '--crop-scale', '0.5,1.5'], 'in (0, 1]'),
    (['--method', 'maco', '--crop-scale', '0'], 'START,END'),
])
def test_command_line_bad_input_is_one_line_and_writes_nothing(keras_path, tmp_path, capsys, flags, message):
    (tmp_path / 'EMPTY').mkdir()
    write_images(str(tmp_path / 'IMAGES'), 2, 40)
    paths = {'EMPTY': tmp_path / 'EMPTY', 'IMAGES': tmp_path / 'IMAGES', 'PHOTO': tmp_path / 'IMAGES' / '0.png'}
    flags = [str(paths[f]) if f in paths else f for f in flags]
    out = tmp_path / 'out'
    out.mkdir()
    code = visualize.main(['--model', keras_path, '--preprocess', 'tf', '--layer', 'head', '--filters', '0',
                           '--iters', '2', '--out', str(out / 'x.png'), '--npz', str(out / 'x.npz'), '--quiet']
                          + flags)
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert list(out.iterdir()) == []


def test_shipped_spectrum_is_used_by_default(tiny_model):
    assert spectrum.for_picture(SIZE, 3).shape == (3, SIZE, SIZE // 2 + 1)
    default = ascent.ascend(tiny_model, 'conv2_1', [0], 2, method='maco', size=SIZE, seed=0, config=FAST).images
    shipped = ascent.ascend(tiny_model, 'conv2_1', [0], 2, method='maco', size=SIZE, seed=0, config=FAST,
                            spectrum=spectrum.for_picture(SIZE, 3)).images
    other = ascent.ascend(tiny_model, 'conv2_1', [0], 2, method='maco', size=SIZE, seed=0, config=FAST,
                          spectrum=flat_magnitude(SIZE)).images
    np.testing.assert_array_equal(default, shipped)
    assert np.abs(default - other).mean() > 1

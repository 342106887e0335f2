"""The natural magnitude spectrum (filtervis/optvis/spectrum.py) and its command line, on known answers:
tiny images made here, synthetic power-law spectra, the shipped arrays. The slow test recomputes the shipped
spectra from ../shared/data/natural-photos.

    python -m pytest tests/test_spectrum.py
    python -m pytest tests/test_spectrum.py --runslow
"""
import os

import numpy as np
import pytest
from PIL import Image

from builders import ROOT
from filtervis.cli import spectrum as spectrum_cli
from filtervis.optvis import regularized, spectrum
from filtervis.util.images import load_image

NATURAL_PHOTOS = os.path.join(ROOT, '..', 'shared', 'data', 'natural-photos')


def power_law(side, exponent, channels=1):
    """float64 [channels, side, side//2+1]: the magnitude |f| ** -exponent (power slope -2 * exponent), DC 0."""
    fy = np.fft.fftfreq(side)[:, None]
    fx = np.fft.rfftfreq(side)[None, :]
    frequency = np.sqrt(fx * fx + fy * fy)
    frequency[0, 0] = 1.0
    magnitude = frequency ** -float(exponent)
    magnitude[0, 0] = 0.0
    return np.repeat(magnitude[None], channels, axis=0)


def save_image(path, seed, size=(40, 30), mode='RGB'):
    """A random picture of `size` (width, height) saved at path (PNG or JPEG by its name); returns path."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == 'RGB' else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return str(path)


@pytest.fixture
def photos(tmp_path):
    """A folder of two colour images, a PNG and a JPEG in a subfolder."""
    folder = tmp_path / 'photos'
    (folder / 'sub').mkdir(parents=True)
    save_image(folder / 'a.png', 0)
    save_image(folder / 'sub' / 'b.jpg', 1, size=(30, 44))
    return folder


def test_compute_is_the_mean_of_the_images_magnitudes(photos):
    paths = [str(photos / 'a.png'), str(photos / 'sub' / 'b.jpg')]
    expected = []
    for path in paths:
        planes = np.transpose(spectrum.decorrelate(load_image(path, 32, 3)), (2, 0, 1))
        planes = planes - planes.mean(axis=(1, 2), keepdims=True)
        expected.append(np.abs(np.fft.rfft2(planes)))
    result = spectrum.compute(paths, 3, side=32)
    assert result.dtype == np.float32 and result.shape == (3, 32, 17)
    np.testing.assert_allclose(result, np.mean(expected, axis=0), rtol=1e-6, atol=1e-6 * np.max(expected))
    np.testing.assert_allclose(spectrum.magnitude(load_image(paths[0], 32, 3)), expected[0], rtol=1e-12)


def test_decorrelate_inverts_the_colour_mix_and_leaves_grey_alone():
    pixels = np.random.default_rng(0).uniform(0, 255, (5, 7, 3))
    mix = regularized.color_mix().astype(np.float64)
    np.testing.assert_allclose(spectrum.decorrelate(pixels) @ mix.T * 255, pixels, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(spectrum.decorrelate(pixels[..., :1]), pixels[..., :1] / 255)
    with pytest.raises(ValueError, match=r'3 \(RGB\) or 1'):
        spectrum.decorrelate(pixels[..., :2])


def test_magnitude_refuses_a_picture_that_is_not_square():
    with pytest.raises(ValueError, match=r'square.*\(8, 6, 3\)'):
        spectrum.magnitude(np.zeros((8, 6, 3)))


def test_radial_slope_of_a_power_law_is_its_power_exponent():
    for exponent in (0.5, 1.0, 1.5, 2.0):
        assert spectrum.radial_slope(power_law(64, exponent, 3)) == pytest.approx(-2 * exponent, abs=0.05)
        assert spectrum.radial_slope(power_law(256, exponent)[0]) == pytest.approx(-2 * exponent, abs=0.05)
    # White noise: a flat power spectrum, up to the scatter of one picture's few coefficients in the low rings.
    noise = np.random.default_rng(0).normal(0, 1, (256, 256, 1))
    assert spectrum.picture_slope(noise * 40 + 128) == pytest.approx(0, abs=0.15)


def test_radial_slope_refuses_a_spectrum_too_small_or_flat():
    with pytest.raises(ValueError, match='at least 24 pixels'):
        spectrum.radial_slope(power_law(16, 1))
    with pytest.raises(ValueError, match='flat picture'):
        spectrum.picture_slope(np.full((32, 32, 3), 100.0))
    with pytest.raises(ValueError, match=r'\[C, S, S//2\+1\]'):
        spectrum.radial_slope(np.ones((1, 32, 32)))


def test_resize_to_its_own_side_is_the_spectrum():
    spec = np.random.default_rng(0).uniform(0.1, 5, (3, 32, 17)).astype(np.float32)
    resized = spectrum.resize(spec, 32)
    assert resized.dtype == np.float32
    np.testing.assert_array_equal(resized, spec)


def test_resize_keeps_a_power_law_and_a_constant():
    for exponent in (1.0, 1.5):
        resized = spectrum.resize(power_law(64, exponent), 128)
        assert resized.shape == (1, 128, 65) and resized.dtype == np.float32
        assert spectrum.radial_slope(resized) == pytest.approx(spectrum.radial_slope(power_law(64, exponent)),
                                                               abs=0.05)
        # Away from the grid's edge, interpolating the log of a power law is nearly exact.
        np.testing.assert_allclose(resized[0, 2:30, 2:30], power_law(128, exponent)[0, 2:30, 2:30], rtol=0.05)
    for side in (40, 101, 128):
        np.testing.assert_allclose(spectrum.resize(np.full((3, 64, 33), 2.5), side), 2.5, rtol=1e-6)
        np.testing.assert_allclose(spectrum.resize(np.full((1, 63, 32), 2.5), side), 2.5, rtol=1e-6)


def test_resize_ignores_the_dc_term_for_the_low_frequencies():
    spec = power_law(64, 1.0)
    resized = spectrum.resize(spec, 256)
    # The frequency 1/256 sits between DC and 1/64; a DC of 0 taken at face value would pull it towards 0.
    assert resized[0, 1, 0] >= spec[0, 1, 0] and resized[0, 0, 1] >= spec[0, 0, 1]
    assert resized[0, 0, 0] == 0.0
    with pytest.raises(ValueError, match='rfft2 magnitude'):
        spectrum.resize(np.ones((3, 32, 32)), 64)
    with pytest.raises(ValueError, match='side must be'):
        spectrum.resize(spec, 2)


def test_compute_refuses_an_empty_list_an_unreadable_image_and_bad_channels(tmp_path):
    with pytest.raises(ValueError, match='no images'):
        spectrum.compute([], 3)
    broken = tmp_path / 'broken.png'
    broken.write_bytes(b'not a png')
    with pytest.raises(ValueError, match='cannot read image .*broken.png'):
        spectrum.compute([str(broken)], 3, side=16)
    with pytest.raises(ValueError, match='channels must be 3'):
        spectrum.compute([str(broken)], 2)


def test_for_folder_reads_its_cache_and_recomputes_when_an_image_changes(photos, tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    first = spectrum.for_folder(str(photos), 3, cache_dir=str(cache))
    assert first.shape == (3, spectrum.SIDE, spectrum.SIDE // 2 + 1) and first.dtype == np.float32
    cached = list(cache.iterdir())
    assert len(cached) == 1 and cached[0].name.startswith('spectrum-') and cached[0].suffix == '.npy'
    np.testing.assert_array_equal(np.load(cached[0]), first)

    calls = []
    real_compute = spectrum.compute

    def counted_compute(*args, **kwargs):
        calls.append(args)
        return real_compute(*args, **kwargs)

    monkeypatch.setattr(spectrum, 'compute', counted_compute)
    np.testing.assert_array_equal(spectrum.for_folder(str(photos), 3, cache_dir=str(cache)), first)
    assert calls == []

    save_image(photos / 'a.png', 7)
    changed = spectrum.for_folder(str(photos), 3, cache_dir=str(cache))
    assert len(calls) == 1 and len(list(cache.iterdir())) == 2
    assert not np.allclose(changed, first)
    # Another image, or the same images as grey: other keys.
    save_image(photos / 'c.png', 8)
    spectrum.for_folder(str(photos), 3, cache_dir=str(cache))
    spectrum.for_folder(str(photos), 1, cache_dir=str(cache))
    assert len(calls) == 3 and len(list(cache.iterdir())) == 4


def test_for_folder_caches_beside_the_folder_by_default(photos):
    spectrum.for_folder(str(photos), 1)
    assert [name[:9] for name in os.listdir(photos.parent / 'spectra')] == ['spectrum-']


def test_for_folder_converts_grey_to_rgb_and_colour_to_grey(tmp_path):
    grey = tmp_path / 'grey'
    grey.mkdir()
    save_image(grey / 'g.png', 0, mode='L')
    colour = tmp_path / 'colour'
    colour.mkdir()
    save_image(colour / 'c.png', 1)
    cache = str(tmp_path / 'cache')
    for folder, name, channels in ((grey, 'g.png', 3), (colour, 'c.png', 1)):
        result = spectrum.for_folder(str(folder), channels, cache_dir=cache)
        expected = spectrum.magnitude(load_image(str(folder / name), spectrum.SIDE, channels))
        assert result.shape == (channels, spectrum.SIDE, spectrum.SIDE // 2 + 1)
        np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5 * expected.max())


def test_for_folder_refuses_an_empty_folder_and_a_corrupt_image(tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(ValueError, match='no PNG or JPEG files under .*empty'):
        spectrum.for_folder(str(empty), 3, cache_dir=str(tmp_path / 'cache'))
    corrupt = tmp_path / 'corrupt'
    corrupt.mkdir()
    (corrupt / 'only.jpg').write_bytes(b'\xff\xd8 truncated')
    with pytest.raises(ValueError, match='cannot read image .*corrupt/only.jpg'):
        spectrum.for_folder(str(corrupt), 3, cache_dir=str(tmp_path / 'cache'))
    assert not os.listdir(tmp_path / 'cache')


def test_the_shipped_spectra_have_the_documented_shape_and_are_positive():
    for channels in (3, 1):
        spec = spectrum.shipped(channels)
        assert spec.shape == (channels, spectrum.SIDE, spectrum.SIDE // 2 + 1) and spec.dtype == np.float32
        assert np.all(np.isfinite(spec))
        # DC is the mean, removed before the transform: about 0, every other coefficient positive.
        assert np.all(spec.reshape(channels, -1)[:, 1:] > 0)
        assert -3.2 < spectrum.radial_slope(spec) < -2.2
    with pytest.raises(ValueError, match='channels must be 3'):
        spectrum.shipped(2)


def test_for_picture_resizes_the_shipped_or_a_folders_spectrum(photos, tmp_path):
    picture = spectrum.for_picture(224, 3)
    assert picture.shape == (3, 224, 113) and picture.dtype == np.float32
    np.testing.assert_allclose(picture, spectrum.resize(spectrum.shipped(3), 224))
    own = spectrum.for_picture(64, 1, folder=str(photos), cache_dir=str(tmp_path / 'cache'))
    assert own.shape == (1, 64, 33)


def test_the_command_line_writes_the_spectrum(photos, tmp_path, capsys):
    out = tmp_path / 'spec.npy'
    assert spectrum_cli.main([str(photos), '--channels', '1', '--side', '32', '--out', str(out), '--quiet']) == 0
    written = np.load(out)
    np.testing.assert_array_equal(written, spectrum.compute([str(photos / 'a.png'), str(photos / 'sub' / 'b.jpg')],
                                                            1, side=32))
    printed = capsys.readouterr().out.strip().split('\n')
    assert len(printed) == 1 and str(out) in printed[0]
    assert '2 images' in printed[0] and 'radial power slope' in printed[0]


def test_the_command_line_refuses_a_bad_folder_in_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / 'spec.npy'
    for folder in (tmp_path / 'missing', tmp_path):
        assert spectrum_cli.main([str(folder), '--out', str(out), '--quiet']) == 2
        lines = capsys.readouterr().err.strip().split('\n')
        assert len(lines) == 1 and lines[0].startswith('error: ') and str(folder) in lines[0]
        assert not out.exists()


def test_the_command_line_checks_the_output_folder_before_the_work(photos, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(spectrum, 'compute', lambda *args, **kwargs: pytest.fail('computed before checking --out'))
    out = tmp_path / 'no-such-folder' / 'spec.npy'
    assert spectrum_cli.main([str(photos), '--out', str(out)]) == 2
    lines = capsys.readouterr().err.strip().split('\n')
    assert len(lines) == 1 and lines[0].startswith('error: ') and 'does not exist' in lines[0]


@pytest.mark.slow
def test_the_shipped_spectra_are_those_of_the_natural_photos():
    if not os.path.isdir(NATURAL_PHOTOS):
        pytest.skip('the photos %s are absent' % NATURAL_PHOTOS)
    from filtervis.util.images import list_images
    paths = [os.path.join(NATURAL_PHOTOS, name) for name in list_images(NATURAL_PHOTOS)]
    for channels in (3, 1):
        np.testing.assert_allclose(spectrum.compute(paths, channels), spectrum.shipped(channels), rtol=1e-5)

"""
The magnitude spectrum of natural photos, for pictures whose Fourier
magnitude is fixed and only the phase is optimized (MaCo: Fel et al.,
"Unlocking Feature Visualization for Deeper Networks with MAgnitude
Constrained Optimization", NeurIPS 2023; optvis/maco.py). A picture there is
irfft2(magnitude * exp(i * phase)) per channel of the decorrelated colour
space of regularized.py; this module says where that magnitude comes from:
the mean |rfft2| of the photos' decorrelated, mean-removed channels, shipped
for RGB and greyscale at SIDE pixels, or computed (and cached) from a folder
of the user's own images, then resized to the picture's side.

    python -m filtervis.cli.spectrum ../shared/data/natural-photos --channels 3 \\
        --out filtervis/optvis/spectra/natural-rgb.npy
    python -m filtervis.cli.spectrum ../shared/data/natural-photos --channels 1 \\
        --out filtervis/optvis/spectra/natural-grey.npy

These two commands made the shipped files (docs/spectrum.md: the slopes).

    from filtervis.optvis import spectrum
    magnitude = spectrum.for_picture(224, 3)                   # float32 [3, 224, 113], the shipped RGB spectrum
    magnitude = spectrum.for_picture(224, 1, folder='mri')     # from a folder, cached beside it
    spectrum.radial_slope(spectrum.shipped(3))                 # -2.716: power ~ frequency ** slope
    spectrum.picture_slope(image)                              # the same measure of one picture [S, S, C] 0..255
"""

import hashlib
import os

import numpy as np

from filtervis.models import build
from filtervis.optvis import regularized
from filtervis.util import files
from filtervis.util.images import list_images, load_image

# The side, in pixels, at which spectra are computed and shipped.
SIDE = 256
SHIPPED_FILES = {3: 'natural-rgb.npy', 1: 'natural-grey.npy'}
SHIPPED_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'spectra')
# The band of radial frequencies (cycles per pixel) over which radial_slope fits a line: below 4 cycles per
# picture a ring holds fewer than about 25 coefficients, too few for a steady mean; above 0.25 cycles per pixel
# JPEG compression, demosaicing and the loader's bicubic resampling bend the spectrum of photos.
SLOPE_LOW_CYCLES = 4
SLOPE_HIGH_FREQUENCY = 0.25
# Changing what magnitude() or compute() return must change the cache key, so old cached spectra are not read.
CACHE_VERSION = 'filtervis.optvis.spectrum 1'


def _check_channels(channels):
    if channels not in (1, 3):
        raise ValueError('channels must be 3 (RGB) or 1 (greyscale), got %r' % (channels,))


def _check_side(side):
    if isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < 4:
        raise ValueError('side must be a whole number of pixels >= 4, got %r' % (side,))


def _check_spectrum(spec, name='spec'):
    """spec as a float64 array [C, S, S//2+1], or a ValueError naming the shape it has."""
    spec = np.asarray(spec, np.float64)
    if spec.ndim != 3 or spec.shape[1] < 2 or spec.shape[2] != spec.shape[1] // 2 + 1:
        raise ValueError('%s must be an rfft2 magnitude [C, S, S//2+1] of a square picture, got shape %s'
                         % (name, spec.shape))
    return spec


def decorrelate(pixels):
    """The decorrelated colour components of pixels: float64 [..., 3] RGB 0..255 -> float64 [..., 3].

    The inverse of how regularized.py (and maco.py) make a picture,
    rgb / 255 = decorrelated @ color_mix().T; the components are roughly
    -2..2 for pixels 0..255, with a mean that magnitude() removes.
    Greyscale [..., 1] has no colours to mix and is returned as pixels / 255.
    """
    pixels = np.asarray(pixels, np.float64)
    if pixels.ndim == 0 or pixels.shape[-1] not in (1, 3):
        raise ValueError('pixels must end in 3 (RGB) or 1 (greyscale) channels, got shape %s; '
                         'give [..., 3] or [..., 1]' % (pixels.shape,))
    if pixels.shape[-1] == 1:
        return pixels / 255.0
    unmix = np.linalg.inv(regularized.color_mix().astype(np.float64))
    return (pixels / 255.0) @ unmix.T


def magnitude(image):
    """float64 [C, S, S//2+1]: |rfft2| of each decorrelated, mean-removed channel of image float [S, S, C], 0..255.

    C is 3 (RGB, decorrelated first) or 1 (greyscale). The mean is removed
    so that the DC term (the picture's mean colour) is about 0 and says
    nothing about structure. No window: the FFT sees the picture as
    periodic, as the irfft2 of a MaCo picture is.
    """
    image = np.asarray(image, np.float64)
    if image.ndim != 3 or image.shape[0] != image.shape[1] or image.shape[2] not in (1, 3):
        raise ValueError('image must be a square picture [S, S, C] with C = 3 or 1, got shape %s; '
                         'crop it square (util.images.load_image)' % (image.shape,))
    planes = np.transpose(decorrelate(image), (2, 0, 1))                              # [C, S, S]
    planes = planes - planes.mean(axis=(1, 2), keepdims=True)
    return np.abs(np.fft.rfft2(planes))


def compute(paths, channels, side=SIDE, progress=False):
    """float32 [C, side, side//2+1]: the mean magnitude() of the images at paths (file names, any order).

    Each image is read with util.images.load_image(path, side, channels):
    its short side scaled to `side`, centre-cropped; colour becomes grey
    for channels 1 and grey becomes RGB for channels 3, as the loader does.
    progress: a tqdm bar on stderr. ValueError for an empty list or for a
    file that cannot be read (naming it: an unreadable image is refused,
    not skipped, so the spectrum is always of the images asked for).
    """
    from PIL import Image
    from tqdm import tqdm
    _check_channels(channels)
    _check_side(side)
    paths = list(paths)
    if not paths:
        raise ValueError('no images to compute a spectrum from; give at least one PNG or JPEG file')
    total = np.zeros((channels, side, side // 2 + 1), np.float64)
    for path in tqdm(paths, desc='spectrum', unit='image', disable=not progress):
        try:
            image = load_image(path, side, channels)
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
            raise ValueError('cannot read image %s (%s: %s); replace or remove it'
                             % (path, type(error).__name__, error)) from None
        total += magnitude(image)
    return (total / len(paths)).astype(np.float32)


def _interpolate_axis(values, source, target, axis):
    """values linearly interpolated along `axis` from frequencies `source` (ascending) to `target`; a target
    outside the source's range takes the edge value (np.interp along one axis of an array)."""
    right = np.clip(np.searchsorted(source, target, side='right'), 1, len(source) - 1)
    left = right - 1
    weight = np.clip((target - source[left]) / (source[right] - source[left]), 0.0, 1.0)
    shape = [1] * values.ndim
    shape[axis] = len(target)
    weight = weight.reshape(shape)
    return np.take(values, left, axis=axis) * (1 - weight) + np.take(values, right, axis=axis) * weight


def _shifted_row_frequencies(side):
    """Row frequencies of an rfft2 [side, side//2+1] after fftshift, ascending, in cycles per pixel."""
    return np.fft.fftshift(np.fft.fftfreq(side))


def resize(spec, side):
    """float32 [C, side, side//2+1]: spec float [C, s, s//2+1] (rfft2 magnitudes) at another side.

    The magnitude is a function of the frequency (fy, fx) in cycles per
    pixel; its logarithm is interpolated bilinearly from the source's
    frequency grid to the target's, so a power law (1/f) stays a power law.
    Rows are fftshifted for this and shifted back. The DC term (the mean,
    about 0 after mean removal) would drag the lowest frequencies towards 0,
    so for interpolating it is replaced by the mean of its 4 nearest non-DC
    neighbours, and the result's DC is the source's DC. Target frequencies
    beyond the source's range take the edge value. The magnitudes are not
    rescaled for the new pixel count (an rfft2 magnitude of a given contrast
    grows about like side): multiply by side / s where that matters.
    resize(spec, s) is spec (as float32).
    """
    spec = _check_spectrum(spec)
    _check_side(side)
    source_side = spec.shape[1]
    if side == source_side:
        return spec.astype(np.float32)
    values = spec.copy()
    source_dc = values[:, 0, 0].copy()
    # Of the 4 neighbours (+-1, 0) and (0, +-1) of DC, (0, -1) is the conjugate of (0, 1): the same magnitude.
    values[:, 0, 0] = (values[:, 1, 0] + values[:, -1, 0] + 2 * values[:, 0, 1]) / 4
    # A floor keeps log() finite where a magnitude is 0, far below anything a photo's spectrum holds.
    floor = np.maximum(values.max(axis=(1, 2), keepdims=True) * 1e-12, np.finfo(np.float64).tiny)
    logs = np.log(np.maximum(values, floor))
    logs = np.fft.fftshift(logs, axes=1)
    rows = _shifted_row_frequencies(source_side)
    if source_side % 2 == 0:
        # The first shifted row, -0.5 cycles per pixel, is also +0.5: repeat it there so both ends are known.
        logs = np.concatenate([logs, logs[:, :1]], axis=1)
        rows = np.append(rows, 0.5)
    logs = _interpolate_axis(logs, np.fft.rfftfreq(source_side), np.fft.rfftfreq(side), axis=2)
    logs = _interpolate_axis(logs, rows, _shifted_row_frequencies(side), axis=1)
    result = np.exp(np.fft.ifftshift(logs, axes=1))
    result[:, 0, 0] = source_dc
    return result.astype(np.float32)


def radial_slope(spec):
    """The radial power-spectrum slope of spec float [C, S, S//2+1] (or [S, S//2+1]), rfft2 magnitudes.

    Power is magnitude**2, averaged over the channels. The full 2-D spectrum's
    coefficients (an rfft2 column 0 < fx < 0.5 stands for itself and its
    conjugate, so it counts twice) are grouped in rings of width 1 / S by
    radial frequency f = sqrt(fx**2 + fy**2) in cycles per pixel: ring k
    holds the coefficients with round(f * S) = k, at frequency k / S. The
    slope is the least-squares line through (log f, log mean power) of the
    rings with 4 / S <= f <= 0.25 (SLOPE_LOW_CYCLES, SLOPE_HIGH_FREQUENCY):
    power ~ f ** slope. A 1/f magnitude gives -2 (-1.98 at S = 64, -1.99 at
    256: a ring's mean of a convex power law sits a little above its value
    at k / S); white noise gives 0.
    ValueError when S < 24 (fewer than 3 rings in the band) or the band's
    power is 0 somewhere (a flat picture).
    """
    spec = np.asarray(spec, np.float64)
    if spec.ndim == 2:
        spec = spec[None]
    spec = _check_spectrum(spec)
    side = spec.shape[1]
    power = np.mean(spec ** 2, axis=0)                                                 # [S, S//2+1]
    fy = np.fft.fftfreq(side)[:, None]
    fx = np.fft.rfftfreq(side)[None, :]
    rings = np.rint(np.sqrt(fx * fx + fy * fy) * side).astype(int)
    counts = np.where((fx > 0) & (fx < 0.5), 2.0, 1.0) * np.ones_like(power)
    ring_ids = np.arange(SLOPE_LOW_CYCLES, int(np.floor(SLOPE_HIGH_FREQUENCY * side)) + 1)
    if len(ring_ids) < 3:
        raise ValueError('a spectrum of side %d has fewer than 3 rings between %d/%d and %g cycles per pixel; '
                         'the radial slope needs a side of at least 24 pixels' % (side, SLOPE_LOW_CYCLES, side,
                                                                                  SLOPE_HIGH_FREQUENCY))
    weight_sums = np.bincount(rings.ravel(), counts.ravel(), minlength=ring_ids[-1] + 1)
    power_sums = np.bincount(rings.ravel(), (counts * power).ravel(), minlength=ring_ids[-1] + 1)
    mean_power = power_sums[ring_ids] / weight_sums[ring_ids]
    if not np.all(mean_power > 0):
        raise ValueError('the spectrum has no power at some frequency between %d/%d and %g cycles per pixel '
                         '(a flat picture?); the radial slope needs structure there'
                         % (SLOPE_LOW_CYCLES, side, SLOPE_HIGH_FREQUENCY))
    slope, _ = np.polyfit(np.log(ring_ids / side), np.log(mean_power), 1)
    return float(slope)


def picture_slope(image):
    """The radial power-spectrum slope (radial_slope) of one picture float [S, S, C] (C 3 or 1), 0..255."""
    return radial_slope(magnitude(image))


def shipped(channels):
    """float32 [C, SIDE, SIDE//2+1]: the package's mean spectrum of natural photos, C = channels (3 or 1).

    Made from 100 photos with the commands in this module's docstring.
    """
    _check_channels(channels)
    path = os.path.join(SHIPPED_FOLDER, SHIPPED_FILES[channels])
    try:
        spec = np.load(path)
    except OSError as error:
        raise FileNotFoundError('the shipped spectrum %s cannot be read (%s); reinstall filtervis, or give '
                                'folder= a folder of photos to compute one' % (path, error)) from None
    if spec.shape != (channels, SIDE, SIDE // 2 + 1):
        raise ValueError('the shipped spectrum %s has shape %s, not %s; reinstall filtervis'
                         % (path, spec.shape, (channels, SIDE, SIDE // 2 + 1)))
    return spec.astype(np.float32)


def cache_key(folder, names, channels):
    """Hex md5 of what the spectrum of `folder` depends on: the relative names (sorted), each file's bytes,
    channels, SIDE and CACHE_VERSION; editing, adding or removing an image changes it."""
    hasher = hashlib.md5(('%s\nchannels %d\nside %d\n' % (CACHE_VERSION, channels, SIDE)).encode())
    for name in sorted(names):
        # Each file's own md5 (fixed length) after its name keeps two listings from hashing alike.
        hasher.update(name.encode('utf8') + b'\0' + files.md5sum(os.path.join(folder, name)).encode() + b'\n')
    return hasher.hexdigest()


def _read_cached(path, channels):
    """The spectrum cached at path, or None when it is absent, unreadable or of the wrong shape."""
    try:
        spec = np.load(path)
    except (OSError, ValueError):
        return None
    return spec.astype(np.float32) if spec.shape == (channels, SIDE, SIDE // 2 + 1) else None


def for_folder(folder, channels, cache_dir=None, progress=False):
    """float32 [C, SIDE, SIDE//2+1]: compute() over the images of `folder` (util.images.list_images), cached.

    The cache file is spectrum-<cache_key>.npy in cache_dir when given,
    else in the first writable of build.cache_folders(folder, 'spectra'):
    a folder 'spectra' beside `folder`, then ~/.cache/filtervis/spectra/KEY.
    A cached file in any of them is read; a new one is written atomically.
    ValueError naming the folder when it holds no PNG or JPEG file, naming
    the file when one cannot be read; FileNotFoundError when folder is absent.
    """
    _check_channels(channels)
    names = list_images(folder)
    name = 'spectrum-%s.npy' % cache_key(folder, names, channels)
    candidates = [cache_dir] if cache_dir is not None else build.cache_folders(folder, 'spectra')
    for candidate in candidates:
        spec = _read_cached(os.path.join(candidate, name), channels)
        if spec is not None:
            return spec
    # Found before the work, so a folder that cannot hold the cache costs no computation.
    target = build.writable_folder(candidates, 'the spectrum of %s' % folder)
    spec = compute([os.path.join(folder, image) for image in names], channels, progress=progress)
    files.write_atomic(os.path.join(target, name), lambda file: np.save(file, spec))
    return spec


def for_picture(side, channels, folder=None, cache_dir=None, progress=False):
    """float32 [C, side, side//2+1]: the magnitude for a picture of side pixels, C = channels (3 or 1).

    The shipped spectrum of natural photos, or that of `folder` (for_folder,
    cached), resized to side (resize).
    """
    _check_side(side)
    spec = shipped(channels) if folder is None else for_folder(folder, channels, cache_dir, progress)
    return resize(spec, side)

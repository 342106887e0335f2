"""
How a picture is drawn: scaled by its own min and max, RGB in colour and
greyscale in grey. Every figure of the project (visualize.py, examples.py,
atlas.py) draws through these two functions, so a greyscale network's
pictures look the same everywhere. An attribution map is drawn in colours
over its image in grey, the same in a figure (plots.show_attribution) and in
a tile saved as a picture (overlay).

    from filtervis.util import pictures
    pictures.show(ax, image)                 # image [H, W, 3] or [H, W, 1], any range
    pictures.normalize_image(image)          # float32, same shape, 0..1
    pictures.overlay(patch, patch_map)       # float32 [H, W, 3], RGB 0..255
"""

import numpy as np


def normalize_image(x):
    """Scale an image to 0..1 by its own min and max; a flat image becomes 0.5."""
    x = np.asarray(x, np.float32)
    x_min, x_max = float(x.min()), float(x.max())
    if x_max - x_min < 1e-12:
        return np.full_like(x, 0.5)
    return (x - x_min) / (x_max - x_min)


def show(ax, image, scale=True, alpha=None):
    """imshow of one picture [H, W, 3] (RGB) or [H, W, 1] (greyscale, drawn grey) on a matplotlib Axes.

    scale: stretch by normalize_image (synthetic pictures); False shows
    pixels 0..255 as they are (real images, patches, the maco method's
    pictures, whose range is their own).
    alpha: None, or float [H, W], 0..1: the picture's opacity (an importance
    map drawn as transparency), over the Axes' white.
    """
    image = normalize_image(image) if scale else np.clip(np.asarray(image, np.float32) / 255.0, 0, 1)
    if alpha is not None:
        alpha = np.clip(np.asarray(alpha, np.float32), 0, 1)
        if alpha.shape != image.shape[:2]:
            raise ValueError('alpha of shape %s for a picture of %s' % (alpha.shape, image.shape[:2]))
    if image.ndim == 3 and image.shape[-1] == 1:
        ax.imshow(image[:, :, 0], cmap='gray', vmin=0, vmax=1, interpolation='nearest', alpha=alpha)
    elif alpha is not None:
        ax.imshow(np.concatenate([image, alpha[:, :, None]], axis=2), interpolation='nearest')
    else:
        ax.imshow(image, interpolation='nearest')


def resized(images, side):
    """float32 [N, side, side, C]: square pictures [N, S, S, C] resized by area averaging (antialiased) to
    side x side, as a network of that input side is shown them; the pictures themselves when S == side."""
    from PIL import Image
    images = np.asarray(images, np.float32)
    if images.shape[1] == side and images.shape[2] == side:
        return images
    out = np.empty((len(images), side, side, images.shape[-1]), np.float32)
    for i, image in enumerate(images):
        for c in range(images.shape[-1]):
            out[i, :, :, c] = np.asarray(Image.fromarray(image[:, :, c], mode='F').resize((side, side), Image.BOX))
    return out


def grey(image):
    """float32 [H, W], 0..1: an image [H, W, C] 0..255 as grey (luma), under a heat map."""
    image = np.asarray(image, np.float32)
    values = image[:, :, 0] if image.shape[2] == 1 else image @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(values / 255.0, 0, 1)


def heat_scale(attribution_map, percentile=99.5):
    """(colour map name, low, high) for an attribution map [H, W].

    A map with negative values (gradient x input, Integrated Gradients) goes
    in a diverging map centred on 0, red positive, blue negative; else from 0
    (dark) up. The colours end at the `percentile` of |map|: a gradient's few
    largest pixels would otherwise leave the rest of the map in one colour.
    """
    attribution_map = np.asarray(attribution_map, np.float32)
    magnitude = np.abs(attribution_map)
    top = float(np.percentile(magnitude, percentile)) or float(magnitude.max()) or 1.0
    if attribution_map.min() < 0:
        return 'RdBu_r', -top, top
    return 'inferno', 0.0, top


def overlay(image, attribution_map, alpha=0.55, percentile=99.5):
    """float32 [H, W, 3], RGB 0..255: an attribution map [H, W] in colours (heat_scale) laid with `alpha` over
    its image [H, W, C] (0..255, C = 1 or 3) in grey, as plots.show_attribution draws it: a tile to save."""
    from matplotlib import colormaps
    attribution_map = np.asarray(attribution_map, np.float32)
    name, low, high = heat_scale(attribution_map, percentile)
    colours = colormaps[name](np.clip((attribution_map - low) / (high - low), 0, 1))[:, :, :3]
    return (255 * ((1 - alpha) * grey(image)[:, :, None] + alpha * colours)).astype(np.float32)

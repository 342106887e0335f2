"""
How a picture is drawn: scaled by its own min and max, RGB in colour and
greyscale in grey. Every figure of the project (visualize.py, examples.py,
atlas.py) draws through these two functions, so a greyscale network's
pictures look the same everywhere.

    from filtervis.util import pictures
    pictures.show(ax, image)                 # image [H, W, 3] or [H, W, 1], any range
    pictures.normalize_image(image)          # float32, same shape, 0..1
"""

import numpy as np


def normalize_image(x):
    """Scale an image to 0..1 by its own min and max; a flat image becomes 0.5."""
    x = np.asarray(x, np.float32)
    x_min, x_max = float(x.min()), float(x.max())
    if x_max - x_min < 1e-12:
        return np.full_like(x, 0.5)
    return (x - x_min) / (x_max - x_min)


def show(ax, image, scale=True):
    """imshow of one picture [H, W, 3] (RGB) or [H, W, 1] (greyscale, drawn grey) on a matplotlib Axes.

    scale: stretch by normalize_image (synthetic pictures); False shows
    pixels 0..255 as they are (real images, patches).
    """
    image = normalize_image(image) if scale else np.clip(np.asarray(image, np.float32) / 255.0, 0, 1)
    if image.ndim == 3 and image.shape[-1] == 1:
        ax.imshow(image[:, :, 0], cmap='gray', vmin=0, vmax=1, interpolation='nearest')
    else:
        ax.imshow(image, interpolation='nearest')

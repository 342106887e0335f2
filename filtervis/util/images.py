"""
Reading users' pictures: the PNG and JPEG files of a folder, and one file as
float32 pixels 0..255, RGB or greyscale (for networks of greyscale input),
at its own size (read_image) or scaled and centre-cropped to a square
(load_image). 16-bit and float greyscale is brought to 0..255 with care.

    from filtervis.util.images import list_images, load_image, read_image
    names = list_images('photos')                      # ['cat.jpg', 'sub/dog.png']
    square = load_image('photos/cat.jpg', 224)         # float32 [224, 224, 3], RGB 0..255
    photo = read_image('photos/cat.jpg', channels=1)   # float32 [H, W, 1], greyscale 0..255
"""

import os

import numpy as np

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')


def list_images(folder):
    """Relative paths ('/'-separated) of the PNG and JPEG files under `folder`, recursively, sorted."""
    if not os.path.exists(folder):
        raise FileNotFoundError('image folder %s does not exist' % folder)
    if not os.path.isdir(folder):
        raise ValueError('%s is a file, not a folder of images; give the folder that holds it' % folder)
    files = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in names:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                files.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, '/'))
    if not files:
        raise ValueError('no PNG or JPEG files under %s (looked for %s, recursively)'
                         % (folder, ', '.join(IMAGE_EXTENSIONS)))
    return sorted(files)


def load_image(path, size, channels=3):
    """float32 [size, size, channels], 0..255: the image scaled so its short side is `size`, centre-cropped.

    channels 3: RGB (greyscale and palette images become RGB); 1: greyscale,
    for networks of greyscale input (colour images are converted with
    Pillow's luma weights). Transparency is dropped.
    16-bit greyscale (0..65535) is divided by 257, so it reads as its 8-bit
    version; 32-bit integer or float greyscale (Pillow modes 'I', 'F', e.g.
    from TIFF) has no fixed range and is stretched from its own min..max to
    0..255 (a flat image becomes black). Raises OSError (or ValueError,
    SyntaxError from Pillow) for a file that is not a readable PNG or JPEG.
    """
    from PIL import Image
    image = _open(path, channels)
    width, height = image.size
    if (width, height) != (size, size):
        # The short side becomes exactly `size`, the long one keeps the aspect ratio.
        if width <= height:
            width, height = size, max(size, round(height * size / width))
        else:
            width, height = max(size, round(width * size / height)), size
        image = image.resize((width, height), Image.BICUBIC)
        left, top = (width - size) // 2, (height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, np.float32).reshape(size, size, channels)


def _to_8bit(image):
    """A greyscale image of mode 'I;16*', 'I' or 'F' as mode 'L', 0..255; see load_image.

    Not Pillow's convert(): it clips these at 255, which turns a 16-bit
    picture almost all white.
    """
    from PIL import Image
    values = np.asarray(image, np.float64)
    # Older Pillow opens a 16-bit PNG as mode 'I'; a PNG holds no wider greyscale.
    if image.mode.startswith('I;16') or (image.mode == 'I' and image.format == 'PNG'):
        values = values / 257.0
    else:
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        values = (np.nan_to_num(values, nan=low, posinf=high, neginf=low) - low) * (
            255.0 / (high - low) if high > low else 0.0)
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))   # 2-D uint8: mode 'L'


def _open(path, channels):
    """The file as a Pillow image of mode 'RGB' (channels 3) or 'L' (channels 1), read whole."""
    from PIL import Image
    with Image.open(path) as image:
        if image.mode.startswith('I;16') or image.mode in ('I', 'F'):
            image = _to_8bit(image)
        return image.convert('RGB' if channels == 3 else 'L')


def read_image(path, channels=3):
    """float32 [H, W, channels], 0..255: the file at its own size, RGB (channels 3) or greyscale (1), as
    load_image reads it. Raises OSError (or ValueError, SyntaxError from Pillow) for an unreadable file."""
    image = _open(path, channels)
    return np.asarray(image, np.float32).reshape(image.size[1], image.size[0], channels)

"""
DeepDream: a photo, of any size, changed by gradient ascent so that some
layers respond more; the objective is the mean of the squared activations of
the layers (each layer's mean, summed), so that everything a layer sees
anywhere in the photo is strengthened.

It runs in octaves, from the smallest scale up (each octave_scale times the
one before, the last the photo's own size), and carries the detail it added
from one octave to the next. At each step the gradient is computed tile by
tile, so that a 4000x3000 photo needs memory for one batch of tiles only:
each tile is computed with a margin of real neighbouring pixels around it and
only its centre is kept, and the tile grid moves by a random offset every
step, so no tile border stays in one place long enough to show.

    python visualize.py --start photo.jpg --dream conv4_3,conv5_1 --out dream.png
    python visualize.py --model m.keras --preprocess tf --start photo.jpg --dream block_3_add --octaves 3

    from filtervis.optvis import dream
    picture = dream.dream(net, photo, ['conv4_3'], dream.DreamConfig(octaves=4, steps=10))   # float32 [H, W, C]
"""

import math
import numbers
import time
from dataclasses import dataclass

import numpy as np

from filtervis.core import memory, network, units
from filtervis.core.checks import check_int
from filtervis.util import quiet

tf = quiet.import_tensorflow()

# float32 copies of the photo (at its own size) that a dream holds: the photo, the picture, the detail
# carried between octaves, the gradient, and the padded copy the tiles are cut from.
PHOTO_COPIES = 6
# Bytes one batch of tiles may take (as a batch of pictures, ascent.MEMORY_BUDGET_BYTES).
TILE_BUDGET_BYTES = 2 << 30


@dataclass(frozen=True)
class DreamConfig:
    """The knobs of a dream.

    octaves       scales, the last the photo's own size, >= 1
    octave_scale  each scale is this many times the one before, > 1 (1.4: Mordvintsev et al.)
    steps         ascent steps per octave, >= 1
    step_size     grey levels the average pixel moves per step (the gradient divided by its mean |value|), > 0
    tile          side of the part of the photo each tile keeps; None: 512, or the network's own input side
                  less the margins for a network of one input size
    margin        pixels of neighbouring photo computed around each tile and then dropped; None: a quarter
                  of the tile, at most the layers' receptive field
    tile_batch    tiles per session.run; None: as many as memory allows, at most 8
    seed          seed of the tile offsets
    """
    octaves: int = 4
    octave_scale: float = 1.4
    steps: int = 10
    step_size: float = 1.5
    tile: int = None
    margin: int = None
    tile_batch: int = None
    seed: int = 0

    def __post_init__(self):
        check_int('octaves', self.octaves, 1)
        check_int('steps', self.steps, 1)
        check_int('seed', self.seed, 0)
        for name, low in (('octave_scale', 1.0), ('step_size', 0.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
                    or value <= low:
                raise ValueError('%s=%r: expected a finite number > %g' % (name, value, low))
        if self.tile is not None:
            check_int('tile', self.tile, 16)
        if self.margin is not None:
            check_int('margin', self.margin, 0)
        if self.tile_batch is not None:
            check_int('tile_batch', self.tile_batch, 1)


@dataclass(frozen=True)
class Tiling:
    """How a picture is cut: tiles of `tile` kept pixels, each computed with `margin` pixels around it, so
    the network sees squares of `seen` = tile + 2 margin; `batch` of them per session.run. Tile, margin and
    every offset of the grid are multiples of `stride`, the units' stride in pixels: a network with pools
    sees a picture shifted by a part of its stride differently, so only such tiles give the gradient of
    the whole picture."""
    tile: int
    margin: int
    batch: int
    stride: int = 1

    @property
    def seen(self):
        return self.tile + 2 * self.margin


def check_layers(net, layers):
    """Unit indices of `layers` (names or indices), each a 4-D unit; ValueError naming any other."""
    if isinstance(layers, (str, int)):
        layers = [layers]
    indices = []
    for layer in layers:
        index = net.layer_index(layer)
        if net.layer_tensors[index].shape.rank != 4:
            raise ValueError('--dream %s: a dream needs a layer with a map of the picture (4-D); %s is a vector '
                             'of %d values (a Dense layer or logits): pick a convolution unit (--list-layers)'
                             % (net.short_names[index], net.short_names[index], net.layer_channels[index]))
        indices.append(index)
    if not indices:
        raise ValueError('no layers to dream with; name at least one, e.g. --dream conv4_3')
    return sorted(set(indices))


def tiling(net, layer_indices, config, height, width):
    """The Tiling of a picture height x width for these units and config (memory decides the batch)."""
    try:
        fields = [net.receptive_field(i, net.input_size or 224) for i in layer_indices]
        deepest_field, stride = max(f[0] for f in fields), max(f[1] for f in fields)
    except ValueError:   # a field the geometry walk cannot follow: the margin's default then rests on the tile
        deepest_field, stride = None, 1
    if net.input_size is not None:
        # A network of one input size sees squares of its own size: the tile is what the margins leave.
        margin = net.input_size // 8 if config.margin is None else config.margin
        tile = net.input_size - 2 * margin
        if config.tile is not None and config.tile != tile:
            raise ValueError('tile=%d: this network takes %dx%d images only, so its tiles keep %d pixels with a '
                             'margin of %d (give no tile, or margin=%d for tile=%d)'
                             % (config.tile, net.input_size, net.input_size, tile, margin,
                                max(0, (net.input_size - config.tile) // 2), config.tile))
        if tile < 8:
            raise ValueError('margin=%d leaves tiles of %d pixels of this network\'s %d: use a smaller margin'
                             % (margin, tile, net.input_size))
    else:
        tile = 512 if config.tile is None else config.tile
        margin = min(tile // 4, deepest_field or tile) if config.margin is None else config.margin
        # Whole strides (see Tiling): rounded up, so that a tile keeps at least what was asked.
        tile, margin = -(-tile // stride) * stride, -(-margin // stride) * stride
    minimum = max(net.layer_min_sizes[i] for i in layer_indices)
    if tile + 2 * margin < minimum:
        raise ValueError('tiles of %d pixels (tile %d + 2 x margin %d) are too small for %s, which needs %d'
                         % (tile + 2 * margin, tile, margin, ', '.join(net.short_names[i] for i in layer_indices),
                            minimum))
    batch = config.tile_batch or 8
    tiles = math.ceil(height / tile) * math.ceil(width / tile)
    return Tiling(tile, margin, max(1, min(batch, tiles + 1)), stride if (tile % stride, margin % stride) == (0, 0)
                  else 1)


def check_memory(net, layer_indices, tiling_, height, width, channels):
    """ValueError in one line unless the photo's copies and one batch of tiles fit in memory; says which photo
    side fits at this tile size. Returns the tile batch that fits (at most tiling_.batch)."""
    free, source = memory.available()
    photo = PHOTO_COPIES * (height + 2 * tiling_.seen) * (width + 2 * tiling_.seen) * channels * 4
    per_tile = memory.estimate(net, layer_indices, tiling_.seen, 1, 0).per_image
    if free is None:
        return tiling_.batch
    budget = int(free * memory.HEADROOM)
    if photo + per_tile > budget:
        # The photo's copies grow with its area: the largest long side that leaves room for one tile.
        room = max(0, budget - per_tile) / float(PHOTO_COPIES * channels * 4)
        scale = math.sqrt(room / float((height + 2 * tiling_.seen) * (width + 2 * tiling_.seen)))
        raise ValueError('a dream on a %dx%d photo needs about %s of memory at tile %d (margin %d) but only %s '
                         'is free (%s); a photo of at most %d pixels on its long side fits (or a smaller tile)'
                         % (width, height, memory.gigabytes(photo + per_tile), tiling_.tile, tiling_.margin,
                            memory.gigabytes(free), source, int(max(height, width) * scale)))
    # Past one tile, a batch saves little on tiles this large: more tiles at once only while they stay
    # within the budget the pictures' batches keep to.
    return int(max(1, min(tiling_.batch, (min(budget - photo, TILE_BUDGET_BYTES)) // per_tile)))


@dataclass
class DreamOps:
    """The gradient of the dream objective for a batch of tiles, built once per (units, precision)."""
    objective_t: object   # float32 [B]: per tile, the sum over the units of the mean of the squared activations
    grad_t: object        # float32 [B, S, S, C]: its gradient with respect to the tiles fed to net.input


def dream_ops(net, layer_indices, precision_name='float32'):
    """The DreamOps of these units in net.graph, built on the first call; the tiles go into net.input."""
    def build():
        names = '_'.join(net.scope(i) for i in layer_indices)
        with tf.name_scope('dream_%s' % names):
            terms = []
            for index in layer_indices:
                values_t = tf.cast(units.unit_values(net, index, precision_name=precision_name), tf.float32)
                terms.append(tf.reduce_mean(tf.square(values_t), axis=[1, 2, 3]))
            objective_t = tf.add_n(terms)
            grad_t, = tf.gradients(tf.reduce_sum(objective_t), net.input)
        return DreamOps(objective_t, grad_t)
    return net.cached_ops(('dream', tuple(layer_indices), precision_name), build)


def tiled_gradient(net, ops, picture, tiling_, offset, session):
    """The gradient of the dream objective for picture float32 [H, W, C], computed tile by tile.

    offset: (dy, dx), 0 <= each < tile, multiples of tiling_.stride: where the tile grid starts, in
    pixels before the picture's corner. Each tile sees its margins of real pixels (mirrored beyond the picture's edges) and keeps its
    centre. Returns (gradient float32 [H, W, C], mean objective over the tiles).
    """
    height, width, channels = picture.shape
    tile, margin = tiling_.tile, tiling_.margin
    dy, dx = offset
    rows, cols = math.ceil((height + dy) / tile), math.ceil((width + dx) / tile)
    # The picture padded so that every tile and its margins lie inside: mirrored at the edges, so that a
    # tile at the border sees a continuation of the photo rather than a black frame.
    before_y, before_x = margin + dy, margin + dx
    after_y = rows * tile - height - dy + margin
    after_x = cols * tile - width - dx + margin
    padded = np.pad(picture, ((before_y, after_y), (before_x, after_x), (0, 0)), mode='symmetric')
    grad = np.zeros((rows * tile, cols * tile, channels), np.float32)
    corners = [(r * tile, c * tile) for r in range(rows) for c in range(cols)]
    values = []
    for start in range(0, len(corners), tiling_.batch):
        chunk = corners[start:start + tiling_.batch]
        batch = np.stack([padded[y:y + tiling_.seen, x:x + tiling_.seen] for y, x in chunk])
        objective, tiles_grad = session.run([ops.objective_t, ops.grad_t], {net.input: batch})
        values.extend(objective.tolist())
        for (y, x), tile_grad in zip(chunk, tiles_grad):
            grad[y:y + tile, x:x + tile] = tile_grad[margin:margin + tile, margin:margin + tile]
    return grad[dy:dy + height, dx:dx + width], float(np.mean(values))


def resize(picture, height, width):
    """picture float32 [h, w, C] resized to [height, width, C] (bicubic, per channel, any values)."""
    from PIL import Image
    if picture.shape[:2] == (height, width):
        return picture.copy()
    planes = [np.asarray(Image.fromarray(picture[:, :, c].astype(np.float32), mode='F')
                         .resize((width, height), Image.BICUBIC), np.float32) for c in range(picture.shape[2])]
    return np.stack(planes, axis=-1)


def octave_sides(height, width, config):
    """[(height, width)] of each octave, smallest first, the last the photo's own."""
    sides = []
    for octave in range(config.octaves):
        factor = config.octave_scale ** (octave - config.octaves + 1)
        sides.append((max(1, round(height * factor)), max(1, round(width * factor))))
    return sides


@dataclass
class DreamResult:
    """picture: float32 [H, W, C], the photo's size, 0..255 (clipped); objectives: float32 [octaves, steps],
    the mean objective over the tiles before each step; tiling: the Tiling used; seconds: per octave."""
    picture: np.ndarray
    objectives: np.ndarray
    tiling: Tiling
    seconds: list


def dream(net, photo, layers, config=None, *, precision='float32', progress=False, session=None):
    """DeepDream on photo float32 [H, W, C] (C = net.input_channels), 0..255; returns a DreamResult.

    layers: unit names or indices, each a 4-D unit. precision: 'float32'
    or 'bfloat16' (resolved). The graph grows once per set of layers.
    """
    config = config or DreamConfig()
    photo = np.asarray(photo, np.float32)
    if photo.ndim != 3 or photo.shape[2] != net.input_channels:
        raise ValueError('photo of shape %s: expected [H, W, %d] for this %s network'
                         % (photo.shape, net.input_channels, 'RGB' if net.input_channels == 3 else 'greyscale'))
    indices = check_layers(net, layers)
    height, width, channels = photo.shape
    cut = tiling(net, indices, config, height, width)
    cut = Tiling(cut.tile, cut.margin, check_memory(net, indices, cut, height, width, channels), cut.stride)
    ops = dream_ops(net, indices, precision)
    session = session or network.session(net)
    rng = np.random.default_rng(config.seed)
    detail = np.zeros_like(photo)
    sides = octave_sides(height, width, config)
    objectives = np.zeros((len(sides), config.steps), np.float32)
    seconds = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(sides) * config.steps, desc='dream %s' % ', '.join(net.short_names[i] for i in indices),
                   unit='step')
    for octave, (h, w) in enumerate(sides):
        began = time.perf_counter()
        base = resize(photo, h, w)
        picture = base + resize(detail, h, w)
        for step in range(config.steps):
            offset = tuple(int(v) * cut.stride for v in rng.integers(0, cut.tile // cut.stride, 2))
            grad, objectives[octave, step] = tiled_gradient(net, ops, picture, cut, offset, session)
            # Each tile's objective is a mean over its own units, so the gradient's scale follows the tile
            # size (1e-7 and smaller): it is divided out here, and a zero gradient moves nothing.
            scale = float(np.mean(np.abs(grad)))
            if scale > 0:
                picture += (config.step_size / scale) * grad
            np.clip(picture, 0.0, 255.0, out=picture)
            if bar is not None:
                bar.update(1)
        detail = picture - base
        seconds.append(time.perf_counter() - began)
    if bar is not None:
        bar.close()
    # The last octave is the photo's own size.
    return DreamResult(picture, objectives, cut, seconds)

"""
How far an attribution map can be trusted, measured two ways:

- deletion (Petsiuk et al. 2018): set the pixels of an image to a baseline
  in the order of the map, most important first, 5 % at a time, and follow
  the objective; a faithful map makes it fall faster than a random order, so
  the area under the curve is smaller. With square=P the pixels go in P x P
  squares, in the order of the map's mean over each square (the region
  perturbation of Samek et al. 2017): a random order then cuts holes as a
  map's order does, where pixel by pixel it sprinkles single pixels, and a
  filter that fires on the edges of a hole tells the two apart by their
  shape, not their order;
- the sanity check of Adebayo et al. (2018): a map that explains the network
  changes when the network's weights are re-initialized; spearman() gives the
  rank correlation of a map with the one before.

    python benchmarks/attribution.py --part deletion     # every method against random order, MRI VGG16
    python benchmarks/attribution.py --part sanity       # cascading randomization, MRI VGG16

    from filtervis.analysis import attribution
    curves = attribution.deletion_curves(net, images, 'conv4_3:5', maps)   # float32 [N, M, 21]
    attribution.area_under(curves)                                          # float32 [N, M]
    attribution.deletion_curves(net, images, 'conv4_3:5', maps, square=16)  # 16 x 16 squares at a time
"""

import numpy as np

from filtervis.analysis.attribution import ops
from filtervis.analysis.attribution.methods import baselines
from filtervis.core.checks import check_int

DELETION_STEP = 0.05


def random_maps(count, side, seed=0):
    """float32 [count, 1, side, side], uniform: the random order deletion is compared with."""
    return np.random.default_rng([seed, 2]).uniform(size=(count, 1, side, side)).astype(np.float32)


def square_means(maps, square):
    """maps [N, M, H, W] with each pixel replaced by the mean of the map over its square: the image cut into
    squares of `square` x `square` pixels from the top left (those cut by the right or bottom edge average
    what they hold)."""
    maps = np.asarray(maps, np.float32)
    if square == 1:
        return maps
    height, width = maps.shape[2:]
    rows, columns = -(-height // square), -(-width // square)
    padded = np.full(maps.shape[:2] + (rows * square, columns * square), np.nan, np.float64)
    padded[:, :, :height, :width] = maps
    means = np.nanmean(padded.reshape(maps.shape[:2] + (rows, square, columns, square)), axis=(3, 5))
    return np.repeat(np.repeat(means, square, axis=2), square, axis=3)[:, :, :height, :width].astype(np.float32)


def deletion_ranks(maps, seed=0, square=1):
    """int32 [N, M, H, W]: each pixel's place in the deletion order of its map, 0 = deleted first.

    Largest value first (with square > 1, of the map's mean over each square:
    square_means); equal values (the zeros of a CAM map after ReLU) in a
    random order of pixels, or of whole squares, so that ties delete no
    corner of the image first.
    """
    maps = square_means(maps, square)
    count, methods_count, height, width = maps.shape
    flat = maps.reshape(count * methods_count, height * width)
    # One draw per square (a pixel is a square of 1): tied squares go whole, in a random order, and a square's
    # pixels in raster order among themselves (lexsort is stable).
    squares = np.random.default_rng([seed, 3]).uniform(size=(-(-height // square), -(-width // square)))
    tie_break = np.repeat(np.repeat(squares, square, axis=0), square, axis=1)[:height, :width].ravel()
    ranks = np.empty(flat.shape, np.int32)
    for row, values in enumerate(flat):
        order = np.lexsort((tie_break, -values))
        ranks[row, order] = np.arange(len(order), dtype=np.int32)
    return ranks.reshape(maps.shape)


def deletion_curves(net, images, objective, maps, *, step=DELETION_STEP, baseline='black', square=1,
                    precision='auto', batch_size=ops.DEFAULT_BATCH_SIZE, seed=0):
    """float32 [N, M, K + 1], K = 1 / step: the objective on each image as 0, step, 2 step, ..., all of its
    pixels are set to the baseline in the order of each map (deletion_ranks).

    images: float32 [N, S, S, C], 0..255; maps: [N, M, S, S], one per image
    and method (an Attribution's maps, or random_maps). baseline: one of
    attribution.BASELINES ('black' as Petsiuk et al.). square: 1, pixel by pixel
    as Petsiuk et al., or the side of the squares deleted whole in the order
    of their means (square_means; random_maps then give a random order of
    squares). The first and last points
    are the same for every map of an image and run once, and so is the curve of
    maps that order the pixels alike.
    """
    images, run = ops.start_run(net, images, objective, precision=precision, batch_size=batch_size)
    maps = np.asarray(maps, np.float32)
    if maps.ndim != 4 or maps.shape[0] != len(images) or maps.shape[2:] != images.shape[1:3]:
        raise ValueError('maps of shape %s: expected [%d, methods, %d, %d], one per image'
                         % (maps.shape, len(images), images.shape[1], images.shape[2]))
    steps = int(round(1 / step))
    if steps < 1 or abs(steps * step - 1) > 1e-9:
        raise ValueError('step=%r: expected 1 / a whole number, e.g. 0.05' % (step,))
    square = check_int('square', square, 1)
    if square > min(images.shape[1:3]):
        raise ValueError('square=%d: expected at most the image side, %d' % (square, min(images.shape[1:3])))
    starts = baselines(images, baseline, seed)
    ranks = deletion_ranks(maps, seed, square)
    count, methods_count = maps.shape[:2]
    pixels = images.shape[1] * images.shape[2]
    deleted = [int(round(pixels * k / steps)) for k in range(steps + 1)]
    curves = np.zeros((count, methods_count, steps + 1), np.float32)
    curves[:, :, 0] = run.values(count, lambda i: images[i])[:, None]
    curves[:, :, steps] = run.values(count, lambda i: starts[i])[:, None]
    inner = steps - 1
    # Maps that order an image's pixels alike (Grad-CAM, Grad-CAM++ and Score-CAM of a channel at its own
    # unit are multiples of one map) share one curve.
    first = np.tile(np.arange(methods_count), (count, 1))
    for image in range(count):
        for method in range(methods_count):
            first[image, method] = next(other for other in range(method + 1)
                                        if np.array_equal(ranks[image, other], ranks[image, method]))
    pairs = [(image, method) for image in range(count) for method in range(methods_count)
             if first[image, method] == method]

    def deleted_copy(j):
        (image, method), k = pairs[j // inner], j % inner
        gone = (ranks[image, method] < deleted[k + 1])[:, :, None]
        return np.where(gone, starts[image], images[image])
    if inner:
        values = run.values(len(pairs) * inner, deleted_copy).reshape(len(pairs), inner)
        for (image, method), row in zip(pairs, values):
            curves[image, method, 1:steps] = row
        curves = np.take_along_axis(curves, first[:, :, None], axis=1)
    return curves


def area_under(curves):
    """float32 [...]: the trapezoid area under curves [..., K + 1] over the deleted share 0..1."""
    curves = np.asarray(curves, np.float64)
    return ((curves[..., 1:] + curves[..., :-1]) / 2).mean(axis=-1).astype(np.float32)


def _average_ranks(values):
    """Ranks 0..n-1 of a flat array, equal values sharing their mean rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts + 1) / 2.0)[inverse.ravel()]


def spearman(a, b):
    """Spearman's rank correlation of two maps of the same shape (ties ranked by their mean); nan when one
    map is flat."""
    a_ranks = _average_ranks(np.asarray(a).ravel())
    b_ranks = _average_ranks(np.asarray(b).ravel())
    a_ranks -= a_ranks.mean()
    b_ranks -= b_ranks.mean()
    norm = np.sqrt((a_ranks ** 2).sum() * (b_ranks ** 2).sum())
    return float((a_ranks * b_ranks).sum() / norm) if norm > 0 else float('nan')

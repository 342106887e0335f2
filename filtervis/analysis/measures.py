"""
Numbers that tell a readable filter picture from one the filter barely sees,
so that two methods (optvis/blog.py, the post's, and optvis/regularized.py) can be compared
without squinting. Each takes the pictures of several filters of one layer and
returns one number per picture:

- activation: what the picture does to its filter, with no transform.
- dead fraction: the share of the picture the filter cannot see at all.
- blur robustness: how much of the activation survives a 1-pixel blur;
  pixel-level noise loses most of it, patterns keep most.

    python benchmarks/methods.py        # the comparison on the MRI weights

    from filtervis.analysis import measures
    values = measures.measure_all(model, 'conv3_2', [0, 1], images)   # images [2, H, W, 3], RGB 0..255
    measures.caption(values, 0)          # 'act 50.3 · dead 0.00 · blur 0.70'

Ops are built once per (model, layer, pre_relu) and fed through placeholders.
Measures always run in float32, whatever precision made the pictures
(ascent.ascend's `precision`): a yardstick that changed with what it
measures could not compare a bfloat16 picture with a float32 one, and a
measure costs one forward and backward pass per picture, under 1 % of an ascent.
"""

import math

import numpy as np

from filtervis.core import network

from filtervis.core import checks, units
from filtervis.optvis import objectives
from filtervis.util import quiet

tf = quiet.import_tensorflow()

# Dead fraction: the picture is cut into BLOCK x BLOCK pixel blocks, and a
# block is dead when its largest gradient is below DEAD_THRESHOLD times the
# picture's largest. Relative, so that it does not depend on the filter's scale.
BLOCK = 8
DEAD_THRESHOLD = 1e-3
# A picture whose largest gradient is below this is all dead: float32 rounding
# residue (a kernel of 1e-34 gives ~1e-38), not a filter that sees the picture;
# live filters' gradients to pixels 0..255 are many orders of magnitude larger.
GRADIENT_FLOOR = 1e-30
# Blur robustness: Gaussian of BLUR_SIGMA pixels, cut at BLUR_RADIUS pixels (4 sigma).
BLUR_SIGMA = 1.0
BLUR_RADIUS = 4
# Images go through the network this many at a time.
BATCH_SIZE = 8


def _check(model, layer_id, feature_ids, images):
    """The public functions' one check: (objectives.Bound per picture, images as float32)."""
    layer_index = model.layer_index(layer_id)
    feature_ids = checks.check_feature_ids(model, layer_index, feature_ids)
    images = _check_images(model, images, len(feature_ids), 'filter ids')
    smallest = model.layer_min_sizes[layer_index]
    if min(images.shape[1:3]) < smallest:
        raise ValueError('images of %dx%d pixels: expected at least %dx%d for %s'
                         % (images.shape[1], images.shape[2], smallest, smallest, model.short_names[layer_index]))
    return [objectives.bind(model, objectives.channel(layer_index, f), images.shape[1]) for f in feature_ids], images


def _check_images(model, images, count, what):
    images = np.asarray(images, np.float32)
    channels = model.input_channels
    if images.ndim != 4 or images.shape[-1] != channels:
        raise ValueError('images of shape %s: expected [N, H, W, %d], pixels 0..255' % (images.shape, channels))
    if len(images) != count:
        raise ValueError('%d images for %d %s: expected one image per filter' % (len(images), count, what))
    if min(images.shape[1:3]) < BLOCK:
        raise ValueError('images of %dx%d pixels: expected at least %dx%d' % (images.shape[1], images.shape[2],
                                                                              BLOCK, BLOCK))
    if not np.isfinite(images).all():
        raise ValueError('images hold NaN or infinite values')
    return images


def _check_objectives(model, objective_list, images):
    """(Bound per picture, images) for objectives (diversity terms left out: they are no activation)."""
    objective_list = list(objective_list)
    images = _check_images(model, images, len(objective_list), 'objectives')
    kept = [objectives.Objective((w, t) for w, t in o.terms if t.kind != 'diversity') for o in objective_list]
    bounds = [objectives.bind(model, o, images.shape[1]) for o in kept]
    objectives.check_form(bounds)
    for index in objectives.layers_of(bounds[0].form):
        checks.check_size(model, index, images.shape[1])
    return bounds, images


def _ops(model, form, pre_relu):
    """(objectives.ObjectiveOps, objective_t, dead_fraction_t) on model.input, built once per form."""
    def build():
        names = '_'.join(model.scope(i) for i in objectives.layers_of(form))
        with tf.name_scope('measures_%s' % names):
            ops = objectives.build(model, form, pre_relu)
            objective_t = ops.value_t                                                           # [N]
            # Pictures are independent, so the gradient of the sum is each picture's own gradient.
            grad_t, = tf.gradients(tf.reduce_sum(objective_t), model.input)                    # [N, H, W, C]
            pixel_t = tf.reduce_sum(tf.abs(grad_t), axis=3, keepdims=True)                     # [N, H, W, 1]
            # 'SAME' keeps the partial blocks at the right and bottom edges.
            block_t = tf.nn.max_pool2d(pixel_t, BLOCK, BLOCK, 'SAME')                          # [N, h, w, 1]
            peak_t = tf.reduce_max(pixel_t, axis=[1, 2, 3])                                    # [N]
            dead_t = tf.cast(block_t < DEAD_THRESHOLD * peak_t[:, None, None, None], tf.float32)
            # A picture with no gradient anywhere, or a vanishing one, is all dead
            # (block < 0 would say none, and a uniform 1e-38 would pass the relative test).
            dead_fraction_t = tf.where(peak_t > GRADIENT_FLOOR, tf.reduce_mean(dead_t, axis=[1, 2, 3]),
                                       tf.ones_like(peak_t))
        return ops, objective_t, dead_fraction_t
    return model.cached_ops(('measures', form, bool(pre_relu)), build)


def gaussian_kernel(sigma=BLUR_SIGMA, radius=BLUR_RADIUS):
    """float32 [2 radius + 1]: a sampled Gaussian that sums to 1."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (x / sigma) ** 2)
    return (weights / weights.sum()).astype(np.float32)


def _blur_ops(model):
    """(images_t, blurred_t): a Gaussian blur of each colour channel, built once."""
    channels = model.input_channels

    def build():
        with tf.name_scope('measures_blur'):
            images_t = tf.placeholder(tf.float32, [None, None, None, channels], name='images')
            weights = gaussian_kernel()
            r = BLUR_RADIUS
            # SYMMETRIC repeats the edge pixel (scipy's 'reflect'), so a flat
            # picture stays exactly flat up to its border.
            padded_t = tf.pad(images_t, [[0, 0], [r, r], [r, r], [0, 0]], mode='SYMMETRIC')
            # Separable: rows, then columns; depthwise so that colours do not mix.
            rows = np.tile(weights[:, None, None, None], [1, 1, channels, 1])                 # [2r+1, 1, C, 1]
            columns = np.tile(weights[None, :, None, None], [1, 1, channels, 1])              # [1, 2r+1, C, 1]
            blurred_t = tf.nn.depthwise_conv2d(padded_t, rows, [1, 1, 1, 1], 'VALID')
            blurred_t = tf.nn.depthwise_conv2d(blurred_t, columns, [1, 1, 1, 1], 'VALID')
        return images_t, blurred_t
    return model.cached_ops(('measures_blur', BLUR_SIGMA, BLUR_RADIUS), build)


def _run(model, which, bounds, images, pre_relu):
    """One of _ops's outputs (which: 1 objective, 2 dead fraction) for every picture, float32 [N]."""
    ops = _ops(model, objectives.check_form(bounds), pre_relu)
    sess = network.session(model)
    out = []
    for begin in range(0, len(images), BATCH_SIZE):
        chunk = slice(begin, begin + BATCH_SIZE)
        feed = objectives.feed(ops[0], bounds[chunk])
        feed[model.input] = images[chunk]
        out.append(sess.run(ops[which], feed))
    return np.concatenate(out).astype(np.float32)


def activation(model, layer_id, feature_ids, images, *, pre_relu=False):
    """The objective of each picture, untransformed: float32 [N].

    activation_i = mean over (y, x) of relu(conv_i(images[i]))[y, x], the
    mean of filter feature_ids[i] over its feature map: the post's objective.
    pre_relu=True leaves out the ReLU (and may be negative).
    layer_id: index into model.layer_names or a name such as 'conv3_2'.
    images: [N, H, W, C], 0..255 (not clipped), image i for feature_ids[i].
    """
    return _run(model, 1, *_check(model, layer_id, feature_ids, images), pre_relu)


def dead_fraction(model, layer_id, feature_ids, images, *, pre_relu=False):
    """The share of the picture the filter cannot see: float [N], 0..1.

    g[y, x] = sum over colours c of |d activation_i / d images[i, y, x, c]|
    dead_i  = share of the BLOCK x BLOCK blocks B (8 x 8 pixels; partial
              blocks at the right and bottom edges count as blocks) with
              max over B of g < DEAD_THRESHOLD (1e-3) x max over the image of g
    A picture with g = 0 everywhere is all dead (1.0). Where every unit on
    every path from a pixel to the filter is off, the gradient is exactly zero;
    a test of pixel variance would miss this, because such an area still holds
    its start noise. Arguments as activation().
    """
    return _run(model, 2, *_check(model, layer_id, feature_ids, images), pre_relu)


def blur(model, images):
    """Each channel blurred by a Gaussian of BLUR_SIGMA (1) pixel, edges mirrored: [N, H, W, C]."""
    images = np.asarray(images, np.float32)
    channels = model.input_channels
    if images.ndim != 4 or images.shape[-1] != channels or min(images.shape[1:3]) <= BLUR_RADIUS:
        raise ValueError('images of shape %s: expected [N, H, W, %d] with H and W > %d'
                         % (images.shape, channels, BLUR_RADIUS))
    images_t, blurred_t = _blur_ops(model)
    return network.session(model).run(blurred_t, {images_t: images})


def blur_robustness(model, layer_id, feature_ids, images, *, pre_relu=False):
    """How much activation survives a 1-pixel blur: float32 [N], usually 0..1.

    robustness_i = activation_i(blur(images[i])) / activation_i(images[i])
    with blur() a Gaussian of sigma 1 pixel per colour channel, edges mirrored.
    NaN where activation_i(images[i]) <= 0: the filter is off on the picture,
    so there is nothing to keep. Arguments as activation().
    """
    bounds, images = _check(model, layer_id, feature_ids, images)
    return _robustness(_run(model, 1, bounds, images, pre_relu), _run(model, 1, bounds, blur(model, images), pre_relu))


def _robustness(sharp, blurred):
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(sharp > 0, blurred / sharp, np.nan).astype(np.float32)


def measure_all(model, layer_id, feature_ids, images, *, pre_relu=False):
    """{'activation', 'dead_fraction', 'blur_robustness'}: each float32 [N], as the functions above."""
    return _measure(model, *_check(model, layer_id, feature_ids, images), pre_relu)


def measure_objectives(model, objective_list, images, *, pre_relu=False):
    """measure_all() for pictures of any objectives (objectives.Objective, one per picture, one form):
    the activation is each picture's own objective (a negative view's is minus the channel's mean), and
    the dead fraction and blur robustness follow it. Diversity terms are left out: they are no activation.
    """
    return _measure(model, *_check_objectives(model, objective_list, images), pre_relu)


def _measure(model, bounds, images, pre_relu):
    sharp = _run(model, 1, bounds, images, pre_relu)
    blurred = _run(model, 1, bounds, blur(model, images), pre_relu)
    return {'activation': sharp, 'dead_fraction': _run(model, 2, bounds, images, pre_relu),
            'blur_robustness': _robustness(sharp, blurred)}


def diversity(model, layer_id, images):
    """A group's diversity at a unit: 1 - the mean pairwise cosine similarity of the pictures' Gram matrices.

    images: [N, H, W, C] (N >= 2), 0..255, the group's pictures. Float, 0..1
    for units after a ReLU (their Gram matrices have no negative entries): 0
    for N copies of one picture. The Gram matrix of picture i is F_i^T F_i,
    with F_i the unit's activations [h*w, channels].
    """
    layer_index = model.layer_index(layer_id)
    images = _check_images(model, images, len(images), 'pictures')
    checks.check_size(model, layer_index, images.shape[1])
    if len(images) < 2:
        raise ValueError('diversity needs a group of 2 or more pictures, got %d' % len(images))

    def build():
        with tf.name_scope('measures_diversity_%s' % model.scope(layer_index)):
            return objectives.gram_similarity(units.as_map(model.layer_tensors[layer_index]))
    similarity = network.session(model).run(model.cached_ops(('measures_diversity', layer_index), build),
                                            {model.input: images})
    count = len(images)
    return float(1.0 - (similarity.sum() - np.trace(similarity)) / (count * (count - 1)))


def caption(values, index):
    """One picture's measures as a short line: 'act 50.3 · dead 0.00 · blur 0.70'."""
    robustness = values['blur_robustness'][index]
    return 'act %.3g · dead %.2f · blur %s' % (
        values['activation'][index], values['dead_fraction'][index],
        'n/a' if math.isnan(robustness) else '%.2f' % robustness)


def captions(values):
    """caption() of every picture: list of str."""
    return [caption(values, i) for i in range(len(values['activation']))]

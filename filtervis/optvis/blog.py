"""
The post's method: start from noise and move the image, step by step, along
the gradient of the objective, scaled so that the pixel with the largest
|gradient| moves by step_size. One ascent step for a batch is built once per
(objective form, normalization, precision); filter ids and images are fed
through placeholders, so the graph does not grow however often it runs.

    from filtervis.optvis import blog
    cost_t = blog.cost(net, 'conv3_2', 0)        # the post's loss, a scalar tensor
    ops = blog.ascent_ops(net, (('channel', 5),))   # one step for a batch of channel objectives of unit 5
    starts = blog.start_images([0, 1], 224, seed=0)  # float32 [2, 224, 224, 3], noise around 128

ascent.py runs it through render.run beside the regularized method.
"""

import math
import numbers
from dataclasses import dataclass

import numpy as np

from filtervis.core import units
from filtervis.core.checks import check_feature_ids
from filtervis.optvis import objectives
from filtervis.util import quiet

tf = quiet.import_tensorflow()

NORMALIZE_CHOICES = ('max', 'std')
# Keeps the step finite when the gradient is tiny; the post's constant.
GRAD_EPSILON = 1e-8


def cost(model, layer_id, feature_id):
    """The post's loss: a scalar tensor, the mean of one filter's feature map.

    layer_id: index into model.layer_names or a name such as 'conv3_2'.
    The tensor is built once per (layer, filter) and reused.
    """
    layer_index = model.layer_index(layer_id)
    feature_id, = check_feature_ids(model, layer_index, [feature_id])

    def build():
        with tf.name_scope('cost'):
            return tf.reduce_mean(units.as_map(model.layer_tensors[layer_index])[:, :, :, feature_id])
    return model.cached_ops(('cost', layer_index, feature_id), build)


@dataclass(frozen=True)
class BlogConfig:
    """The knobs of the post's method.

    step_size  the pixel with the largest |gradient| moves by this much per step, > 0 (the post: 0.5 and 2)
    normalize  'max': divide the gradient by its largest |value| (the post); 'std': by its standard deviation
    pre_relu   maximize the filter before its activation
    """
    step_size: float = 0.5
    normalize: str = 'max'
    pre_relu: bool = False

    def __post_init__(self):
        step_size = self.step_size
        if (isinstance(step_size, bool) or not isinstance(step_size, numbers.Real) or not math.isfinite(step_size)
                or step_size <= 0):
            raise ValueError('step_size=%r: expected a finite number > 0 (the post uses 0.5 and 2)' % (step_size,))
        if self.normalize not in NORMALIZE_CHOICES:
            raise ValueError('normalize=%r: expected one of %s' % (self.normalize, ', '.join(NORMALIZE_CHOICES)))
        if not isinstance(self.pre_relu, bool):
            raise ValueError('pre_relu=%r: expected True or False' % (self.pre_relu,))


@dataclass
class AscentOps:
    """Ops of one ascent step for one (objective form, normalization, precision), built once."""
    objective: objectives.ObjectiveOps   # placeholders of the objectives and their value
    step_size_t: tf.Tensor      # float32 [], placeholder
    objective_t: tf.Tensor      # float32 [N], objective of the fed images
    grad_scale_t: tf.Tensor     # float32 [N], max |grad| or std of grad per image
    new_image_t: tf.Tensor      # float32 [N, H, W, C], the fed images after one step


def ascent_ops(model, form, pre_relu=False, normalize='max', precision='float32'):
    """The post's step for a batch: img += step_size / (scale(grad) + 1e-8) * grad.

    form: an objectives form, e.g. (('channel', 5),) for a channel of unit 5.
    scale is max |grad| ('max'; the post used grad.max(), which turns ascent
    into descent, or explodes, when the largest gradient is <= 0) or the
    standard deviation of grad ('std'), per image.
    precision: 'float32' or 'bfloat16' (resolved): the network's convolutions
    (units.channel_maps). The gradient arrives as float32, and the step is
    computed and added in float32 in both precisions.
    """
    def build():
        names = '_'.join(model.scope(i) for i in objectives.layers_of(form))
        with tf.name_scope('ascent_%s%s' % (names, '' if precision == 'float32' else '_' + precision)):
            step_size_t = tf.placeholder(tf.float32, [], name='step_size')
            ops = objectives.build(model, form, pre_relu, precision_name=precision)
            # float32 from here on, also under bfloat16: the image is the sum of
            # all steps, and near 128 bfloat16 holds only whole grey levels, so
            # a step below half a grey level (most of them: only the largest
            # gradient moves by step_size) would round away; a bfloat16 std would
            # sum 150,000 squares in 8 bits. These ops cost next to nothing.
            # Pictures are independent but for diversity, whose penalty is each
            # picture's own: the gradient of the sum is each picture's own gradient.
            grad_t, = tf.gradients(tf.reduce_sum(ops.value_t), model.input)
            if normalize == 'max':
                scale_t = tf.reduce_max(tf.abs(grad_t), axis=[1, 2, 3])
            else:
                scale_t = tf.math.reduce_std(grad_t, axis=[1, 2, 3])
            rate_t = step_size_t / (scale_t + GRAD_EPSILON)
            new_image_t = model.input + rate_t[:, None, None, None] * grad_t
        return AscentOps(ops, step_size_t, ops.value_t, scale_t, new_image_t)
    return model.cached_ops(('ascent', form, bool(pre_relu), normalize, precision), build)


# ---------------------------------------------------------------------------
# The ascent

def start_images(feature_ids, size, seed=None, init=None, channels=3):
    """Start images, float32 [N, size, size, channels]: the post's noise, uniform(0, 1) + 128.

    feature_ids: per picture its start key, a filter id or a tuple of ints
    (render.Job.keys). With a seed, image i depends only on (seed, key i), so
    a filter gets the same start alone or in any batch. Without one, numpy's
    global generator is used, as in the post (np.random.seed works).
    init: float32 [size, size, channels] (every filter) or [N, size, size, channels], 0..255.
    """
    count = len(feature_ids)
    shape = (size, size, channels)
    if init is not None:
        init = np.asarray(init, np.float32)
        if init.shape == shape:
            return np.repeat(init[None], count, axis=0)
        if init.shape == (count,) + shape:
            return init.copy()
        raise ValueError('init of shape %s: expected %s or %s for size=%d and %d filters'
                         % (init.shape, shape, (count,) + shape, size, count))
    if seed is None:
        return (np.random.uniform(size=(count,) + shape) + 128.0).astype(np.float32)
    # Filled one image at a time: a list of float64 images, their stack and its
    # float32 copy would take 4x the result.
    images = np.empty((count,) + shape, np.float32)
    for i, key in enumerate(feature_ids):
        images[i] = np.random.default_rng(start_key(seed, key)).uniform(size=shape) + 128.0
    return images


def start_key(seed, key):
    """The seed sequence of a picture's start: [seed, filter] or [seed, *key] for a tuple key."""
    return [seed, *key] if isinstance(key, tuple) else [seed, int(key)]


class BlogMethod:
    """The post's method for render.run: the pictures are numpy arrays fed and fetched at every step."""

    def __init__(self, model, job, config, starts, precision_name):
        self.ops = ascent_ops(model, objectives.check_form(job.bounds), config.pre_relu, config.normalize,
                              precision_name)
        self.model, self.job, self.config, self.starts = model, job, config, starts
        self.size, self.channels = starts.shape[1], starts.shape[3]
        self.precision = precision_name
        self.dead_hint = (' Try another seed or init.' if config.pre_relu
                          else ' Try pre_relu=True, another seed or init.')

    def start(self, sess, chunk):
        self.batch = self.starts[chunk]
        self.feed = objectives.feed(self.ops.objective, self.job.bounds[chunk], self.job.groups[chunk])
        self.feed[self.ops.step_size_t] = self.config.step_size

    def step(self, sess, step):
        self.feed[self.model.input] = self.batch
        self.batch, objective, scale = sess.run([self.ops.new_image_t, self.ops.objective_t,
                                                 self.ops.grad_scale_t], self.feed)
        return objective, scale

    def images(self, sess):
        return self.batch

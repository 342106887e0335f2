"""
What does a filter of VGG16 respond to? Start from a noise image and change
it, by gradient ascent, so that the mean activation of one filter of one conv
layer grows; the image then shows the pattern the filter looks for.

This is the algorithm of the blog post, run as a TensorFlow 1.x graph through
tf.compat.v1: the objective and one ascent step are built once per layer, the
filter ids are fed through a placeholder, and a batch of filters moves in one
session.run. Only the wanted channels of the target layer are computed.

    python visualize.py                                   # the post's demo: conv3_2, filters 0-5
    python visualize.py --layer conv3_2 --filters 0-5 --iters 150 --step-size 2 --out filters.png
    python visualize.py --weights ../shared/models/vgg16-mri-notop.h5 --preprocess unit

    from visualize import visual, visualize_filters
    image = visual(model, 'conv3_2', 0, 150, 2, seed=0)      # float32 [224, 224, 3]
"""

import argparse
import math
import numbers
import sys
from dataclasses import dataclass, replace

if __name__ == '__main__':
    # Before anything imports TensorFlow, so that its start-up lines are held
    # back (and shown with --verbose).
    import quiet
    quiet.import_tensorflow(verbose='--verbose' in sys.argv[1:])
    quiet.one_line_warnings()

import numpy as np
from matplotlib.figure import Figure

import examples
import files
import keras_model
import measures
import models
import network
import objectives
import pictures
import quiet
import regularized
import render
# The shared foundation, here under the names the post's readers and older
# scripts use (visualize.session, visualize.Result, ...).
from network import (channel_objective, check_feature_ids, check_int, check_seed, check_size,  # noqa: F401
                     parse_filters, session)
from pictures import normalize_image  # noqa: F401  (visualize.normalize_image, as before)
from precision import resolve_precision
from render import Result, warn_dead  # noqa: F401

tf = quiet.import_tensorflow()

NORMALIZE_CHOICES = ('max', 'std')
# 'blog': the post's plain gradient ascent. 'regularized': a Fourier-basis
# image, random transforms and Adam (regularized.py).
METHOD_CHOICES = ('blog', 'regularized')
# Keeps the step finite when the gradient is tiny; the post's constant.
GRAD_EPSILON = 1e-8
# Bytes the automatic batch size may spend on the images of one batch, so that a
# whole layer stays under 4 GB beside TF, the model and the ascent ops (their
# measured share is in the README, Performance).
MEMORY_BUDGET_BYTES = 2 << 30
# Every image of a batch computes all of the batch's channels of the target
# layer (channel_objective), so a batch past channels/16 images costs more than
# it saves (benchmarks/ascent.py --batch-sweep).
CHANNELS_PER_BATCH_IMAGE = 16
MAX_BATCH_SIZE = 16
# float32 maps per conv output up to the target that one image of a batch
# keeps alive (see activation_bytes_per_image).
MEMORY_FACTOR = 2


# ---------------------------------------------------------------------------
# Objectives: what to maximize

def cost(model, layer_id, feature_id):
    """The post's loss: a scalar tensor, the mean of one filter's feature map.

    layer_id: index into model.layer_names or a name such as 'conv3_2'.
    The tensor is built once per (layer, filter) and reused.
    """
    layer_index = model.layer_index(layer_id)
    feature_id, = check_feature_ids(model, layer_index, [feature_id])

    def build():
        with tf.name_scope('cost'):
            return tf.reduce_mean(model.layer_tensors[layer_index][:, :, :, feature_id])
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
    (network.channel_maps). The gradient arrives as float32, and the step is
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


def activation_bytes_per_image(model, layer_index, size):
    """Estimated peak bytes one image costs when ascending on layer `layer_index`.

    MEMORY_FACTOR float32 maps of the size of each unit's output up to the
    target: the activations kept for the backward pass, gradients, pool
    indices (the factor is measured in benchmarks/ascent.py --memory).
    """
    total = sum(model.output_side(i, size) ** 2 * model.layer_channels[i] for i in range(layer_index + 1))
    return MEMORY_FACTOR * 4 * total


def auto_batch_size(model, layer_id, size, budget=MEMORY_BUDGET_BYTES):
    """Images per session.run: the fastest batch that fits in `budget` bytes (1 .. MAX_BATCH_SIZE)."""
    return _auto_batch_size(model, model.layer_index(layer_id), size, budget)


def _auto_batch_size(model, layer_index, size, budget=MEMORY_BUDGET_BYTES):
    per_image = activation_bytes_per_image(model, layer_index, size)
    fastest = max(4, model.layer_channels[layer_index] // CHANNELS_PER_BATCH_IMAGE)
    return int(max(1, min(MAX_BATCH_SIZE, fastest, budget // max(per_image, 1))))


def method_config(method, config=None, *, step_size=None, normalize=None, init=None, pre_relu=None):
    """The config of `method` ('blog' -> BlogConfig, 'regularized' -> regularized.Config), built from the
    knobs given; the one place that refuses a knob of the other method.

    config: None (the method's defaults) or the method's config; the knobs,
    when given, override it. init (an array) belongs to 'blog' and is not
    part of its config (it is no setting but a start).
    """
    if method not in METHOD_CHOICES:
        raise ValueError('method=%r: expected one of %s' % (method, ', '.join(METHOD_CHOICES)))
    if method == 'regularized':
        given = [name for name, value in (('step_size', step_size), ('normalize', normalize), ('init', init))
                 if value is not None]
        if given:
            raise ValueError("%s belong(s) to method='blog'; the regularized method takes its knobs from "
                             "config=regularized.Config(...) (learning_rate, ...)" % ', '.join(given))
        config = regularized.check_config(config)
    else:
        if config is None:
            config = BlogConfig()
        elif not isinstance(config, BlogConfig):
            raise ValueError("config=%r: method='blog' takes a visualize.BlogConfig or None" % (config,))
        changes = {name: value for name, value in (('step_size', step_size), ('normalize', normalize))
                   if value is not None}
        config = replace(config, **changes)
    if pre_relu is not None:
        config = replace(config, pre_relu=bool(pre_relu))
    return config


# What --objective and ascend(objective=...) name, beside an expression (objectives.parse).
OBJECTIVE_CHOICES = ('channel', 'neuron', 'negative')
# The diversity penalty's weight when none is given, per method: a share of each
# picture's activation (objectives.diversity), chosen on the MRI weights so that
# pictures keep 70 % of their activation (README, Objectives). The post's steps
# are normalized by the largest gradient, which dilutes the push: it needs more.
DEFAULT_DIVERSITY_WEIGHT = {'blog': 1.0, 'regularized': 0.5}


def filter_objective(kind, layer, feature_id):
    """The objective of view `kind` ('channel', 'neuron' or 'negative') for one filter of a unit."""
    if kind == 'channel':
        return objectives.channel(layer, feature_id)
    if kind == 'negative':
        return -objectives.channel(layer, feature_id)
    if kind == 'neuron':
        return objectives.neuron(layer, feature_id)
    raise ValueError('objective=%r: expected one of %s (render_objectives takes objectives.Objective values)'
                     % (kind, ', '.join(OBJECTIVE_CHOICES)))


def filter_job(model, layer_index, feature_ids, size, objective='channel', diversity=None, diversity_weight=None,
               method='blog'):
    """The render.Job of some filters of one unit: a picture per filter, or `diversity` pictures per filter
    pushed apart (group index g in each filter's start key: picture 0 of a group starts as the filter's
    plain picture does)."""
    layer = model.short_names[layer_index]
    if diversity is None:
        if diversity_weight is not None:
            raise ValueError('diversity_weight=%r needs diversity=N (pictures per filter)' % (diversity_weight,))
        objs = [filter_objective(objective, layer, f) for f in feature_ids]
        return render.Job([objectives.bind(model, o, size) for o in objs], list(feature_ids),
                          list(range(len(feature_ids))), list(feature_ids), '%s filter(s)' % layer)
    diversity = check_int('diversity', diversity, 1)
    if diversity < 2:
        raise ValueError('diversity=%d: expected 2 or more pictures per filter (1 is the plain picture)' % diversity)
    weight = DEFAULT_DIVERSITY_WEIGHT[method] if diversity_weight is None else diversity_weight
    bounds, keys, groups, labels = [], [], [], []
    for position, f in enumerate(feature_ids):
        # Weight 0 keeps the same form (and starts), with no push.
        bound = objectives.bind(model, filter_objective(objective, layer, f) + objectives.diversity(layer, weight),
                                size)
        for g in range(diversity):
            bounds.append(bound)
            keys.append(f if g == 0 else (f, g))
            groups.append(position)
            labels.append('%d#%d' % (f, g))
    return render.Job(bounds, keys, groups, labels, '%s filter(s)' % layer)


def objective_job(model, objective_list, size, groups=None):
    """The render.Job of objectives.Objective values, one picture each; picture i starts from (seed, i, 0)."""
    if isinstance(objective_list, objectives.Objective):
        objective_list = [objective_list]
    objective_list = list(objective_list)
    if not objective_list:
        raise ValueError('no objectives given')
    bounds = [objectives.bind(model, o, size) for o in objective_list]
    objectives.check_form(bounds)
    count = len(bounds)
    groups = list(range(count)) if groups is None else [int(g) for g in groups]
    if len(groups) != count:
        raise ValueError('%d groups for %d objectives' % (len(groups), count))
    if sum(1 for i, g in enumerate(groups) if i == 0 or g != groups[i - 1]) != len(set(groups)):
        raise ValueError('groups %s: the pictures of a group must be next to each other, e.g. [0, 0, 1, 1]'
                         % groups)
    return render.Job(bounds, [(i, 0) for i in range(count)], groups, [str(o) for o in objective_list],
                      'objective(s)')


def ascend(model, layer_id, feature_ids, iters, step_size=None, *, seed=None, size=224,
           normalize=None, init=None, pre_relu=None, batch_size=None, progress=False,
           method='blog', config=None, precision='auto', objective='channel', diversity=None,
           diversity_weight=None):
    """Gradient ascent for several filters of one layer; returns a render.Result.

    model: a network.Network (vgg16.VGG16 is one).
    layer_id: index into model.layer_names or a name such as 'conv3_2'.
    feature_ids: filter indices of that layer, 0..channels-1; repeats allowed.
    iters: steps (>= 1). size: image side, at least model.min_size(layer_id)
    (a network with a fixed input size takes that size only).
    The layer is resolved here, once; everything below takes its index.
    seed: int >= 0 or None (numpy's global generator, as in the post).
    Images go through in batches of batch_size (default: auto_batch_size(),
    the fastest batch that keeps a whole layer under 4 GB) with one
    session.run per step; progress shows a tqdm bar.
    method: 'blog' (the post's algorithm; config a BlogConfig, or the knobs
    step_size (default 0.5), normalize ('max'), init and pre_relu (False)) or
    'regularized' (regularized.py: `iters` Adam steps with the knobs of
    `config`, a regularized.Config; pre_relu, when given, overrides
    config.pre_relu; step_size, normalize and init belong to 'blog' and are
    refused, see method_config).
    precision: 'auto' (bfloat16 where the CPU does it natively, else
    float32), 'float32' or 'bfloat16': the precision of the network's
    convolutions after the first layer; everything else stays float32.
    Where bfloat16 cannot run on the unit's path, float32 runs and a warning
    says so. Result.precision says which one ran.
    objective: what each filter's picture maximizes: 'channel' (the post's
    mean of the filter), 'neuron' (the centre unit of the filter's map) or
    'negative' (minus the mean: what turns the filter off).
    diversity: None, or N >= 2 pictures per filter, pushed apart by
    diversity_weight (default DEFAULT_DIVERSITY_WEIGHT[method]; 0 gives the same N
    starts with no push) times their Gram similarity at the unit; the result
    then holds N pictures per filter, in the order of feature_ids.
    """
    config = method_config(method, config, step_size=step_size, normalize=normalize, init=init,
                           pre_relu=pre_relu)
    layer_index = model.layer_index(layer_id)
    feature_ids = check_feature_ids(model, layer_index, feature_ids)
    size = check_size(model, layer_index, size)
    job = filter_job(model, layer_index, feature_ids, size, objective, diversity, diversity_weight, method)
    return _render(model, job, iters, method, config, seed=seed, size=size, init=init, batch_size=batch_size,
                   progress=progress, precision=precision)


def render_objectives(model, objective_list, iters, *, groups=None, seed=None, size=224, method='blog',
                      config=None, step_size=None, normalize=None, init=None, pre_relu=None, batch_size=None,
                      progress=False, precision='auto'):
    """Pictures that maximize objectives (objectives.Objective, all of one form), one each; a render.Result.

    groups: int per objective; pictures of a group push apart when the
    objectives hold a diversity term (default: each alone). The other
    arguments are ascend()'s.
    """
    config = method_config(method, config, step_size=step_size, normalize=normalize, init=init,
                           pre_relu=pre_relu)
    job = objective_job(model, objective_list, size, groups)
    for index in objectives.layers_of(job.bounds[0].form):
        check_size(model, index, size)
    return _render(model, job, iters, method, config, seed=seed, size=size, init=init, batch_size=batch_size,
                   progress=progress, precision=precision)


def _render(model, job, iters, method, config, *, seed, size, init, batch_size, progress, precision):
    """A job through render.run with either method, arguments checked here."""
    check_int('iters', iters, 1)
    seed = check_seed(seed)
    precision_name = resolve_precision(precision)
    layers = objectives.layers_of(job.bounds[0].form)
    deepest = max(layers)
    if batch_size is None:
        batch_size = _auto_batch_size(model, deepest, size)
    batch_size = check_int('batch_size', batch_size, 1)
    for index in layers:
        precision_name = network.unit_precision(model, index, precision_name, auto=precision == 'auto')
    names = ', '.join(model.short_names[i] for i in layers)
    if method == 'regularized':
        return regularized.run(model, job, iters, config=config, seed=seed, size=size, batch_size=batch_size,
                               progress=progress, precision=precision_name)
    starts = start_images(job.keys, size, seed, init, model.input_channels)
    blog = BlogMethod(model, job, config, starts, precision_name)
    return render.run(model, job, iters, blog, batch_size=batch_size, progress=progress, desc=names)


def visual(model, layer_id, feature_id, iters, step_size=None, *, seed=None, size=224,
           normalize=None, init=None, pre_relu=None, method='blog', config=None, precision='auto'):
    """The post's visual(): the image that maximizes one filter, float32 [size, size, C], ~0..255.

    Same positional signature as the post (step_size None means the post's
    default, 0.5). Starts from noise uniform(0, 1) + 128 (or `init`), then
    `iters` steps of img += step_size / (max|grad| + 1e-8) * grad.
    method='regularized' uses regularized.py instead; precision 'auto',
    'float32' or 'bfloat16' (see ascend()).
    """
    return ascend(model, layer_id, [feature_id], iters, step_size, seed=seed, size=size,
                  normalize=normalize, init=init, pre_relu=pre_relu, method=method,
                  config=config, precision=precision).images[0]


def visualize_filters(model, layer_id, feature_ids, iters, step_size=None, *, seed=None, size=224,
                      batch_size=None, progress=True, normalize=None, init=None, pre_relu=None,
                      method='blog', config=None, precision='auto'):
    """visual() for many filters, batched: float32 [N, size, size, C], image i for feature_ids[i].

    For the same seed, image i equals visual(model, layer_id, feature_ids[i], ...).
    """
    return ascend(model, layer_id, feature_ids, iters, step_size, seed=seed, size=size,
                  normalize=normalize, init=init, pre_relu=pre_relu, batch_size=batch_size,
                  progress=progress, method=method, config=config, precision=precision).images


# ---------------------------------------------------------------------------
# Pictures

def plot_image(image, title=None, size=4):
    """A Figure showing one image [H, W, 3] or [H, W, 1] (any range; scaled by normalize_image)."""
    fig = Figure(figsize=(size, size), layout='constrained')
    ax = fig.add_subplot(1, 1, 1)
    pictures.show(ax, image)
    ax.axis('off')
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def plot_images(images, captions=None, title=None, ncols=3, size=4):
    """A Figure with a grid of any number of images [N, H, W, 3] or [N, H, W, 1], each scaled by itself.

    captions: one string per image, shown under it; title: shown above the grid.
    """
    images = list(images)
    if not images:
        raise ValueError('plot_images needs at least one image')
    if captions is not None and len(captions) != len(images):
        raise ValueError('%d captions for %d images' % (len(captions), len(images)))
    ncols = max(1, min(ncols, len(images)))
    nrows = (len(images) + ncols - 1) // ncols
    # Constrained layout keeps captions clear of the row below and the title clear of the top row.
    fig = Figure(figsize=(size * ncols, size * nrows + (0.5 if title else 0)), layout='constrained')
    for i in range(nrows * ncols):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= len(images):
            ax.axis('off')
            continue
        pictures.show(ax, images[i])
        if captions is not None:
            ax.set_xlabel(captions[i], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def save_figure(fig, path, dpi=100):
    """Save a Figure to PNG without ever leaving half a file at `path`."""
    files.check_output(path)
    return files.write_atomic(path, lambda f: fig.savefig(f, dpi=dpi, format='png'))


def save_grid(images, path, captions=None, title=None, ncols=3, size=4):
    """plot_images() saved to a PNG file; returns the path."""
    return save_figure(plot_images(images, captions, title, ncols, size), path)


def save_arrays(path, **arrays):
    """np.savez to `path` without ever leaving half a file there."""
    files.check_output(path)
    return files.write_atomic(path, lambda f: np.savez(f, **arrays))


# ---------------------------------------------------------------------------
# Command line

def _layer_arg(text):
    return int(text) if text.lstrip('-').isdigit() else text


def build_parser():
    parser = argparse.ArgumentParser(
        description='Render what filters of a CNN respond to, by gradient ascent on a noise image. With no '
                    "arguments: the post's demo on VGG16 (layer 5 = conv3_2, filters 0-5, 150 steps, step size 2). "
                    'Any Keras CNN works with --model FILE.')
    parser.add_argument('--layer', type=_layer_arg, default=None,
                        help='unit: an index or a name (VGG16: conv1_1 .. conv5_3, default 5 = conv3_2; a Keras '
                             'model: any layer with a 4-D output, default the middle convolution unit; '
                             '--list-layers names them)')
    parser.add_argument('--filters', default=None,
                        help="filter ids: a range '0-5', a list '1,4,9' or 'all' (default 0-5)")
    parser.add_argument('--objective', default='channel', metavar='channel|neuron|negative|EXPRESSION',
                        help='what each picture maximizes: channel (the mean of the filter, the default), neuron '
                             '(the centre unit of the filter\'s map), negative (minus the mean: what turns the filter '
                             'off), or an expression such as "conv3_2:0 - 0.5 * conv4_1:7" (LAYER:N a channel, '
                             'LAYER:N@Y,X a neuron; numbers, + - * and parentheses), which renders one picture '
                             'and takes no --layer or --filters')
    parser.add_argument('--diversity', type=int, default=None, metavar='N',
                        help='render N >= 2 pictures of each filter, pushed apart by their Gram similarity '
                             '(Distill, Feature Visualization, 2017)')
    parser.add_argument('--diversity-weight', type=float, default=None, metavar='W',
                        help='with --diversity: how hard the pictures push apart, a share of their activation '
                             '(default %g for --method blog, %g for regularized; 0: the same N starts, no push)'
                             % (DEFAULT_DIVERSITY_WEIGHT['blog'], DEFAULT_DIVERSITY_WEIGHT['regularized']))
    parser.add_argument('--iters', type=int, default=150,
                        help='ascent steps (default 150); Adam steps for --method regularized')
    parser.add_argument('--step-size', type=float, default=None,
                        help="blog method: step size (default 2, the post's demo); with --normalize max the "
                             'pixel with the largest gradient moves by this much per step')
    parser.add_argument('--method', choices=METHOD_CHOICES, default='blog',
                        help="blog: the post's plain gradient ascent (default); regularized: Fourier-basis "
                             "image, random transforms and Adam (see regularized.py), sharper pictures")
    parser.add_argument('--normalize', choices=NORMALIZE_CHOICES, default=None,
                        help='blog method: scale the step by the largest |gradient| (max, the default) or by '
                             'its std')
    parser.add_argument('--pre-relu', action='store_true', default=None,
                        help='maximize the filter before its activation (avoids dead starts; the regularized '
                             'method does so by default)')
    parser.add_argument('--size', type=int, default=None,
                        help="image side in pixels (default: the network's fixed input size, else 224)")
    parser.add_argument('--examples', default=None, metavar='DIR',
                        help='also draw, beside each picture, the 9 patches of the images in DIR (PNG, JPEG, '
                             'recursively) that excite the filter most (examples.py)')
    parser.add_argument('--seed', type=int, default=None, help='random seed of the start noise')
    parser.add_argument('--batch-size', type=int, default=None,
                        help='images per session.run (default: the fastest batch that keeps memory under 4 GB)')
    parser.add_argument('--out', default='filters.png', help='PNG file for the grid (default filters.png)')
    parser.add_argument('--cols', type=int, default=None,
                        help='images per row of the grid (default 3, or a square grid for more than 12)')
    parser.add_argument('--npz', default=None,
                        help='also save the raw images (float32 [N, size, size, C]), filter ids, group index and '
                             'objectives to this .npz file')
    parser.add_argument('--list-layers', action='store_true',
                        help='print the units (name, type, channels, output size, receptive field) and exit')
    parser.add_argument('--all', action='store_true',
                        help='with --list-layers and a Keras model: every layer with a 4-D output, not only '
                             'one unit per convolution')
    models.add_model_arguments(parser)   # --model, --weights, --preprocess, --precision, --unsafe
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    parser.add_argument('--verbose', action='store_true',
                        help="also show TensorFlow's own start-up and log lines (hidden by default)")
    return parser


def unit_lines(model, size=None):
    """One line per unit of a network: name, kind, channels, output side and receptive field for size x size
    pictures (default: the fixed input size, else 224)."""
    size = size or model.input_size or 224
    return [model.unit_line(index, size) for index in range(len(model.units))]


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        expression = None
        if args.objective not in OBJECTIVE_CHOICES:
            # Parsed before anything is loaded: a typo costs a second.
            expression = objectives.parse(args.objective)
            if args.diversity is not None:
                raise ValueError('--diversity renders N pictures of each filter; an expression renders one '
                                 'picture: leave out one of them')
            if args.layer is not None or args.filters is not None:
                raise ValueError('an expression names its own layers and filters (LAYER:N); leave out --layer '
                                 'and --filters')
        if args.diversity is not None and args.diversity < 2:
            raise ValueError('--diversity %d: expected 2 or more pictures per filter' % args.diversity)
        if args.diversity_weight is not None and args.diversity is None:
            raise ValueError('--diversity-weight needs --diversity N')
        if args.all and not args.list_layers:
            raise ValueError('--all goes with --list-layers')
        for path in (args.out, args.npz):
            # Checked first: finding a missing folder after an hour of ascent loses the hour.
            if path and not args.list_layers:
                files.check_output(path)
        if args.examples:
            if expression is not None:
                raise ValueError('--examples shows the patches of filters; an expression has no single filter')
            examples.list_images(args.examples)   # a bad folder fails before the ascent, not after
        if args.method == 'regularized' and (args.step_size is not None or args.normalize is not None):
            raise ValueError('--step-size and --normalize belong to --method blog; the regularized method '
                             'uses Adam with the learning rate of regularized.Config')
        wanted = [t.layer for _, t in expression.terms] if expression is not None else [args.layer]
        model = models.network_from_args(args, quiet=args.quiet, layers=[w for w in wanted if w is not None],
                                         all_layers=args.all)
        if args.list_layers:
            if models.is_keras(args):
                size = model.input_size or 224      # keras_model.unit_lines' size
                lines = keras_model.unit_lines(model, args.all)
            else:
                size = args.size or model.input_size or 224
                lines = unit_lines(model, size)
            print('\n'.join(['%s: %d units; sizes for %dx%d pictures' % (model.description, len(model.units),
                                                                        size, size)] + lines))
            return 0
        size = args.size or model.input_size or 224
        step_size = None
        if args.method == 'blog':
            step_size = 2.0 if args.step_size is None else args.step_size
        options = dict(seed=args.seed, size=size, normalize=args.normalize, pre_relu=args.pre_relu,
                       batch_size=args.batch_size, progress=not args.quiet, method=args.method,
                       precision=args.precision, step_size=step_size)
        if expression is not None:
            result = render_objectives(model, [expression], args.iters, **options)
            picture_objectives, group_index, feature_ids, per = [expression], [0], [-1], 1
            subject = str(expression)
            values = measures.measure_objectives(model, picture_objectives, result.images)
            captions = ['%s\n%s' % (expression, c) for c in measures.captions(values)]
        else:
            layer_index = model.layer_index(model.default_layer() if args.layer is None else args.layer)
            layer = model.short_names[layer_index]
            requested = parse_filters(args.filters or '0-5', model.layer_channels[layer_index])
            result = ascend(model, layer_index, requested, args.iters, objective=args.objective,
                            diversity=args.diversity, diversity_weight=args.diversity_weight, **options)
            per = args.diversity or 1
            feature_ids = [f for f in requested for _ in range(per)]
            group_index = [g for _ in requested for g in range(per)]
            picture_objectives = [filter_objective(args.objective, layer_index, f) for f in feature_ids]
            subject = '%s%s' % (layer, '' if args.objective == 'channel' else ', %s' % args.objective)
            captions = None
        if args.npz:
            # Saved before plotting: a whole layer takes long, and the arrays are the result.
            save_arrays(args.npz, images=result.images, filter_ids=np.array(feature_ids),
                        group_index=np.array(group_index), objectives=result.objectives, dead=result.dead,
                        objective=args.objective, layer='' if expression is not None else layer,
                        weights=model.description, precision=result.precision)
        many = len(feature_ids) > 12
        if captions is None:
            if many:
                captions = ['%d' % f for f in feature_ids]
            else:
                # The three measures of measures.py, the same for both methods and every objective:
                # after the ReLU, but for a negative view, whose filter ends up off there.
                values = measures.measure_objectives(model, picture_objectives, result.images,
                                                     pre_relu=args.objective == 'negative')
                captions = ['filter %d%s\n%s' % (f, '' if per == 1 else ' #%d' % g, c)
                            for f, g, c in zip(feature_ids, group_index, measures.captions(values))]
                if per > 1:
                    for start in range(0, len(feature_ids), per):
                        score = measures.diversity(model, layer_index, result.images[start:start + per])
                        captions[start] += ' · group diversity %.3f' % score
        if args.method == 'blog':
            how = '%s%s, %d steps of size %g' % (subject, ' (pre-ReLU)' if args.pre_relu else '', args.iters,
                                                 step_size)
        else:
            how = '%s, regularized, %d steps' % (subject, args.iters)
        if args.diversity:
            weight = DEFAULT_DIVERSITY_WEIGHT[args.method] if args.diversity_weight is None else args.diversity_weight
            how += ', %d pictures per filter %s' % (args.diversity, 'pushed apart (weight %g)' % weight if weight
                                                    else 'from their own starts, no push (weight 0)')
        title = '%s\n%s, %s' % (model.description, how, result.precision)
        ncols = args.cols or (math.ceil(math.sqrt(len(feature_ids))) if many else (per if 1 < per <= 6 else 3)
                              if expression is None else 1)
        if args.examples:
            # The precision the pictures were made in, resolved once by ascend().
            found = examples.find(model, args.examples, [layer_index], filters=requested,
                                  precision=result.precision, progress=not args.quiet, size=size)
            title += '\nbeside each: its top %d patches of %d images in %s' % (examples.DEFAULT_K, found.count,
                                                                                args.examples)
            # Rows follow the pictures, repeats too (find() looks for each filter once).
            rows = [(layer_index, f) for f in feature_ids]
            save_figure(examples.plot_found(model, args.examples, found, result.images, captions, title, rows),
                        args.out)
        else:
            save_grid(result.images, args.out, captions, title, ncols=ncols, size=1.6 if many else 4)
    except (ValueError, OSError) as error:
        print('error: %s' % error, file=sys.stderr)
        return 2
    if not args.quiet:
        if expression is not None:
            print('saved 1 picture of %s to %s' % (expression, args.out))
        else:
            print('saved %d filters of %s%s to %s' % (len(requested), subject,
                                                      ', %d pictures each' % per if per > 1 else '', args.out))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

"""
Which method renders a job, in batches of which size: the one entry below
the post's facade (visualize.py), the atlas and the command lines. It turns
filters of a unit, or objectives, into a render.Job, picks the method's
config (the post's BlogConfig, regularized.Config or maco.Config), the
precision and the batch size, and runs the job.

    from filtervis.optvis import ascent
    result = ascent.ascend(net, 'conv3_2', [0, 1], 150, 2, seed=0)   # .images float32 [2, 224, 224, 3]
    result = ascent.ascend(net, 5, range(8), 200, method='regularized', diversity=4)
    result = ascent.ascend(net, '_fc', [1, 130], 256, method='maco', size=512)    # .importance [2, 512, 512]
    image = ascent.visual(net, 'conv3_2', 0, 150, 2, seed=0)        # the post's visual()
"""

import os
from dataclasses import replace

import numpy as np


from filtervis.core import memory, units
from filtervis.core.checks import check_feature_ids, check_int, check_seed, check_size
from filtervis.core.precision import resolve_precision
from filtervis.optvis import maco, objectives, regularized, render
from filtervis.optvis import spectrum as maco_spectrum
from filtervis.optvis.blog import BlogConfig, BlogMethod, start_images

# 'blog': the post's plain gradient ascent. 'regularized': a Fourier-basis
# image, random transforms and Adam (regularized.py). 'maco': the phase of a
# natural spectrum, random crops and NAdam (maco.py).
METHOD_CHOICES = ('blog', 'regularized', 'maco')
# Bytes the automatic batch size may spend on the images of one batch, so that a
# whole layer stays under 4 GB beside TF, the model and the ascent ops
# (docs/performance.md, memory); less where the machine has less (memory.py).
MEMORY_BUDGET_BYTES = 2 << 30
# Every image of a batch computes all of the batch's channels of the target
# layer (channel_objective), so a batch past channels/16 images costs more than
# it saves (benchmarks/ascent.py --batch-sweep).
CHANNELS_PER_BATCH_IMAGE = 16
MAX_BATCH_SIZE = 16


def auto_batch_size(model, layer_id, size, budget=MEMORY_BUDGET_BYTES, method='blog', crops=1):
    """Pictures per session.run: the fastest batch whose memory estimate (memory.estimate) fits in `budget`
    bytes and in what this process may still allocate (1 .. MAX_BATCH_SIZE). crops: the network images
    each picture of the maco method sends per step; a batch then holds about as many network images as
    one of the other methods."""
    return _auto_batch_size(model, [model.layer_index(layer_id)], size, budget, method, crops)


def _auto_batch_size(model, layer_indices, size, budget=MEMORY_BUDGET_BYTES, method='blog', crops=1):
    seen = maco.seen_side(model, size) if method == 'maco' else None
    per_image = memory.estimate(model, layer_indices, size, 1, 0, method, crops, seen).per_image
    free, _ = memory.available()
    if free is not None:
        budget = min(budget, int(free * memory.HEADROOM))
    fastest = max(4, max(model.layer_channels[i] for i in layer_indices) // CHANNELS_PER_BATCH_IMAGE)
    fastest = max(1, fastest // crops)
    return int(max(1, min(MAX_BATCH_SIZE, fastest, budget // max(per_image, 1))))


def method_config(method, config=None, *, step_size=None, normalize=None, init=None, pre_relu=None):
    """The config of `method` ('blog' -> BlogConfig, 'regularized' -> regularized.Config, 'maco' ->
    maco.Config), built from the knobs given; the one place that refuses a knob of another method.

    config: None (the method's defaults) or the method's config; the knobs,
    when given, override it. init (start pictures) is no setting but a
    start, and goes to both methods beside their config.
    """
    if method not in METHOD_CHOICES:
        raise ValueError('method=%r: expected one of %s' % (method, ', '.join(METHOD_CHOICES)))
    if method in ('regularized', 'maco'):
        given = [name for name, value in (('step_size', step_size), ('normalize', normalize)) if value is not None]
        if given:
            raise ValueError("%s belong(s) to method='blog'; the %s method takes its knobs from "
                             "config=%s.Config(...) (learning_rate, ...)" % (', '.join(given), method, method))
        config = (regularized if method == 'regularized' else maco).check_config(config)
    else:
        if config is None:
            config = BlogConfig()
        elif not isinstance(config, BlogConfig):
            raise ValueError("config=%r: method='blog' takes a blog.BlogConfig or None" % (config,))
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
DEFAULT_DIVERSITY_WEIGHT = {'blog': 1.0, 'regularized': 0.5, 'maco': 0.5}


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
           diversity_weight=None, spectrum=None):
    """Gradient ascent for several filters of one layer; returns a render.Result.

    model: a network.Network (vgg16.VGG16 is one).
    layer_id: index into model.layer_names or a name such as 'conv3_2'.
    feature_ids: filter indices of that layer, 0..channels-1; repeats allowed.
    iters: steps (>= 1; 0 with init returns the starts). size: image side, at least model.min_size(layer_id)
    (a network with a fixed input size takes that size only).
    The layer is resolved here, once; everything below takes its index.
    seed: int >= 0 or None (numpy's global generator, as in the post).
    Images go through in batches of batch_size (default: auto_batch_size(),
    the fastest batch that keeps a whole layer under 4 GB) with one
    session.run per step; progress shows a tqdm bar.
    method: 'blog' (the post's algorithm; config a BlogConfig, or the knobs
    step_size (default 0.5), normalize ('max') and pre_relu (False)) or
    'regularized' (regularized.py: `iters` Adam steps with the knobs of
    `config`, a regularized.Config; pre_relu, when given, overrides
    config.pre_relu; step_size and normalize belong to 'blog' and are
    refused, see method_config) or 'maco' (maco.py: `iters` NAdam steps
    on the phase of a natural spectrum, config a maco.Config; `size` may
    then exceed a fixed network's input side, which sees crops resized to
    it; Result.importance holds each picture's importance map).
    init: None (noise, or the regularized method's random spectrum), or the
    start pictures, float32 [size, size, C] (every picture) or [N, size,
    size, C], 0..255: a photo, say. The regularized and maco methods start
    their Fourier coefficients (maco: phase and magnitude) from them, so
    that step 0 is the photo.
    spectrum (maco only): None (the package's spectrum of natural photos),
    a folder of images whose mean spectrum is computed and cached
    (spectrum.for_folder), or a magnitude float32 [C, s, s // 2 + 1].
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
    size = check_size(model, layer_index, size, larger=method == 'maco')
    job = filter_job(model, layer_index, feature_ids, _bound_size(model, size, method), objective, diversity,
                     diversity_weight, method)
    return _render(model, job, iters, method, config, seed=seed, size=size, init=init, batch_size=batch_size,
                   progress=progress, precision=precision, spectrum=spectrum)


def render_objectives(model, objective_list, iters, *, groups=None, seed=None, size=224, method='blog',
                      config=None, step_size=None, normalize=None, init=None, pre_relu=None, batch_size=None,
                      progress=False, precision='auto', spectrum=None):
    """Pictures that maximize objectives (objectives.Objective, all of one form), one each; a render.Result.

    groups: int per objective; pictures of a group push apart when the
    objectives hold a diversity term (default: each alone). The other
    arguments are ascend()'s.
    """
    config = method_config(method, config, step_size=step_size, normalize=normalize, init=init,
                           pre_relu=pre_relu)
    listed = [objective_list] if isinstance(objective_list, objectives.Objective) else list(objective_list)
    for index in sorted({model.layer_index(term.layer) for o in listed if isinstance(o, objectives.Objective)
                         for _, term in o.terms}):
        size = check_size(model, index, size, larger=method == 'maco')
    job = objective_job(model, listed, _bound_size(model, size, method), groups)
    return _render(model, job, iters, method, config, seed=seed, size=size, init=init, batch_size=batch_size,
                   progress=progress, precision=precision, spectrum=spectrum)


def _bound_size(model, size, method):
    """The side the objectives are bound at (where a neuron's centre is): what the network sees."""
    return maco.seen_side(model, size) if method == 'maco' else size


def _render(model, job, iters, method, config, *, seed, size, init, batch_size, progress, precision,
            spectrum=None):
    """A job through render.run with any method, arguments checked here."""
    if spectrum is not None and method != 'maco':
        raise ValueError("spectrum=%r goes with method='maco', the one method whose magnitude is fixed"
                         % (spectrum if isinstance(spectrum, str) else 'an array',))
    # 0 steps give the starts back: a photo given as init, as the method holds it. From noise, 0 steps
    # are a mistake.
    check_int('iters', iters, 1 if init is None else 0)
    seed = check_seed(seed)
    precision_name = resolve_precision(precision)
    layers = objectives.layers_of(job.bounds[0].form)
    crops = config.crops if method == 'maco' else 1
    if batch_size is None:
        batch_size = _auto_batch_size(model, layers, size, method=method, crops=crops)
    batch_size = check_int('batch_size', batch_size, 1)
    # Before anything is allocated: a run that cannot fit says so in one line.
    memory.check(model, layers, size, min(batch_size, len(job.keys)), len(job.keys), method, crops=crops,
                 seen=maco.seen_side(model, size) if method == 'maco' else None)
    for index in layers:
        precision_name = units.unit_precision(model, index, precision_name, auto=precision == 'auto')
    names = ', '.join(model.short_names[i] for i in layers)
    if method == 'maco':
        starts = None if init is None else start_images(job.keys, size, seed, init, model.input_channels)
        magnitude = None
        if starts is None and (spectrum is None or isinstance(spectrum, (str, os.PathLike))):
            magnitude = maco_spectrum.for_picture(size, model.input_channels, folder=spectrum, progress=progress)
        elif starts is None:
            magnitude = maco_spectrum.resize(np.asarray(spectrum, np.float32), size)
        return maco.run(model, job, iters, config=config, seed=seed, size=size, batch_size=batch_size,
                        progress=progress, precision=precision_name, init=starts, magnitude=magnitude)
    if method == 'regularized':
        starts = None if init is None else start_images(job.keys, size, seed, init, model.input_channels)
        return regularized.run(model, job, iters, config=config, seed=seed, size=size, batch_size=batch_size,
                               progress=progress, precision=precision_name, init=starts)
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

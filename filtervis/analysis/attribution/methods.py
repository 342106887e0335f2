"""
Why an image fires an objective: attribution maps, one per image and method,
for any objective (a channel, a neuron, an expression) of any Network.

- gradient: the objective's gradient to the pixels (Simonyan et al. 2013);
- smoothgrad: the gradient averaged over noisy copies of the image (Smilkov et al. 2017);
- integrated-gradients: the gradient averaged along the straight path from a
  baseline to the image, times the image minus the baseline (Sundararajan et al. 2017);
- gradcam, gradcam++: a conv unit's channels weighted by the objective's
  gradient to them (Selvaraju et al. 2017; Chattopadhyay et al. 2018);
- scorecam: the channels weighted by the objective on the image masked by
  each channel (Wang et al. 2020).

gradient_x_input() (the gradient times the image, Shrikumar et al. 2016) is
no method of METHODS, which the figures and benchmarks run: the dataset
examples (patches.py) use it beside Grad-CAM at a filter's own unit.

Each map is reduced over colour channels as its paper does: gradient and
SmoothGrad the largest |gradient|; Integrated Gradients the signed sum, so that
the map sums to f(image) - f(baseline); the CAM methods the weighted sum after
ReLU, bilinearly resized to the image.

    python attribute.py IMAGES... --objective "conv4_3:5" --method gradcam,smoothgrad --out DIR

    from filtervis.analysis import attribution
    found = attribution.attribute(net, images, 'conv4_3:5', ['gradient', 'gradcam'])
    found.maps           # float32 [N, 2, H, W]
    attribution.gradient_x_input(net, images, 'conv4_3:5')   # float32 [N, H, W]

Each method is NumPy around the ops of ops.py, built once per objective
form, precision and CAM unit (net.cached_ops); images, the objective's
numbers and the copies of SmoothGrad and Integrated Gradients are fed,
batch_size inputs per session.run.
"""

import warnings
from dataclasses import dataclass

import numpy as np

from filtervis.analysis.attribution.ops import DEFAULT_BATCH_SIZE, cam_layer, cam_ops, start_run
from filtervis.core.checks import check_int

METHODS = ('gradient', 'smoothgrad', 'integrated-gradients', 'gradcam', 'gradcam++', 'scorecam')
CAM_METHODS = ('gradcam', 'gradcam++', 'scorecam')
BASELINES = ('black', 'blurred', 'noise')
# Integrated Gradients warns where its map's sum misses f(image) - f(baseline) by more than this share.
COMPLETENESS_TOLERANCE = 0.05
# The blurred baseline: a Gaussian of sigma = side / BLUR_DIVISOR pixels (11 px at 224), which leaves
# shapes a few times the receptive field of a mid-level unit and no edges.
BLUR_DIVISOR = 20


@dataclass(frozen=True)
class Config:
    """The methods' knobs.

    samples: SmoothGrad's noisy copies per image; noise: their Gaussian sigma,
    a share of the pixel range 0..255 (0.15: 38 grey levels; the paper finds
    10-20 % best). steps: Integrated Gradients' midpoint steps; baseline: its
    start, 'black', 'blurred' (the image under a Gaussian of side/20 px) or
    'noise' (uniform 0..255, the same for every image). layer: the CAM unit,
    a name or index; None: the last 4-D unit every term of the objective
    depends on. scorecam_channels: Score-CAM masks with this many of the
    unit's channels, those Grad-CAM ranks first on the image (0: all, as the
    paper, gradient-free; each channel costs a forward pass). seed:
    SmoothGrad's and the noise baseline's noise.
    """
    samples: int = 50
    noise: float = 0.15
    steps: int = 64
    baseline: str = 'black'
    layer: object = None
    scorecam_channels: int = 32
    seed: int = 0

    def check(self):
        check_int('samples', self.samples, 1)
        check_int('steps', self.steps, 1)
        check_int('scorecam_channels', self.scorecam_channels, 0)
        check_int('seed', self.seed, 0)
        if not 0 <= self.noise < 10:
            raise ValueError('noise=%r: expected a share of the pixel range, e.g. 0.15' % (self.noise,))
        if self.baseline not in BASELINES:
            raise ValueError('baseline %r: expected one of %s' % (self.baseline, ', '.join(BASELINES)))
        return self


@dataclass
class Attribution:
    """What attribute() found for N images and M methods.

    maps: float32 [N, M, H, W], at the size the network saw.
    values: float32 [N], the objective on each image.
    layer: the CAM unit's name, or None when no CAM method ran.
    baseline_values: float32 [N], the objective on Integrated Gradients' baseline (None without it).
    completeness: float32 [N], |sum of the map - (values - baseline_values)|, Integrated
      Gradients' error (None without it); warn where it is over COMPLETENESS_TOLERANCE of the change.
    """
    maps: np.ndarray
    methods: tuple
    values: np.ndarray
    layer: str = None
    baseline_values: np.ndarray = None
    completeness: np.ndarray = None
    precision: str = 'float32'


# ---------------------------------------------------------------------------
# The methods: each takes a Run, images float32 [B, H, W, C] 0..255 and a dict the
# methods share for this batch, and returns maps float32 [B, H, W]

def gradient(run, images, shared):
    """Saliency: the largest |d objective / d pixel| over colour channels."""
    grads = run.mean_gradient(images, 1, lambda i, k: images[i])
    return np.abs(grads).max(axis=3).astype(np.float32)


def smoothgrad(run, images, shared):
    """The gradient averaged over run.config.samples copies with Gaussian noise, then the largest |.| over
    colour channels. Copy k has the same noise on every image (seeded by config.seed and k), so a map does
    not depend on the images beside it."""
    sigma = run.config.noise * 255.0

    def noisy(i, k):
        if k not in run.noise:
            run.noise[k] = np.random.default_rng([run.config.seed, k]).normal(
                0.0, sigma, images.shape[1:]).astype(np.float32)
        return images[i] + run.noise[k]
    grads = run.mean_gradient(images, run.config.samples, noisy)
    return np.abs(grads).max(axis=3).astype(np.float32)


def baselines(images, name, seed=0):
    """float32 [B, H, W, C], 0..255: Integrated Gradients' start for each image, 'black', 'blurred' or 'noise'."""
    if name == 'black':
        return np.zeros_like(images)
    if name == 'blurred':
        return blur(images, images.shape[1] / BLUR_DIVISOR)
    noise = np.random.default_rng([seed, 1]).uniform(0, 255, images.shape[1:]).astype(np.float32)
    return np.broadcast_to(noise, images.shape).copy()


def blur(images, sigma):
    """images [B, H, W, C] under a separable Gaussian of sigma pixels, edges mirrored."""
    radius = max(1, int(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    out = np.asarray(images, np.float64)
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode='symmetric')
        side = out.shape[axis]
        out = sum(w * np.take(padded, np.arange(t, t + side), axis=axis) for t, w in enumerate(taps))
    return out.astype(np.float32)


def integrated_gradients(run, images, shared):
    """(image - baseline) x the gradient averaged at the midpoints of config.steps equal steps from the
    baseline to the image, summed over colour channels: the map sums to about f(image) - f(baseline).

    Stores the baseline's objective and the error of that sum in `shared`.
    """
    starts = baselines(images, run.config.baseline, run.config.seed)
    steps = run.config.steps
    grads = run.mean_gradient(images, steps,
                              lambda i, k: starts[i] + (k + 0.5) / steps * (images[i] - starts[i]))
    maps = ((images - starts) * grads).sum(axis=3)
    shared['baseline_values'] = run.values(len(images), lambda i: starts[i])
    change = shared['values'] - shared['baseline_values']
    shared['completeness'] = np.abs(maps.sum(axis=(1, 2)) - change).astype(np.float32)
    return maps.astype(np.float32)


def upsample(maps, side):
    """float32 [B, side, side]: maps [B, h, w] resized bilinearly, pixel centres aligned (as TensorFlow 2's
    tf.image.resize), edges held."""
    maps = np.asarray(maps, np.float32)

    def weights(count):
        position = np.clip((np.arange(side) + 0.5) * count / side - 0.5, 0, count - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, count - 1)
        return low, high, (position - low).astype(np.float32)
    low, high, share = weights(maps.shape[1])
    rows = maps[:, low] * (1 - share)[None, :, None] + maps[:, high] * share[None, :, None]
    low, high, share = weights(maps.shape[2])
    return rows[:, :, low] * (1 - share) + rows[:, :, high] * share


def _cam_values(run, images, shared):
    """(unit float32 [B, h, w, C], gradient to it [B, h, w, C]) at the CAM unit, fetched once per batch."""
    if 'cam' not in shared:
        ops = cam_ops(run.net, run.bound.form, run.cam_index, run.precision)
        unit, grads = [], []
        for _, (unit_values, unit_grads) in run.chunks(ops.objective, [ops.unit_t, ops.gradient_t], len(images),
                                                       lambda i: images[i]):
            unit.append(unit_values)
            grads.append(unit_grads)
        shared['cam'] = np.concatenate(unit), np.concatenate(grads)
    return shared['cam']


def gradcam(run, images, shared):
    """ReLU of the unit's channels weighted by the mean gradient to each, resized to the image."""
    unit, grads = _cam_values(run, images, shared)
    weights = grads.mean(axis=(1, 2))                                                     # [B, C]
    return upsample(np.maximum(np.einsum('bhwc,bc->bhw', unit, weights), 0), images.shape[1])


def gradcam_plus_plus(run, images, shared):
    """Grad-CAM++: each position's positive gradient weighted by the closed form of the paper (which takes
    the objective as the log of a score: higher derivatives are powers of the gradient)."""
    unit, grads = _cam_values(run, images, shared)
    squared, cubed = grads ** 2, grads ** 3
    denominator = 2 * squared + unit.sum(axis=(1, 2), keepdims=True) * cubed
    alpha = np.where(denominator != 0, squared / np.where(denominator != 0, denominator, 1), 0)
    weights = (alpha * np.maximum(grads, 0)).sum(axis=(1, 2))                             # [B, C]
    return upsample(np.maximum(np.einsum('bhwc,bc->bhw', unit, weights), 0), images.shape[1])


def scorecam(run, images, shared):
    """Score-CAM: channel k of the unit, resized to the image and scaled to 0..1, masks the image; its
    weight is the objective on the masked image minus the objective on a black image.

    config.scorecam_channels = 0 masks with every channel (the paper; one
    forward pass each). A cap K masks with at most the K channels that
    Grad-CAM ranks first on the image, those whose mean gradient x mean
    activation is positive: a channel the objective does not read (the
    background's, often the most active) would otherwise take a weight
    from what its mask leaves of the image.
    """
    unit, grads = _cam_values(run, images, shared)
    side, channels = images.shape[1], unit.shape[3]
    if run.config.scorecam_channels == 0:
        pairs = [(i, k) for i in range(len(images)) for k in range(channels)]
    else:
        contribution = unit.mean(axis=(1, 2)) * grads.mean(axis=(1, 2))                   # [B, C]
        ranked = np.argsort(-contribution, axis=1, kind='stable')[:, :run.config.scorecam_channels]
        pairs = [(i, int(k)) for i in range(len(images)) for k in ranked[i] if contribution[i, k] > 0]
        if run.bar is not None:
            run.bar.update(ranked.size - len(pairs))   # the passes passes() counted for channels left out
    maps = np.zeros((len(images),) + unit.shape[1:3], np.float32)
    if not pairs:
        return upsample(maps, side)
    masks = upsample(np.stack([unit[i, :, :, k] for i, k in pairs]), side)
    low = masks.min(axis=(1, 2), keepdims=True)
    span = masks.max(axis=(1, 2), keepdims=True) - low
    masks = np.where(span > 0, (masks - low) / np.where(span > 0, span, 1), 0)
    if run.bar is not None:
        run.bar.total += 1   # the black image, once per batch
    black = run.values(1, lambda _: np.zeros(images.shape[1:], np.float32))[0]
    scores = run.values(len(pairs), lambda j: images[pairs[j][0]] * masks[j][:, :, None]) - black
    for (i, k), score in zip(pairs, scores):
        maps[i] += score * unit[i, :, :, k]
    return upsample(np.maximum(maps, 0), side)


FUNCTIONS = {'gradient': gradient, 'smoothgrad': smoothgrad, 'integrated-gradients': integrated_gradients,
             'gradcam': gradcam, 'gradcam++': gradcam_plus_plus, 'scorecam': scorecam}


def parse_methods(text):
    """['gradcam', 'smoothgrad'] from 'gradcam,smoothgrad' (or a sequence); 'all' for every method."""
    names = list(METHODS) if text == 'all' else [m.strip() for m in (text.split(',') if isinstance(text, str)
                                                                     else text)]
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        raise ValueError('method %r: expected one or more of %s, comma-separated, or all'
                         % (', '.join(unknown) if unknown else text, ', '.join(METHODS)))
    return list(dict.fromkeys(names))


def passes(methods, config, channels):
    """Inputs each image sends through the network for `methods` (for a progress bar)."""
    per = {'gradient': 1, 'smoothgrad': config.samples, 'integrated-gradients': config.steps + 1,
           'scorecam': min(config.scorecam_channels or channels, channels)}
    return 1 + sum(per.get(m, 0) for m in methods) + (1 if set(methods) & set(CAM_METHODS) else 0)


def attribute(net, images, objective, methods=('gradient',), config=None, *, precision='auto',
              batch_size=DEFAULT_BATCH_SIZE, progress=False):
    """Attribution maps of `objective` on each image for each method; returns an Attribution.

    images: float32 [N, S, S, C], 0..255 (C the network's input channels).
    objective: an objectives.Objective or an expression ('conv4_3:5',
      'conv3_2:0 - 0.5 * conv4_1:7@3,4'): the same for every image.
    methods: names of METHODS, or a comma-separated string.
    config: Config (default Config()). precision: 'auto', 'float32' or
      'bfloat16', for the network's convolutions (precision.py); the maps
      are float32. batch_size: inputs per session.run (images, noisy copies,
      steps of the path, masked images). progress: a tqdm bar of the inputs.
    Integrated Gradients warns (RuntimeWarning) for each image whose map
    misses f(image) - f(baseline) by more than COMPLETENESS_TOLERANCE of it.
    """
    config = (config or Config()).check()
    methods = parse_methods(methods)
    images, run = start_run(net, images, objective, precision=precision, batch_size=batch_size, config=config)
    batch_size, precision_name = run.batch_size, run.precision
    cam_index = run.cam_index = cam_layer(net, run.bound, config.layer) if set(methods) & set(CAM_METHODS) else None
    count, side = len(images), images.shape[1]
    maps = np.zeros((count, len(methods), side, side), np.float32)
    values = np.zeros(count, np.float32)
    extra = {}
    if progress:
        from tqdm import tqdm
        channels = net.layer_channels[cam_index] if cam_index is not None else 0
        run.bar = tqdm(total=count * passes(methods, config, channels), unit='input', desc='attribution')
    try:
        for start in range(0, count, batch_size):
            batch = images[start:start + batch_size]
            shared = {'values': run.values(len(batch), lambda i: batch[i])}
            values[start:start + len(batch)] = shared['values']
            for position, method in enumerate(methods):
                maps[start:start + len(batch), position] = FUNCTIONS[method](run, batch, shared)
            for key in ('baseline_values', 'completeness'):
                if key in shared:
                    extra.setdefault(key, []).append(shared[key])
    finally:
        if run.bar is not None:
            run.bar.close()
    found = Attribution(maps, tuple(methods), values, None if cam_index is None else net.short_names[cam_index],
                        precision=precision_name, **{key: np.concatenate(v) for key, v in extra.items()})
    if found.completeness is not None:
        change = np.abs(values - found.baseline_values)
        over = np.flatnonzero(found.completeness > COMPLETENESS_TOLERANCE * change)
        if len(over):
            worst = over[np.argmax(found.completeness[over] / np.maximum(change[over], 1e-30))]
            warnings.warn('integrated-gradients: on %d of %d images the map misses f(image) - f(baseline) by '
                          'more than %d %% (worst: image %d, off by %.3g of %.3g); more steps bring it closer'
                          % (len(over), count, round(100 * COMPLETENESS_TOLERANCE), worst,
                             found.completeness[worst], values[worst] - found.baseline_values[worst]),
                          RuntimeWarning, stacklevel=2)
    return found


def gradient_x_input(net, images, objective, *, precision='auto', batch_size=DEFAULT_BATCH_SIZE):
    """float32 [N, H, W]: the objective's gradient to the pixels times the pixels, summed over colour
    channels with its sign (Shrikumar et al. 2016): Integrated Gradients from black in one step.

    images: float32 [N, S, S, C], 0..255; objective: an objectives.Objective or an expression, the same
    for every image; precision and batch_size as attribute(). Uses the gradient op attribute() builds
    (once per objective form and precision), so repeated calls add nothing to the graph.
    """
    images, run = start_run(net, images, objective, precision=precision, batch_size=batch_size)
    grads = run.mean_gradient(images, 1, lambda i, k: images[i])
    return (images * grads).sum(axis=3).astype(np.float32)

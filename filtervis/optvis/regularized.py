"""
A regularized way to render what a VGG16 filter responds to, beside the post's
plain gradient ascent (blog.py, method 'blog').

The post moves every pixel on its own. Where every ReLU on the path to the
filter is off, the gradient is exactly zero and the start noise stays (grey
areas); elsewhere the filter is happy with pixel-level noise. Following Olah,
Mordvintsev & Schubert, "Feature Visualization" (Distill, 2017), the picture
here is made of four parts:

- param: the image is held as Fourier coefficients, each frequency scaled by
  1 / frequency**decay_power so that smooth patterns are cheap and pixel noise
  is expensive; colours are mixed by the square root of the ImageNet colour
  covariance, and a sigmoid keeps pixels inside 0..255.
- transform: each step the network sees the picture padded, jittered, scaled,
  rotated and jittered again, at random, so only patterns that survive small
  moves raise the objective.
- objective: units.channel_objective, the mean of the filter over its
  feature map, before the ReLU by default: a start on which the filter is off
  still has a gradient.
- render: Adam on the Fourier coefficients.

All of it is one TensorFlow graph, built once per (model, layer, config, size):
a batch of filters moves in one session.run per step, and only filter ids,
seeds, the step counter and start spectra are fed.

    python visualize.py --method regularized --layer conv3_2 --filters 0-5 --iters 200
    python benchmarks/methods.py          # against the post's method on the MRI weights

    from filtervis.optvis import regularized
    result = regularized.render(model, 5, [0, 1, 2], 200, seed=0)   # result.images: [3, 224, 224, 3]
    result = regularized.render(model, 5, [0], 200, config=regularized.Config(rotation_degrees=0))
"""

import math
import numbers
from dataclasses import dataclass

import numpy as np


from filtervis.core import units

from filtervis.core import checks
from filtervis.optvis import objectives
from filtervis.util import quiet
# The one render loop (render.py); this module's own render() is the method's public entry point.
from filtervis.optvis import render as loop
from filtervis.core.precision import resolve_precision

tf = quiet.import_tensorflow()

# Square root of the ImageNet RGB colour covariance (U * sqrt(S) of its
# eigendecomposition), as published with Lucid. Rows are R, G, B; column k is
# the k-th decorrelated colour component.
COLOR_CORRELATION_SQRT = np.array([[0.26, 0.09, 0.02],
                                   [0.27, 0.00, -0.05],
                                   [0.27, -0.09, 0.03]], np.float32)
# Overall gain of the picture before the sigmoid, the value Lucid uses. Adam
# moves each coefficient by about learning_rate per step whatever its gradient;
# with this gain and the default learning rate, the first steps change a
# 224x224 picture by about 2 grey levels per pixel on average (at most ~17).
SPECTRUM_GAIN = 0.25
# The value of the padding around the picture, 0..1: grey.
PAD_VALUE = 0.5


def color_mix():
    """float32 [3, 3]: COLOR_CORRELATION_SQRT scaled so that no colour component is amplified (largest column
    norm 1); a picture is decorrelated @ color_mix().T."""
    return COLOR_CORRELATION_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SQRT, axis=0))


@dataclass(frozen=True)
class Config:
    """The knobs of the regularized method; the defaults are those of benchmarks/methods.py.

    learning_rate     Adam step size on the Fourier coefficients, > 0 (Lucid: 0.05)
    decay_power       coefficients scaled by 1 / frequency**decay_power, 0..4;
                      0 is a plain pixel basis, 1 the 1/f spectrum of photographs
                      (Lucid's choice). 1.5 measured best on the MRI weights
                      (README, Methods: benchmarks/methods.py)
    decorrelate       mix colours by the square root of the ImageNet colour covariance
    pad               pixels of grey added on each side before the transforms, >= 0
    jitter            first random shift, 0..jitter pixels in y and x, >= 0
    scale_range       (low, high): uniform random zoom about the centre, 0.5 <= low <= high <= 2
                      (a list is accepted and stored as a tuple)
    rotation_degrees  uniform random rotation in [-rotation_degrees, rotation_degrees], 0..180
    final_jitter      second random shift, after scale and rotation, >= 0
    pre_relu          maximize the filter before its ReLU (no dead starts)
    init_std          std of the random start coefficients, 0..1 (0.01: a nearly grey start)
    adam_beta1, adam_beta2   Adam's decay rates, 0 <= beta < 1
    adam_epsilon      Adam's guard against division by zero, > 0
    """
    learning_rate: float = 0.05
    decay_power: float = 1.5
    decorrelate: bool = True
    pad: int = 12
    jitter: int = 8
    scale_range: tuple = (0.95, 1.05)
    rotation_degrees: float = 5.0
    final_jitter: int = 4
    pre_relu: bool = True
    init_std: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8

    def __post_init__(self):
        _check_real('learning_rate', self.learning_rate, 0, math.inf, 'a number > 0 (Lucid uses 0.05)',
                    low_open=True)
        _check_real('decay_power', self.decay_power, 0, 4, 'a number in 0..4 (1: the 1/f spectrum)')
        for name in ('decorrelate', 'pre_relu'):
            if not isinstance(getattr(self, name), bool):
                raise ValueError('Config.%s=%r: expected True or False' % (name, getattr(self, name)))
        for name in ('pad', 'jitter', 'final_jitter'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError('Config.%s=%r: expected a whole number of pixels >= 0' % (name, value))
        scale_range = self.scale_range
        if (not isinstance(scale_range, (tuple, list)) or len(scale_range) != 2
                or not all(_is_real(s) for s in scale_range)
                or not 0.5 <= scale_range[0] <= scale_range[1] <= 2):
            raise ValueError('Config.scale_range=%r: expected (low, high) with 0.5 <= low <= high <= 2, '
                             'e.g. (0.95, 1.05)' % (scale_range,))
        # Frozen: the hashable tuple keys the graph cache.
        object.__setattr__(self, 'scale_range', (float(scale_range[0]), float(scale_range[1])))
        _check_real('rotation_degrees', self.rotation_degrees, 0, 180, 'a number of degrees in 0..180')
        _check_real('init_std', self.init_std, 0, 1, 'a number in 0..1 (0.01: a nearly grey start)')
        _check_real('adam_beta1', self.adam_beta1, 0, 1, 'a number with 0 <= beta1 < 1 (0.9)', high_open=True)
        _check_real('adam_beta2', self.adam_beta2, 0, 1, 'a number with 0 <= beta2 < 1 (0.999)', high_open=True)
        _check_real('adam_epsilon', self.adam_epsilon, 0, math.inf, 'a number > 0 (1e-8)', low_open=True)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_real(name, value, low, high, expected, low_open=False, high_open=False):
    ok = _is_real(value) and (value > low if low_open else value >= low) and \
        (value < high if high_open else value <= high)
    if not ok:
        raise ValueError('Config.%s=%r: expected %s' % (name, value, expected))


# ---------------------------------------------------------------------------
# Param: from Fourier coefficients to a picture

def spectrum_shape(size, channels=3):
    """Shape of one picture's coefficients: (2 for real and imaginary, channels, size, size // 2 + 1)."""
    return (2, channels, size, size // 2 + 1)


def frequency_weights(size, decay_power):
    """float32 [size, size // 2 + 1]: 1 / frequency**decay_power for the coefficients of rfft2d.

    Frequencies are in cycles per pixel; the constant term gets the weight of
    the lowest non-zero frequency, 1 / size, instead of infinity.
    """
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    frequency = np.maximum(np.sqrt(fx * fx + fy * fy), 1.0 / size)
    return (frequency ** -float(decay_power)).astype(np.float32)


def spectrum_to_image(spectrum_t, size, config):
    """Pictures float32 [B, size, size, C] in 0..1 from coefficients float32 [B, *spectrum_shape(size, C)].

    Colours are decorrelated (config.decorrelate) for C = 3 only: the ImageNet
    colour covariance means nothing to a greyscale picture, whose one channel
    is the plain Fourier basis.
    """
    weights = frequency_weights(size, config.decay_power)
    coefficients_t = tf.complex(spectrum_t[:, 0] * weights, spectrum_t[:, 1] * weights)   # [B, 3, S, S/2+1]
    # irfft2d divides by size**2; multiplying by size makes the transform unitary,
    # so a coefficient's weight is directly its share of the picture's contrast.
    planes_t = tf.signal.irfft2d(coefficients_t, fft_length=[size, size]) * (size * SPECTRUM_GAIN)
    image_t = tf.transpose(planes_t, [0, 2, 3, 1])                                         # [B, S, S, C]
    if config.decorrelate and int(spectrum_t.shape[2]) == 3:
        image_t = tf.einsum('bhwk,ck->bhwc', image_t, tf.constant(color_mix()))
    return tf.sigmoid(image_t)


def spectrum_of_image(image, size, config):
    """The coefficients, float32 spectrum_shape(size, C), whose picture is `image` float32 [size, size, C],
    0..255, within a fraction of a grey level: spectrum_to_image run backwards (sigmoid, colours, basis).

    Pixels at 0 or 255 are taken as 0.1 from the end: the sigmoid reaches neither.
    """
    image = np.asarray(image, np.float64)
    channels = image.shape[-1]
    values = np.clip(image / 255.0, 0.1 / 255, 1 - 0.1 / 255)
    logits = np.log(values / (1 - values))                                            # [S, S, C]
    if config.decorrelate and channels == 3:
        logits = logits @ np.linalg.inv(color_mix().astype(np.float64)).T             # undoes image @ mix.T
    planes = np.transpose(logits, (2, 0, 1)) / (size * SPECTRUM_GAIN)               # [C, S, S]
    coefficients = np.fft.rfft2(planes) / frequency_weights(size, config.decay_power)
    return np.stack([coefficients.real, coefficients.imag]).astype(np.float32)


def start_spectrum(seed, feature_id, size, config, channels=3):
    """One picture's start coefficients, float32 spectrum_shape(size, channels), from (seed, feature_id) only.

    feature_id: a filter id or a tuple of ints (render.Job.keys)."""
    rng = np.random.default_rng([seed, *feature_id] if isinstance(feature_id, tuple) else [seed, feature_id])
    return rng.normal(0.0, config.init_std, spectrum_shape(size, channels)).astype(np.float32)


# ---------------------------------------------------------------------------
# Transform: what the network sees

def transformed_size(size, config):
    """Side of the picture the network sees: size + 2 pad - jitter - final_jitter."""
    return size + 2 * config.pad - config.jitter - config.final_jitter


def random_transform(image_t, seed_t, size, config):
    """Pad, jitter, scale, rotate and jitter again a batch image_t [B, size, size, C], values 0..1.

    seed_t: int64 [2]; the same seed gives the same transform, shared by every
    image of the batch. Returns [B, out, out, C] with out = transformed_size().
    The four moves are one affine map, applied by one bilinear sampling whose
    gradient (a gather's) is exact.
    """
    pad, jitter, final_jitter = config.pad, config.jitter, config.final_jitter
    side = size + 2 * pad                        # after padding
    inner = side - jitter                        # after the first jitter
    out = inner - final_jitter                   # after the second jitter
    padded_t = tf.pad(image_t, [[0, 0], [pad, pad], [pad, pad], [0, 0]], constant_values=PAD_VALUE)

    uniform_t = tf.random.stateless_uniform([6], seed=seed_t)                             # [0, 1)
    shift_t = tf.floor(uniform_t[0:2] * (jitter + 1))                                     # (y, x)
    low, high = config.scale_range
    scale_t = low + uniform_t[2] * (high - low)
    angle_t = (2.0 * uniform_t[3] - 1.0) * math.radians(config.rotation_degrees)
    final_shift_t = tf.floor(uniform_t[4:6] * (final_jitter + 1))

    # For each output pixel, where it comes from in the padded picture: undo
    # the second shift, then the rotation and zoom about the centre of the
    # jittered crop, then the first shift.
    centre = (inner - 1) / 2.0
    grid_y, grid_x = np.meshgrid(np.arange(out, dtype=np.float32), np.arange(out, dtype=np.float32),
                                 indexing='ij')
    y_t = grid_y.ravel() + final_shift_t[0] - centre                                       # [out*out]
    x_t = grid_x.ravel() + final_shift_t[1] - centre
    cos_t, sin_t = tf.cos(angle_t) / scale_t, tf.sin(angle_t) / scale_t
    source_y_t = cos_t * y_t - sin_t * x_t + centre + shift_t[0]
    source_x_t = sin_t * y_t + cos_t * x_t + centre + shift_t[1]
    channels = int(image_t.shape[-1])
    return tf.reshape(bilinear(padded_t, source_y_t, source_x_t, side), [-1, out, out, channels])


def _centre_crop(image_t, side, out):
    """The middle out x out pixels of a batch image_t [B, side, side, C] (side >= out)."""
    begin = (side - out) // 2
    return image_t[:, begin:begin + out, begin:begin + out, :]


def bilinear(image_t, y_t, x_t, side):
    """image_t [B, side, side, C] sampled at points (y_t, x_t) [P]: [B, P, C].

    Points outside are clamped to the border, which is padding.
    """
    flat_t = tf.reshape(image_t, [-1, side * side, int(image_t.shape[-1])])
    y0_t, x0_t = tf.floor(y_t), tf.floor(x_t)
    wy_t, wx_t = (y_t - y0_t)[:, None], (x_t - x0_t)[:, None]                              # [P, 1]

    def at(yy_t, xx_t):
        yy_t = tf.clip_by_value(tf.cast(yy_t, tf.int32), 0, side - 1)
        xx_t = tf.clip_by_value(tf.cast(xx_t, tf.int32), 0, side - 1)
        return tf.gather(flat_t, yy_t * side + xx_t, axis=1)                               # [B, P, C]

    top_t = at(y0_t, x0_t) * (1 - wx_t) + at(y0_t, x0_t + 1) * wx_t
    bottom_t = at(y0_t + 1, x0_t) * (1 - wx_t) + at(y0_t + 1, x0_t + 1) * wx_t
    return top_t * (1 - wy_t) + bottom_t * wy_t


# ---------------------------------------------------------------------------
# The network on a generated picture

def network_copy(model, layer_indices, images_t):
    """Import the network's ops up to the units at `layer_indices` once more, reading images_t.

    Returns the import prefix (e.g. 'regularized_conv3_2/network/') for
    units.channel_objective. The copy's constants (weights, preprocessing)
    become placeholders mapped to the original's tensors, so the weights are
    held once however many copies exist.
    """
    targets = [t.op.name for i in layer_indices for t in (model.layer_tensors[i], model.pre_tensors[i])]
    graph_def = _sub_graph(model.graph.as_graph_def(), targets)
    input_map = {model.input.name: images_t}
    for node in graph_def.node:
        if node.op == 'Const':
            dtype = node.attr['dtype'].type
            shape = node.attr['value'].tensor.tensor_shape
            node.op = 'Placeholder'
            node.ClearField('attr')
            node.attr['dtype'].type = dtype
            node.attr['shape'].shape.CopyFrom(shape)
            input_map[node.name + ':0'] = model.graph.get_tensor_by_name(node.name + ':0')
    unit_op = tf.import_graph_def(graph_def, input_map=input_map, return_elements=targets, name='network')[0]
    return unit_op.name[:-len(targets[0])]


def _sub_graph(graph_def, targets):
    """The nodes of graph_def that the nodes named `targets` depend on, in their original order (a GraphDef)."""
    nodes = {node.name: node for node in graph_def.node}
    needed, pending = set(), list(targets)
    while pending:
        name = pending.pop()
        if name not in needed:
            needed.add(name)
            # Inputs read 'name', 'name:1' or '^name' (a control input).
            pending.extend(i.lstrip('^').split(':')[0] for i in nodes[name].input)
    sub = tf.GraphDef()
    sub.versions.CopyFrom(graph_def.versions)
    sub.node.extend(node for node in graph_def.node if node.name in needed)
    return sub


@dataclass
class RenderOps:
    """The graph of one (objective form, config, size), built once per network."""
    objective: object             # objectives.ObjectiveOps: the objectives' placeholders
    start_t: tf.Tensor            # float32 [B, *spectrum_shape(size, C)], placeholder: start coefficients
    seed_t: tf.Tensor             # int64 [], placeholder
    step_t: tf.Tensor             # int64 [], placeholder: Adam's step, 1, 2, ...; seeds the transform
    start_op: tf.Operation        # sets the coefficients to start_t and Adam's moments to zero
    step_op: tf.Operation         # one Adam step up the objective
    objective_t: tf.Tensor        # float32 [B], the objective of the transformed pictures, before the step
    grad_max_t: tf.Tensor         # float32 [B], max |gradient| over each picture's coefficients
    image_t: tf.Tensor            # float32 [B, size, size, C], the current pictures, 0..255


def render_ops(model, form, config, size, precision='float32'):
    """The RenderOps of (form, config, size, precision) in model.graph, built on the first call.

    form: an objectives form, e.g. (('channel', 5),).
    precision: 'float32' or 'bfloat16' (resolved), the precision of the
    network's convolutions after the first layer (units.channel_maps).
    The Fourier basis, colours, sigmoid, transforms and Adam stay float32 in
    both, each for the reason written beside it.
    """
    def build():
        shape = spectrum_shape(size, model.input_channels)
        layers = objectives.layers_of(form)
        names = '_'.join(model.scope(i) for i in layers)
        with tf.name_scope('regularized_%s%s' % (names, '' if precision == 'float32' else '_' + precision)):
            start_t = tf.placeholder(tf.float32, (None,) + shape, name='start')
            seed_t = tf.placeholder(tf.int64, [], name='seed')
            step_t = tf.placeholder(tf.int64, [], name='step')

            # The batch size changes between calls, so the variables have no fixed
            # first dimension; start_op gives them their shape. collections=[]
            # keeps them away from anyone's global_variables_initializer().
            def variable(name):
                return tf.Variable(tf.zeros((0,) + shape), shape=tf.TensorShape((None,) + shape), name=name,
                                   trainable=False, use_resource=True, collections=[])
            spectrum_var, mean_var, square_var = variable('spectrum'), variable('adam_m'), variable('adam_v')
            start_op = tf.group(spectrum_var.assign(start_t), mean_var.assign(tf.zeros_like(start_t)),
                                square_var.assign(tf.zeros_like(start_t)), name='start_op')

            # One read of the coefficients per step: the objective, the gradient
            # and the update all see the values from before the update.
            spectrum_t = spectrum_var.read_value()
            # float32 up to the network, also under bfloat16. The inverse FFT has
            # no bfloat16 kernel and sums every coefficient into each pixel; the
            # colour mix and sigmoid give the picture, where bfloat16 would hold
            # only about 1 grey level in 255, coarser than most of Adam's steps;
            # and the transform's sampling positions would snap to whole
            # pixels, which turns the rotation and zoom into jumps.
            image01_t = spectrum_to_image(spectrum_t, size, config)                       # [B, S, S, C]
            seen_t = random_transform(image01_t, tf.stack([seed_t, step_t]), size, config) * 255.0
            if model.input_size is not None:
                # A network of one input size sees the middle of the moved
                # picture: the transform's extra pixels are mostly its padding.
                seen_t = _centre_crop(seen_t, transformed_size(size, config), model.input_size)
            prefix = network_copy(model, layers, seen_t)
            ops = objectives.build(model, form, config.pre_relu, prefix, precision, input_t=seen_t)
            objective_t = ops.value_t
            # Pictures are independent but for diversity, whose penalty is each
            # picture's own: the gradient of the sum is each picture's own gradient.
            grad_t, = tf.gradients(tf.reduce_sum(objective_t), spectrum_t)
            grad_max_t = tf.reduce_max(tf.abs(grad_t), axis=[1, 2, 3, 4])

            # Adam stays float32: its second moment grows by (1 - beta2) = 0.001
            # of a squared gradient per step, far below bfloat16's resolution of
            # 1/256 of the moment, so in bfloat16 it would stop moving; and the
            # coefficients, like the blog method's image, add up small steps.
            beta1, beta2 = config.adam_beta1, config.adam_beta2
            step_float_t = tf.cast(step_t, tf.float32)
            mean_t = beta1 * mean_var.read_value() + (1 - beta1) * grad_t
            square_t = beta2 * square_var.read_value() + (1 - beta2) * tf.square(grad_t)
            # Adam's bias correction folded into the rate; + for ascent.
            rate_t = config.learning_rate * tf.sqrt(1 - beta2 ** step_float_t) / (1 - beta1 ** step_float_t)
            update_t = rate_t * mean_t / (tf.sqrt(square_t) + config.adam_epsilon)
            step_op = tf.group(mean_var.assign(mean_t), square_var.assign(square_t),
                               spectrum_var.assign(spectrum_t + update_t), name='step_op')
            picture_t = image01_t * 255.0
        return RenderOps(ops, start_t, seed_t, step_t, start_op, step_op, objective_t, grad_max_t, picture_t)
    return model.cached_ops(('regularized', form, config, size, precision), build)


# ---------------------------------------------------------------------------
# Render: the method for render.run

def check_config(config):
    """config, or Config() for None; ValueError for anything else."""
    if config is None:
        return Config()
    if not isinstance(config, Config):
        raise ValueError('config=%r: expected a regularized.Config or None' % (config,))
    return config


class RegularizedMethod:
    """This method for render.run: the pictures live in the graph's variables, Adam moves them."""

    def __init__(self, model, job, config, seed, size, precision_name, init=None):
        self.ops = render_ops(model, objectives.check_form(job.bounds), config, size, precision_name)
        self.job, self.config, self.seed, self.init = job, config, seed, init
        self.size, self.channels, self.precision = size, model.input_channels, precision_name
        self.dead_hint = '' if config.pre_relu else ' Try Config(pre_relu=True).'

    def start(self, sess, chunk):
        if self.init is None:
            starts = np.stack([start_spectrum(self.seed, key, self.size, self.config, self.channels)
                               for key in self.job.keys[chunk]])
        else:
            starts = np.stack([spectrum_of_image(image, self.size, self.config) for image in self.init[chunk]])
        sess.run(self.ops.start_op, {self.ops.start_t: starts})
        self.feed = objectives.feed(self.ops.objective, self.job.bounds[chunk], self.job.groups[chunk])
        self.feed[self.ops.seed_t] = self.seed

    def step(self, sess, step):
        self.feed[self.ops.step_t] = step + 1
        _, objective, grad_max = sess.run([self.ops.step_op, self.ops.objective_t, self.ops.grad_max_t], self.feed)
        return objective, grad_max

    def images(self, sess):
        return sess.run(self.ops.image_t)


def render(model, layer_id, feature_ids, iters, *, config=None, seed=None, size=224, batch_size=1,
           progress=False, precision='auto'):
    """Regularized pictures of several filters of one layer; returns a render.Result.

    layer_id: index into model.layer_names or a name such as 'conv3_2'.
    feature_ids: filter indices of that layer; repeats allowed. They go through
      in batches of batch_size, one session.run per step.
    config: a Config, or None for Config().
    seed: int >= 0; picture i depends only on (seed, feature_ids[i]), alone or
      in any batch. None draws a seed from numpy's global generator, so
      np.random.seed works as in the post.
    precision: 'auto' (bfloat16 where the CPU does it natively, else float32),
      'float32' or 'bfloat16': the network's convolutions after the first layer.
    Other objectives than the channel: ascent.ascend(..., method='regularized').

    Result.images: float32 [N, size, size, C], 0..255 (C: the network's input channels)
    Result.objectives: float32 [iters, N], the objective (pre-ReLU when
      config.pre_relu) of the transformed picture before each step
    Result.dead: bool [N], True where the gradient was exactly zero at every step
    Result.precision: 'float32' or 'bfloat16', what `precision` resolved to
    """
    layer_index = model.layer_index(layer_id)
    size = checks.check_size(model, layer_index, size)
    feature_ids = checks.check_feature_ids(model, layer_index, feature_ids)
    job = loop.Job([objectives.bind(model, objectives.channel(layer_index, f), size) for f in feature_ids],
                   list(feature_ids), list(range(len(feature_ids))), list(feature_ids),
                   '%s filter(s)' % model.short_names[layer_index])
    precision_name = units.unit_precision(model, layer_index, resolve_precision(precision),
                                            auto=precision == 'auto')
    return run(model, job, checks.check_int('iters', iters, 1), config=check_config(config),
               seed=checks.check_seed(seed), size=size, batch_size=checks.check_int('batch_size', batch_size, 1),
               progress=progress, precision=precision_name)


def run(model, job, iters, *, config, seed, size, batch_size, progress, precision='float32', init=None):
    """render() for arguments already checked: a render.Job.

    ascent.ascend(..., method='regularized') calls this after its own checks.
    precision: 'float32' or 'bfloat16', already resolved (units.unit_precision).
    init: None, or the start pictures float32 [N, size, size, C], 0..255, one per picture of the job.
    """
    if seed is None:
        seed = int(np.random.randint(0, 2 ** 31 - 1))
    layers = objectives.layers_of(objectives.check_form(job.bounds))
    min_size = max(model.layer_min_sizes[i] for i in layers)
    seen = model.input_size or transformed_size(size, config)
    if seen < min_size:
        raise ValueError('size=%d is too small for jitter=%d and final_jitter=%d with pad=%d: the network would '
                         'see %d pixels and %s needs at least %d; lower the jitters or raise the size'
                         % (size, config.jitter, config.final_jitter, config.pad, seen,
                            ', '.join(model.short_names[i] for i in layers), min_size))
    method = RegularizedMethod(model, job, config, seed, size, precision, init)
    return loop.run(model, job, iters, method, batch_size=batch_size, progress=progress,
                    desc='%s regularized' % ', '.join(model.short_names[i] for i in layers))

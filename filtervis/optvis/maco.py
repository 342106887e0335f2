"""
Phase-only pictures (MaCo): what a unit of a deep modern network responds to,
with the statistics of a photograph.

The regularized method (regularized.py) lets every Fourier coefficient grow;
on deep networks such as EfficientNet the pictures then fill up with
high-frequency texture and saturated colour. Following Fel et al.,
"Unlocking Feature Visualization for Deep Network with MAgnitude Constrained
Optimization" (NeurIPS 2023), this method holds the picture's Fourier
**magnitude** fixed to the mean spectrum of natural photographs
(spectrum.py) and optimizes only the **phase**:

- param: picture = sigmoid(recorrelate(contrast * standardize(irfft2(M * e^(i * phase))))) * 255,
  per colour channel of the decorrelated space; see picture_ops() for how the
  range is kept;
- transform: each step the network sees `crops` random square crops of the
  picture (centres around the middle, sides that shrink over the steps),
  resized to its input side, with Gaussian and uniform noise; so a picture
  can be larger than the network's input (512 px for a 224 px network);
- objective: any objectives form (objectives.py), averaged over the crops;
- render: NAdam on the phase (the paper's optimizer), one session.run per
  step for a batch of pictures and all their crops.

The mean of |d objective / d picture| over the steps is each picture's
importance map (`Result.importance`, [N, size, size], 0..1), drawn as its
transparency by visualize.py --transparency.

With start pictures (feature accentuation, Hamblin et al. 2024), the phase
and magnitude are the photo's own and nothing is standardized, so step 0 is
the photo; the ascent then brings out the feature inside it.

    python visualize.py --model M.onnx --preprocess tf --layer _fc --filters 1,130 --method maco --size 512
    python visualize.py --model M.onnx --preprocess tf --start photo.jpg --method maco --layer L --filters 3

    from filtervis.optvis import ascent, maco
    result = ascent.ascend(net, '_fc', [1, 130], 256, method='maco', size=512)   # .images [2, 512, 512, 3]
    result.importance                                                            # [2, 512, 512], 0..1
    result = ascent.ascend(net, '_fc', [1], 256, method='maco', config=maco.Config(crops=16))
"""

import math
import numbers
from dataclasses import dataclass

import numpy as np

from filtervis.optvis import objectives, regularized, spectrum
from filtervis.optvis import render as loop
from filtervis.util import quiet

tf = quiet.import_tensorflow()

# The command lines' step count for this method (docs/maco.md: the measurement that chose it).
DEFAULT_STEPS = 128
# The side the network sees when it takes any size: the ImageNet networks' own.
DEFAULT_SEEN_SIDE = 224
# Crop centres are drawn around the picture's middle with this spread (a share of its side), and each
# crop's side around the step's mean side with this one: the paper's values.
CENTRE_STD = 0.15
CROP_SIZE_STD = 0.05
# No crop is smaller than this share of the picture's side (the paper's floor).
MIN_CROP_SCALE = 0.05
# A pixel at 0 or 255 is read as this far inside the range: the sigmoid reaches neither end.
PHOTO_EPSILON = 0.1 / 255
OPTIMIZERS = ('nadam', 'adam')


@dataclass(frozen=True)
class Config:
    """The knobs of the phase-only method; the defaults and the measurement that chose each are in
    docs/maco.md (benchmarks/maco.py).

    learning_rate  step size of the optimizer on the phase, in radians of a standardized phase, > 0
    photo_learning_rate  the same for a photo's own phase (feature accentuation), which is not
                   standardized: a radian there moves the photo's edges, so steps are smaller, > 0
    optimizer      'nadam' (the paper's) or 'adam'
    crops          random crops the network sees of each picture per step, >= 1
    crop_scale     (start, end): the mean crop side, a share of the picture's side in (0, 1], moving
                   linearly from start at the first step to end at the last
    noise          std of the Gaussian noise added to each crop, in grey levels (0..255), >= 0; a uniform
                   noise of the same width is added too
    contrast       gain on the standardized picture before the colour mix and the sigmoid, > 0 (the paper:
                   1); it sets how much of 0..255 the picture spans, and photos (feature accentuation)
                   ignore it
    pre_relu       maximize the unit before its activation (no dead starts)
    adam_beta1, adam_beta2, adam_epsilon   the optimizer's decay rates and guard
    """
    learning_rate: float = 1.0
    photo_learning_rate: float = 0.05
    optimizer: str = 'nadam'
    crops: int = 8
    crop_scale: tuple = (0.9, 0.5)
    noise: float = 10.0
    contrast: float = 1.5
    pre_relu: bool = True
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8

    def __post_init__(self):
        if not _is_real(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError('maco.Config.learning_rate=%r: expected a number > 0 (1.0, the paper\'s)'
                             % (self.learning_rate,))
        if not _is_real(self.photo_learning_rate) or self.photo_learning_rate <= 0:
            raise ValueError('maco.Config.photo_learning_rate=%r: expected a number > 0 (0.05)'
                             % (self.photo_learning_rate,))
        if self.optimizer not in OPTIMIZERS:
            raise ValueError('maco.Config.optimizer=%r: expected one of %s' % (self.optimizer, ', '.join(OPTIMIZERS)))
        if isinstance(self.crops, bool) or not isinstance(self.crops, numbers.Integral) or self.crops < 1:
            raise ValueError('crops=%r: expected a whole number of crops >= 1 (--crops N)' % (self.crops,))
        scale = self.crop_scale
        if (not isinstance(scale, (tuple, list)) or len(scale) != 2 or not all(_is_real(s) for s in scale)
                or not all(0 < s <= 1 for s in scale)):
            raise ValueError('crop_scale=%r: expected START,END, each a share of the picture\'s side in (0, 1], '
                             'e.g. 0.9,0.5 (--crop-scale)' % (scale,))
        # Frozen and hashable: the tuple keys the graph cache.
        object.__setattr__(self, 'crop_scale', (float(scale[0]), float(scale[1])))
        object.__setattr__(self, 'crops', int(self.crops))
        if not _is_real(self.noise) or self.noise < 0:
            raise ValueError('maco.Config.noise=%r: expected grey levels >= 0 (10)' % (self.noise,))
        if not _is_real(self.contrast) or self.contrast <= 0:
            raise ValueError('maco.Config.contrast=%r: expected a gain > 0 (1, the paper\'s)' % (self.contrast,))
        if not isinstance(self.pre_relu, bool):
            raise ValueError('maco.Config.pre_relu=%r: expected True or False' % (self.pre_relu,))
        for name in ('adam_beta1', 'adam_beta2'):
            value = getattr(self, name)
            if not _is_real(value) or not 0 <= value < 1:
                raise ValueError('maco.Config.%s=%r: expected 0 <= beta < 1' % (name, value))
        if not _is_real(self.adam_epsilon) or self.adam_epsilon <= 0:
            raise ValueError('maco.Config.adam_epsilon=%r: expected a number > 0' % (self.adam_epsilon,))


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_config(config):
    """config, or Config() for None; ValueError for anything else."""
    if config is None:
        return Config()
    if not isinstance(config, Config):
        raise ValueError('config=%r: expected a maco.Config or None' % (config,))
    return config


def seen_side(model, size):
    """The side of what the network sees: its fixed input side, else DEFAULT_SEEN_SIDE (or the picture's
    side where that is smaller)."""
    return model.input_size or min(DEFAULT_SEEN_SIDE, size)


# ---------------------------------------------------------------------------
# Param: from a phase to a picture

def hermitian_columns(size):
    """bool [size // 2 + 1]: the columns of an rfft2 whose coefficients must be Hermitian along the rows
    (X[-k, j] = conj X[k, j]) for irfft2 to be their inverse: column 0, and size / 2 for an even size."""
    columns = np.zeros(size // 2 + 1, bool)
    columns[0] = True
    if size % 2 == 0:
        columns[-1] = True
    return columns


def mirror_rows(size):
    """int [size]: the row of each row's conjugate frequency, (-k) mod size."""
    return (-np.arange(size)) % size


def odd_frequencies(size):
    """bool [size, size // 2 + 1]: where _hermitian_phase makes the phase odd along the rows: the Hermitian
    columns, but for the constant term (DC), whose phase stays free."""
    mask = np.repeat(hermitian_columns(size)[None, :], size, axis=0)
    mask[0, 0] = False
    return mask


def _hermitian_phase(phase_t, size):
    """phase_t [B, C, S, W] with the Hermitian columns made odd along the rows (phase[-k] = -phase[k]):
    there irfft2 keeps only the Hermitian part, so an arbitrary phase would change the magnitude. The
    self-conjugate frequencies of those columns (rows 0 and S/2) then get phase 0: a real coefficient.
    The constant term keeps its phase: irfft2 reads its real part, M * cos(phase), so the phase of DC
    sets each channel's mean (the picture's colour) within +-M, the one place the magnitude is not kept."""
    mirrored_t = tf.gather(phase_t, mirror_rows(size), axis=2)
    odd_t = 0.5 * (phase_t - mirrored_t)
    return tf.where_v2(tf.constant(odd_frequencies(size)), odd_t, phase_t)


def _standardized(values_t, axes):
    """values_t minus its mean over `axes`, divided by its std there (+ 1e-5), per picture."""
    mean_t, variance_t = tf.nn.moments(values_t, axes=axes, keepdims=True)
    return (values_t - mean_t) / (tf.sqrt(variance_t) + 1e-5)


@dataclass
class PictureOps:
    """The tensors of the parametrization, for a batch of pictures."""
    planes_t: tf.Tensor     # float32 [B, C, S, S], the picture in the decorrelated space, before the range mapping
    picture_t: tf.Tensor    # float32 [B, S, S, C], 0..255


def picture_ops(phase_t, magnitude_t, standardize_t, size, channels, contrast=1.0):
    """The pictures of phases phase_t and magnitudes magnitude_t, float32 [B, C, S, S // 2 + 1] each.

    standardize_t: float32 [B], 1 for a picture made from noise, 0 for a photo (feature accentuation).
    For a picture made from noise, the phase is standardized (zero mean, unit std over the picture), plus
    a fixed offset per frequency (phase_offset), and the inverse transform is standardized too and
    multiplied by `contrast`: the magnitude spectrum then fixes the picture's texture but not its
    contrast, which is always the same. The colours are re-correlated (for C = 3) and a sigmoid maps the
    values into 0..1, then 0..255, as the paper does: the range is kept by the sigmoid, never by
    clipping, so every pixel keeps a gradient; with unit-std planes and the normalized colour mix most
    pixels stay well inside the range, which is why the pictures are not blown out. A photo's planes
    skip both standardizations, so that they are exactly the photo's inverted values.
    """
    flag_t = tf.reshape(standardize_t, [-1, 1, 1, 1]) > 0.5
    offset_t = tf.constant(phase_offset(channels, size))
    phase_t = tf.where_v2(flag_t, _standardized(phase_t, [1, 2, 3]) + offset_t, phase_t)
    phase_t = _hermitian_phase(phase_t, size)
    coefficients_t = tf.complex(magnitude_t * tf.cos(phase_t), magnitude_t * tf.sin(phase_t))
    planes_t = tf.signal.irfft2d(coefficients_t, fft_length=[size, size])                 # [B, C, S, S]
    planes_t = tf.where_v2(flag_t, _standardized(planes_t, [1, 2, 3]), planes_t)
    gain_t = tf.where_v2(flag_t, contrast, 1.0)
    image_t = tf.transpose(planes_t * gain_t, [0, 2, 3, 1])                               # [B, S, S, C]
    if channels == 3:
        image_t = tf.einsum('bhwk,ck->bhwc', image_t, tf.constant(regularized.color_mix()))
    return PictureOps(planes_t, tf.sigmoid(image_t) * 255.0)


def natural_magnitude(magnitude):
    """The magnitude float32 [C, S, S // 2 + 1] that pictures from noise use: its Hermitian columns made
    even along the rows (the mean of each frequency and its mirror: a real picture's spectrum has
    |X[-k]| = |X[k]| there, and an interpolated one may miss it by rounding), and its constant term set to
    the root of the channel's energy at every other frequency. A spectrum of mean-removed photos has a
    constant term of about 0, which would fix every picture's mean colour to grey; with this one, the
    phase of DC can move each channel's mean by up to one standard deviation of its pixels, a colour
    cast as strong as photographs have."""
    magnitude = np.array(magnitude, np.float32)
    size = magnitude.shape[1]
    columns = hermitian_columns(size)
    magnitude[:, :, columns] = 0.5 * (magnitude[:, :, columns] + magnitude[:, mirror_rows(size)][:, :, columns])
    # Columns other than the Hermitian ones stand for themselves and their mirror in the full plane.
    counts = np.where(columns, 1.0, 2.0)[None, None, :]
    magnitude[:, 0, 0] = 0
    magnitude[:, 0, 0] = np.sqrt((counts * magnitude.astype(np.float64) ** 2).sum(axis=(1, 2)))
    return magnitude


def phase_offset(channels, size):
    """float32 [C, S, S // 2 + 1]: a fixed phase, uniform in [-pi, pi), added to every standardized phase.

    A standardized phase lies mostly within a radian of 0, so cos(phase) > 0 at most frequencies and they
    all add up at pixel (0, 0): the picture's four corners (one point of the periodic picture) turn white.
    With the offset the phases point every way, whatever the optimizer does to their spread.
    """
    rng = np.random.default_rng([0, channels, size])
    return rng.uniform(-np.pi, np.pi, (channels, size, size // 2 + 1)).astype(np.float32)


def photo_spectrum(photo):
    """(magnitude, phase), float32 [C, S, S // 2 + 1] each, whose picture (picture_ops with standardize 0)
    is `photo` float32 [S, S, C], 0..255, within a fraction of a grey level.

    Pixels at 0 or 255 are read PHOTO_EPSILON from the end, which the sigmoid reaches. Real coefficients
    that are negative (at the self-conjugate frequencies, where the phase is 0) keep their sign in the
    magnitude.
    """
    photo = np.asarray(photo, np.float64)
    size, channels = photo.shape[0], photo.shape[-1]
    values = np.clip(photo / 255.0, PHOTO_EPSILON, 1 - PHOTO_EPSILON)
    logits = np.log(values / (1 - values))                                             # [S, S, C]
    if channels == 3:
        logits = logits @ np.linalg.inv(regularized.color_mix().astype(np.float64)).T     # undoes image @ mix.T
    coefficients = np.fft.rfft2(np.transpose(logits, (2, 0, 1)))                       # [C, S, W]
    magnitude, phase = np.abs(coefficients), np.angle(coefficients)
    columns = hermitian_columns(size)
    rows = mirror_rows(size)
    # Where the mirror of a frequency is itself, the coefficient is real: a signed magnitude, phase 0
    # (the constant term too: its phase is free, but 0 with a signed magnitude is the photo exactly).
    self_conjugate = rows == np.arange(size)
    for column in np.flatnonzero(columns):
        real = coefficients[:, self_conjugate, column].real
        magnitude[:, self_conjugate, column] = real
        phase[:, self_conjugate, column] = 0.0
        # The lower half mirrors the upper exactly, so that the odd-making of _hermitian_phase keeps it.
        upper = np.arange(1, (size + 1) // 2)
        phase[:, rows[upper], column] = -phase[:, upper, column]
    return magnitude.astype(np.float32), phase.astype(np.float32)


def start_phase(seed, key, size, channels):
    """One picture's start phase, float32 [C, S, S // 2 + 1], N(0, 1) from (seed, key) only."""
    rng = np.random.default_rng([seed, *key] if isinstance(key, tuple) else [seed, key])
    return rng.normal(0.0, 1.0, (channels, size, size // 2 + 1)).astype(np.float32)


# ---------------------------------------------------------------------------
# Transform: what the network sees

def crop_boxes_t(seed_t, step_t, iters_t, crops, config):
    """float32 [crops, 4]: (y1, x1, y2, x2) in 0..1 of each crop this step, from (seed, step) only.

    Centres are drawn around the middle (CENTRE_STD), sides around the step's mean, which moves from
    crop_scale[0] to crop_scale[1] over the steps (CROP_SIZE_STD, at least MIN_CROP_SCALE). A centre that
    would put its box beyond the picture's edge is reflected back inside, so that no crop sees beyond the
    edge; clamping it instead would stack many crops' edges on the picture's edge, whose pixels the
    network then pushes to white.
    """
    normal_t = tf.random.stateless_normal([3, crops], seed=tf.stack([3 * seed_t, step_t]))
    start, end = config.crop_scale
    progress_t = tf.cast(step_t - 1, tf.float32) / tf.maximum(tf.cast(iters_t - 1, tf.float32), 1.0)
    mean_t = start + (end - start) * progress_t
    side_t = tf.clip_by_value(mean_t + CROP_SIZE_STD * normal_t[0], MIN_CROP_SCALE, 1.0)
    half_t = side_t / 2
    centre_y_t = _reflected(0.5 + CENTRE_STD * normal_t[1], half_t)
    centre_x_t = _reflected(0.5 + CENTRE_STD * normal_t[2], half_t)
    return tf.stack([centre_y_t - half_t, centre_x_t - half_t, centre_y_t + half_t, centre_x_t + half_t], axis=1)


def _reflected(centre_t, half_t):
    """centre_t folded into [half_t, 1 - half_t] by reflection at its ends (a triangle wave)."""
    span_t = tf.maximum(1 - 2 * half_t, 1e-6)
    folded_t = tf.math.floormod(centre_t - half_t, 2 * span_t)
    return half_t + tf.where_v2(folded_t > span_t, 2 * span_t - folded_t, folded_t)


def crops_t(picture_t, boxes_t, seed_t, step_t, seen, config):
    """float32 [B * K, seen, seen, C]: the K crops of each picture of picture_t [B, S, S, C], 0..255,
    resized to seen x seen (bilinear), picture-major, with noise. The boxes and the noise are the same for
    every picture of the batch (they depend on the seed and the step only).

    The crops are sampled with regularized.bilinear (a gather) rather than tf.image.crop_and_resize: the
    latter's gradient adds the overlapping crops into the picture in an order that depends on the threads,
    so the same seed gave other pictures in another process.
    """
    size = int(picture_t.shape[1])
    crops = config.crops
    # Box corner 0 is the first pixel's centre and 1 the last's, as in crop_and_resize.
    steps_t = tf.constant(np.linspace(0.0, 1.0, seen, dtype=np.float32))                 # [seen]
    y_t = (boxes_t[:, 0:1] + (boxes_t[:, 2:3] - boxes_t[:, 0:1]) * steps_t) * (size - 1)  # [K, seen]
    x_t = (boxes_t[:, 1:2] + (boxes_t[:, 3:4] - boxes_t[:, 1:2]) * steps_t) * (size - 1)
    grid_y_t = tf.reshape(tf.tile(y_t[:, :, None], [1, 1, seen]), [-1])                  # [K * seen * seen]
    grid_x_t = tf.reshape(tf.tile(x_t[:, None, :], [1, seen, 1]), [-1])
    channels = int(picture_t.shape[-1])
    seen_t = tf.reshape(regularized.bilinear(picture_t, grid_y_t, grid_x_t, size), [-1, seen, seen, channels])
    batch_t = tf.shape(picture_t)[0]
    if config.noise:
        channels = int(picture_t.shape[-1])
        # Each random stream has its own seeds (3 * seed + 0, 1, 2), so that no seed's noise is another
        # seed's crop boxes.
        gauss_t = tf.random.stateless_normal([crops, seen, seen, channels], seed=tf.stack([3 * seed_t + 1, step_t]))
        flat_t = tf.random.stateless_uniform([crops, seen, seen, channels], seed=tf.stack([3 * seed_t + 2, step_t]),
                                             minval=-config.noise / 2, maxval=config.noise / 2)
        gauss_t = gauss_t * config.noise
        seen_t = seen_t + tf.tile(gauss_t + flat_t, [batch_t, 1, 1, 1])
    return seen_t


# ---------------------------------------------------------------------------
# The graph: built once per (form, config, size, precision)

@dataclass
class MacoOps:
    objective: object            # objectives.ObjectiveOps, fed per crop (pictures repeated K times)
    start_phase_t: tf.Tensor     # float32 [B, C, S, W], placeholder
    start_magnitude_t: tf.Tensor  # float32 [B, C, S, W], placeholder
    start_standardize_t: tf.Tensor  # float32 [B], placeholder: 1 from noise, 0 from a photo
    seed_t: tf.Tensor            # int64 [], placeholder
    step_t: tf.Tensor            # int64 [], placeholder: 1, 2, ...
    iters_t: tf.Tensor           # int64 [], placeholder: the run's step count (the crop schedule)
    start_op: tf.Operation       # sets phase, magnitude and flag; zeroes the moments and the importance
    step_op: tf.Operation        # one optimizer step up the objective; adds |d objective / d picture|
    objective_t: tf.Tensor       # float32 [B], the mean over the crops, before the step
    picture: PictureOps          # the current pictures
    importance_t: tf.Tensor      # float32 [B, S, S]: the summed |gradient| so far


def maco_ops(model, form, config, size, precision='float32'):
    """The MacoOps of (form, config, size, precision) in model.graph, built on the first call."""
    def build():
        channels = model.input_channels
        shape = (channels, size, size // 2 + 1)
        layers = objectives.layers_of(form)
        names = '_'.join(model.scope(i) for i in layers)
        seen = seen_side(model, size)
        with tf.name_scope('maco_%s%s' % (names, '' if precision == 'float32' else '_' + precision)):
            start_phase_t = tf.placeholder(tf.float32, (None,) + shape, name='start_phase')
            start_magnitude_t = tf.placeholder(tf.float32, (None,) + shape, name='start_magnitude')
            start_standardize_t = tf.placeholder(tf.float32, [None], name='start_standardize')
            seed_t = tf.placeholder(tf.int64, [], name='seed')
            step_t = tf.placeholder(tf.int64, [], name='step')
            iters_t = tf.placeholder(tf.int64, [], name='iters')

            # No fixed batch dimension: start_op gives the variables their shape. collections=[] keeps
            # them away from anyone's global_variables_initializer().
            def variable(name, var_shape):
                return tf.Variable(tf.zeros((0,) + var_shape), shape=tf.TensorShape((None,) + var_shape),
                                   name=name, trainable=False, use_resource=True, collections=[])
            phase_var, mean_var, square_var = (variable(n, shape) for n in ('phase', 'moment1', 'moment2'))
            magnitude_var = variable('magnitude', shape)
            standardize_var = variable('standardize', ())
            importance_var = variable('importance', (size, size))
            start_op = tf.group(phase_var.assign(start_phase_t), magnitude_var.assign(start_magnitude_t),
                                standardize_var.assign(start_standardize_t),
                                mean_var.assign(tf.zeros_like(start_phase_t)),
                                square_var.assign(tf.zeros_like(start_phase_t)),
                                importance_var.assign(tf.zeros(tf.stack([tf.shape(start_phase_t)[0], size, size]))),
                                name='start_op')

            # One read of the phase per step: objective, gradient and update see the values from before.
            phase_t = phase_var.read_value()
            # float32 up to the network also under bfloat16: the inverse FFT has no bfloat16 kernel, and the
            # sigmoid's picture would hold only about 1 grey level in 255, coarser than most steps.
            picture = picture_ops(phase_t, magnitude_var.read_value(), standardize_var.read_value(), size,
                                  channels, config.contrast)
            boxes_t = crop_boxes_t(seed_t, step_t, iters_t, config.crops, config)
            seen_t = crops_t(picture.picture_t, boxes_t, seed_t, step_t, seen, config)
            prefix = regularized.network_copy(model, layers, seen_t)
            ops = objectives.build(model, form, config.pre_relu, prefix, precision, input_t=seen_t)
            # [B * K] -> [B]: a picture's objective is the mean over its crops.
            objective_t = tf.reduce_mean(tf.reshape(ops.value_t, [-1, config.crops]), axis=1)
            # Pictures are independent but for diversity, whose penalty is each picture's own.
            grad_t, picture_grad_t = tf.gradients(tf.reduce_sum(objective_t), [phase_t, picture.picture_t])

            # The optimizer stays float32: its second moment adds 0.001 of a squared gradient per step, far
            # below bfloat16's resolution.
            beta1, beta2 = config.adam_beta1, config.adam_beta2
            step_float_t = tf.cast(step_t, tf.float32)
            mean_t = beta1 * mean_var.read_value() + (1 - beta1) * grad_t
            square_t = beta2 * square_var.read_value() + (1 - beta2) * tf.square(grad_t)
            if config.optimizer == 'nadam':
                # Nesterov's look-ahead: the next step's momentum, plus this gradient's share (Dozat 2016).
                mean_hat_t = (beta1 * mean_t / (1 - beta1 ** (step_float_t + 1))
                              + (1 - beta1) * grad_t / (1 - beta1 ** step_float_t))
            else:
                mean_hat_t = mean_t / (1 - beta1 ** step_float_t)
            square_hat_t = square_t / (1 - beta2 ** step_float_t)
            rate_t = tf.where_v2(tf.reshape(standardize_var.read_value(), [-1, 1, 1, 1]) > 0.5,
                                 config.learning_rate, config.photo_learning_rate)
            update_t = rate_t * mean_hat_t / (tf.sqrt(square_hat_t) + config.adam_epsilon)
            step_op = tf.group(mean_var.assign(mean_t), square_var.assign(square_t),
                               phase_var.assign(phase_t + update_t),
                               importance_var.assign_add(tf.reduce_sum(tf.abs(picture_grad_t), axis=3)),
                               name='step_op')
        return MacoOps(ops, start_phase_t, start_magnitude_t, start_standardize_t, seed_t, step_t, iters_t,
                       start_op, step_op, objective_t, picture, importance_var.read_value())
    return model.cached_ops(('maco', form, config, size, precision), build)


# ---------------------------------------------------------------------------
# Render: the method for render.run

class MacoMethod:
    """This method for render.run: the phases live in the graph's variables, the optimizer moves them.

    magnitude: float32 [C, S, S // 2 + 1], the spectrum of pictures made from noise
    init: None, or the start photos float32 [N, S, S, C], 0..255 (their own spectra)
    """

    def __init__(self, model, job, config, seed, size, precision_name, iters, magnitude, init=None):
        self.ops = maco_ops(model, objectives.check_form(job.bounds), config, size, precision_name)
        self.job, self.config, self.seed, self.iters = job, config, seed, iters
        self.magnitude, self.init = magnitude, init
        self.size, self.channels, self.precision = size, model.input_channels, precision_name
        self.dead_hint = '' if config.pre_relu else ' Try maco.Config(pre_relu=True).'
        self.importance = np.zeros((len(job.keys), size, size), np.float32)
        self.chunk = None

    def start(self, sess, chunk):
        self.chunk = chunk
        count = chunk.stop - chunk.start
        if self.init is None:
            phases = np.stack([start_phase(self.seed, key, self.size, self.channels) for key in self.job.keys[chunk]])
            magnitudes = np.broadcast_to(self.magnitude, phases.shape)
            flags = np.ones(count, np.float32)
        else:
            pairs = [photo_spectrum(photo) for photo in self.init[chunk]]
            magnitudes = np.stack([m for m, _ in pairs])
            phases = np.stack([p for _, p in pairs])
            flags = np.zeros(count, np.float32)
        sess.run(self.ops.start_op, {self.ops.start_phase_t: phases, self.ops.start_magnitude_t: magnitudes,
                                     self.ops.start_standardize_t: flags})
        crops = self.config.crops
        bounds = [bound for bound in self.job.bounds[chunk] for _ in range(crops)]
        # Crop k of each picture of a diversity group is compared with crop k of the others (the crops of
        # a step are the same boxes for every picture), never with the picture's own other crops.
        groups = [group * crops + k for group in self.job.groups[chunk] for k in range(crops)]
        self.feed = objectives.feed(self.ops.objective, bounds, groups)
        self.feed[self.ops.seed_t] = self.seed
        self.feed[self.ops.iters_t] = max(self.iters, 1)

    def step(self, sess, step):
        self.feed[self.ops.step_t] = step + 1
        _, objective = sess.run([self.ops.step_op, self.ops.objective_t], self.feed)
        return objective, None

    def images(self, sess):
        pictures, importance = sess.run([self.ops.picture.picture_t, self.ops.importance_t])
        self.importance[self.chunk] = importance
        return pictures


def scaled_importance(summed):
    """float32 [N, S, S], 0..1: each map of summed |gradient| [N, S, S] over its own maximum (0 stays 0)."""
    peak = summed.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, summed / np.where(peak > 0, peak, 1), 0).astype(np.float32)


def run(model, job, iters, *, config, seed, size, batch_size, progress, precision='float32', init=None,
        magnitude=None):
    """Pictures of a render.Job by this method, arguments already checked (ascent.ascend calls this).

    precision: 'float32' or 'bfloat16', resolved. init: None, or the start photos float32
    [N, size, size, C], 0..255. magnitude: None (the shipped spectrum of natural photos, spectrum.py) or
    float32 [C, size, size // 2 + 1]. Returns a render.Result whose importance is float32 [N, size, size],
    0..1.
    """
    if seed is None:
        seed = int(np.random.randint(0, 2 ** 31 - 1))
    if magnitude is None:
        magnitude = spectrum.for_picture(size, model.input_channels)
    magnitude = np.asarray(magnitude, np.float32)
    expected = (model.input_channels, size, size // 2 + 1)
    if magnitude.shape != expected:
        raise ValueError('magnitude of shape %s: expected %s for %d px pictures' % (magnitude.shape, expected, size))
    if not np.isfinite(magnitude).all() or (magnitude < 0).any() or not magnitude.any():
        raise ValueError('the magnitude spectrum must be finite, >= 0 and not all 0')
    magnitude = natural_magnitude(magnitude)
    layers = objectives.layers_of(objectives.check_form(job.bounds))
    method = MacoMethod(model, job, config, seed, size, precision, iters, magnitude, init)
    result = loop.run(model, job, iters, method, batch_size=batch_size, progress=progress,
                      desc='%s maco' % ', '.join(model.short_names[i] for i in layers))
    result.importance = scaled_importance(method.importance)
    return result

"""
What a picture maximizes: objectives on a network's units, Lucid's word for
them. An objective is a small value object; arithmetic combines them.

- channel(layer, n): the mean of channel n over the unit's map (the post's objective);
- neuron(layer, n, y, x): one unit of channel n, the centre one by default;
- -channel(...): negative, what turns the filter off;
- direction(layer, vector): the unit's activations projected on a vector in its channel space;
- diversity(layer, weight): a penalty, -weight x the mean pairwise cosine similarity of
  the Gram matrices of the layer across a group of pictures (Olah et al., Distill 2017),
  added to another objective as a share of it: channel(...) + diversity(layer, 0.25);
- a + b, a - b, 2.5 * a: sums of them.

Objectives of one *form* (the same kinds of terms on the same units) are built
once as graph ops and fed through placeholders, like the filter ids always
were: a batch of them moves in one session.run, and the graph does not grow.

    from filtervis.optvis import objectives as obj
    o = obj.channel('conv4_3', 12) - 0.5 * obj.channel('conv5_1', 7)
    o = obj.parse('conv3_2:0 - 0.5 * conv4_1:7@3,4')       # LAYER:N a channel, LAYER:N@Y,X a neuron
    ascent.render_objectives(model, [o], 100)            # a render.Result

    python visualize.py --layer conv3_2 --filters 0-3 --objective negative
    python visualize.py --objective "conv3_2:0 - 0.5 * conv4_1:7"
"""

import math
import numbers
import re
from dataclasses import dataclass

import numpy as np


from filtervis.core import units
from filtervis.util import quiet

tf = quiet.import_tensorflow()

KINDS = ('channel', 'neuron', 'direction', 'diversity')
# The diversity term's Gram matrices read every 2nd row and column of the
# unit's map. A Gram matrix is a mean over positions, and a quarter of them
# estimate it well, while the whole map would cost the full conv of the unit's
# layer forward and back: the channel's fast path computes one of its
# channels. Measured on the MRI weights at 224 px (benchmarks/objectives.py):
# the whole map made a diversity picture-step cost 1.38x the channel's at
# conv3_2 and 1.14x at conv4_3. The group's diversity measure
# (measures.diversity) reads the whole map.
GRAM_EVERY = 2


@dataclass(frozen=True)
class Term:
    """One term: kind, the unit (a name or an index, as the user gave it) and what the kind needs."""
    kind: str
    layer: object
    n: int = None
    y: int = None
    x: int = None
    vector: tuple = None

    def text(self):
        if self.kind == 'channel':
            return '%s:%d' % (self.layer, self.n)
        if self.kind == 'neuron':
            return '%s:%d@%s,%s' % (self.layer, self.n, 'c' if self.y is None else self.y,
                                     'c' if self.x is None else self.x)
        if self.kind == 'direction':
            return 'direction(%s, [%d values])' % (self.layer, len(self.vector))
        return 'diversity(%s)' % self.layer


def _number(value, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError('%s: expected a finite number, got %r' % (what, value))
    return float(value)


class Objective:
    """A weighted sum of terms: terms is a tuple of (weight, Term). Build with channel(), neuron(), ..."""

    def __init__(self, terms):
        self.terms = tuple(terms)

    def __add__(self, other):
        if isinstance(other, numbers.Real) and other == 0:   # sum() starts from 0
            return self
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(self.terms + other.terms)

    __radd__ = __add__

    def __neg__(self):
        return Objective((-w, t) for w, t in self.terms)

    def __sub__(self, other):
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)

    def __mul__(self, factor):
        if isinstance(factor, Objective):
            raise ValueError('an objective times an objective is not an objective; multiply by a number')
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real):
            return NotImplemented
        factor = _number(factor, 'factor')
        return Objective((factor * w, t) for w, t in self.terms)

    __rmul__ = __mul__

    def __truediv__(self, divisor):
        divisor = _number(divisor, 'divisor')
        if divisor == 0:
            raise ValueError('an objective divided by 0')
        return self * (1.0 / divisor)

    def __eq__(self, other):
        return isinstance(other, Objective) and self.terms == other.terms

    def __hash__(self):
        return hash(self.terms)

    def __repr__(self):
        return 'Objective(%s)' % str(self)

    def __str__(self):
        parts = []
        for weight, term in self.terms:
            sign = '-' if weight < 0 else '+'
            size = abs(weight)
            parts.append('%s %s%s' % (sign, '' if size == 1 else '%g * ' % size, term.text()))
        text = ' '.join(parts)
        return text[2:] if text.startswith('+ ') else '-' + text[2:]

    @property
    def has_diversity(self):
        return any(t.kind == 'diversity' for _, t in self.terms)


def channel(layer, n):
    """The mean of channel n of the unit `layer` over its map."""
    return Objective([(1.0, Term('channel', layer, _index(n, 'channel')))])


def neuron(layer, n, y=None, x=None):
    """Channel n of the unit `layer` at (y, x) of its map; None: the centre (side // 2) of the map."""
    y = None if y is None else _index(y, 'y')
    x = None if x is None else _index(x, 'x')
    return Objective([(1.0, Term('neuron', layer, _index(n, 'neuron'), y, x))])


def direction(layer, vector):
    """The unit's activations at each position projected on `vector` (one number per channel), averaged."""
    vector = np.asarray(vector, np.float64)
    if vector.ndim != 1 or not np.isfinite(vector).all() or not np.any(vector):
        raise ValueError('direction vector: expected one finite number per channel, not all 0, got shape %s'
                         % (vector.shape,))
    return Objective([(1.0, Term('direction', layer, vector=tuple(float(v) for v in vector)))])


def diversity(layer, weight=0.25):
    """-weight x the mean pairwise cosine similarity of the Gram matrices of `layer` in a group of pictures.

    Added to another objective, it pushes the pictures of a group apart; the
    penalty is then scaled by the size of the rest of the objective, |rest|
    (held fixed for the gradient), so weight is a share: at weight 0.25 a
    picture gives up at most about a quarter of its activation to differ.
    Alone it is -weight x the similarity.
    """
    weight = _number(weight, 'diversity weight')
    if weight < 0:
        raise ValueError('diversity weight %g: expected >= 0 (0 is no push)' % weight)
    return Objective([(-weight, Term('diversity', layer))])


def _index(value, what):
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)) or value < 0:
        raise ValueError('%s %r: expected a whole number >= 0' % (what, value))
    return int(value)


# ---------------------------------------------------------------------------
# An objective on a network: its form (built once) and its numbers (fed)

@dataclass(frozen=True)
class Bound:
    """An objective resolved on a network at a picture size.

    form:   ((kind, layer index), ...): what the graph ops depend on
    values: per term, (weight, n, y, x, vector or None): what is fed
    """
    form: tuple
    values: tuple


def bind(net, objective, size):
    """Resolve `objective` on net for size x size pictures: a Bound; ValueError naming what is out of range."""
    if not isinstance(objective, Objective):
        raise ValueError('objective %r: expected an objectives.Objective (channel(...), neuron(...), ...)'
                         % (objective,))
    if not objective.terms:
        raise ValueError('the objective has no terms')
    form, values = [], []
    for weight, term in objective.terms:
        index = net.layer_index(term.layer)
        name, channels = net.short_names[index], net.layer_channels[index]
        side = net.output_side(index, size)
        n, y, x, vector = term.n, term.y, term.x, None
        if term.kind in ('channel', 'neuron') and not 0 <= n < channels:
            raise ValueError('filter %d is out of range: %s has %d filters, 0..%d' % (n, name, channels, channels - 1))
        if term.kind == 'neuron':
            y, x = side // 2 if y is None else y, side // 2 if x is None else x
            if not (0 <= y < side and 0 <= x < side):
                raise ValueError('position (%d, %d) is outside the map of %s: %dx%d at %d px pictures, rows and '
                                 'columns 0..%d' % (y, x, name, side, side, size, side - 1))
        if term.kind == 'direction':
            if len(term.vector) != channels:
                raise ValueError('direction on %s: %d values for %d channels' % (name, len(term.vector), channels))
            vector = term.vector
        form.append((term.kind, index))
        values.append((weight, n or 0, y or 0, x or 0, vector))
    return Bound(tuple(form), tuple(values))


@dataclass
class ObjectiveOps:
    """Placeholders of one form and the value they give, built once per (form, pre_relu, precision, copy)."""
    slots: list          # per term: dict of placeholders: weight [N]; n, y, x int32 [N]; vector [N, C]
    groups_t: tf.Tensor  # int32 [N]: pictures with the same group id push apart (diversity terms)
    value_t: tf.Tensor   # float32 [N], the objective of each picture
    term_ts: list        # per term, float32 [N], its value before the weight


def build(net, form, pre_relu=False, prefix='', precision_name='float32', input_t=None):
    """The ObjectiveOps of `form` on net's graph (or its copy under `prefix`, reading input_t).

    Call under net.graph (inside net.cached_ops). Channel and neuron terms use
    units.channel_maps (the fast path that computes only the wanted channel
    wherever the unit allows it); direction terms units.direction_maps;
    diversity terms every channel of the unit at every GRAM_EVERY-th row and column (units.sampled_values).
    """
    slots, term_ts = [], []
    groups_t = tf.placeholder(tf.int32, [None], name='groups')
    for kind, index in form:
        slot = {'weight': tf.placeholder(tf.float32, [None], name='weight')}
        if kind in ('channel', 'neuron'):
            slot['n'] = tf.placeholder(tf.int32, [None], name='n')
            maps_t = units.channel_maps(net, index, slot['n'], pre_relu, prefix, precision_name, input_t)
            if kind == 'channel':
                value_t = units.map_mean(maps_t)
            else:
                slot['y'] = tf.placeholder(tf.int32, [None], name='y')
                slot['x'] = tf.placeholder(tf.int32, [None], name='x')
                count = tf.shape(slot['n'])[0]
                where_t = tf.stack([tf.range(count), slot['y'], slot['x'], tf.zeros([count], tf.int32)], axis=1)
                value_t = tf.cast(tf.gather_nd(maps_t, where_t), tf.float32)
        elif kind == 'direction':
            slot['vector'] = tf.placeholder(tf.float32, [None, net.layer_channels[index]], name='vector')
            value_t = units.map_mean(units.direction_maps(net, index, slot['vector'], pre_relu, prefix,
                                                              precision_name, input_t))
        else:
            value_t = _similarity(units.sampled_values(net, index, GRAM_EVERY, prefix, precision_name, input_t),
                                  groups_t)
        slots.append(slot)
        term_ts.append(value_t)
    kinds = [kind for kind, _ in form]
    rest = [slot['weight'] * value_t for slot, value_t, kind in zip(slots, term_ts, kinds) if kind != 'diversity']
    total_t = tf.add_n(rest) if rest else tf.zeros_like(tf.cast(groups_t, tf.float32))
    # A diversity penalty is a share of the rest of the objective (held fixed
    # for the gradient), so one weight suits filters whose activations differ
    # by orders of magnitude: weight w trades at most w of the activation for
    # pictures that differ.
    scale_t = tf.stop_gradient(tf.abs(total_t)) if rest else 1.0
    penalties = [slot['weight'] * scale_t * value_t for slot, value_t, kind in zip(slots, term_ts, kinds)
                 if kind == 'diversity']
    if penalties:
        total_t = total_t + tf.add_n(penalties)
    return ObjectiveOps(slots, groups_t, total_t, term_ts)


def gram_similarity(values_t):
    """float32 [N, N]: cosine similarity of the pictures' Gram matrices of a unit's values [N, h, w, C].

    The Gram matrices are multiplied in the values' dtype, then normalized in
    float32: bfloat16 values (the diversity term of a bfloat16 run) take a
    quarter of float32's time for the matmuls, forward and back (8.6 against
    33 ms, 16 pictures of conv3_2 at 224 px on every 2nd row and column).
    """
    channels = int(values_t.shape[-1])
    flat_t = tf.reshape(values_t, [tf.shape(values_t)[0], -1, channels])                  # [N, hw, C]
    grams_t = tf.matmul(flat_t, flat_t, transpose_a=True)                                  # [N, C, C]
    grams_t = tf.reshape(tf.cast(grams_t, tf.float32), [-1, channels * channels])
    grams_t = tf.math.l2_normalize(grams_t, axis=1, epsilon=1e-12)
    return tf.matmul(grams_t, grams_t, transpose_b=True)


def _similarity(values_t, groups_t):
    """float32 [N]: each picture's mean cosine similarity to the other pictures of its group (0 alone)."""
    similarity_t = gram_similarity(values_t)
    count = tf.shape(groups_t)[0]
    same_t = tf.logical_and(tf.equal(groups_t[:, None], groups_t[None, :]),
                            tf.logical_not(tf.eye(count, dtype=tf.bool)))
    mask_t = tf.cast(same_t, tf.float32)
    return tf.reduce_sum(similarity_t * mask_t, axis=1) / tf.maximum(tf.reduce_sum(mask_t, axis=1), 1.0)


def feed(ops, bounds, groups=None):
    """The feed dict of ObjectiveOps for a batch of Bound objectives of its form, one per picture.

    groups: int [N], the group of each picture (default: each alone).
    """
    feed_dict = {ops.groups_t: np.arange(len(bounds)) if groups is None else np.asarray(groups, np.int32)}
    for position, slot in enumerate(ops.slots):
        values = [bound.values[position] for bound in bounds]
        feed_dict[slot['weight']] = np.array([v[0] for v in values], np.float32)
        for key, column in (('n', 1), ('y', 2), ('x', 3)):
            if key in slot:
                feed_dict[slot[key]] = np.array([v[column] for v in values], np.int32)
        if 'vector' in slot:
            feed_dict[slot['vector']] = np.array([v[4] for v in values], np.float32)
    return feed_dict


def check_form(bounds):
    """The one form of a batch of Bounds; ValueError when they differ (they cannot share graph ops)."""
    forms = {bound.form for bound in bounds}
    if len(forms) != 1:
        raise ValueError('objectives of %d different forms in one batch; render each form on its own' % len(forms))
    return forms.pop()


def layers_of(form):
    """The unit indices a form reads, ascending."""
    return sorted({index for _, index in form})


# ---------------------------------------------------------------------------
# Expressions: "conv3_2:0 - 0.5 * conv4_1:7@3,4", parsed without eval

_TOKEN = re.compile(r'\s*(?:(?P<ref>[A-Za-z_][A-Za-z0-9_./]*:\d+(?:@\d+,\d+)?)'
                    r'|(?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)'
                    r'|(?P<op>[-+*()]))')


def parse(text):
    """An Objective from an expression: LAYER:N is a channel, LAYER:N@Y,X a neuron; numbers, + - * ( ).

    ValueError naming the bad token (and where it is) for anything else.
    """
    tokens, position = [], 0
    text = str(text)
    while position < len(text):
        if text[position:].strip() == '':
            break
        match = _TOKEN.match(text, position)
        if not match:
            bad = text[position:].strip().split()[0]
            raise ValueError('objective %r: bad token %r at character %d; expected LAYER:N, LAYER:N@Y,X, a number, '
                             '+, -, * or parentheses' % (text, bad, position + len(text[position:]) -
                                                          len(text[position:].lstrip()) + 1))
        kind = match.lastgroup
        tokens.append((kind, match.group(kind), match.start(kind)))
        position = match.end()
    if not tokens:
        raise ValueError('objective %r: empty expression' % text)
    parser = _Parser(text, tokens)
    value = parser.sum()
    if parser.position < len(tokens):
        _, token, at = tokens[parser.position]
        raise ValueError('objective %r: unexpected %r at character %d' % (text, token, at + 1))
    if not isinstance(value, Objective):
        raise ValueError('objective %r is a number; name at least one LAYER:N' % text)
    return value


class _Parser:
    """Recursive descent: sum := product (('+' | '-') product)*; product := unary ('*' unary)*;
    unary := '-' unary | '+' unary | atom; atom := number | ref | '(' sum ')'."""

    def __init__(self, text, tokens):
        self.text, self.tokens, self.position = text, tokens, 0

    def peek(self):
        return self.tokens[self.position][1] if self.position < len(self.tokens) else None

    def take(self):
        token = self.tokens[self.position]
        self.position += 1
        return token

    def sum(self):
        value = self.product()
        while self.peek() in ('+', '-'):
            operator = self.take()[1]
            right = self.product()
            value = self._combine(value, right, operator)
        return value

    def product(self):
        value = self.unary()
        while self.peek() == '*':
            self.take()
            right = self.unary()
            if isinstance(value, Objective) and isinstance(right, Objective):
                raise ValueError('objective %r: an objective times an objective; one side of * must be a number'
                                 % self.text)
            value = value * right
        return value

    def unary(self):
        if self.peek() in ('-', '+'):
            operator = self.take()[1]
            value = self.unary()
            return -value if operator == '-' else value
        return self.atom()

    def atom(self):
        if self.position >= len(self.tokens):
            raise ValueError('objective %r ends too early' % self.text)
        kind, token, at = self.take()
        if kind == 'number':
            return float(token)
        if kind == 'ref':
            layer, rest = token.rsplit(':', 1)
            if '@' in rest:
                n, where = rest.split('@')
                y, x = where.split(',')
                return neuron(layer, int(n), int(y), int(x))
            return channel(layer, int(rest))
        if token == '(':
            value = self.sum()
            if self.peek() != ')':
                raise ValueError('objective %r: a ( without its )' % self.text)
            self.take()
            return value
        raise ValueError('objective %r: unexpected %r at character %d' % (self.text, token, at + 1))

    def _combine(self, left, right, operator):
        if isinstance(left, Objective) != isinstance(right, Objective):
            raise ValueError('objective %r: a number added to an objective; a constant changes no picture, '
                             'leave it out' % self.text)
        return left + right if operator == '+' else left - right

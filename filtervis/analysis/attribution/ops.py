"""
The graph side of attribution: an objective bound on a network, the ops
built once per form, precision and CAM unit (the objective and its gradient
to the pixels; a CAM unit's values and the objective's gradient to them), and
Run, which feeds inputs through them batch_size at a time. The methods
(methods.py) and the deletion curves (evaluation.py) are NumPy around these.

    from filtervis.analysis.attribution import ops
    images, run = ops.start_run(net, images, 'conv4_3:5', precision='float32', batch_size=16)
    values = run.values(len(images), lambda i: images[i])      # float32 [N], the objective on each image
"""

from dataclasses import dataclass, field

import numpy as np

from filtervis.core import network, units
from filtervis.core.checks import check_int, check_size
from filtervis.core.precision import resolve_precision
from filtervis.optvis import objectives
from filtervis.util import quiet

tf = quiet.import_tensorflow()

DEFAULT_BATCH_SIZE = 16


# ---------------------------------------------------------------------------
# The objective, its CAM unit and the ops built once

def bind_objective(net, objective, size):
    """objectives.Bound of an Objective or an expression string ('conv4_3:5') for size x size images."""
    if isinstance(objective, str):
        objective = objectives.parse(objective)
    if isinstance(objective, objectives.Objective) and objective.has_diversity:
        raise ValueError('a diversity term compares pictures with each other; an attribution map explains '
                         'one image: leave it out')
    for _, term in getattr(objective, 'terms', ()):
        check_size(net, net.layer_index(term.layer), size)
    return objectives.bind(net, objective, size)


def objective_precision(net, bound, precision):
    """'float32' or 'bfloat16' for precision 'auto', 'float32' or 'bfloat16' on the objective's units
    (float32, with a warning, where bfloat16 cannot run on their path: units.unit_precision)."""
    precision_name = resolve_precision(precision)
    if precision_name == 'bfloat16':
        precision_name = units.unit_precision(net, max(objectives.layers_of(bound.form)), precision_name,
                                              auto=precision == 'auto')
    return precision_name


def _source(tensor):
    """The tensor an Identity chain passes on: a Keras unit is an Identity beside its layer's output."""
    while tensor.op.type == 'Identity':
        tensor = tensor.op.inputs[0]
    return tensor


def _ancestors(tensors):
    """Names of the ops the tensors are computed from, their own included."""
    seen, stack = set(), [t.op for t in tensors]
    while stack:
        op = stack.pop()
        if op.name not in seen:
            seen.add(op.name)
            stack.extend(t.op for t in op.inputs)
    return seen


def cam_layer(net, bound, layer=None):
    """The CAM unit's index: `layer` (a name or index), checked to feed every term of the objective, or
    by default the last 4-D unit that every term depends on. ValueError naming the units that do."""
    terms = objectives.layers_of(bound.form)
    above = [_ancestors([net.layer_tensors[index]]) for index in terms]
    feeding = [index for index, tensor in enumerate(net.layer_tensors)
               if tensor.shape.rank == 4 and all(_source(tensor).op.name in ops for ops in above)]
    names = ', '.join(net.short_names[index] for index in terms)
    if not feeding:
        raise ValueError('no 4-D unit feeds every term of the objective (%s); give a one-unit objective' % names)
    if layer is None:
        return feeding[-1]
    index = net.layer_index(layer)
    if index not in feeding:
        listed = [net.short_names[i] for i in feeding]
        raise ValueError('the objective (%s) does not depend on %s; Grad-CAM needs a unit it depends on: %s'
                         % (names, net.short_names[index],
                            ', '.join(listed) if len(listed) <= 8 else '..., ' + ', '.join(listed[-8:])))
    return index


@dataclass
class GradientOps:
    """The objective of one form on net.input and its gradient to the pixels, float32 [N, H, W, C]."""
    objective: objectives.ObjectiveOps
    gradient_t: tf.Tensor


def gradient_ops(net, form, precision_name):
    """GradientOps of a form in 'float32' or 'bfloat16', built once per network."""
    def build():
        with tf.name_scope('attribution'):
            ops = objectives.build(net, form, precision_name=precision_name)
            gradient_t, = tf.gradients(tf.reduce_sum(ops.value_t), net.input)
        return GradientOps(ops, gradient_t)
    return net.cached_ops(('attribution', form, precision_name), build)


@dataclass
class CamOps:
    """A CAM unit's values, float32 [N, h, w, C], and the objective's gradient to them."""
    objective: objectives.ObjectiveOps
    unit_t: tf.Tensor
    gradient_t: tf.Tensor


def cam_ops(net, form, layer_index, precision_name):
    """CamOps of a form at a unit, built once per network.

    The unit is computed in the chosen precision; the objective is computed
    from it by a float32 copy of the ops between the unit and the
    objective's units (_copy_above). A channel objective's fast path reads
    its conv's input, not the unit, so on the unit itself the gradient to
    the unit would otherwise be missing.
    """
    def build():
        with tf.name_scope('attribution_cam_%s' % net.scope(layer_index)):
            unit_t = tf.cast(units.unit_values(net, layer_index, precision_name=precision_name), tf.float32)
            prefix = _copy_above(net, layer_index, objectives.layers_of(form), unit_t)
            ops = objectives.build(net, form, prefix=prefix, input_t=unit_t)
            gradient_t, = tf.gradients(tf.reduce_sum(ops.value_t), unit_t)
        return CamOps(ops, unit_t, gradient_t)
    return net.cached_ops(('attribution_cam', form, layer_index, precision_name), build)


def _copy_above(net, layer_index, term_indices, unit_t):
    """Import the ops between a unit and the units term_indices once more, the unit read from unit_t.

    The copy's op that makes the unit is an IdentityN of unit_t, which
    units.py does not look through, so objectives built on the copy compute
    terms on that unit from unit_t. Every other input from outside the copy
    (weights, branches that do not pass the unit) is the original tensor,
    so the weights are held once. Returns the import prefix.
    """
    source = _source(net.layer_tensors[layer_index])
    needed = _ancestors([t for i in term_indices for t in (net.layer_tensors[i], net.pre_tensors[i])])
    consumers = {}
    for node in net.graph_def.node:
        for name in node.input:
            consumers.setdefault(name.lstrip('^').split(':')[0], []).append(node.name)
    above, stack = set(), [source.op.name]
    while stack:
        name = stack.pop()
        if name in needed and name not in above:
            above.add(name)
            stack.extend(consumers.get(name, []))
    copy, input_map, placeholders = tf.GraphDef(), {}, {}

    def outside(tensor_name):
        """The copy's placeholder that stands for an original tensor (unit_t for the unit)."""
        if tensor_name not in placeholders:
            placeholder = placeholders[tensor_name] = 'outside_%d' % len(placeholders)
            tensor = net.graph.get_tensor_by_name(tensor_name)
            node = copy.node.add(name=placeholder, op='Placeholder')
            node.attr['dtype'].type = tensor.dtype.as_datatype_enum
            input_map[placeholder + ':0'] = unit_t if tensor_name == source.name else tensor
        return placeholders[tensor_name]

    for node in net.graph_def.node:
        if node.name not in above:
            continue
        new = copy.node.add()
        if node.name == source.op.name:
            new.name, new.op = node.name, 'IdentityN'
            new.input.extend(outside(t.name) for t in source.op.outputs)
            new.attr['T'].list.type.extend(t.dtype.as_datatype_enum for t in source.op.outputs)
            continue
        new.CopyFrom(node)
        new.ClearField('device')
        del new.input[:]
        for name in node.input:
            if name.startswith('^'):
                continue   # a frozen inference graph orders nothing by control inputs
            op_name = name.split(':')[0]
            new.input.append(name if op_name in above else outside(name if ':' in name else name + ':0'))
    unit_op = tf.import_graph_def(copy, input_map=input_map, return_elements=[source.op.name], name='above')[0]
    return unit_op.name[:-len(source.op.name)]


# ---------------------------------------------------------------------------
# Running inputs through, batch_size at a time

@dataclass
class Run:
    """One attribute() call: the network, the bound objective, the methods' Config and how to feed it."""
    net: network.Network
    bound: objectives.Bound
    config: object
    precision: str
    batch_size: int = DEFAULT_BATCH_SIZE
    bar: object = None
    cam_index: int = None
    noise: dict = field(default_factory=dict)

    def gradient_ops(self):
        return gradient_ops(self.net, self.bound.form, self.precision)

    def chunks(self, objective_ops, fetches, count, make_input):
        """(start, fetched values) per batch of the inputs make_input(j), j = 0..count-1 (each [H, W, C])."""
        session = network.session(self.net)
        for start in range(0, count, self.batch_size):
            stop = min(count, start + self.batch_size)
            feed = objectives.feed(objective_ops, [self.bound] * (stop - start))
            feed[self.net.input] = np.stack([make_input(j) for j in range(start, stop)]).astype(np.float32)
            yield start, session.run(fetches, feed)
            if self.bar is not None:
                self.bar.update(stop - start)

    def values(self, count, make_input):
        """float32 [count]: the objective on each input."""
        ops = self.gradient_ops()
        out = np.zeros(count, np.float32)
        for start, values in self.chunks(ops.objective, ops.objective.value_t, count, make_input):
            out[start:start + len(values)] = values
        return out

    def mean_gradient(self, images, copies, make_copy):
        """float64 [N, H, W, C]: each image's gradient averaged over `copies` inputs make_copy(image, k)."""
        ops = self.gradient_ops()
        total = np.zeros(images.shape, np.float64)
        count = len(images) * copies
        for start, gradients in self.chunks(ops.objective, ops.gradient_t, count,
                                            lambda j: make_copy(j // copies, j % copies)):
            for offset, gradient in enumerate(gradients):
                total[(start + offset) // copies] += gradient
        return total / copies


def check_images(net, images):
    """images as float32 [N, S, S, C], 0..255; ValueError naming the shape expected."""
    images = np.asarray(images, np.float32)
    channels = net.input_channels
    if images.ndim != 4 or images.shape[3] != channels or images.shape[1] != images.shape[2] or not len(images):
        raise ValueError('images of shape %s: expected [N, S, S, %d], pixels 0..255' % (images.shape, channels))
    if net.input_size is not None and images.shape[1] != net.input_size:
        raise ValueError('images of %d px: this network takes %d px' % (images.shape[1], net.input_size))
    if not np.isfinite(images).all():
        raise ValueError('images hold NaN or infinite values')
    return images


def start_run(net, images, objective, *, precision, batch_size, config=None):
    """(images checked by check_images, a Run of the objective bound for their size): what every caller
    of the ops (attribute, gradient_x_input, deletion_curves) starts with. ValueError naming a bad image
    array, batch size or objective; precision resolved by objective_precision."""
    images = check_images(net, images)
    batch_size = check_int('batch_size', batch_size, 1)
    bound = bind_objective(net, objective, images.shape[1])
    return images, Run(net, bound, config, objective_precision(net, bound, precision), batch_size)

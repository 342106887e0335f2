"""
How an ONNX tensor lives in the TensorFlow graph: its values, and where each
of its ONNX axes sits. ONNX CNNs are NCHW; the project's graphs are NHWC. A
value here is either a numpy array (anything that does not depend on the
image: weights, shapes, folded shape arithmetic; always in ONNX axis order)
or a Mapped: a TensorFlow tensor plus its `order`, the ONNX axis that each of
its physical axes holds. A 4-D feature map is [N, H, W, C] physically, ONNX
[N, C, H, W]: order (0, 2, 3, 1). An ONNX Transpose only changes the order;
data moves (tf.transpose) only where an op needs another arrangement.

    from filtervis.models.onnx_model import layout
    x = layout.Mapped(images_t, layout.NHWC)        # ONNX [N, C, H, W] held as [N, H, W, C]
    layout.physical_axis(x, 1)                      # 3: ONNX's channel axis
    layout.arranged(x, (0, 1, 2, 3))                # a tf.transpose to ONNX's own order
    a, b, order = layout.aligned([x, bias])         # operands an elementwise op can broadcast

The ops modules (ops_*.py) translate ONNX nodes with these; each gets a Node
(the ONNX node's attributes, opset and the name its TensorFlow op takes).
"""

from dataclasses import dataclass

import numpy as np

from filtervis.util import quiet

tf = quiet.import_tensorflow()   # tensorflow.compat.v1, graph mode

# ONNX [N, C, H, W] held as [N, H, W, C]: what convolutions, pools and the
# project's units read.
NHWC = (0, 2, 3, 1)


class Refused(ValueError):
    """An ONNX node this route cannot translate; the message names the node and what to do."""


@dataclass(frozen=True)
class Mapped:
    """A TensorFlow tensor holding an ONNX tensor whose axes are rearranged.

    t:     the tensor (it depends on the image input)
    order: physical axis i holds ONNX axis order[i]; (0, 2, 3, 1) for a
           feature map, the identity for everything built in ONNX's order
    """
    t: object
    order: tuple

    @property
    def rank(self):
        return len(self.order)


class Node:
    """One ONNX node as the ops see it: attributes, opset, and the name its TensorFlow op takes.

    name:   the name to give the node's last TensorFlow op (a name scope
            ending in '/', so that the op is called exactly after the node)
    label:  the node's ONNX name (or its first output) for messages
    batch:  the batch size that shape arithmetic was folded with (the
            model's own, or 1 for a dynamic batch); a folded dimension of
            this size on axis 0 stands for the run-time batch
    """

    def __init__(self, onnx_node, attrs, opset, name, batch):
        self.op_type = onnx_node.op_type
        self.label = onnx_node.name or (onnx_node.output[0] if onnx_node.output else onnx_node.op_type)
        self.outputs = list(onnx_node.output)
        self.attrs = attrs
        self.opset = opset
        self.name = name
        self.batch = batch

    def attr(self, key, default=None):
        return self.attrs.get(key, default)

    def refuse(self, what, fix='re-export the model without it, or ask for this case to be supported'):
        """A Refused naming this node: 'node NAME (OP): WHAT; FIX'."""
        return Refused('node %r (%s): %s; %s' % (self.label, self.op_type, what, fix))


def rank(value):
    return value.rank if isinstance(value, Mapped) else np.ndim(value)


def identity(rank_):
    return tuple(range(rank_))


def canonical(rank_):
    """The order a freshly made tensor of this rank takes: NHWC for 4-D, ONNX's own order otherwise."""
    return NHWC if rank_ == 4 else identity(rank_)


def physical_axis(value, axis):
    """Where ONNX axis `axis` (negative counts from the end) sits in the tensor."""
    return value.order.index(axis % value.rank)


def onnx_shape(value):
    """The ONNX shape of a value as a list: ints, None for the run-time batch."""
    if not isinstance(value, Mapped):
        return list(np.shape(value))
    physical = value.t.shape.as_list()
    shape = [None] * value.rank
    for position, axis in enumerate(value.order):
        shape[axis] = physical[position]
    return shape


def folded_shape(value, node):
    """The ONNX shape with the run-time batch as node.batch: what a Shape node folds to (list of ints)."""
    shape = onnx_shape(value)
    for axis, size in enumerate(shape):
        if size is None:
            if axis != 0:
                raise node.refuse('axis %d of its input has no fixed size' % axis,
                                  'export the model with a fixed input size')
            shape[axis] = node.batch
    return shape


def arranged(value, order):
    """The value with its physical axes in `order` (ONNX axes): a tensor, or a numpy array for a constant."""
    order = tuple(order)
    if not isinstance(value, Mapped):
        return np.transpose(value, order) if np.ndim(value) > 1 else value
    if value.order == order:
        return value.t
    return tf.transpose(value.t, [value.order.index(axis) for axis in order])


def in_order(value, order):
    """arranged() as a value: a Mapped in `order` (or the constant itself)."""
    return Mapped(arranged(value, order), tuple(order)) if isinstance(value, Mapped) else value


def with_rank(value, rank_):
    """The value with size-1 ONNX axes put in front up to rank_ (as broadcasting lines axes up from the end)."""
    extra = rank_ - rank(value)
    if extra <= 0:
        return value
    if not isinstance(value, Mapped):
        return np.reshape(value, (1,) * extra + np.shape(value))
    physical = value.t.shape.as_list()
    reshaped = tf.reshape(value.t, [1] * extra + [-1 if size is None else size for size in physical])
    return Mapped(reshaped, tuple(range(extra)) + tuple(axis + extra for axis in value.order))


def aligned(values):
    """Operands of a broadcasting elementwise op in one physical layout, and the result's order.

    values: Mapped or numpy (None for a missing optional input is kept).
    Returns ([tensor or numpy array, ...], order): the tensors arranged in the
    order of the first tensor of the highest rank, the constants reshaped and
    transposed to match, float constants cast to the tensors' float type (a
    Where's boolean condition leaves its values alone).
    """
    present = [v for v in values if v is not None]
    rank_ = max(rank(v) for v in present)
    mapped = [v for v in present if isinstance(v, Mapped)]
    full = [v for v in mapped if v.rank == rank_]
    order = full[0].order if full else canonical(rank_)
    floats = [v.t.dtype.as_numpy_dtype for v in mapped if v.t.dtype.is_floating]
    dtype = floats[0] if floats else None
    result = []
    for value in values:
        if value is None:
            result.append(None)
            continue
        value = arranged(with_rank(value, rank_), order)
        if dtype is not None and not isinstance(value, tf.Tensor) and np.asarray(value).dtype.kind == 'f':
            value = np.asarray(value, dtype=dtype)
        result.append(value)
    return result, order


def renumbered(order, dropped):
    """The order of a tensor after the ONNX axes `dropped` are removed, its data left where it is."""
    kept = [axis for axis in order if axis not in dropped]
    ranks = sorted(kept)
    return tuple(ranks.index(axis) for axis in kept)


def unit_changes(old_shape, new_shape):
    """[(old axis, new axis)] pairing the axes of size other than 1 when a reshape from old_shape to
    new_shape only adds or drops axes of size 1 (None: the batch); None when it moves data.
    """
    old = [(axis, size) for axis, size in enumerate(old_shape) if size != 1]
    new = [(axis, size) for axis, size in enumerate(new_shape) if size != 1]
    if len(old) != len(new) or any(a[1] != b[1] for a, b in zip(old, new)):
        return None
    return [(a[0], b[0]) for a, b in zip(old, new)]


def reshaped(value, new_shape, name=None):
    """A Mapped tensor with ONNX shape new_shape (ints, None for the batch), its data moved only if need be.

    A reshape that adds or drops axes of size 1 keeps the data where it is
    and takes the new rank's canonical order (a global-pool result [N, C]
    becomes a [N, 1, 1, C] map without a transpose). A map flattened to
    another rank (Flatten before a classifier's Gemm) is flattened as it
    lies and its columns gathered into ONNX's order, so that no 4-D
    transpose stands between the map and the vector. Any other reshape goes
    through ONNX's own order, and a 4-D result is then arranged NHWC.
    """
    old_shape = onnx_shape(value)
    pairs = unit_changes(old_shape, new_shape)
    target = [-1 if size is None else size for size in new_shape]
    if pairs is not None:
        new_of = dict(pairs)
        kept_in_physical_order = [new_of[axis] for axis in value.order if axis in new_of]
        for order in (canonical(len(new_shape)), identity(len(new_shape))):
            if [axis for axis in order if axis in kept_in_physical_order] == kept_in_physical_order:
                physical = [target[axis] for axis in order]
                return Mapped(tf.reshape(value.t, physical, name=name), order)
    if len(new_shape) != 4 and value.order[0] == 0 and old_shape[0] is None and new_shape[0] is None \
            and None not in old_shape[1:]:
        physical = [old_shape[axis] for axis in value.order[1:]]
        # Column j of ONNX's flat order is column index[j] of the flat map as it lies.
        index = np.arange(int(np.prod(physical))).reshape(physical)
        index = np.transpose(index, np.argsort(value.order[1:])).ravel()
        flat = tf.gather(tf.reshape(value.t, [-1, index.size]), index, axis=1,
                         name=name if len(new_shape) == 2 else None)
        return Mapped(flat if len(new_shape) == 2 else tf.reshape(flat, target, name=name),
                      identity(len(new_shape)))
    flat = tf.reshape(arranged(value, identity(value.rank)), target,
                      name=None if len(new_shape) == 4 else name)
    result = Mapped(flat, identity(len(new_shape)))
    if len(new_shape) != 4:
        return result
    return Mapped(tf.transpose(flat, NHWC, name=name), NHWC)

"""
Which precision the convolutions run in, and the one builder that runs them
in bfloat16: float32 everywhere, or bfloat16 convolutions where the CPU
multiplies bfloat16 in hardware.

The rule: the first layer (it reads the pixels), the reductions, the objective
and the update stay float32; every op after the first layer on the path to a
unit runs in bfloat16 on the same weights. (One exception: a diversity term's
Gram matrices multiply bfloat16 values, summed in float32 by the matmul and
rounded to bfloat16 per entry, then normalized in float32;
objectives.gram_similarity.) `bfloat16_tensors` clones that part
of any frozen graph with its dtype switched, so VGG16, a MobileNetV2 or a
hand-built test graph all go through the same code.

    from filtervis.core import precision
    precision.resolve_precision('auto')                   # 'bfloat16' on a CPU with avx512_bf16, else 'float32'
    x_t, = precision.bfloat16_tensors(graph, images_t, [conv3_1_relu_t])   # bfloat16 copy of the tensor
"""

from filtervis.util import quiet

tf = quiet.import_tensorflow()

PRECISION_CHOICES = ('auto', 'float32', 'bfloat16')
# Where Linux lists the CPU's features; read at call time, so a test can point
# it at a fake file. Elsewhere (macOS, Windows) it is absent: 'auto' is float32.
CPUINFO_PATH = '/proc/cpuinfo'
# Flags of x86 CPUs that multiply bfloat16 in hardware: AVX-512 BF16 (AMD Zen 4
# and later, Intel Cooper Lake) and AMX (Intel Sapphire Rapids and later).
# Without them oneDNN emulates bfloat16, which is slower than float32.
BF16_CPU_FLAGS = ('avx512_bf16', 'amx_bf16')

# Ops that start a new layer: a path to a unit leaves the first layer at the
# second of them.
CONV_OPS = ('Conv2D', 'DepthwiseConv2dNative')
# Ops with bfloat16 CPU kernels and a gradient, whose float inputs and output
# all switch dtype together (attribute T). Anything else on the path keeps the
# whole unit in float32 (BFloat16Unsupported).
BF16_OPS = frozenset((
    'Conv2D', 'DepthwiseConv2dNative', 'BiasAdd', 'Relu', 'Relu6', 'Elu', 'Selu', 'LeakyRelu', 'Sigmoid',
    'Tanh', 'Softplus', 'MaxPool', 'AvgPool', 'Add', 'AddV2', 'AddN', 'Sub', 'Mul', 'RealDiv', 'Maximum',
    'Minimum', 'ConcatV2', 'Pad', 'PadV2', 'MirrorPad', 'Identity', 'Mean', 'Square', 'Rsqrt', 'Neg',
    'SquaredDifference'))


# Ops whose bfloat16 kernels run slower than float32 ones on the CPUs measured
# (benchmarks/networks.py: MobileNetV2's depthwise gradient), so that 'auto'
# keeps a path that holds them in float32.
SLOWER_IN_BFLOAT16 = ('DepthwiseConv2dNative',)


class BFloat16Unsupported(ValueError):
    """The path to a unit holds an op that this builder does not run in bfloat16."""


def cpu_has_bf16():
    """True when CPUINFO_PATH lists a flag of BF16_CPU_FLAGS; False when it does not or cannot be read."""
    try:
        with open(CPUINFO_PATH) as f:
            flags = {flag for line in f if line.startswith('flags') for flag in line.split(':', 1)[1].split()}
    except OSError:
        return False
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve_precision(precision):
    """'float32' or 'bfloat16' for precision 'auto' | 'float32' | 'bfloat16'.

    'auto' is bfloat16 only where the CPU does it natively (cpu_has_bf16()),
    else float32; the speed-ups measured are in the README (Precision).
    """
    if precision not in PRECISION_CHOICES:
        raise ValueError('precision=%r: expected one of %s' % (precision, ', '.join(PRECISION_CHOICES)))
    if precision == 'auto':
        return 'bfloat16' if cpu_has_bf16() else 'float32'
    return precision


def _depends_on(source_op, target_ops):
    """Ops on a path from source_op to any of target_ops (both ends included), in topological order."""
    below, stack = set(), [source_op]
    while stack:
        op = stack.pop()
        if op not in below:
            below.add(op)
            stack.extend(consumer for out in op.outputs for consumer in out.consumers())
    above, stack = set(), list(target_ops)
    while stack:
        op = stack.pop()
        if op not in above and op in below:
            above.add(op)
            stack.extend(t.op for t in op.inputs)
    on_path = below & above
    # Graph order is a topological order for graphs built or imported front to back.
    return [op for op in source_op.graph.get_operations() if op in on_path]


def _conv_depths(path):
    """{op: convolutions on the longest way from the input to op, op included} for the ops of `path`."""
    depths = {}
    for op in path:
        seen = max((depths.get(t.op, 0) for t in op.inputs), default=0)
        depths[op] = seen + (1 if op.type in CONV_OPS else 0)
    return depths


def _first_layer(path):
    """The ops of `path` that see at most one convolution, counting themselves: the first layer.

    They stay float32: in bfloat16 (8 significant bits) a pixel near 128
    would round to a whole grey level, which erases the start noise, and with
    1 or 3 input channels the first layer is a small share of the FLOPs.
    """
    depths = _conv_depths(path)
    return {op for op in path if depths[op] <= 1}


def after_a_conv(input_t, tensor):
    """True when a convolution lies between input_t and tensor: a conv reading it is not the first layer."""
    path = _depends_on(input_t.op, [tensor.op])
    return _conv_depths(path).get(tensor.op, 0) >= 1


def _after_first_layer(input_t, targets_t):
    """The ops after the first layer on the paths from input_t to targets_t, in topological order."""
    path = _depends_on(input_t.op, [t.op for t in targets_t])
    first = _first_layer(path)
    return [op for op in path if op not in first]


def _bfloat16_ops(input_t, targets_t):
    """The ops bfloat16_tensors() clones, in topological order; BFloat16Unsupported naming the first it cannot."""
    clone_ops = _after_first_layer(input_t, targets_t)
    for op in clone_ops:
        if op.type not in BF16_OPS or op.get_attr('T') != tf.float32:
            raise BFloat16Unsupported('%s is a %s op, which this builder does not run in bfloat16' % (op.name, op.type))
    return clone_ops


def bfloat16_problem(input_t, targets_t):
    """None when bfloat16_tensors() can copy the paths to targets_t, else why not (str)."""
    try:
        _bfloat16_ops(input_t, targets_t)
    except BFloat16Unsupported as error:
        return str(error)
    return None


def bfloat16_slower(input_t, targets_t):
    """The first op after the first layer on the paths to targets_t whose bfloat16 kernel is slower than
    float32 (SLOWER_IN_BFLOAT16), or None."""
    return next((op for op in _after_first_layer(input_t, targets_t) if op.type in SLOWER_IN_BFLOAT16), None)


def bfloat16_tensors(graph, input_t, targets_t, copies=None):
    """The tensors targets_t (float32, depending on input_t) as the bfloat16 chain computes them: a list.

    Every op after the first layer on the paths from input_t to targets_t is
    imported once more with its dtype switched to bfloat16; its weights and
    other constant inputs are cast (grappler folds the casts into constants),
    and the first layer's outputs are cast where the copy reads them. A target
    inside the first layer is returned as it is, float32. Gradients flow back through the
    casts, so tf.gradients to the float32 image works unchanged.
    copies: a dict kept by the caller for this graph and input_t, {float32
      tensor name: its bfloat16 copy}; ops copied by an earlier call are read
      from it and not copied again, and this call's copies are added. Without
      it, two objective terms on one path (a channel's fast path and a
      diversity term, or two layers of an expression) would each run their own
      copy of the shared layers, forward and back.
    BFloat16Unsupported (naming the op) when the path holds an op outside
    BF16_OPS; the caller then runs float32.
    Call under graph.as_default(); build once and keep (Network.cached_ops).
    """
    copies = {} if copies is None else copies
    clone_ops = [op for op in _bfloat16_ops(input_t, targets_t)
                 if not all(t.name in copies for t in op.outputs)]
    if clone_ops:
        graph_def = tf.GraphDef()
        input_map, names_of, cloned = {}, {}, {op.name for op in clone_ops}

        def outside(tensor):
            """The name under which the copy reads a tensor from outside it: a copy made before, or a
            float32 tensor cast to bfloat16, or (not float32) the tensor itself."""
            if tensor.name not in names_of:
                name = 'in_%d' % len(names_of)
                source = copies.get(tensor.name)
                if source is None:
                    source = tf.cast(tensor, tf.bfloat16) if tensor.dtype == tf.float32 else tensor
                node = graph_def.node.add(name=name, op='Placeholder')
                node.attr['dtype'].type = source.dtype.as_datatype_enum
                input_map[name + ':0'] = source
                names_of[tensor.name] = name + ':0'
            return names_of[tensor.name]

        for op in clone_ops:
            node = graph_def.node.add()
            node.CopyFrom(op.node_def)
            node.ClearField('device')
            del node.input[:]
            for tensor in op.inputs:
                if tensor.op.name in cloned:
                    node.input.append(tensor.name if tensor.value_index else tensor.op.name)
                else:
                    node.input.append(outside(tensor))
            node.attr['T'].type = tf.bfloat16.as_datatype_enum
        outputs = [t for op in clone_ops for t in op.outputs]
        returned = tf.import_graph_def(graph_def, input_map=input_map, return_elements=[t.name for t in outputs],
                                       name='bfloat16')
        copies.update({t.name: copy for t, copy in zip(outputs, returned)})
    return [copies.get(t.name, t) for t in targets_t]

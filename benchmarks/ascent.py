"""
How fast and how big is the filter ascent? The blog post's loop against
visualize.ascend, timed in one run on one model, image size, layer, filters
and step count, next to the machine's own convolution rate measured in the
same run, so that "fast" means a fraction of what the CPU allows.

    python benchmarks/ascent.py --quick        # 112x112, conv3_2, filters 0-5, 3 steps x 3 repeats: ~1 min
    python benchmarks/ascent.py                # the demo case: 224x224, conv3_2, filters 0-5, 10 steps x 5: ~2 min
    python benchmarks/ascent.py --layer conv1_2,conv3_2,conv5_3 --markdown   # README table, ~6 min
    python benchmarks/ascent.py --steps 150 --repeats 1                      # the full demo, ~4 min
    python benchmarks/ascent.py --batch-sweep 1,3,6,12,24 --steps 3 --repeats 3   # visualize.ascend per batch size
    python benchmarks/ascent.py --memory 1,2,4,8,16 --layer conv1_2,conv3_2,conv5_3  # peak RSS, ~6 min
    python benchmarks/ascent.py --host-profile                                # time outside session.run
    python benchmarks/ascent.py --precision float32,auto --regularized        # float32 against bfloat16 (auto)
    python benchmarks/ascent.py --precision float32,auto --memory 16 --filters all   # whole layer, both

(Run times: --quick's is from the 2-core Intel Xeon with avx512_bf16 and
amx_bf16 that runs these benchmarks now; the others were measured on 2 cores
of an AVX-512 AMD EPYC, an older build machine where a 3x3 conv ran at ~490
GFLOP/s, and are a guide only here. All take about twice as long while
another job holds a core. The model is the real MRI weights in
../shared/models when present, full-size random weights otherwise;
benchmarks/harness.py loads it, describes the machine and takes the times.)

Per-step time is steady, so timings use a few steps and several repeats
(interleaved post, fast, post, fast, ... so that load from other processes
hits both alike) and report medians. Every time is given as wall and as CPU
time (all threads of the process): on a shared machine the wall time swings
with the cores that are free, the CPU time per FLOP stays put. The post's loop sets up afresh for every
filter (new ops, new session, first run); that cost is timed on its own and
spread over --project-steps steps (default 150, the post's count) in the
"@150" rows, next to the plain per-step rates.

FLOPs are counted from the graph's conv shapes: 2*k*k*in*out*h*w per conv
forward, and the same again for its gradient to the input (TF computes no
kernel gradients here: kernels are constants). Every conv before the target
counts with all channels, the target with the channels computed: all of them
in the post's loop (forward and backward), the batch size per image in
visualize.ascend (units.channel_objective gives every image of a batch
all of the batch's channels), one in the minimal count. Bias, ReLU, pooling
and the update are not counted. floor = minimal FLOPs / measured conv rate;
efficiency = floor / measured time.

--precision (default float32,auto) times visualize.ascend once per
precision in each repeat, beside the same post's loop (float32, as
published). The convolution rate is measured in float32 and in bfloat16,
and each precision's floor uses its own rate; 'auto' is bfloat16 where the
CPU has native bfloat16 (precision.resolve_precision), and the rows say which.
--regularized adds the regularized method's ms per image-step in each
precision, timed interleaved as well.
"""

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
import warnings

# harness.py sits beside this file; a test that loads this file by path has not put the folder on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (first: the repository root on sys.path, TensorFlow imported quietly)

import numpy as np  # noqa: E402

import visualize  # noqa: E402
from filtervis.core import checks, units  # noqa: E402
from filtervis.core.precision import PRECISION_CHOICES, cpu_has_bf16, resolve_precision  # noqa: E402
from filtervis.models import vgg16  # noqa: E402
from filtervis.core import memory  # noqa: E402
from filtervis.util import quiet  # noqa: E402

tf = quiet.import_tensorflow()

STEP_SIZE = 2.0          # the post's demo
MEMORY_LIMIT_BYTES = 4 << 30   # the issue: a whole layer at 224x224 stays under this


# ---------------------------------------------------------------------------
# FLOPs

def conv_shapes(model, layer_index, size):
    """(name, side, k, in, out) of every conv layer up to layer_index for size x size images."""
    shapes = []
    for i in range(layer_index + 1):
        _, kernel_t, _, _ = units.conv_parts(model.pre_tensors[i])
        k, _, cin, cout = kernel_t.shape.as_list()
        shapes.append((model.short_names[i], model.output_side(i, size), k, cin, cout))
    return shapes


def step_flops(shapes, target_channels):
    """FLOPs of one image's step: forward + gradient to the input, target with target_channels."""
    total = 0
    for i, (_, side, k, cin, cout) in enumerate(shapes):
        out = target_channels if i == len(shapes) - 1 else cout
        total += 2 * (2 * k * k * cin * out * side * side)
    return total


def fast_flops_per_filter(shapes, count, batch_size):
    """Mean FLOPs per filter-step of visualize.ascend: a chunk of c images computes c channels each."""
    chunks = [min(batch_size, count - start) for start in range(0, count, batch_size)]
    return sum(c * step_flops(shapes, c) for c in chunks) / count


# ---------------------------------------------------------------------------
# The post's loop, as published

def post_cost(model, layer_id, feature_id):
    with model.graph.as_default():
        layer = model.get_layer_tensors([layer_id])[0]
        feature_map = layer[:, :, :, feature_id]
        loss = tf.reduce_mean(feature_map)
        return loss


def post_visual(model, layer_id, feature_id, iters, step_size=0.5, size=224, marks=None):
    """The post's visual() line for line: new ops and a new session per call, float64 image.

    Two changes, neither of them in the loop: `size` stands for its 224, and
    `marks` receives (wall, CPU) times after the setup and after each step.
    The post builds feed_dict once; create_feed_dict gives a view of the
    image, so the in-place update feeds the new pixels every step.
    """
    generate_img = np.random.uniform(size=(size, size, 3)) + 128.0
    with model.graph.as_default():
        loss = post_cost(model, layer_id, feature_id)
        gradient = tf.gradients(loss, model.input)
        feed_dict = model.create_feed_dict(image=generate_img)
        session = tf.Session(graph=model.graph)
        init = tf.global_variables_initializer()
        session.run(init)
        marks.append((time.perf_counter(), time.process_time()))
        for i in range(iters):
            grad_val, loss_val = session.run([gradient, loss], feed_dict=feed_dict)
            grad_val = np.array(grad_val).squeeze()
            lrate = step_size / (grad_val.max() + 1e-8)
            generate_img += lrate * grad_val
            marks.append((time.perf_counter(), time.process_time()))
        return generate_img


def time_post(model_path, layer_index, feature_ids, steps, size):
    """One run of the post's demo on a fresh model (its graph grows per filter, as in a notebook).

    Returns seconds, each as wall and CPU: 'total' of the demo, 'setup' per
    filter (from the call to the end of step 1: ops, session, first run;
    median over filters) and 'step', one later step (median).
    """
    model = vgg16.VGG16(model_path)
    np.random.seed(0)
    setups, steady = [], []
    start = np.array([time.perf_counter(), time.process_time()])
    for feature_id in feature_ids:
        marks = [(time.perf_counter(), time.process_time())]
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')   # grad.max() <= 0 overflows in the post's update
            post_visual(model, layer_index, feature_id, steps, STEP_SIZE, size, marks)
        marks = np.array(marks)                               # [2 + steps, (wall, cpu)]
        setups.append(marks[2] - marks[0])
        steady.extend(np.diff(marks[2:], axis=0))
    total = np.array([time.perf_counter(), time.process_time()]) - start
    return {'total': total, 'setup': np.median(setups, axis=0),
            'step': np.median(steady, axis=0) if steady else np.full(2, np.nan)}


def precision_label(precision):
    """'float32', or 'auto (bfloat16)': what was asked and, when it differs, what ran."""
    resolved = resolve_precision(precision)
    return precision if precision == resolved else '%s (%s)' % (precision, resolved)


def ascend_call(model, layer_index, feature_ids, steps, size, batch_size, precision='float32', method='blog'):
    """One visualize.ascend call with these arguments, as a function of no arguments."""
    options = dict(step_size=STEP_SIZE) if method == 'blog' else {}

    def call():
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')   # dead filters do not change the cost
            visualize.ascend(model, layer_index, feature_ids, steps, seed=0, size=size, batch_size=batch_size,
                             progress=False, precision=precision, method=method, **options)
    return call


def time_fast(*args, **kwargs):
    """(wall, CPU) seconds of one visualize.ascend call; the arguments are ascend_call's."""
    return harness.timed(ascend_call(*args, **kwargs))[:2]


# ---------------------------------------------------------------------------
# Comparing the two

def compare(model_path, fast_model, layer, args, convs):
    """Time both loops on one layer; returns one dict per precision of per-filter-step results (medians).

    Times are (wall, CPU) pairs in ms. CPU time counts the work of all
    threads; on a machine shared with other jobs it stays put while wall
    time swings with the cores that are free, so both are reported. Each
    repeat times the post's loop once and visualize.ascend once per
    precision; convs maps 'float32' and 'bfloat16' to their ConvRate.
    """
    layer_index = fast_model.layer_index(layer)
    feature_ids = checks.parse_filters(args.filters, fast_model.channels(layer_index))
    count, steps, size, n = len(feature_ids), args.steps, args.size, args.project_steps
    batch_size = args.batch_size or visualize.auto_batch_size(fast_model, layer_index, size)
    shapes = conv_shapes(fast_model, layer_index, size)
    minimal = step_flops(shapes, 1)

    # Warm-up: the fast path builds its ops and session once per model and
    # layer; a 1-step call of each loop also pays process-wide first-use costs.
    first_chunk = feature_ids[:batch_size]
    fast_first = {p: np.array(time_fast(fast_model, layer_index, first_chunk, 1, size, batch_size, p))
                  for p in args.precision}
    time_post(model_path, layer_index, feature_ids[:1], 1, size)

    per = count * steps
    runs = {p: [] for p in args.precision}
    for _ in range(args.repeats):
        since = {key: len(conv.forward) for key, conv in convs.items()}
        for conv in convs.values():
            conv.measure(2)
        post = time_post(model_path, layer_index, feature_ids, steps, size)
        fast = {p: np.array(time_fast(fast_model, layer_index, feature_ids, steps, size, batch_size, p))
                for p in args.precision}
        for conv in convs.values():
            conv.measure(2)
        rates = {key: conv.rates(since[key]) for key, conv in convs.items()}
        for p in args.precision:
            own = rates[resolve_precision(p)]
            runs[p].append({'post': 1e3 * post['total'] / per, 'fast': 1e3 * fast[p] / per,
                            'post_step': 1e3 * post['step'], 'post_setup': 1e3 * post['setup'],
                            'rate_forward': own[0], 'rate_both': own[1], 'rate_both_cpu': own[2],
                            'rate32': np.array(rates['float32'])})
    rows = []
    for p in args.precision:
        row = {key: np.median([r[key] for r in runs[p]], axis=0) for key in runs[p][0]}
        # The first call's excess over one ordinary step of its chunk: paid once per model and layer.
        row['fast_setup'] = np.maximum(0.0, 1e3 * fast_first[p] - row['fast'] * len(first_chunk))
        # The demo at --project-steps: the post pays its setup (which includes step 1) per filter.
        row['post_proj'] = (row['post_setup'] + (n - 1) * row['post_step']) / n
        row['fast_proj'] = row['fast'] + row['fast_setup'] / (n * count)
        row['speedup'] = row['post'] / row['fast']
        row['speedup_proj'] = row['post_proj'] / row['fast_proj']
        # Efficiency = floor / measured, with floor = minimal FLOPs / the conv
        # rate of the row's precision, measured around the repeats; the post's
        # loop runs in float32, so its floor is float32's.
        floor = {'forward': minimal / row['rate_forward'] / 1e6, 'both': minimal / row['rate_both'] / 1e6,
                 'cpu': minimal / row['rate_both_cpu'] / 1e6}
        floor32 = minimal / row['rate32'] / 1e6
        row['floor'] = floor
        row['eff'] = {'fast': (floor['forward'] / row['fast'][0], floor['both'] / row['fast'][0],
                               floor['cpu'] / row['fast'][1]),
                      'post': (floor32[0] / row['post_step'][0], floor32[1] / row['post_step'][0],
                               floor32[2] / row['post_step'][1])}
        row.update(layer=fast_model.short_names[layer_index], size=size, filters=count, steps=steps,
                   repeats=args.repeats, batch=min(batch_size, count),
                   precision=precision_label(p),
                   post_gflop=step_flops(shapes, shapes[-1][4]) / 1e9,
                   fast_gflop=fast_flops_per_filter(shapes, count, batch_size) / 1e9, minimal_gflop=minimal / 1e9)
        rows.append(row)
    return rows


def whole_layer_times(model, layer, args, rows):
    """visualize.ascend on every filter of the layer (automatic batch), --whole-layer-steps steps, per precision.

    One call per precision per repeat, interleaved; ms per filter-step (wall, CPU), medians, against the
    post's loop per filter-step @--project-steps from the same run (rows: compare()'s rows for the layer).
    """
    layer_index = model.layer_index(layer)
    feature_ids = list(range(model.channels(layer_index)))
    batch_size = args.batch_size or visualize.auto_batch_size(model, layer_index, args.size)
    steps = args.whole_layer_steps
    times = harness.interleaved({p: ascend_call(model, layer_index, feature_ids, steps, args.size, batch_size, p)
                                 for p in args.precision}, max(1, args.repeats // 3))
    runs = {p: 1e3 * np.array(times[p]) / (len(feature_ids) * steps) for p in args.precision}
    post = rows[0]['post_proj']
    print('\nwhole layer %s: %d filters, batch %d, %d steps x %d repeats, ms per filter-step, wall | CPU; '
          "speedup against the post's loop @%d steps (%.1f | %.1f ms)"
          % (model.short_names[layer_index], len(feature_ids), batch_size, steps, len(runs[args.precision[0]]),
             args.project_steps, post[0], post[1]))
    for p in args.precision:
        wall, cpu = np.median(runs[p], axis=0)
        print('  %-22s %7.1f | %7.1f   %.2fx | %.2fx'
              % (precision_label(p), wall, cpu, post[0] / wall, post[1] / cpu))


def regularized_times(model, layer, args):
    """The regularized method's ms per image-step, (wall, CPU), per precision: interleaved repeats, medians."""
    layer_index = model.layer_index(layer)
    feature_ids = checks.parse_filters(args.filters, model.channels(layer_index))
    batch_size = args.batch_size or len(feature_ids)
    for p in args.precision:   # warm-up: ops, first-use costs
        time_fast(model, layer_index, feature_ids[:batch_size], 1, args.size, batch_size, p, 'regularized')
    runs = harness.interleaved({p: ascend_call(model, layer_index, feature_ids, args.steps, args.size, batch_size, p,
                                               'regularized') for p in args.precision}, args.repeats)
    times = {p: 1e3 * np.array(harness.medians(runs[p])) / (len(feature_ids) * args.steps) for p in args.precision}
    print('\nregularized method, %s, %dx%d, %d filters, batch %d, %d steps x %d repeats (interleaved): '
          'ms per image-step, wall | CPU' % (model.short_names[layer_index], args.size, args.size,
                                             len(feature_ids), batch_size, args.steps, args.repeats))
    first = args.precision[0]
    for p in args.precision:
        print('  %-22s %7.1f | %7.1f   %.2fx | %.2fx against %s'
              % (precision_label(p), times[p][0], times[p][1],
                 times[first][0] / times[p][0], times[first][1] / times[p][1], first))
    return times


def print_row(row, n):
    print('\n%s, %dx%d, %d filters, %d steps x %d repeats (interleaved), ascend batch %d, ascend precision %s'
          % (row['layer'], row['size'], row['size'], row['filters'], row['steps'], row['repeats'], row['batch'],
             row['precision']))
    print('  %-42s %17s %19s' % ('medians over repeats; wall | CPU', "post's loop", 'visualize.ascend'))

    def pair(values, form='%.1f'):
        return (form + ' | ' + form) % tuple(values)

    lines = [
        ('ms/filter/step, as measured', pair(row['post']), pair(row['fast'])),
        ('  one step after the first (post)', pair(row['post_step']), ''),
        ('  setup + step 1, ms (per filter | once)', pair(row['post_setup'], '%.0f'), pair(row['fast_setup'], '%.0f')),
        ('ms/filter/step @%d steps, setup spread' % n, pair(row['post_proj']), pair(row['fast_proj'])),
        ('GFLOP/filter/step counted (minimal %.2f)' % row['minimal_gflop'],
         '%.2f' % row['post_gflop'], '%.2f' % row['fast_gflop']),
        ('GFLOP per s | per CPU-s (post: later steps)', pair(row['post_gflop'] / row['post_step'] * 1e3, '%.0f'),
         pair(row['fast_gflop'] / row['fast'] * 1e3, '%.0f')),
        ('efficiency: conv fwd | fwd+grad | CPU', '%.0f%% | %.0f%% | %.0f%%' % tuple(100 * e for e in row['eff']['post']),
         '%.0f%% | %.0f%% | %.0f%%' % tuple(100 * e for e in row['eff']['fast'])),
    ]
    for name, post, fast in lines:
        print('  %-42s %17s %19s' % (name, post, fast))
    print('  floor = minimal FLOPs / conv rate: %.1f ms at forward %.0f GFLOP/s, %.1f ms at fwd+grad %.0f GFLOP/s, '
          '%.1f CPU-ms at %.0f GFLOP per CPU-s'
          % (row['floor']['forward'], row['rate_forward'], row['floor']['both'], row['rate_both'],
             row['floor']['cpu'], row['rate_both_cpu']))
    print('  speedup, wall | CPU: %.2fx | %.2fx as measured, %.2fx | %.2fx @%d steps'
          % (tuple(row['speedup']) + tuple(row['speedup_proj']) + (n,)))


def print_markdown(rows, n):
    print('\nTimes are ms per filter per step, medians; "CPU" is process time of all threads.\n')
    print('| layer | precision | filters x steps (repeats) | batch | post @%d wall / CPU | ascend wall / CPU '
          '| speedup @%d wall / CPU | GFLOP/step post / ascend / minimal | GFLOP per CPU-s post / ascend '
          '| floor CPU-ms | ascend efficiency fwd / fwd+grad / CPU |' % (n, n))
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        print('| %s @%d | %s | %d x %d (%d) | %d | %.1f / %.1f | %.1f / %.1f | %.2fx / %.2fx | %.2f / %.2f / %.2f '
              '| %.0f / %.0f | %.1f | %.0f%% / %.0f%% / %.0f%% |'
              % ((r['layer'], r['size'], r['precision'], r['filters'], r['steps'], r['repeats'], r['batch'])
                 + tuple(r['post_proj']) + tuple(r['fast']) + tuple(r['speedup_proj'])
                 + (r['post_gflop'], r['fast_gflop'], r['minimal_gflop'],
                    r['post_gflop'] / r['post_step'][1] * 1e3, r['fast_gflop'] / r['fast'][1] * 1e3,
                    r['floor']['cpu']) + tuple(100 * e for e in r['eff']['fast'])))


def batch_sweep(model, layer, args, conv, batch_sizes):
    """visualize.ascend ms/filter/step for each batch size (one full chunk each), interleaved repeats.

    In the first precision of --precision, with conv the ConvRate of that precision.
    """
    precision = args.precision[0]
    layer_index = model.layer_index(layer)
    shapes = conv_shapes(model, layer_index, args.size)
    minimal = step_flops(shapes, 1)
    channels = model.channels(layer_index)
    for b in batch_sizes:   # warm-up: first-use costs of each batch shape
        time_fast(model, layer_index, [i % channels for i in range(b)], 1, args.size, b, precision)
    runs = {b: [] for b in batch_sizes}
    for _ in range(args.repeats):
        for b in batch_sizes:
            since = len(conv.forward)
            conv.measure(1)
            wall, cpu = time_fast(model, layer_index, [i % channels for i in range(b)], args.steps, args.size, b,
                                  precision)
            conv.measure(1)
            forward_rate, both_rate, both_cpu_rate = conv.rates(since)
            ms, cpu_ms = 1e3 * wall / (b * args.steps), 1e3 * cpu / (b * args.steps)
            runs[b].append((ms, cpu_ms, minimal / forward_rate / 1e6 / ms, minimal / both_rate / 1e6 / ms,
                            minimal / both_cpu_rate / 1e6 / cpu_ms))
    print('\nbatch sweep, visualize.ascend (%s) on %s, %dx%d, %d steps x %d repeats (automatic batch size: %d)'
          % (precision, model.short_names[layer_index], args.size, args.size, args.steps, args.repeats,
             visualize.auto_batch_size(model, layer_index, args.size)))
    print('  %6s %15s %11s %14s   %s' % ('batch', 'ms/filter/step', 'CPU ms', 'GFLOP counted',
                                         'efficiency fwd / fwd+grad / CPU (minimal %.2f GFLOP)' % (minimal / 1e9)))
    for b in batch_sizes:
        ms, cpu_ms, forward, both, both_cpu = harness.medians(runs[b])
        print('  %6d %15.1f %11.1f %14.2f   %4.0f%% / %4.0f%% / %4.0f%%'
              % (b, ms, cpu_ms, step_flops(shapes, b) / 1e9, 100 * forward, 100 * both, 100 * both_cpu))


def _profile(function, *args):
    """(wall seconds, seconds inside TF's C++ session run, pstats.Stats) of one call under cProfile."""
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.runcall(function, *args)
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    in_cpp = sum(v[3] for k, v in stats.stats.items() if 'TF_SessionRun_wrapper' in k[2])
    return total, in_cpp, stats


def _print_top(stats, count=6):
    rows = sorted(((v[2], k) for k, v in stats.stats.items() if 'TF_SessionRun_wrapper' not in k[2]), reverse=True)
    for tottime, (filename, line, name) in rows[:count]:
        print('      %8.2f ms  %s (%s:%d)' % (1e3 * tottime, name, os.path.basename(filename), line))


def host_profile(model_path, model, layer, args):
    """cProfile both loops: how much time is spent outside TF's C++ session run, and where."""
    layer_index = model.layer_index(layer)
    feature_ids = checks.parse_filters(args.filters, model.channels(layer_index))
    batch_size = args.batch_size or visualize.auto_batch_size(model, layer_index, args.size)
    runs = args.steps * -(-len(feature_ids) // batch_size)
    time_fast(model, layer_index, feature_ids, 1, args.size, batch_size)
    total, in_cpp, stats = _profile(time_fast, model, layer_index, feature_ids, args.steps, args.size, batch_size)
    print('\nhost profile (cProfile on), %s, %d filters, %d steps, %dx%d'
          % (model.short_names[layer_index], len(feature_ids), args.steps, args.size, args.size))
    print('  visualize.ascend: %.1f ms, of it TF C++ session runs %.1f ms; outside: %.2f ms per session.run '
          '(%.2f%%); largest Python-side costs (tottime):'
          % (1e3 * total, 1e3 * in_cpp, 1e3 * (total - in_cpp) / runs, 100 * (total - in_cpp) / total))
    _print_top(stats)
    # The post's loop for one filter: its setup runs in Python (tf.gradients,
    # Session), its steps convert the float64 image and update it on the host.
    total, in_cpp, stats = _profile(time_post, model_path, layer_index, feature_ids[:1], args.steps, args.size)
    print("  post's loop, 1 filter: %.1f ms, of it TF C++ session runs %.1f ms; outside: %.1f ms (%.1f%%: "
          'model copy, ops, session, host update); largest Python-side costs (tottime):'
          % (1e3 * total, 1e3 * in_cpp, 1e3 * (total - in_cpp), 100 * (total - in_cpp) / total))
    _print_top(stats)


# ---------------------------------------------------------------------------
# Peak memory, one child process per configuration

def child_memory(args):
    """Runs in a fresh process: ascend once, print RSS figures in bytes as JSON.

    load_peak: ru_maxrss after loading the model (TF, the parsed and the
    imported graph). Then the high-water mark is reset (writing 5 to
    /proc/self/clear_refs, Linux >= 4.0), so that ascend_peak is the peak
    while ascending alone and not hidden under the load's transient peak. It
    is read as VmHWM: ru_maxrss also keeps the peak that threads saw when
    they exited, which the reset does not clear. peak: ru_maxrss at the end,
    the whole process's peak.
    """
    model = vgg16.VGG16(args.model_path)
    layer_index = model.layer_index(args.layer[0])
    feature_ids = checks.parse_filters(args.filters, model.channels(layer_index))
    load_peak, before = harness.maxrss_bytes(), harness.status_bytes('VmRSS')
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        visualize.ascend(model, layer_index, feature_ids, args.steps, STEP_SIZE, seed=0, size=args.size,
                         batch_size=args.batch_size, progress=False, precision=args.precision[0])
    print(json.dumps({'load_peak': load_peak, 'before': before, 'ascend_peak': harness.status_bytes('VmHWM'),
                      'peak': harness.maxrss_bytes(), 'seconds': time.perf_counter() - start}))


def memory_child(model_path, layer, filters, batch_size, steps, size, precision):
    """child_memory's figures, from a fresh process of this script."""
    command = [os.path.abspath(__file__), '--child-memory', '--model-path', model_path, '--layer', layer,
               '--filters', filters, '--steps', str(steps), '--size', str(size), '--precision', precision]
    if batch_size:
        command += ['--batch-size', str(batch_size)]
    return harness.run_child(command)


def memory_report(model_path, model, layers, batch_sizes, size, whole_layer_steps, whole_batch_size=None,
                  precisions=('float32',)):
    """Peak RSS per batch size (slope = bytes per image) and for a whole layer (--filters all), per precision.

    The whole layer runs at whole_batch_size, default visualize.ascend's automatic choice.
    """
    mb = 2.0 ** 20
    print('\npeak memory, %dx%d, one fresh child process each (MB): load peak = ru_maxrss after loading the '
          'model; then the peak is reset, ascend peak = VmHWM while ascending (2 steps); whole = ru_maxrss at the end'
          % (size, size))
    print('  %-8s %6s %10s %12s %12s %8s %9s' % ('layer', 'batch', 'load peak', 'RSS before', 'ascend peak',
                                               'whole', 'seconds'))
    for layer, precision in ((layer, precision) for layer in layers for precision in precisions):
        print('  %s, precision %s' % (layer, precision))
        layer_index = model.layer_index(layer)
        raw = memory.per_image_bytes(model, [layer_index], size) / memory.MEMORY_FACTOR
        peaks = []
        for b in batch_sizes:
            r = memory_child(model_path, layer, '0-%d' % (b - 1), b, 2, size, precision)
            peaks.append(r['ascend_peak'])
            print('  %-8s %6d %10.0f %12.0f %12.0f %8.0f %9.1f'
                  % (layer, b, r['load_peak'] / mb, r['before'] / mb, r['ascend_peak'] / mb,
                     r['peak'] / mb, r['seconds']))
        if len(batch_sizes) > 1:
            slope, intercept = np.polyfit(batch_sizes, peaks, 1)
            print('  %-8s ascend peak = %.0f MB + %.1f MB per image (least squares); sum of the layer outputs '
                  'up to %s, float32: %.1f MB per image -> factor %.2f'
                  % (layer, intercept / mb, slope / mb, layer, raw / mb, slope / raw))
        if whole_layer_steps:
            batch = whole_batch_size or visualize.auto_batch_size(model, layer_index, size)
            r = memory_child(model_path, layer, 'all', batch, whole_layer_steps, size, precision)
            whole = r['peak']
            print('  %-8s whole layer: %d filters, %s batch %d, %d step: ascend peak %.0f MB, whole %.0f MB, '
                  '%s the %.0f MB limit (%.0f s)'
                  % (layer, model.channels(layer_index), 'given' if whole_batch_size else 'automatic', batch,
                     whole_layer_steps, r['ascend_peak'] / mb, whole / mb,
                     'under' if whole < MEMORY_LIMIT_BYTES else 'OVER', MEMORY_LIMIT_BYTES / mb, r['seconds']))


# ---------------------------------------------------------------------------
# Command line

def _batch_list(text):
    try:
        sizes = [int(part) for part in text.split(',')]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("%r: expected batch sizes >= 1 such as '1,3,6,12'" % text)
    return sizes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--layer', action='append', default=None,
                        help='target layer(s), repeatable or a comma list (default conv3_2)')
    parser.add_argument('--filters', default='0-5', help="filter ids: '0-5', '1,4,9' or 'all' (default 0-5)")
    parser.add_argument('--steps', type=int, default=10, help='ascent steps per timing (default 10)')
    parser.add_argument('--size', type=int, default=224, help='image side (default 224)')
    parser.add_argument('--repeats', type=int, default=5, help='timed repeats; medians are reported (default 5)')
    parser.add_argument('--batch-size', type=int, default=None,
                        help='images per session.run in visualize.ascend (default: its automatic choice)')
    parser.add_argument('--project-steps', type=int, default=150,
                        help='steps of the demo the setup costs are spread over (default 150, the post)')
    parser.add_argument('--quick', action='store_true',
                        help='about a minute: 112x112, 3 steps x 3 repeats')
    parser.add_argument('--markdown', action='store_true', help='also print a README-ready table')
    parser.add_argument('--weights', default=harness.MRI_WEIGHTS,
                        help='Keras VGG16 h5 weights (default: the shared MRI weights; random if absent)')
    parser.add_argument('--batch-sweep', type=_batch_list, default=None,
                        help="fast path only: ms/filter/step for these batch sizes, e.g. '1,3,6,12,24'")
    parser.add_argument('--memory', type=_batch_list, default=None,
                        help="peak RSS for these batch sizes, e.g. '1,4,8', plus a whole layer (--filters all) "
                             "at --batch-size or the automatic one, each in a child process")
    parser.add_argument('--host-profile', action='store_true',
                        help='cProfile one visualize.ascend call: host time besides session.run')
    parser.add_argument('--precision', default='float32,auto',
                        help="visualize.ascend's precision(s), a comma list of %s, each timed in every repeat "
                             "(default float32,auto)" % ', '.join(PRECISION_CHOICES))
    parser.add_argument('--whole-layer-steps', type=int, default=None,
                        help='also time every filter of each layer (automatic batch) for this many steps, '
                             "against the post's per-filter rate of the same run")
    parser.add_argument('--regularized', action='store_true',
                        help="also time the regularized method's ms per image-step in each precision")
    parser.add_argument('--verbose', action='store_true',
                        help="also show TensorFlow's own start-up and log lines (hidden by default)")
    parser.add_argument('--child-memory', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--model-path', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.layer = [name for item in (args.layer or ['conv3_2']) for name in item.split(',') if name]
    args.precision = [name for name in args.precision.split(',') if name]
    bad = [name for name in args.precision if name not in PRECISION_CHOICES]
    if bad or not args.precision:
        parser.error('--precision %s: expected a comma list of %s' % (','.join(bad), ', '.join(PRECISION_CHOICES)))
    if args.quick:
        args.size, args.steps, args.repeats = 112, 3, 3
    for name in ('steps', 'size', 'repeats', 'project_steps', 'batch_size', 'whole_layer_steps'):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error('--%s must be >= 1' % name.replace('_', '-'))
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child_memory:
        return child_memory(args)
    try:
        return run(args)
    except ValueError as error:   # a bad layer name or filter list
        print('error: %s' % error, file=sys.stderr)
        return 2


def run(args):
    with tempfile.TemporaryDirectory() as folder:
        model_path, description = harness.load_model_file(args.weights, folder)
        harness.print_machine()
        print('model: %s' % description)
        model = vgg16.VGG16(model_path)
        for layer in args.layer:   # bad names or filter ids fail here, before minutes of timing
            channels = model.channels(model.layer_index(layer))
            ids = checks.parse_filters(args.filters, channels)
            if not ids or min(ids) < 0 or max(ids) >= channels:
                raise ValueError('--filters %s: %s has filters 0..%d' % (args.filters, layer, channels - 1))
        print('precision: %s; CPU flags with native bfloat16: %s'
              % (', '.join('%s -> %s' % (p, resolve_precision(p)) for p in args.precision),
                 'yes' if cpu_has_bf16() else 'no'))
        # float32 always (the post's loop runs in it), bfloat16 when a precision asks for it.
        convs = {p: harness.ConvRate(precision=p)
                 for p in ('float32', 'bfloat16') if p == 'float32' or
                 p in [resolve_precision(q) for q in args.precision]}
        for conv in convs.values():
            conv.measure(3)
            print('conv rate at the start: %s' % conv.describe())
        if args.memory:
            memory_report(model_path, model, args.layer, args.memory, args.size, whole_layer_steps=1,
                          whole_batch_size=args.batch_size, precisions=args.precision)
            return 0
        if args.host_profile:
            for layer in args.layer:
                host_profile(model_path, model, layer, args)
            return 0
        if args.batch_sweep:
            for layer in args.layer:
                batch_sweep(model, layer, args, convs[resolve_precision(args.precision[0])], args.batch_sweep)
            return 0
        rows = []
        for layer in args.layer:
            rows += compare(model_path, model, layer, args, convs)
            for row in rows[-len(args.precision):]:
                print_row(row, args.project_steps)
            if args.whole_layer_steps:
                whole_layer_times(model, layer, args, rows[-len(args.precision):])
            if args.regularized:
                regularized_times(model, layer, args)
        for conv in convs.values():
            print('\nconv rate over the whole run (between repeats): %s' % conv.describe())
        if args.markdown:
            print_markdown(rows, args.project_steps)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

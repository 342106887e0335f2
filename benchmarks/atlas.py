"""
What does an atlas cost? Measured on this machine, with the real MRI weights
when present (full-size random weights otherwise: same FLOPs):

- overhead: atlas.run_task (ascent, measures, five files and a record per
  filter) against visualize.visualize_filters on the same filters, one
  worker, interleaved repeats, medians;
- engines: `python atlas.py` in one process against `--workers 2`, end to end
  (start-up included), fresh folders, interleaved;
- views: one task of each view (channel, negative, neuron, diversity4) on the
  same filters, interleaved repeats, medians: what `--views` costs per picture;
- estimate: one task of every layer timed at two step counts, so that
  t(task) = fixed + steps x per-step; from that the whole VGG16 (4,224
  filters) at each size, the time on N machines on paper (longest-first list
  scheduling of the tasks, each machine like this one), and the disk per filter.

    python benchmarks/atlas.py --quick                   # small settings, a few minutes
    python benchmarks/atlas.py --markdown                # the README figures (about 25 min on 2 cores)
    python benchmarks/atlas.py --only estimate --sizes 224 --precision float32
    python benchmarks/atlas.py --only views --precision float32

Times are wall clock on a shared machine: read the ratios, which interleaving
protects, more than the absolute numbers.
"""

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import warnings

# harness.py sits beside this file; a test that loads this file by path has not put the folder on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (first: the repository root on sys.path, TensorFlow imported quietly)

import visualize  # noqa: E402
from filtervis import atlas, cluster  # noqa: E402
from filtervis.core import precision  # noqa: E402
from filtervis.models import vgg16  # noqa: E402

MACHINE_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def prepared_out(folder, settings, net):
    """An atlas folder whose atlas.json matches `settings` and `net`, for run_task to write into."""
    atlas.claim(folder, atlas.make_header(net, settings, command=''))
    return folder


def overhead(spec, work, layer, count, settings, repeats):
    """visualize_filters and run_task on filters 0..count-1 of `layer`, interleaved.

    Returns {'plain': [(wall, cpu)], 'atlas': [(wall, cpu)]}, one pair per repeat.
    """
    model = cluster.worker_model(spec)
    index = model.layer_index(layer)
    ids = list(range(count))
    task = atlas.Task(index, model.short_names[index], tuple(ids))
    out = prepared_out(os.path.join(work, 'overhead'), settings, model)

    def plain():
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)
            return visualize.visualize_filters(model, index, ids, settings.iters, settings.step_size,
                                               seed=settings.seed, size=settings.size, batch_size=count,
                                               progress=False, method=settings.method,
                                               precision=settings.precision)

    def with_files():
        return atlas.run_task(task, spec, out, settings, atlas.read_header(out))

    plain()                       # builds the ops of both, untimed
    with_files()
    return harness.interleaved({'plain': plain, 'atlas': with_files}, repeats)


def engines(model_path, work, flags, repeats):
    """Median wall seconds of `python atlas.py` in one process and with --workers 2, end to end."""
    times = {'one process': [], '--workers 2': []}
    for repeat in range(repeats):
        for name, extra in (('one process', []), ('--workers 2', ['--workers', '2'])):
            out = os.path.join(work, 'engines-%d-%s' % (repeat, 'workers' if extra else 'one'))
            command = [sys.executable, os.path.join(harness.ROOT, 'atlas.py'), out, '--model', model_path, '--quiet']
            seconds, _, result = harness.timed(subprocess.run, command + flags + extra, capture_output=True,
                                               text=True)
            if result.returncode != 0:
                raise RuntimeError('%s failed: %s' % (' '.join(command + flags + extra), result.stderr))
            times[name].append(seconds)
    return {name: statistics.median(values) for name, values in times.items()}, times


def views(spec, work, layer, count, settings, repeats, names=('channel', 'negative', 'neuron', 'diversity4')):
    """One task of each view on filters 0..count-1 of `layer`, interleaved: {view: [wall seconds]}."""
    model = cluster.worker_model(spec)
    index = model.layer_index(layer)
    out = prepared_out(os.path.join(work, 'views'), settings, model)

    def view_task(name):
        task = atlas.Task(index, model.short_names[index], tuple(range(count)), name)
        return lambda: atlas.run_task(task, spec, out, settings, atlas.read_header(out))

    runs = {name: view_task(name) for name in names}
    for run in runs.values():       # builds the ops of each view, untimed
        run()
    return {name: [wall for wall, _ in times] for name, times in harness.interleaved(runs, repeats).items()}


def disk_per_filter(out):
    """Mean bytes per filter of each kind of file in an atlas folder: {kind: bytes}."""
    sizes, filters = {}, set()
    for layer in os.listdir(out):
        folder = os.path.join(out, layer)
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if '.tmp' in name:
                continue
            kind = 'task record' if name.startswith('task-') else name[4:]
            if not name.startswith('task-'):
                filters.add((layer, name[:4]))
            sizes[kind] = sizes.get(kind, 0) + os.path.getsize(os.path.join(folder, name))
    return {kind: total / max(1, len(filters)) for kind, total in sizes.items()}


def estimate(spec, work, settings, steps=(1, 4), repeats=2):
    """One task of every layer at two step counts: {layer: (filters per task, fixed s, s per step per task, channels)}.

    Each count is timed `repeats` times, interleaved, and the medians fitted.
    """
    model = cluster.worker_model(spec)
    rows = {}
    for index, name in enumerate(model.short_names):
        batch = visualize.auto_batch_size(model, index, settings.size)
        task = atlas.Task(index, name, tuple(range(batch)))
        runs = {}
        for number, count in enumerate((1,) + tuple(steps) * repeats):
            step_settings = atlas.Settings(**dict(dataclasses.asdict(settings), iters=count))
            out = prepared_out(os.path.join(work, 'estimate-%d-%d' % (settings.size, count)), step_settings, model)
            seconds = harness.timed(atlas.run_task, task, spec, out, step_settings, atlas.read_header(out)).wall
            if number > 0:      # the first run builds the layer's ops: not timed
                runs.setdefault(count, []).append(seconds)
        low, high = (statistics.median(runs[count]) for count in steps)
        per_step = max(0.0, (high - low) / (steps[1] - steps[0]))
        fixed = max(0.0, low - steps[0] * per_step)
        channels = model.layer_channels[index]
        rows[name] = (batch, fixed, per_step, channels)
        print('  %-8s batch %2d: %.2f s fixed + %.3f s per step per task (%.1f ms per filter-step)'
              % (name, batch, fixed, per_step, 1000 * per_step / batch), flush=True)
    return rows


def task_durations(rows, iters):
    """Seconds of every task of the whole network at `iters` steps (a short last task scaled by its filters)."""
    durations = []
    for batch, fixed, per_step, channels in rows.values():
        for begin in range(0, channels, batch):
            filters = min(batch, channels - begin)
            durations.append(fixed * filters / batch + per_step * iters * filters / batch)
    return durations


def makespan(durations, machines):
    """Longest-first list scheduling of the tasks on `machines` equal machines: the finishing time (s)."""
    loads = [0.0] * machines
    for duration in sorted(durations, reverse=True):
        loads[loads.index(min(loads))] += duration
    return max(loads)


def hours(seconds):
    if seconds >= 3600:
        return '%.1f h' % (seconds / 3600)
    return '%.0f min' % (seconds / 60) if seconds >= 60 else '%.0f s' % seconds


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Overhead, engines and whole-network estimate of atlas.py.')
    parser.add_argument('--only', choices=('overhead', 'engines', 'views', 'estimate'), default=None)
    parser.add_argument('--quick', action='store_true', help='small settings: a few minutes')
    parser.add_argument('--markdown', action='store_true', help='print the tables as Markdown too')
    parser.add_argument('--sizes', default='224,128', help='image sizes of the estimate (default 224,128)')
    parser.add_argument('--method', default='regularized', help='method of the estimate (default regularized)')
    parser.add_argument('--iters', type=int, default=200, help='steps per filter of the estimate (default 200)')
    parser.add_argument('--precision', default='auto', help='float32, bfloat16 or auto (default)')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--verbose', action='store_true')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    harness.print_machine()
    with tempfile.TemporaryDirectory(prefix='atlas-bench-') as work:
        model_path, description = harness.load_model_file(harness.MRI_WEIGHTS, work)
        spec = cluster.ModelSpec.of(vgg16.VGG16(model_path))
        print('model: %s; precision %s' % (description, precision.resolve_precision(args.precision)), flush=True)

        if args.only in (None, 'overhead'):
            size, iters, layer, count = (64, 20, 'conv3_2', 4) if args.quick else (128, 100, 'conv3_2', 8)
            settings = atlas.Settings('blog', iters, size, 0, None, count, args.precision).checked()
            times = overhead(spec, work, layer, count, settings, args.repeats)
            print('\noverhead, %s filters 0-%d, blog, %d px, %d steps, one task of %d, %d interleaved repeats:'
                  % (layer, count - 1, size, iters, count, args.repeats))
            medians = {name: harness.medians(pairs) for name, pairs in times.items()}
            for which, column in (('wall', 0), ('CPU', 1)):
                plain, with_files = medians['plain'][column], medians['atlas'][column]
                print('  %-4s visualize_filters %.2f s, atlas.run_task %.2f s (medians): %+.1f %%  [all: %s | %s]'
                      % (which, plain, with_files, 100 * (with_files / plain - 1),
                         ' '.join('%.2f' % t[column] for t in times['plain']),
                         ' '.join('%.2f' % t[column] for t in times['atlas'])))
            print('  disk per filter at %d px: %s' % (size, ', '.join(
                '%s %.1f kB' % (k, v / 1000) for k, v in sorted(disk_per_filter(os.path.join(work, 'overhead'))
                                                                 .items()))))

        if args.only in (None, 'engines'):
            flags = (['--layers', 'conv2_1', '--filters', '0-15', '--method', 'blog', '--size', '64',
                      '--iters', '30', '--batch-size', '4'] if args.quick else
                     ['--layers', 'conv2_1', '--filters', '0-63', '--method', 'blog', '--size', '128',
                      '--iters', '50', '--batch-size', '8'])
            flags += ['--precision', args.precision]
            medians, every = engines(model_path, work, flags, 1 if args.quick else max(2, args.repeats - 1))
            print('\nengines, end to end (python atlas.py %s):' % ' '.join(flags))
            for name, seconds in medians.items():
                print('  %-12s %.1f s (median)  [all: %s]' % (name, seconds, ' '.join('%.1f' % t for t in every[name])))
            print('  --workers 2 / one process: %.2f' % (medians['--workers 2'] / medians['one process']))

        if args.only in (None, 'views'):
            size, iters, count = (64, 20, 4) if args.quick else (128, 50, 8)
            names = ('channel', 'negative', 'neuron', 'diversity4')
            settings = atlas.Settings('regularized', iters, size, 0, None, count, args.precision,
                                      views=names).checked()
            times = views(spec, work, 'conv3_2', count, settings, args.repeats, names)
            print('\nviews, conv3_2 filters 0-%d, regularized, %d px, %d steps, one task per view, %d interleaved '
                  'repeats:' % (count - 1, size, iters, args.repeats))
            channel = statistics.median(times['channel'])
            for name, seconds in times.items():
                pictures = count * atlas.parse_view(name).pictures
                print('  %-10s %2d pictures: %.2f s (median), %.3f s per picture, %.2fx channel  [all: %s]'
                      % (name, pictures, statistics.median(seconds), statistics.median(seconds) / pictures,
                         statistics.median(seconds) / channel, ' '.join('%.2f' % t for t in seconds)))

        if args.only in (None, 'estimate'):
            sizes = [64] if args.quick else [int(s) for s in args.sizes.split(',')]
            iters = 20 if args.quick else args.iters
            table = []
            for size in sizes:
                print('\nestimate at %d px, %s, per task (medians at 1 and 4 steps):' % (size, args.method), flush=True)
                settings = atlas.Settings(args.method, iters, size, 0, None, None, args.precision).checked()
                rows = estimate(spec, work, settings, repeats=1 if args.quick else args.repeats)
                durations = task_durations(rows, iters)
                total = sum(durations)
                disk = disk_per_filter(os.path.join(work, 'estimate-%d-4' % size))
                print('  whole VGG16, %d filters, %d tasks, %d steps: %s on this machine; longest task %.0f s; '
                      'disk %.0f kB per filter (%.1f GB in all)'
                      % (sum(r[3] for r in rows.values()), len(durations), iters, hours(total), max(durations),
                         sum(disk.values()) / 1000, sum(disk.values()) * 4224 / 1e9))
                spans = {n: makespan(durations, n) for n in MACHINE_COUNTS}
                print('  machines: ' + ', '.join('%d: %s (%.0f %%)' % (n, hours(s), 100 * total / n / s)
                                                 for n, s in spans.items()))
                table.append((size, rows, total, spans, disk, len(durations), max(durations)))
            if args.markdown:
                print_markdown(table, iters, args.method)
    return 0


def print_markdown(table, iters, method):
    print('\n| layer | filters per task | %s |' % ' | '.join('ms per filter-step at %d px' % t[0] for t in table))
    print('|---|---:|%s' % '---:|' * len(table))
    for name in table[0][1]:
        print('| `%s` | %d | %s |' % (name, table[0][1][name][0], ' | '.join(
            '%.1f' % (1000 * t[1][name][2] / t[1][name][0]) for t in table)))
    print('\n| machines | %s |' % ' | '.join('%d px, %s, %d steps' % (t[0], method, iters) for t in table))
    print('|---:|%s' % '---:|' * len(table))
    for n in MACHINE_COUNTS:
        print('| %d | %s |' % (n, ' | '.join('%s (%.0f %%)' % (hours(t[3][n]), 100 * t[2] / n / t[3][n])
                                             for t in table)))
    print('\n| per filter | %s |' % ' | '.join('%d px' % t[0] for t in table))
    print('|---|%s' % '---:|' * len(table))
    kinds = sorted(table[0][4])
    for kind in kinds:
        print('| %s | %s |' % (kind, ' | '.join('%.1f kB' % (t[4].get(kind, 0) / 1000) for t in table)))


if __name__ == '__main__':
    raise SystemExit(main())

"""
How fast does examples.find() go through a folder, and what share of its time
is the top-k bookkeeping? Forward passes of all 13 conv layers at once at
224x224, timed in one process with the variants interleaved batch by batch
(forward only, forward + the in-graph max and position, each bookkeeping
part alone, and fetching whole feature maps for a NumPy max/argmax instead),
then find() end to end, each run in a fresh process, on folders of 1x, 2x
and 4x the images, to show how the time and the memory grow.

    python benchmarks/examples.py --quick       # 2 batches x 2 repeats, counts 32 and 64: ~3 min
    python benchmarks/examples.py --markdown    # 3 batches x 5 repeats, counts 110, 220, 440: ~10 min
    python benchmarks/examples.py --precision float32   # one precision only (default: both)

Both precisions are timed, float32 and bfloat16 (examples.find's precision
switch; bfloat16 is emulated, and slow, on CPUs without AVX-512 BF16 or AMX).
The "alone" rows time the bookkeeping ops on feature maps held in variables
and the NumPy merge into a full top k, so the share of the bookkeeping does
not rest on the difference of two noisy timings.

The model is the real MRI weights in ../shared/models (full-size random
weights when absent: same FLOPs), the images the MRI slices in
../shared/data/mri-slices. Times are medians over repeats, wall and CPU (all
threads of the process); on a shared machine the wall time swings with the
free cores.
"""

import argparse
import functools
import json
import os
import sys
import tempfile

# harness.py sits beside this file; a test that loads this file by path has not put the folder on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (first: the repository root on sys.path, TensorFlow imported quietly)

import numpy as np  # noqa: E402

from filtervis.analysis import examples  # noqa: E402
from filtervis.core import network  # noqa: E402
from filtervis.models import vgg16  # noqa: E402
from filtervis.util import quiet  # noqa: E402

tf = quiet.import_tensorflow()

MRI_SLICES = os.path.join(harness.ROOT, '..', 'shared', 'data', 'mri-slices')


def forward_gflop(model, size):
    """GFLOP of one image through all conv layers: 2 * 9 * in * out * side^2 each."""
    total, fan_in = 0, model.input_channels
    for index in range(len(model.short_names)):
        out = model.layer_channels[index]
        total += 2 * 9 * fan_in * out * model.output_side(index, size) ** 2
        fan_in = out
    return total / 1e9


class Parts:
    """The parts of examples.scan's work on one batch in one precision, each timed on its own;
    all 13 layers, all channels."""

    def __init__(self, model, batch, k, precision):
        self.model, self.k, self.precision = model, k, precision
        self.layers = list(range(len(model.layer_names)))
        self.sess = network.session(model)
        self.maps_ts = examples.bfloat16_layers(model) if precision == 'bfloat16' else model.layer_tensors
        self.ops = [examples.layer_ops(model, i, 224, precision) for i in self.layers]
        self.widths = [examples.feature_side(model, i, 224) for i in self.layers]
        self.filters = examples.check_filters(model, self.layers, None)
        # The bookkeeping ops alone, on one batch's feature maps held in variables of a graph of their own.
        maps = self.sess.run(self.maps_ts, {model.input: batch})
        graph = tf.Graph()
        with graph.as_default():
            starts = [tf.placeholder(t.dtype, m.shape) for t, m in zip(self.maps_ts, maps)]
            holders = [tf.Variable(start, trainable=False) for start in starts]
            self.alone_ops = [examples.max_and_position(h, w) for h, w in zip(holders, self.widths)]
            self.alone_sess = tf.Session(graph=graph)
            self.alone_sess.run([h.initializer for h in holders], dict(zip(starts, maps)))
        self.values = self.sess.run(self.ops, {model.input: batch})
        # A full top k per filter, as it stands after the first batches of a run.
        self.tops = {}
        for i, (max_v, position_v) in zip(self.layers, self.values):
            repeat = -(-k // len(batch))
            rows = [np.repeat(v, repeat, axis=0)[:k] for v in (max_v, np.zeros_like(position_v), position_v,
                                                                position_v)]
            self.tops[i] = examples.Top(*rows)

    def forward(self, batch):
        # Targets, not fetches: every layer is computed, nothing is copied out.
        self.sess.run([t.op for t in self.maps_ts], {self.model.input: batch})

    def with_max(self, batch):
        self.sess.run(self.ops, {self.model.input: batch})

    def max_alone(self, batch):
        self.alone_sess.run(self.alone_ops)

    def merge(self, batch):
        """examples.scan's NumPy part for one batch: positions to (y, x), then the top-k merge."""
        ids = np.arange(len(batch), dtype=np.int32)
        for index, (max_v, position_v), width in zip(self.layers, self.values, self.widths):
            top = examples.Top(max_v, np.broadcast_to(ids[:, None], position_v.shape),
                               position_v // width, position_v % width)
            examples.merge_tops(self.tops[index], top, self.k)

    def numpy_maps(self, batch):
        """The alternative: fetch whole feature maps and find max and argmax in NumPy."""
        for value in self.sess.run(self.maps_ts, {self.model.input: batch}):
            flat = value.reshape(value.shape[0], -1, value.shape[-1])
            flat.argmax(axis=1)
            flat.max(axis=1)


NAMES = ('forward', 'with_max', 'max_alone', 'merge', 'numpy_maps')
LABELS = {'forward': 'forward only (13 layers computed, nothing fetched)',
          'with_max': 'forward + in-graph max and position (what find() runs)',
          'max_alone': 'in-graph max and position alone',
          'merge': 'NumPy top-k merge alone',
          'numpy_maps': 'forward, whole maps fetched, max/argmax in NumPy'}


def time_parts(model, batches, repeats, k, precisions):
    """{(precision, part): (wall, CPU) median seconds per image}; parts and precisions alternate batch by batch."""
    parts = {precision: Parts(model, batches[0], k, precision) for precision in precisions}
    for precision in precisions:
        for name in NAMES:
            getattr(parts[precision], name)(batches[0])   # first runs: graph optimisation, allocations
    calls = {(precision, name, b): functools.partial(getattr(parts[precision], name), batch)
             for b, batch in enumerate(batches) for precision in precisions for name in NAMES}
    last = len(batches) - 1

    def progress(times):
        print('  repeat %d: ' % (len(times[precisions[0], 'forward', last]) - 1) + ', '.join(
            '%s %s %.1f ms' % (p, n, 1e3 * times[p, n, last][-1][0] / len(batches[last]))
            for p in precisions for n in ('forward', 'with_max')), flush=True)
    times = harness.interleaved(calls, repeats, progress)
    return {(precision, name): harness.medians((wall / len(batch), cpu / len(batch))
                                               for b, batch in enumerate(batches)
                                               for wall, cpu in times[precision, name, b])
            for precision in precisions for name in NAMES}


def folder_of(count, source, tmp):
    """A folder of `count` images: the source's files, repeated under new names as symlinks."""
    names = examples.list_images(source)
    folder = os.path.join(tmp, 'images-%d' % count)
    os.makedirs(folder)
    for i in range(count):
        name = names[i % len(names)]
        os.symlink(os.path.abspath(os.path.join(source, name)), os.path.join(folder, '%04d-%s' % (i, name)))
    return folder


def find_in_child(model_path, folder, k, batch_size, precision):
    """(wall s, CPU s, peak RSS MB) of one find() over `folder` in a fresh process: all layers, all filters."""
    r = harness.run_child([os.path.abspath(__file__), '--child-find', folder, '--model-path', model_path,
                           '--k', str(k), '--batch-size', str(batch_size), '--precision', precision])
    return r['wall'], r['cpu'], r['peak_rss_mb']


def child_find(args):
    model = vgg16.VGG16(args.model_path)
    layers = list(range(len(model.layer_names)))
    wall, cpu, _ = harness.timed(examples.find, model, args.child_find, layers, k=args.k,
                                 batch_size=args.batch_size, progress=False, precision=args.precision)
    # VmHWM, not ru_maxrss, which Linux carries over from the parent (harness.maxrss_bytes).
    print(json.dumps({'wall': wall, 'cpu': cpu, 'peak_rss_mb': harness.status_bytes('VmHWM') / 2 ** 20}))


def end_to_end(model_path, source, counts, k, batch_size, precisions, tmp):
    """{precision: [(count, wall s, CPU s, peak RSS MB)]} of find(), all layers and filters, a fresh process each."""
    rows = {precision: [] for precision in precisions}
    for count in counts:
        folder = folder_of(count, source, tmp)
        for precision in precisions:
            wall, cpu, rss = find_in_child(model_path, folder, k, batch_size, precision)
            rows[precision].append((count, wall, cpu, rss))
            print('  %s, %d images: %.1f s wall, %.1f s CPU, %.2f images/s, peak RSS of the process %.0f MB'
                  % (precision, count, wall, cpu, count / wall, rss), flush=True)
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--images', default=MRI_SLICES, help='folder of images (default: the MRI slices)')
    parser.add_argument('--weights', default=harness.MRI_WEIGHTS, help='Keras h5 weights (default: the MRI weights)')
    parser.add_argument('--batches', type=int, default=3, help='batches per timing (default 3)')
    parser.add_argument('--batch-size', type=int, default=examples.DEFAULT_BATCH_SIZE)
    parser.add_argument('--repeats', type=int, default=5, help='interleaved repeats (default 5)')
    parser.add_argument('--counts', default=None,
                        help='image counts for find() end to end, comma-separated (default: 1x, 2x, 4x the folder)')
    parser.add_argument('--k', type=int, default=examples.DEFAULT_K)
    parser.add_argument('--quick', action='store_true', help='2 batches x 2 repeats, counts 32 and 64')
    parser.add_argument('--markdown', action='store_true', help='also print README-ready tables')
    parser.add_argument('--precision', choices=('both', 'float32', 'bfloat16'), default='both',
                        help='precisions to time (default both; bfloat16 is emulated, and slow, without '
                             'AVX-512 BF16 or AMX)')
    parser.add_argument('--child-find', default=None, help=argparse.SUPPRESS)
    parser.add_argument('--model-path', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.repeats, args.counts = 2, 2, args.counts or '32,64'
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child_find:
        return child_find(args)
    precisions = ('float32', 'bfloat16') if args.precision == 'both' else (args.precision,)
    with tempfile.TemporaryDirectory() as tmp:
        path, weights = harness.load_model_file(args.weights, tmp)
        model = vgg16.VGG16(path)
        names = examples.list_images(args.images)
        counts = [int(c) for c in args.counts.split(',')] if args.counts else [len(names) * m for m in (1, 2, 4)]
        needed = args.batches * args.batch_size
        images = np.stack([examples.load_image(os.path.join(args.images, names[i % len(names)]), 224)
                           for i in range(needed)])
        batches = [images[i:i + args.batch_size] for i in range(0, needed, args.batch_size)]
        decode = harness.timed(lambda: [examples.load_image(os.path.join(args.images, n), 224) for n in names[:32]])
        gflop = forward_gflop(model, 224)
        harness.print_machine()
        print('model: %s; images: %s' % (weights, args.images))
        print('all %d layers at 224x224, %.2f GFLOP per image forward; batch %d, %d batches x %d repeats, '
              'interleaved' % (len(model.layer_names), gflop, args.batch_size, args.batches, args.repeats))
        medians = time_parts(model, batches, args.repeats, args.k, precisions)
        table = []
        print('\n%-9s %-56s %8s %8s %9s %8s' % ('', 'per image, medians', 'wall ms', 'CPU ms', 'images/s',
                                                'GFLOP/s'))
        for precision in precisions:
            for name in NAMES:
                wall, cpu = medians[precision, name]
                table.append((precision, LABELS[name], wall, cpu))
                print('%-9s %-56s %8.2f %8.2f %9.2f %8.0f' % (precision, LABELS[name], 1e3 * wall, 1e3 * cpu,
                                                              1 / wall, gflop / wall))
        shares = {}
        for precision in precisions:
            for column, label in ((0, 'wall'), (1, 'CPU')):
                forward = medians[precision, 'forward'][column]
                book = medians[precision, 'max_alone'][column] + medians[precision, 'merge'][column]
                shares[precision, label] = 100 * book / (forward + book)
            print("%s: top-k bookkeeping (in-graph max and position + NumPy merge, timed alone) is %.1f %% of "
                  "find()'s time per batch by wall time, %.1f %% by CPU time"
                  % (precision, shares[precision, 'wall'], shares[precision, 'CPU']))
        if len(precisions) == 2:
            print('bfloat16 forward speed-up over float32: %.2fx wall, %.2fx CPU; with max and position %.2fx wall'
                  % tuple(medians['float32', name][c] / medians['bfloat16', name][c]
                          for name, c in (('forward', 0), ('forward', 1), ('with_max', 0))))
        print('reading and decoding a 224x224 PNG: %.2f ms wall' % (1e3 * decode[0] / 32))
        print('\nfind() end to end in a fresh process each, all %d layers, every filter, k=%d, batch %d:'
              % (len(model.layer_names), args.k, args.batch_size))
        model.close()
        rows = end_to_end(path, args.images, counts, args.k, args.batch_size, precisions, tmp)
        fits = {}
        for precision in precisions:
            if len(rows[precision]) > 1:
                # time = fixed + per image * count: the fixed part is the first run's graph setup.
                fits[precision] = np.polyfit([r[0] for r in rows[precision]], [r[1] for r in rows[precision]], 1)
                slope, intercept = fits[precision]
                print('  %s least squares: %.2f s + %.1f ms per image (%.2f images/s once running)'
                      % (precision, intercept, 1e3 * slope, 1 / slope))
        if args.markdown:
            print('\n| precision | per image, batch %d, all 13 layers at 224x224 | wall ms | CPU ms | images/s |'
                  % args.batch_size)
            print('|---|---|---:|---:|---:|')
            for precision, label, wall, cpu in table:
                print('| %s | %s | %.2f | %.2f | %.2f |' % (precision, label, 1e3 * wall, 1e3 * cpu, 1 / wall))
            print('\n| precision | images | find() wall s | CPU s | images/s | peak RSS of the process, MB |')
            print('|---|---:|---:|---:|---:|---:|')
            for precision in precisions:
                for count, wall, cpu, rss in rows[precision]:
                    print('| %s | %d | %.1f | %.1f | %.2f | %.0f |' % (precision, count, wall, cpu, count / wall,
                                                                       rss))

if __name__ == '__main__':
    main()

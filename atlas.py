"""
An atlas of every filter: each filter of each conv layer rendered (visualize.py),
measured (measures.py) and laid out on one static page, OUT/index.html, that
opens straight from the file system. The work runs in this process, on a local
Dask cluster or on a running one (cluster.py), or in disjoint shards for array
jobs; killed at any moment, the same command resumes where it stopped.

    python atlas.py OUT                                   # every filter of every layer, regularized, 224 px, 200 steps, seed 0
    python atlas.py OUT --layers conv1_1,conv3_2 --filters 0-15 --method blog --iters 150 --size 128 --seed 0
    python atlas.py OUT --workers 2                       # a local Dask cluster of 2 worker processes
    python atlas.py OUT --scheduler tcp://HOST:8786       # a running Dask cluster; OUT is a folder every worker sees
    python atlas.py OUT --shard 3/16                      # the 4th of 16 disjoint parts, for array jobs
    python atlas.py OUT --index-only                      # rebuild catalog.json and index.html from what is finished

What OUT holds:
    atlas.json            the settings that make a picture and the weights' md5; a run with others is refused
    LAYER/NNNN.npz        image float32 [size, size, 3] RGB ~0..255, objectives float32 [iters], dead bool
    LAYER/NNNN.png        the picture, full size, scaled by its own min and max
    LAYER/NNNN-thumb.jpg  the same, THUMB_SIDE px, for the page
    LAYER/NNNN-objective.svg  the objective at each step
    LAYER/task-NNNN.json  the record of one finished task (its filters and their measures), written last
    catalog.json          one object per finished filter; index.html  the page

The unit of work (a task) is one layer and one batch of its filters; batches
are cut from the layer's filter ids by the settings alone, so every engine and
every shard runs the same tasks. A filter is done once its task's record exists.
"""

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import asdict, dataclass

if __name__ == '__main__':
    # Before anything imports TensorFlow, so that its start-up lines are held back (shown with --verbose).
    import quiet
    quiet.import_tensorflow(verbose='--verbose' in sys.argv[1:])

import numpy as np
from PIL import Image

import cluster
import download
import examples
import measures
import regularized
import vgg16
import visualize

FORMAT = 1
THUMB_SIDE = 96
# A picture counts as dead on the page when its filter never had a gradient,
# or when it cannot see at least this share of it (measures.dead_fraction).
DEAD_PICTURE = 0.5
ATLAS_FILE = 'atlas.json'
CATALOG_FILE = 'catalog.json'
PAGE_FILE = 'index.html'
# Real-image patches per filter with --examples.
EXAMPLES_K = 6


@dataclass(frozen=True)
class Settings:
    """What makes a picture besides the weights, the layer and the filter; kept in OUT/atlas.json.

    method: 'regularized' or 'blog' (see visualize.ascend); iters: steps >= 1;
    size: image side in pixels; seed: int >= 0 (a filter's start depends only
    on it and the filter id); step_size: the blog method's (default 2), None
    for the regularized one; batch_size: filters per task and per session.run,
    None for visualize.auto_batch_size of each layer; precision: 'float32' or
    'bfloat16' ('auto' is resolved here, on the machine that starts the run,
    so that workers on other machines cannot pick another one).
    """
    method: str = 'regularized'
    iters: int = 200
    size: int = 224
    seed: int = 0
    step_size: float = None
    batch_size: int = None
    precision: str = 'auto'

    def checked(self):
        """The same settings with defaults filled in; ValueError naming the bad value."""
        if self.method not in visualize.METHOD_CHOICES:
            raise ValueError('method=%r: expected one of %s' % (self.method, ', '.join(visualize.METHOD_CHOICES)))
        step_size = self.step_size
        if self.method == 'blog':
            step_size = 2.0 if step_size is None else step_size
            if not isinstance(step_size, (int, float)) or not math.isfinite(step_size) or step_size <= 0:
                raise ValueError('step_size=%r: expected a finite number > 0' % (step_size,))
            step_size = float(step_size)
        elif step_size is not None:
            raise ValueError('step_size=%r belongs to the blog method; the regularized one uses Adam' % (step_size,))
        if self.seed is None:
            raise ValueError('seed=None: an atlas needs a seed (>= 0), so that a filter gets the same picture '
                             'in any task, worker or shard')
        batch_size = None if self.batch_size is None else vgg16.check_int('batch_size', self.batch_size, 1)
        return Settings(self.method, vgg16.check_int('iters', self.iters, 1), vgg16.check_int('size', self.size, 1),
                        vgg16.check_seed(self.seed), step_size, batch_size, vgg16.resolve_precision(self.precision))


@dataclass(frozen=True)
class Task:
    """One unit of work: a batch of filters (ints, ascending) of the layer at layer_index."""
    layer_index: int
    layer: str
    filters: tuple

    @property
    def record_name(self):
        return 'task-%04d.json' % self.filters[0]


# ---------------------------------------------------------------------------
# Planning: which tasks, in which shard, and which are done

def parse_layers(model, text):
    """'all', or names / indices separated by commas -> ascending layer indices, no repeats."""
    if text.strip() == 'all':
        return list(range(len(model.layer_names)))
    indices = set()
    for part in text.split(','):
        part = part.strip()
        indices.add(model.layer_index(int(part) if part.lstrip('-').isdigit() else part))
    return sorted(indices)


def parse_shard(text):
    """'I/N' -> (I, N) with 0 <= I < N; None -> (0, 1), the whole atlas."""
    if text is None:
        return 0, 1
    try:
        index, count = (int(v) for v in text.split('/'))
        if not 0 <= index < count:
            raise ValueError
    except ValueError:
        raise ValueError("--shard %r: expected I/N with 0 <= I < N, e.g. 3/16 for the 4th of 16 parts" % text) from None
    return index, count


def plan(model, settings, filters_by_layer):
    """Every task of the selection, in a fixed order: list of Task.

    filters_by_layer: {layer index: filter ids}. A layer's batches are cut from
    its whole range of filter ids (0..B-1, B..2B-1, ...), then narrowed to the
    selection, so a task never depends on the engine, the shard or what else
    is selected.
    """
    tasks = []
    for index in sorted(filters_by_layer):
        batch = settings.batch_size or visualize.auto_batch_size(model, index, settings.size)
        wanted = set(filters_by_layer[index])
        for begin in range(0, model.layer_channels[index], batch):
            ids = tuple(f for f in range(begin, begin + batch) if f in wanted)
            if ids:
                tasks.append(Task(index, model.short_names[index], ids))
    return tasks


def shard_of(tasks, shard):
    """The tasks of shard (I, N): every N-th task from the I-th, so each shard gets some of every layer."""
    index, count = shard
    return tasks[index::count]


def read_records(out):
    """Every task record under out: list of dict, in a fixed order (layer folder, then file name)."""
    records = []
    for layer in sorted(os.listdir(out)):
        folder = os.path.join(out, layer)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.startswith('task-') and name.endswith('.json'):
                with open(os.path.join(folder, name)) as f:
                    records.append(json.load(f))
    return records


def pending(tasks, done):
    """The tasks narrowed to their filters not in `done` (a set of (layer, filter)); empty ones dropped."""
    left = []
    for task in tasks:
        ids = tuple(f for f in task.filters if (task.layer, f) not in done)
        if ids:
            left.append(Task(task.layer_index, task.layer, ids))
    return left


def done_filters(out):
    return {(entry['layer'], entry['filter']) for record in read_records(out) for entry in record['entries']}


# ---------------------------------------------------------------------------
# One task, on a worker or in this process

def _png(image):
    """PNG bytes of an image [H, W, 3], scaled to 0..255 by its own min and max."""
    return Image.fromarray(np.round(visualize.normalize_image(image) * 255).astype(np.uint8))


def _save_image(path, picture, format, **options):
    download.write_atomic(path, lambda f: picture.save(f, format=format, **options))


def objective_svg(objectives, width=360, height=140):
    """A line chart of objectives (float [iters]) as SVG text, with its lowest and highest value."""
    values = np.nan_to_num(np.asarray(objectives, np.float64))
    low, high = float(values.min()), float(values.max())
    span = high - low if high - low > 1e-12 else 1.0
    left, right, top, bottom = 56, width - 8, 8, height - 22
    every = max(1, len(values) // (right - left))
    steps = list(range(0, len(values), every)) + ([len(values) - 1] if (len(values) - 1) % every else [])
    xs = [left + (right - left) * (i / max(1, len(values) - 1)) for i in steps]
    ys = [bottom - (bottom - top) * (values[i] - low) / span for i in steps]
    points = ' '.join('%.1f,%.1f' % (x, y) for x, y in zip(xs, ys))
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
            'font-family="sans-serif" font-size="11">'
            '<rect width="100%%" height="100%%" fill="#fff"/>'
            '<path d="M%d %dV%dH%d" fill="none" stroke="#888"/>'
            '<polyline points="%s" fill="none" stroke="#1565c0" stroke-width="1.5"/>'
            '<text x="%d" y="%d" text-anchor="end">%.4g</text><text x="%d" y="%d" text-anchor="end">%.4g</text>'
            '<text x="%d" y="%d">step 1</text><text x="%d" y="%d" text-anchor="end">step %d</text></svg>'
            % (width, height, width, height, left, top, bottom, right, points,
               left - 4, top + 8, high, left - 4, bottom, low,
               left, height - 6, right, height - 6, len(values)))


def _number(value):
    """A measure for JSON: 5 significant digits, None for NaN."""
    value = float(value)
    return None if math.isnan(value) else float('%.5g' % value)


def write_filter(out, layer_index, layer, feature_id, image, objectives, no_gradient, values):
    """Write one filter's files, each atomically; returns its catalog entry (dict)."""
    base = '%s/%04d' % (layer, feature_id)
    path = os.path.join(out, base)
    download.write_atomic(path + '.npz', lambda f: np.savez(f, image=image, objectives=objectives,
                                                            dead=np.bool_(no_gradient)))
    picture = _png(image)
    _save_image(path + '.png', picture, 'PNG')
    side = min(THUMB_SIDE, picture.width)
    _save_image(path + '-thumb.jpg', picture.resize((side, side), Image.LANCZOS), 'JPEG', quality=85)
    svg = objective_svg(objectives).encode('utf8')
    download.write_atomic(path + '-objective.svg', lambda f: f.write(svg))
    dead_fraction = _number(values['dead_fraction'])
    return {'layer': layer, 'layer_index': layer_index, 'filter': feature_id,
            'png': base + '.png', 'thumb': base + '-thumb.jpg', 'curve': base + '-objective.svg',
            'npz': base + '.npz',
            'activation': _number(values['activation']), 'dead_fraction': dead_fraction,
            'blur_robustness': _number(values['blur_robustness']),
            'no_gradient': bool(no_gradient), 'dead': bool(no_gradient) or dead_fraction >= DEAD_PICTURE,
            'objective': _number(objectives[-1])}


def run_task(task, spec, out, settings, header):
    """Render, measure and write one task's filters, then its record; returns the record (dict).

    Runs on a Dask worker or in this process; the worker's model is loaded once
    (cluster.worker_model). out: the absolute path of the atlas folder, the
    same for every worker; header: its atlas.json as the run claimed it
    (claim()). A worker that finds another atlas.json there (another folder
    at that path, or a relative path read from another working folder)
    refuses before it writes anything.
    """
    started = time.perf_counter()
    model = cluster.worker_model(spec)
    folder = os.path.join(out, task.layer)
    path = os.path.join(out, ATLAS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError('this worker (pid %d) cannot see %s: every worker must see the output folder at '
                                'that path, e.g. a folder shared by all machines' % (os.getpid(), out))
    with open(path) as f:
        there = json.load(f)
    if there != header:
        differences = header_differences(there, header) or [
            '%s: %r there, %r sent' % (key, there.get(key), header.get(key))
            for key in sorted(set(there) | set(header)) if there.get(key) != header.get(key)]
        raise ValueError('this worker (pid %d) finds another atlas at %s than the one this run claimed (%s): every '
                         'worker must see the same output folder at that path'
                         % (os.getpid(), path, '; '.join(differences)))
    os.makedirs(folder, exist_ok=True)
    ids = list(task.filters)
    with warnings.catch_warnings():
        # Filters that never had a gradient are marked in the catalog; a warning per task would break the bar.
        warnings.simplefilter('ignore', RuntimeWarning)
        result = visualize.ascend(model, task.layer_index, ids, settings.iters, settings.step_size,
                                  seed=settings.seed, size=settings.size, batch_size=len(ids),
                                  method=settings.method, precision=settings.precision)
    values = measures.measure_all(model, task.layer_index, ids, result.images)
    entries = [write_filter(out, task.layer_index, task.layer, f, result.images[i], result.objectives[:, i],
                            result.dead[i], {k: v[i] for k, v in values.items()})
               for i, f in enumerate(ids)]
    record = {'layer': task.layer, 'filters': ids, 'entries': entries,
              'seconds': round(time.perf_counter() - started, 3)}
    data = json.dumps(record, indent=1).encode('utf8')
    # Last: the filters count as done only from here on.
    download.write_atomic(os.path.join(folder, task.record_name), lambda f: f.write(data))
    return record


def write_examples(out, model, folder, tasks, *, precision, client=None, progress=True, k=EXAMPLES_K):
    """For each filter of `tasks`: the k patches of the images in `folder` that excite it most (examples.py).

    Writes LAYER/NNNN-example-R.png (the unit's receptive field, RGB) and then
    LAYER/NNNN-examples.json, each atomically; write_index() puts them into
    the catalog. A shard finds the examples of its own filters only.
    """
    filters = {}
    for task in tasks:
        filters.setdefault(task.layer_index, []).extend(task.filters)
    if not filters:
        return 0
    found = examples.find(model, folder, sorted(filters), k=k, filters=filters, progress=progress, client=client,
                          precision=precision)
    by_filter = {}
    for record in found.records:
        by_filter.setdefault((record['layer'], record['filter']), []).append(record)
    for index, ids in filters.items():
        layer = model.short_names[index]
        for feature_id in ids:
            records = by_filter.get((layer, feature_id), [])
            tiles = examples.patches(model, folder, records, found.size) if records else []
            shown = []
            for record, tile in zip(records, tiles):
                name = '%s/%04d-example-%d.png' % (layer, feature_id, record['rank'])
                picture = Image.fromarray(np.clip(np.round(tile), 0, 255).astype(np.uint8))
                _save_image(os.path.join(out, name), picture, 'PNG')
                shown.append({'png': name, 'file': record['file'], 'activation': _number(record['activation'])})
            data = json.dumps({'folder': os.path.abspath(folder), 'images': found.count, 'examples': shown},
                              indent=1).encode('utf8')
            download.write_atomic(os.path.join(out, '%s/%04d-examples.json' % (layer, feature_id)),
                                  lambda f: f.write(data))
    return len(found.records)


# ---------------------------------------------------------------------------
# The run

def check_writable(out):
    """OSError naming `out` unless it is, or can be made as, a folder this process writes into. Creates nothing."""
    probe = os.path.abspath(out)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise NotADirectoryError('cannot write the atlas into %s: %s is not a folder' % (out, probe))
    try:
        # os.access says yes to root even on a read-only mount; creating a file is the real test.
        fd, path = tempfile.mkstemp(dir=probe, prefix='.atlas-probe-')
        os.close(fd)
        os.remove(path)
    except OSError as error:
        raise PermissionError('cannot write the atlas into %s: %s is not writable (%s)'
                              % (out, probe, error.strerror)) from None


def header_differences(there, header):
    """What makes two atlas.json headers (dicts) render other pictures: list of text, empty when they agree."""
    differences = ['%s: %r there, %r now' % (key, there.get('settings', {}).get(key), value)
                   for key, value in header['settings'].items() if there.get('settings', {}).get(key) != value]
    if there.get('weights_md5') != header['weights_md5']:
        differences.append('weights md5: %s there (%s), %s now (%s)' % (
            there.get('weights_md5'), there.get('description'), header['weights_md5'], header['description']))
    if there.get('format') != FORMAT:
        differences.append('format: %r there, %d now' % (there.get('format'), FORMAT))
    return differences


def claim(out, header):
    """Create OUT/atlas.json from header (dict), or check the one there; ValueError on other settings or weights.

    Returns the header found or made there: what the run sends its workers.
    A new atlas gets a random atlas_id, so that a worker that sees another
    folder with the same settings at that path tells them apart.
    Two shards starting at once race here: the file is linked into place, so
    exactly one wins and the other compares against it.
    """
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, ATLAS_FILE)
    header = dict(header, atlas_id=uuid.uuid4().hex)
    data = json.dumps(header, indent=1, sort_keys=True).encode('utf8')
    temporary = '%s.tmp%d' % (path, os.getpid())
    try:
        with open(temporary, 'wb') as f:
            f.write(data)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    with open(path) as f:
        there = json.load(f)
    differences = header_differences(there, header)
    if differences:
        raise ValueError('%s was made with other settings or weights (%s); render into another folder, or run '
                         'with the settings it records' % (path, '; '.join(differences)))
    return there


def read_header(out):
    path = os.path.join(out, ATLAS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError('%s does not exist: %s is not an atlas folder (make one with `python atlas.py %s`)'
                                % (path, out, out))
    with open(path) as f:
        return json.load(f)


def render(out, spec, settings, header, tasks, client=None, progress=True):
    """Run the tasks not finished yet in `out`, in this process (client None) or on Dask; returns filters rendered now.

    One tqdm bar over filters, which starts at those already done.
    """
    from tqdm import tqdm
    done = done_filters(out)
    left = pending(tasks, done)
    total = sum(len(t.filters) for t in tasks)
    bar = tqdm(total=total, initial=total - sum(len(t.filters) for t in left), unit='filter', desc='atlas',
               disable=not progress, smoothing=0.1)
    rendered = 0
    try:
        if client is None:
            for task in left:
                rendered += len(run_task(task, spec, out, settings, header)['filters'])
                bar.update(len(task.filters))
        else:
            from dask.distributed import as_completed
            futures = [client.submit(run_task, task, spec, out, settings, header, pure=False) for task in left]
            try:
                for future in as_completed(futures):
                    count = len(future.result()['filters'])
                    rendered += count
                    bar.update(count)
            finally:
                client.cancel(futures)
    finally:
        bar.close()
    return rendered


def build_parser():
    parser = argparse.ArgumentParser(
        description='Render, measure and lay out on one page every filter of the chosen VGG16 conv layers. '
                    'Resumable: run the same command again after an interruption.')
    parser.add_argument('out', metavar='OUT', help='output folder (shared by every worker and shard)')
    parser.add_argument('--layers', default='all', help="conv layers: 'all' (default) or e.g. conv1_1,conv3_2 or 0,5")
    parser.add_argument('--filters', default='all', help="filter ids of each layer: 'all' (default), '0-15', '1,4,9'")
    parser.add_argument('--method', choices=visualize.METHOD_CHOICES, default='regularized',
                        help='regularized (default) or blog, as in visualize.py')
    parser.add_argument('--iters', type=int, default=200, help='steps per filter (default 200)')
    parser.add_argument('--size', type=int, default=224, help='image side in pixels (default 224)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the start images (default 0)')
    parser.add_argument('--step-size', type=float, default=None, help='blog method: step size (default 2)')
    parser.add_argument('--batch-size', type=int, default=None,
                        help='filters per task and per session.run (default: automatic per layer, as visualize.py)')
    parser.add_argument('--precision', choices=vgg16.PRECISION_CHOICES, default='auto',
                        help='float32, or bfloat16 convolutions; auto (default) is bfloat16 where the CPU has it '
                             'natively, decided once by the machine that starts the run')
    cluster.add_arguments(parser)
    parser.add_argument('--shard', default=None, metavar='I/N',
                        help='render only the I-th of N disjoint parts of the tasks (0 <= I < N), for array jobs')
    parser.add_argument('--index-only', action='store_true',
                        help='only rebuild catalog.json and index.html from the finished filters')
    parser.add_argument('--examples', default=None, metavar='DIR',
                        help='also show, for each filter, the %d patches of the images in DIR (PNG, JPEG) that '
                             'excite it most (examples.py)' % EXAMPLES_K)
    parser.add_argument('--model', default=None, help='a vgg16.tfmodel file (default: the one in the model folder)')
    parser.add_argument('--weights', default=None, help='build the graph from this Keras VGG16 h5 weight file first')
    parser.add_argument('--preprocess', choices=vgg16.PREPROCESS_CHOICES, default=None,
                        help='with --weights: caffe (default), unit or none')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    parser.add_argument('--verbose', action='store_true', help="show TensorFlow's start-up lines")
    return parser


def _model_source(args):
    """(model file path, visualize.py arguments that load the same model)."""
    if args.model:
        if args.weights or args.preprocess:
            raise ValueError('--model (a ready graph) and --weights/--preprocess (build one) exclude each other')
        return os.path.abspath(args.model), ['--model', os.path.abspath(args.model)]
    if args.weights or args.preprocess:
        if not args.weights:
            raise ValueError('--preprocess needs --weights FILE.h5')
        path = vgg16.maybe_download(weights=args.weights, preprocess=args.preprocess, quiet=args.quiet)
        return path, ['--weights', os.path.abspath(args.weights), '--preprocess', args.preprocess or 'caffe']
    path = vgg16.maybe_download(quiet=args.quiet)
    return path, ['--model', os.path.abspath(path)]


def visualize_command(settings, model_args):
    """The visualize.py command, without --layer and --filters, that renders a filter as the atlas does."""
    words = ['python', 'visualize.py'] + model_args + ['--method', settings.method, '--iters', str(settings.iters),
                                                       '--size', str(settings.size), '--seed', str(settings.seed),
                                                       '--precision', settings.precision]
    if settings.step_size is not None:
        words += ['--step-size', '%g' % settings.step_size]
    return ' '.join(shlex.quote(w) for w in words)


def main(argv=None):
    args = build_parser().parse_args(argv)
    # Absolute before anything is sent: workers of a running cluster have other working folders.
    args.out = os.path.abspath(args.out)
    try:
        if args.index_only:
            catalog = write_index(args.out)
            if not args.quiet:
                print('%s: %d filters in the catalog' % (os.path.join(args.out, PAGE_FILE), len(catalog)))
            return 0
        shard = parse_shard(args.shard)
        settings = Settings(args.method, args.iters, args.size, args.seed, args.step_size, args.batch_size,
                            args.precision).checked()
        check_writable(args.out)
        if args.examples:
            examples.list_images(args.examples)     # a missing or empty folder: said now, not after the ascent
        model_path, model_args = _model_source(args)
        spec = cluster.ModelSpec.of(model_path, threads=cluster.threads_from_args(args))
        model = cluster.worker_model(spec)
        filters_by_layer = {}
        for index in parse_layers(model, args.layers):
            vgg16.check_size(model, index, settings.size)
            if settings.method == 'regularized':
                seen = regularized.transformed_size(settings.size, regularized.Config())
                if seen < model.layer_min_sizes[index]:
                    raise ValueError('--size %d: the regularized method shows %s a %d px picture, it needs %d'
                                     % (settings.size, model.short_names[index], seen, model.layer_min_sizes[index]))
            ids = vgg16.parse_filters(args.filters, model.layer_channels[index])
            filters_by_layer[index] = vgg16.check_feature_ids(model, index, ids)
        tasks = shard_of(plan(model, settings, filters_by_layer), shard)
        stamp = vgg16.read_stamp(model_path) or {}
        # The h5 weights' md5 for a graph built from them, else the graph file's own (spec.md5).
        header = {'format': FORMAT, 'settings': asdict(settings), 'weights_md5': stamp.get('md5') or spec.md5,
                  'description': model.description, 'weights': stamp.get('weights_path'), 'model': model_path,
                  'command': visualize_command(settings, model_args)}
        with cluster.client_from_args(args) as client:
            header = claim(args.out, header)
            try:
                render(args.out, spec, settings, header, tasks, client, progress=not args.quiet)
                if args.examples:
                    write_examples(args.out, model, args.examples, tasks, precision=settings.precision,
                                   client=client, progress=not args.quiet)
            finally:
                catalog = write_index(args.out)
    except KeyboardInterrupt:
        print('interrupted: the finished filters are kept; run the same command again to go on', file=sys.stderr)
        return 130
    except (ValueError, OSError, download.DownloadError) as error:
        print('error: %s' % error, file=sys.stderr)
        return 2
    if not args.quiet:
        print('%s: %d filters' % (os.path.join(args.out, PAGE_FILE), len(catalog)))
    return 0


# ---------------------------------------------------------------------------
# The catalog and the page

def build_catalog(out):
    """One entry per finished filter, by layer then filter; a filter in two records (runs that raced) once.

    With --examples, an entry also holds `examples`: [{png, file, activation}], strongest first.
    """
    entries = {}
    for record in read_records(out):
        for entry in record['entries']:
            entries.setdefault((entry['layer_index'], entry['filter']), entry)
    for entry in entries.values():
        path = os.path.join(out, '%s/%04d-examples.json' % (entry['layer'], entry['filter']))
        if os.path.isfile(path):
            with open(path) as f:
                entry['examples'] = json.load(f)['examples']
    return [entries[key] for key in sorted(entries)]


def write_index(out):
    """Write OUT/catalog.json and OUT/index.html from the finished filters; returns the catalog (list)."""
    header = read_header(out)
    catalog = build_catalog(out)
    data = json.dumps(catalog, indent=0).encode('utf8')
    download.write_atomic(os.path.join(out, CATALOG_FILE), lambda f: f.write(data))
    page = page_html(header, catalog).encode('utf8')
    download.write_atomic(os.path.join(out, PAGE_FILE), lambda f: f.write(page))
    return catalog


def page_html(header, catalog):
    """index.html: the page's code and, in a JSON script block, the header and the catalog.

    Pages opened from file:// may not fetch() local files, so the data travels
    inside the page. Every text from files reaches the page through
    textContent, never as markup; in the script block, < > & are escaped so
    that no text can close it.
    """
    data = json.dumps({'atlas': header, 'catalog': catalog}, separators=(',', ':'))
    data = data.replace('<', '\\u003c').replace('>', '\\u003e').replace('&', '\\u0026')
    return PAGE.replace('/*DATA*/', data)


PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Filter atlas</title>
<link rel="icon" href="data:,">
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5em 2em; color: #222; background: #fafafa; }
header { position: sticky; top: 0; background: #fafafa; padding: .6em 0; border-bottom: 1px solid #ddd; z-index: 1; }
h1 { font-size: 1.3em; margin: .2em 0; }
#description { font-weight: 600; }
#settings, #count { color: #555; font-size: .9em; }
.controls { margin-top: .4em; }
section { content-visibility: auto; contain-intrinsic-size: auto 400px; scroll-margin-top: 10em; }
#layer-links { font-size: .9em; margin-top: .3em; }
#layer-links a { margin-right: 1em; white-space: nowrap; }
h2 { font-size: 1.1em; margin: 1.2em 0 .4em; }
.tiles { display: flex; flex-wrap: wrap; gap: 6px; }
.tile { width: 96px; margin: 0; cursor: pointer; font-size: 10px; line-height: 1.25; border: 2px solid transparent;
        background: #fff; }
.tile:hover { border-color: #1565c0; }
.tile img { width: 96px; height: 96px; display: block; background: #ccc; }
.tile.dead { border-color: #c62828; }
.tile.dead .id::after { content: " dead"; color: #c62828; font-weight: 600; }
.tile figcaption { padding: 1px 3px; }
.hidden { display: none !important; }
#detail { position: fixed; inset: 0; background: rgba(0, 0, 0, .55); display: flex; align-items: flex-start;
          justify-content: center; overflow: auto; z-index: 2; }
#detail[hidden] { display: none; }
#detail .card { background: #fff; margin: 2em 1em; padding: 1em 1.5em; max-width: 960px; position: relative; }
#detail .close { position: absolute; right: .6em; top: .4em; font-size: 1.4em; border: 0; background: none;
                 cursor: pointer; }
#detail .row { display: flex; flex-wrap: wrap; gap: 1.5em; }
#detail img.full { width: min(448px, 90vw); image-rendering: pixelated; background: #ccc; }
#detail table td { padding: 1px 8px 1px 0; }
pre { white-space: pre-wrap; word-break: break-all; background: #f0f0f0; padding: .5em; }
#detail-examples { display: flex; flex-wrap: wrap; gap: 8px; }
.example { margin: 0; width: 112px; font-size: 11px; word-break: break-all; }
.example img { width: 112px; height: 112px; image-rendering: pixelated; display: block; background: #ccc; }
</style>
</head>
<body>
<header>
  <h1>Filter atlas</h1>
  <div id="description"></div>
  <div id="settings"></div>
  <div class="controls">
    <label>Sort by <select id="sort">
      <option value="filter">filter id</option>
      <option value="activation">activation (highest first)</option>
      <option value="dead_fraction">dead fraction (highest first)</option>
      <option value="blur_robustness">blur robustness (highest first)</option>
    </select></label>
    <label><input type="checkbox" id="dead-only"> only dead pictures</label>
    <span id="count"></span>
  </div>
  <nav id="layer-links"></nav>
</header>
<main id="layers"></main>
<div id="detail" hidden>
  <div class="card" role="dialog" aria-labelledby="detail-title">
    <button class="close" id="detail-close" title="close (Esc)">&times;</button>
    <h2 id="detail-title"></h2>
    <div class="row">
      <a id="detail-link"><img class="full" id="detail-image" alt=""></a>
      <div>
        <table id="detail-measures"></table>
        <p>Objective at each step:</p>
        <img id="detail-curve" alt="objective at each step" width="360" height="140">
        <p><a id="detail-npz">float32 image and objectives (.npz)</a></p>
      </div>
    </div>
    <div id="detail-examples-box" hidden>
      <p id="detail-examples-title">Real image patches that excite it most:</p>
      <div id="detail-examples"></div>
    </div>
    <p>Render this filter alone:</p>
    <pre id="detail-command"></pre>
  </div>
</div>
<script id="atlas-data" type="application/json">/*DATA*/</script>
<script>
'use strict';
const data = JSON.parse(document.getElementById('atlas-data').textContent);
const atlas = data.atlas;
const catalog = data.catalog;
const $ = (id) => document.getElementById(id);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}
const precise = (value) => value === null ? 'n/a' : Number(value).toPrecision(3);
const fixed = (value) => value === null ? 'n/a' : Number(value).toFixed(2);

const settings = atlas.settings;
$('description').textContent = atlas.description;
$('settings').textContent = [
  'weights: ' + (atlas.weights || atlas.model),
  'md5 ' + atlas.weights_md5,
  settings.method + ' method',
  settings.iters + ' steps' + (settings.step_size === null ? '' : ' of size ' + settings.step_size),
  settings.size + ' px',
  'seed ' + settings.seed,
  settings.precision,
].join(' · ');

// One section per layer, its tiles in catalog order (by filter id).
const layers = new Map();
catalog.forEach((entry, position) => {
  if (!layers.has(entry.layer)) {
    const section = element('section');
    section.id = 'layer-' + entry.layer;
    section.append(element('h2', '', entry.layer));
    const tiles = element('div', 'tiles');
    section.append(tiles);
    $('layers').append(section);
    layers.set(entry.layer, {section: section, container: tiles, tiles: []});
  }
  const tile = element('figure', entry.dead ? 'tile dead' : 'tile');
  tile.dataset.position = position;
  const image = element('img');
  image.loading = 'lazy';
  image.decoding = 'async';
  image.width = 96;
  image.height = 96;
  image.alt = entry.layer + ' filter ' + entry.filter;
  image.src = entry.thumb;
  const caption = element('figcaption');
  caption.append(element('span', 'id', '#' + entry.filter), element('br'),
                 'act ' + precise(entry.activation), element('br'),
                 'dead ' + fixed(entry.dead_fraction) + ' · blur ' + fixed(entry.blur_robustness));
  tile.append(image, caption);
  layers.get(entry.layer).tiles.push({entry: entry, node: tile});
});
for (const [name, layer] of layers) {
  const fragment = document.createDocumentFragment();
  layer.tiles.forEach((tile) => fragment.append(tile.node));
  layer.container.append(fragment);
  const link = element('a', '', name + ' (' + layer.tiles.length + ', ' +
                       layer.tiles.filter((tile) => tile.entry.dead).length + ' dead)');
  link.href = '#layer-' + name;
  $('layer-links').append(link);
}

function sortTiles() {
  const key = $('sort').value;
  // Highest first for the measures, missing values (n/a) last; ties by filter id.
  const value = (entry) => entry[key] === null ? -Infinity : entry[key];
  const order = key === 'filter' ? (a, b) => a.entry.filter - b.entry.filter
    : (a, b) => (value(b.entry) - value(a.entry)) || (a.entry.filter - b.entry.filter);
  for (const layer of layers.values()) {
    layer.tiles.sort(order);
    const fragment = document.createDocumentFragment();
    layer.tiles.forEach((tile) => fragment.append(tile.node));
    layer.container.append(fragment);
  }
}

function filterTiles() {
  const deadOnly = $('dead-only').checked;
  let shown = 0;
  for (const layer of layers.values()) {
    let inLayer = 0;
    for (const tile of layer.tiles) {
      const show = !deadOnly || tile.entry.dead;
      tile.node.classList.toggle('hidden', !show);
      inLayer += show;
    }
    layer.section.classList.toggle('hidden', inLayer === 0);
    shown += inLayer;
  }
  $('count').textContent = shown + ' of ' + catalog.length + ' filters shown';
}

function openDetail(entry) {
  $('detail-title').textContent = entry.layer + ' · filter ' + entry.filter + (entry.dead ? ' (dead)' : '');
  $('detail-image').src = entry.png;
  $('detail-image').alt = entry.layer + ' filter ' + entry.filter;
  $('detail-link').href = entry.png;
  $('detail-curve').src = entry.curve;
  $('detail-npz').href = entry.npz;
  const rows = [['activation', precise(entry.activation)], ['dead fraction', fixed(entry.dead_fraction)],
                ['blur robustness', fixed(entry.blur_robustness)], ['objective, last step', precise(entry.objective)],
                ['gradient ever non-zero', entry.no_gradient ? 'no' : 'yes']];
  $('detail-measures').replaceChildren(...rows.map(([name, value]) => {
    const row = element('tr');
    row.append(element('td', '', name), element('td', '', value));
    return row;
  }));
  // Only with --examples: the receptive fields of the strongest units in real images.
  $('detail-examples-box').hidden = !entry.examples;
  $('detail-examples-title').textContent = entry.examples && entry.examples.length === 0
    ? 'No image of the examples folder turns this filter on.'
    : 'Real image patches that excite it most (receptive field of the strongest unit; file · activation):';
  $('detail-examples').replaceChildren(...(entry.examples || []).map((example) => {
    const figure = element('figure', 'example');
    const image = element('img');
    image.src = example.png;
    image.alt = example.file;
    figure.append(image, element('figcaption', '', example.file + ' · ' + precise(example.activation)));
    return figure;
  }));
  const name = entry.layer + '-' + entry.filter;
  $('detail-command').textContent = atlas.command + ' --layer ' + entry.layer + ' --filters ' + entry.filter +
    ' --out ' + name + '.png --npz ' + name + '.npz';
  $('detail').hidden = false;
  $('detail').dataset.layer = entry.layer;
  $('detail').dataset.filter = entry.filter;
}

function closeDetail() {
  $('detail').hidden = true;
  if (location.hash) history.replaceState(null, '', location.pathname + location.search);
}

function showHash() {
  const match = /^#(conv\d_\d)-(\d+)$/.exec(location.hash);
  const entry = match && catalog.find((e) => e.layer === match[1] && e.filter === Number(match[2]));
  if (entry) openDetail(entry); else $('detail').hidden = true;
}

$('layers').addEventListener('click', (event) => {
  const tile = event.target.closest('.tile');
  if (!tile) return;
  const entry = catalog[Number(tile.dataset.position)];
  location.hash = entry.layer + '-' + entry.filter;
});
$('detail-close').addEventListener('click', closeDetail);
$('detail').addEventListener('click', (event) => { if (event.target === $('detail')) closeDetail(); });
document.addEventListener('keydown', (event) => { if (event.key === 'Escape') closeDetail(); });
window.addEventListener('hashchange', showHash);
$('sort').addEventListener('change', sortTiles);
$('dead-only').addEventListener('change', filterTiles);
filterTiles();
showHash();
</script>
</body>
</html>
"""


if __name__ == '__main__':
    # One copy of this module, so that Dask pickles run_task by reference to `atlas`, not to __main__.
    import atlas
    raise SystemExit(atlas.main())

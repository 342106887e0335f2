"""
An atlas of every filter: each filter of each unit of a network rendered
(visualize.py), measured (measures.py) and laid out on one static page,
OUT/index.html, that opens straight from the file system. The network is any
network.Network (by default VGG16's conv layers, chosen with the model flags
of models.py). Each filter can be shown in several views (--views): what
turns it on (channel), what turns it off (negative), its centre unit
(neuron), and N pictures pushed apart (diversityN). The work runs in this
process, on a local Dask cluster or on a running one (cluster.py), or in
disjoint shards for array jobs; killed at any moment, the same command
resumes where it stopped.

    python atlas.py OUT                                   # every filter of every unit, regularized, 224 px, 200 steps, seed 0
    python atlas.py OUT --layers 0,5 --filters 0-15 --method blog --iters 150 --size 128 --seed 0
    python atlas.py OUT --views channel,negative,neuron,diversity4   # 7 pictures per filter: 7x the time and disk
    python atlas.py OUT --weights my.h5 --preprocess unit # the network of visualize.py's model flags
    python atlas.py OUT --workers 2                       # a local Dask cluster of 2 worker processes
    python atlas.py OUT --scheduler tcp://HOST:8786       # a running Dask cluster; OUT is a folder every worker sees
    python atlas.py OUT --shard 3/16                      # the 4th of 16 disjoint parts, for array jobs
    python atlas.py OUT --index-only                      # rebuild catalog.json and index.html from what is finished

    import atlas
    settings = atlas.Settings(iters=50, size=64, views=('channel', 'negative')).checked()
    tasks = atlas.plan(net, settings, atlas.select(net, settings))      # net: any network.Network with a file
    atlas.make(out, net, settings, tasks, atlas.make_header(net, settings, command=''))

What OUT holds (UNIT: the unit's name, or INDEX~NAME for a name that is not a
plain file name, e.g. 007~mixed_5b_a_b for 'mixed_5b/a:b'; PICTURE: NNNN for
the channel view, NNNN-VIEW for negative and neuron, NNNN-diversityN-G for
picture G (0..N-1) of a diversityN view):
    atlas.json               the settings that make a picture, the views asked for so far, and the network's
                             identity (weights md5 and preprocessing); a run with other settings is refused,
                             a run with other views adds them
    UNIT/PICTURE.npz         image float32 [size, size, C] (C = the network's input channels) ~0..255,
                             objectives float32 [iters], dead bool
    UNIT/PICTURE.png         the picture, full size, scaled by its own min and max
    UNIT/PICTURE-thumb.jpg   the same, THUMB_SIDE px, for the page
    UNIT/PICTURE-objective.svg  the objective at each step
    UNIT/task-NNNN.json      the record of one finished task of the channel view (its filters and their
                             measures), written last; task-NNNN-VIEW.json for the other views
    catalog.json             one object per filter with a finished view; index.html  the page (atlas.html filled in)

The piece of work (a task) is one unit, one batch of its filters and one
view; batches are cut from the unit's filter ids by the settings alone, the
same for every view, so every engine and every shard runs the same tasks. A
filter's view is done once its task's record exists.
"""

import argparse
import json
import math
import os
import re
import shlex
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, replace

if __name__ == '__main__':
    # Before anything imports TensorFlow, so that its start-up lines are held back (shown with --verbose).
    import quiet
    quiet.import_tensorflow(verbose='--verbose' in sys.argv[1:])
    quiet.one_line_warnings()

import numpy as np
from PIL import Image

import cluster
import examples
import files
import measures
import models
import network
import pictures
import precision
import regularized
import visualize

# 2: the header names the network by its weights' md5 and its preprocessing, and files by name, not path.
# 3: the settings hold the views and the diversity weight; records and catalog entries hold views.
FORMAT = 3
# A format-2 atlas is read as one of channel views only (and upgraded when a run claims it).
OLD_FORMAT = 2
THUMB_SIDE = 96
# A picture counts as dead on the page when its filter never had a gradient,
# or when it cannot see at least this share of it (measures.dead_fraction);
# the latter not in the neuron view, whose unit sees only its receptive field.
DEAD_PICTURE = 0.5
ATLAS_FILE = 'atlas.json'
# Held by a run that adds views to atlas.json, for the moment it rewrites it.
LOCK_FILE = '.atlas.lock'
LOCK_SECONDS = 60
CATALOG_FILE = 'catalog.json'
PAGE_FILE = 'index.html'
# The page's markup, style and code; page_html() fills in its data block.
PAGE_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'atlas.html')
PAGE_DATA = '/*DATA*/'
# A unit name that can be a folder name as it is (no path separators, dots or
# markup); others get INDEX~NAME, which no such name can be.
PLAIN_NAME = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_-]{0,63}')
# Real-image patches per filter with --examples.
EXAMPLES_K = 6
# The views of a filter (--views), in the order the page shows them; diversityN follows, by N.
SINGLE_VIEWS = ('channel', 'negative', 'neuron')
DIVERSITY_VIEW = re.compile(r'diversity(0|[1-9][0-9]*)')
VIEW_TITLES = {'channel': 'the mean of the filter: what turns it on',
               'negative': 'minus the mean: what turns it off (measured before the ReLU)',
               'neuron': "the centre unit of the filter's map"}


@dataclass(frozen=True)
class View:
    """One view of a filter: its name (as --views spells it), the objective of its pictures
    (visualize.filter_objective's kind) and its pictures per filter (diversity: None for one)."""
    name: str
    objective: str
    diversity: int = None

    @property
    def pictures(self):
        return self.diversity or 1

    @property
    def order(self):
        """Where the view stands on the page and in atlas.json: the single views, then diversityN by N."""
        return (len(SINGLE_VIEWS), self.diversity) if self.diversity else (SINGLE_VIEWS.index(self.name), 0)


def parse_view(name):
    """The View called `name` ('channel', 'negative', 'neuron', 'diversityN' with N >= 2); ValueError otherwise."""
    if name in SINGLE_VIEWS:
        return View(name, name)
    match = DIVERSITY_VIEW.fullmatch(name)
    if match is None:
        raise ValueError('view %r: expected %s or diversityN (N >= 2 pictures per filter), separated by commas'
                         % (name, ', '.join(SINGLE_VIEWS)))
    count = int(match.group(1))
    if count < 2:
        raise ValueError('view %r: a diversity view needs N >= 2 pictures per filter (diversity2, diversity4, ...); '
                         'one picture is the channel view' % name)
    return View(name, 'channel', count)


def check_views(names):
    """Names of views (an iterable of text) -> a tuple in page order; ValueError for a bad, repeated or no view."""
    names = [str(name).strip() for name in names]
    views = [parse_view(name) for name in names]
    if not views:
        raise ValueError('no view given: expected one or more of %s, diversityN' % ', '.join(SINGLE_VIEWS))
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError('view %s given twice: name each view once' % ', '.join(repeated))
    return tuple(view.name for view in sorted(views, key=lambda view: view.order))


@dataclass(frozen=True)
class Settings:
    """What makes a picture besides the network, the unit, the filter and the view; kept in OUT/atlas.json.

    method: 'regularized' or 'blog' (see visualize.ascend); iters: steps >= 1;
    size: image side in pixels; seed: int >= 0 (a filter's start depends only
    on it and the filter id); step_size: the blog method's (default 2), None
    for the regularized one; batch_size: filters per task and pictures per
    session.run, None for visualize.auto_batch_size of each unit; precision:
    'float32' or 'bfloat16' ('auto' is resolved here, on the machine that
    starts the run, so that workers on other machines cannot pick another
    one); views: names of views (see parse_view), kept in page order;
    diversity_weight: how hard the pictures of a diversity view push apart
    (None: visualize.DEFAULT_DIVERSITY_WEIGHT of the method), recorded even
    without a diversity view, so that one added later matches.
    """
    method: str = 'regularized'
    iters: int = 200
    size: int = 224
    seed: int = 0
    step_size: float = None
    batch_size: int = None
    precision: str = 'auto'
    views: tuple = ('channel',)
    diversity_weight: float = None

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
        batch_size = None if self.batch_size is None else network.check_int('batch_size', self.batch_size, 1)
        weight = self.diversity_weight
        weight = visualize.DEFAULT_DIVERSITY_WEIGHT[self.method] if weight is None else weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError('diversity_weight=%r: expected a finite number >= 0 (0: no push)' % (weight,))
        return Settings(self.method, network.check_int('iters', self.iters, 1),
                        network.check_int('size', self.size, 1), network.check_seed(self.seed), step_size,
                        batch_size, precision.resolve_precision(self.precision), check_views(self.views),
                        float(weight))


@dataclass(frozen=True)
class Task:
    """One piece of work: a batch of filters (ints, ascending) of the unit at layer_index, named layer, in one view."""
    layer_index: int
    layer: str
    filters: tuple
    view: str = 'channel'

    @property
    def folder(self):
        return unit_folder(self.layer_index, self.layer)

    @property
    def record_name(self):
        return 'task-%04d%s.json' % (self.filters[0], view_suffix(self.view))

    @property
    def pictures(self):
        return len(self.filters) * parse_view(self.view).pictures

    def __str__(self):
        return 'task %s filters %s%s' % (self.layer, id_ranges(self.filters),
                                         '' if self.view == 'channel' else ' view ' + self.view)


class TaskError(RuntimeError):
    """A task failed on a Dask worker; the message is one line naming the task, the worker and the reason."""


def unit_folder(layer_index, name):
    """The folder (under OUT) of a unit's files: its name when that is a plain file name, else INDEX~NAME.

    Unit names may hold any character ('/', ':', '<'); the index keeps two
    names that differ only in such characters apart.
    """
    if PLAIN_NAME.fullmatch(name):
        return name
    return '%03d~%s' % (layer_index, re.sub(r'[^A-Za-z0-9_-]+', '_', name)[:48])


def view_suffix(view, group=None):
    """What a view adds to a filter's file names: '' (channel), '-negative', '-diversity4-2' (picture 2)."""
    if view == 'channel':
        return ''
    return '-%s' % view if group is None else '-%s-%d' % (view, group)


def id_ranges(ids):
    """Filter ids (ascending ints) as text: [0, 1, 2, 3, 7] -> '0-3,7'."""
    runs = []
    for f in ids:
        if runs and f == runs[-1][1] + 1:
            runs[-1][1] = f
        else:
            runs.append([f, f])
    return ','.join('%d' % a if a == b else '%d-%d' % (a, b) for a, b in runs)


# ---------------------------------------------------------------------------
# Planning: which tasks, in which shard, and which are done

def parse_layers(net, text):
    """'all', or unit names / indices separated by commas -> ascending unit indices, no repeats.

    A part that is a unit's name is that unit, even when it reads as a number.
    """
    if text.strip() == 'all':
        return list(range(len(net.units)))
    indices = set()
    for part in text.split(','):
        part = part.strip()
        if part not in net.short_names and part.lstrip('-').isdigit():
            part = int(part)
        indices.add(net.layer_index(part))
    return sorted(indices)


def select(net, settings, layers='all', filters='all'):
    """{unit index: filter ids} for the --layers and --filters texts, checked against the network and settings.

    ValueError naming the unit when it cannot take the settings' size, or a filter id it does not have.
    """
    filters_by_layer = {}
    for index in parse_layers(net, layers):
        network.check_size(net, index, settings.size)
        if settings.method == 'regularized':
            seen = regularized.transformed_size(settings.size, regularized.Config())
            if seen < net.layer_min_sizes[index]:
                raise ValueError('--size %d: the regularized method shows %s a %d px picture, it needs %d'
                                 % (settings.size, net.short_names[index], seen, net.layer_min_sizes[index]))
        ids = network.parse_filters(filters, net.layer_channels[index])
        filters_by_layer[index] = network.check_feature_ids(net, index, ids)
    return filters_by_layer


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


def plan(net, settings, filters_by_layer):
    """Every task of the selection, in a fixed order: list of Task.

    filters_by_layer: {unit index: filter ids}. A unit's batches are cut from
    its whole range of filter ids (0..B-1, B..2B-1, ...), then narrowed to the
    selection, so a task never depends on the engine, the shard or what else
    is selected; every view has the same batches. Tasks go view by view
    (settings.views' order), each unit by unit: a run finishes the first view
    of every filter before the next, and a shard (every N-th task) holds some
    of every view and unit.
    """
    batches = []
    for index in sorted(filters_by_layer):
        batch = settings.batch_size or visualize.auto_batch_size(net, index, settings.size)
        wanted = set(filters_by_layer[index])
        for begin in range(0, net.layer_channels[index], batch):
            ids = tuple(f for f in range(begin, begin + batch) if f in wanted)
            if ids:
                batches.append((index, ids))
    return [Task(index, net.short_names[index], ids, view) for view in settings.views for index, ids in batches]


def shard_of(tasks, shard):
    """The tasks of shard (I, N): every N-th task from the I-th, so each shard gets some of every unit."""
    index, count = shard
    return tasks[index::count]


def read_json(path, who='', attempts=5):
    """The JSON object in `path` (dict); ValueError naming the file when it is not one.

    Every file of an atlas is written whole (files.write_atomic), but a person
    or another tool may rewrite atlas.json in place, and a reader that comes
    in between sees it empty or cut short. So a file that does not parse is
    read again a few times (0.1, 0.2, 0.4, 0.8 s apart) before it is called
    damaged. who: how the error names the reader, e.g. 'this worker (pid 12)'.
    """
    for attempt in range(attempts):
        with open(path, 'rb') as f:
            data = f.read()
        try:
            value = json.loads(data.decode('utf8'))    # a cut in a multi-byte character is damage too
            if isinstance(value, dict):
                return value
            kinds = {list: 'array', str: 'string', bool: 'boolean', type(None): 'null'}
            error = 'a JSON %s, not an object' % kinds.get(type(value), 'number')
        except ValueError as problem:                   # UnicodeDecodeError is a ValueError
            error = problem
        if attempt == attempts - 1:
            raise ValueError('%s%s is damaged: it is not a JSON object (%s, %d bytes); restore it, or render into '
                             'another folder' % (who + ' finds that ' if who else '', path, error, len(data)))
        time.sleep(0.1 * 2 ** attempt)


def read_records(out):
    """Every task record under out: list of dict, in a fixed order (unit folder, then file name).

    A record of a format-2 atlas (one picture per filter, no view) is read as
    one of the channel view, in today's form.
    """
    records = []
    for name in sorted(os.listdir(out)):
        folder = os.path.join(out, name)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.startswith('task-') and name.endswith('.json'):
                record = read_json(os.path.join(folder, name))
                if 'view' not in record:
                    record = dict(record, view='channel', entries=[
                        {'layer': e['layer'], 'layer_index': e['layer_index'], 'filter': e['filter'],
                         'view': 'channel', 'pictures': [{k: v for k, v in e.items()
                                                          if k not in ('layer', 'layer_index', 'filter')}]}
                        for e in record['entries']])
                records.append(record)
    return records


def pending(tasks, done):
    """The tasks narrowed to their filters not in `done` (a set of (layer, filter, view)); empty ones dropped."""
    left = []
    for task in tasks:
        ids = tuple(f for f in task.filters if (task.layer, f, task.view) not in done)
        if ids:
            left.append(Task(task.layer_index, task.layer, ids, task.view))
    return left


def done_views(out):
    """{(layer, filter, view)} of every finished view of a filter under out."""
    return {(entry['layer'], entry['filter'], record['view'])
            for record in read_records(out) for entry in record['entries']}


# ---------------------------------------------------------------------------
# One task, on a worker or in this process

def _picture(pixels):
    """A PIL image of uint8 pixels [H, W, 3] (RGB) or [H, W, 1] (greyscale)."""
    return Image.fromarray(pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels)


def _png(image):
    """The picture of an image [H, W, C], scaled to 0..255 by its own min and max (pictures.normalize_image)."""
    return _picture(np.round(pictures.normalize_image(image) * 255).astype(np.uint8))


def _save_image(path, picture, format, **options):
    files.write_atomic(path, lambda f: picture.save(f, format=format, **options))


def objective_svg(objectives, width=240, height=100):
    """A line chart of objectives (float [iters]) as SVG text, with its lowest and highest value.

    The page shows it at 200 px wide, under its picture: near its own size, so that its 11 px text stays legible.
    """
    values = np.nan_to_num(np.asarray(objectives, np.float64))
    low, high = float(values.min()), float(values.max())
    span = high - low if high - low > 1e-12 else 1.0
    left, right, top, bottom = 48, width - 8, 8, height - 22
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
    """A measure for JSON: 5 significant digits, None for NaN, 0.0 for -0.0 (a negative view's dead filter)."""
    value = float(value)
    return None if math.isnan(value) else float('%.5g' % value) + 0.0


def picture_base(layer_index, layer, feature_id, view, group=0):
    """A picture's files under OUT, without their ending: UNIT/NNNN, UNIT/NNNN-negative, UNIT/NNNN-diversity4-2."""
    return '%s/%04d%s' % (unit_folder(layer_index, layer), feature_id,
                          view_suffix(view, group if parse_view(view).diversity else None))


def write_picture(out, base, image, objectives, no_gradient, values, whole=True):
    """Write one picture's files (base: picture_base()), each atomically; returns its catalog entry (dict).

    image: float32 [size, size, C] ~0..255; objectives: float32 [iters];
    values: its measures (measures.measure_objectives, one picture's);
    whole: whether its objective looks at the whole picture, so that a large
    dead fraction makes it dead (not so a neuron's).
    files.WriteError (naming the file and the cause) when one cannot be written.
    """
    path = os.path.join(out, base)
    files.write_atomic(path + '.npz', lambda f: np.savez(f, image=image, objectives=objectives,
                                                         dead=np.bool_(no_gradient)))
    picture = _png(image)
    _save_image(path + '.png', picture, 'PNG')
    side = min(THUMB_SIDE, picture.width)
    _save_image(path + '-thumb.jpg', picture.resize((side, side), Image.LANCZOS), 'JPEG', quality=85)
    svg = objective_svg(objectives).encode('utf8')
    files.write_atomic(path + '-objective.svg', lambda f: f.write(svg))
    dead_fraction = _number(values['dead_fraction'])
    return {'png': base + '.png', 'thumb': base + '-thumb.jpg', 'curve': base + '-objective.svg',
            'npz': base + '.npz',
            'activation': _number(values['activation']), 'dead_fraction': dead_fraction,
            'blur_robustness': _number(values['blur_robustness']),
            'no_gradient': bool(no_gradient), 'dead': bool(no_gradient) or whole and dead_fraction >= DEAD_PICTURE,
            'objective': _number(objectives[-1])}


def run_task(task, spec, out, settings, header):
    """Render, measure and write one task's filters, then its record; returns the record (dict).

    Runs on a Dask worker (through run_task_on_worker) or in this process;
    the worker's network is loaded once (cluster.worker_model). out: the
    absolute path of the atlas folder, the same for every worker; header: its
    atlas.json as the run claimed it (claim()). A worker that finds another atlas.json there (another folder
    at that path, or a relative path read from another working folder)
    refuses before it writes anything. task.view: which view of its filters.
    """
    started = time.perf_counter()
    net = cluster.worker_model(spec)
    folder = os.path.join(out, task.folder)
    path = os.path.join(out, ATLAS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError('this worker (pid %d) cannot see %s: every worker must see the output folder at '
                                'that path, e.g. a folder shared by all machines' % (os.getpid(), out))
    there = read_json(path, who='this worker (pid %d)' % os.getpid())
    # Views are left out: another run may add views to the atlas while this one runs.
    if without_views(there) != without_views(header):
        differences = header_differences(there, header) or [
            '%s: %r there, %r sent' % (key, there.get(key), header.get(key))
            for key in sorted(set(there) | set(header)) if there.get(key) != header.get(key)]
        raise ValueError('this worker (pid %d) finds another atlas at %s than the one this run claimed (%s): every '
                         'worker must see the same output folder at that path'
                         % (os.getpid(), path, '; '.join(differences)))
    os.makedirs(folder, exist_ok=True)
    ids = list(task.filters)
    view = parse_view(task.view)
    with warnings.catch_warnings():
        # Filters that never had a gradient are marked in the catalog; a warning per task would break the bar.
        warnings.simplefilter('ignore', RuntimeWarning)
        # batch_size: the task's filters, so a diversity view's session.run holds as many pictures as a
        # channel view's (or one group, when a group is larger).
        result = visualize.ascend(net, task.layer_index, ids, settings.iters, settings.step_size,
                                  seed=settings.seed, size=settings.size, batch_size=len(ids),
                                  method=settings.method, precision=settings.precision, objective=view.objective,
                                  diversity=view.diversity,
                                  diversity_weight=settings.diversity_weight if view.diversity else None)
    per = view.pictures
    # Picture p is group p % per of filter ids[p // per]; each is measured by its own objective, after the ReLU
    # but for a negative view, whose filter ends up off there (as visualize.py measures it).
    values = measures.measure_objectives(
        net, [visualize.filter_objective(view.objective, task.layer_index, f) for f in ids for _ in range(per)],
        result.images, pre_relu=view.objective == 'negative')
    entries = []
    for i, f in enumerate(ids):
        pictures = [write_picture(out, picture_base(task.layer_index, task.layer, f, task.view, g),
                                  result.images[p], result.objectives[:, p], result.dead[p],
                                  {k: v[p] for k, v in values.items()}, whole=view.objective != 'neuron')
                    for g, p in enumerate(range(i * per, (i + 1) * per))]
        entry = {'layer': task.layer, 'layer_index': task.layer_index, 'filter': f, 'view': task.view,
                 'pictures': pictures}
        if view.diversity:
            entry['diversity'] = _number(measures.diversity(net, task.layer_index,
                                                            result.images[i * per:(i + 1) * per]))
        entries.append(entry)
    record = {'layer': task.layer, 'view': task.view, 'filters': ids, 'entries': entries,
              'seconds': round(time.perf_counter() - started, 3)}
    data = json.dumps(record, indent=1).encode('utf8')
    # Last: the filters' view counts as done only from here on.
    files.write_atomic(os.path.join(folder, task.record_name), lambda f: f.write(data))
    return record


def run_task_on_worker(task, spec, out, settings, header):
    """run_task on a Dask worker; any error comes back as one TaskError naming the task, the worker and the reason.

    The worker's traceback would reach the user as pages of Dask and
    TensorFlow frames; the reason is in the message already.
    """
    try:
        return run_task(task, spec, out, settings, header)
    except Exception as error:
        raise TaskError('%s failed on worker %s: %s' % (task, cluster.worker_address(), _reason(error))) from None


def _reason(error):
    """An exception as one line; its type first unless the message says what went wrong (ValueError, OSError)."""
    text = ' '.join(str(error).split())
    if isinstance(error, (ValueError, OSError)) and text:
        return text
    return '%s: %s' % (type(error).__name__, text) if text else type(error).__name__


def write_examples(out, net, folder, tasks, *, precision, client=None, progress=True, k=EXAMPLES_K):
    """For each filter of `tasks`: the k patches of the images in `folder` that excite it most (examples.py).

    Writes UNIT/NNNN-example-R.png (the unit's receptive field, as the
    network sees it: RGB or greyscale) and then UNIT/NNNN-examples.json, each
    atomically; write_index() puts them into the catalog. A shard finds the
    examples of its own filters only (each once, whatever its views).
    """
    filters = {}
    for task in tasks:
        filters.setdefault(task.layer_index, set()).update(task.filters)
    filters = {index: sorted(ids) for index, ids in filters.items()}
    if not filters:
        return 0
    found = examples.find(net, folder, sorted(filters), k=k, filters=filters, progress=progress, client=client,
                          precision=precision)
    by_filter = {}
    for record in found.records:
        by_filter.setdefault((record['layer'], record['filter']), []).append(record)
    for index, ids in filters.items():
        layer = net.short_names[index]
        unit = unit_folder(index, layer)
        for feature_id in ids:
            records = by_filter.get((layer, feature_id), [])
            tiles = examples.patches(net, folder, records, found.size) if records else []
            shown = []
            for record, tile in zip(records, tiles):
                name = '%s/%04d-example-%d.png' % (unit, feature_id, record['rank'])
                picture = _picture(np.clip(np.round(tile), 0, 255).astype(np.uint8))
                _save_image(os.path.join(out, name), picture, 'PNG')
                shown.append({'png': name, 'file': record['file'], 'activation': _number(record['activation'])})
            data = json.dumps({'folder': os.path.abspath(folder), 'images': found.count, 'examples': shown},
                              indent=1).encode('utf8')
            files.write_atomic(os.path.join(out, examples_file(unit, feature_id)), lambda f: f.write(data))
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


def make_header(net, settings, command, weights=None):
    """What OUT/atlas.json records about a run (dict), before claim() gives it an atlas_id.

    net: the network.Network; its identity is the weights' md5 (net.md5) and
      the preprocessing inside its graph (net.preprocess, None when unknown):
      the same h5 weights under another preprocessing make other pictures.
    settings: checked Settings; command: the visualize.py command that
      renders one filter the same way (visualize_command), shown on the page;
      weights: the path of the h5 file the graph was built from, if any.
    Files are kept by name only: the page travels to other machines.
    """
    return {'format': FORMAT, 'settings': dict(asdict(settings), views=list(settings.views)), 'weights_md5': net.md5, 'preprocess': net.preprocess,
            'description': net.description, 'weights': os.path.basename(weights) if weights else None,
            'model': os.path.basename(net.path) if net.path else None, 'command': command}


def header_differences(there, header):
    """What makes two atlas.json headers (dicts) render other pictures: list of text, empty when they agree.

    The views are no such difference: a run may add views (claim()).
    """
    if there.get('format') != FORMAT:
        return ['format: %r there, %d now (the atlas was made by another version of atlas.py)'
                % (there.get('format'), FORMAT)]
    differences = ['%s: %r there, %r now' % (key, there.get('settings', {}).get(key), value)
                   for key, value in header['settings'].items()
                   if key != 'views' and there.get('settings', {}).get(key) != value]
    if there.get('weights_md5') != header['weights_md5']:
        differences.append('weights md5: %s there (%s), %s now (%s)' % (
            there.get('weights_md5'), there.get('description'), header['weights_md5'], header['description']))
    if there.get('preprocess') != header['preprocess']:
        differences.append('preprocess: %r there, %r now' % (there.get('preprocess'), header['preprocess']))
    return differences


def without_views(header):
    """A header (dict) without its settings' views: what must stay the same while runs add views."""
    return dict(header, settings={k: v for k, v in header.get('settings', {}).items() if k != 'views'})


def upgraded(there, header=None):
    """A format-2 header (dict) as format 3: channel views only, and the diversity weight of `header` (the
    run's: the old atlas has no diversity picture to disagree with), else None. Other headers as they are."""
    if there.get('format') != OLD_FORMAT:
        return there
    weight = header['settings']['diversity_weight'] if header else None
    return dict(there, format=FORMAT, settings=dict(there.get('settings', {}), views=['channel'],
                                                    diversity_weight=weight))


def claim(out, header):
    """Create OUT/atlas.json from header (dict), or check the one there; ValueError on other settings or weights.

    Returns the header found or made there: what the run sends its workers.
    A new atlas gets a random atlas_id, so that a worker that sees another
    folder with the same settings at that path tells them apart. Views that
    the atlas.json there lacks are added to it (its views are those of every
    run so far, in page order); a format-2 atlas.json is upgraded. Otherwise
    an atlas.json that is there already is only read: a refused run changes
    nothing in OUT. Two shards starting at once race here: the file is
    linked into place (files.link_new), so exactly one wins and the other
    compares against it; runs adding views take a lock (OUT/.atlas.lock) so
    that none loses another's.
    """
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, ATLAS_FILE)
    if not os.path.exists(path):
        files.link_new(path, _header_bytes(dict(header, atlas_id=uuid.uuid4().hex)))
    written = read_json(path)
    there = upgraded(written, header)
    differences = header_differences(there, header)
    if differences:
        raise ValueError('%s was made with other settings or another network (%s); render into another folder, '
                         'or run with the settings it records' % (path, '; '.join(differences)))
    if there is not written or not set(header['settings']['views']) <= set(there['settings']['views']):
        # Only the views (and the format) change: the rest was checked above, and no run changes it.
        with files.exclusive_lock(os.path.join(out, LOCK_FILE), timeout=LOCK_SECONDS, quiet=True):
            there = upgraded(read_json(path), header)
            views = check_views(set(there['settings']['views']) | set(header['settings']['views']))
            there = dict(there, settings=dict(there['settings'], views=list(views)))
            data = _header_bytes(there)
            files.write_atomic(path, lambda f: f.write(data))
    return there


def _header_bytes(header):
    return json.dumps(header, indent=1, sort_keys=True).encode('utf8')


def read_header(out):
    """OUT/atlas.json (dict), a format-2 one as format 3 (upgraded); FileNotFoundError when OUT is no atlas."""
    path = os.path.join(out, ATLAS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError('%s does not exist: %s is not an atlas folder (make one with `python atlas.py %s`)'
                                % (path, out, out))
    return upgraded(read_json(path))


def render(out, spec, settings, header, tasks, client=None, progress=True):
    """Run the tasks not finished yet in `out`, in this process (client None) or on Dask; returns pictures rendered now.

    One tqdm bar over pictures (a diversityN view has N per filter), which starts at those already done.
    """
    from tqdm import tqdm
    left = pending(tasks, done_views(out))
    total = sum(task.pictures for task in tasks)
    bar = tqdm(total=total, initial=total - sum(task.pictures for task in left), unit='picture', desc='atlas',
               disable=not progress, smoothing=0.1)
    rendered = 0
    try:
        if client is None:
            for task in left:
                run_task(task, spec, out, settings, header)
                rendered += task.pictures
                bar.update(task.pictures)
        else:
            from dask.distributed import as_completed
            futures = {client.submit(run_task_on_worker, task, spec, out, settings, header, pure=False): task
                       for task in left}
            try:
                for future in as_completed(futures):
                    task = futures[future]
                    _result(future, task)
                    rendered += task.pictures
                    bar.update(task.pictures)
            finally:
                client.cancel(list(futures))
    finally:
        bar.close()
    return rendered


def _result(future, task):
    """The record of a finished task's future; TaskError (one line) when it failed."""
    from dask.distributed import KilledWorker
    try:
        return future.result()
    except TaskError:
        raise
    except KilledWorker as error:
        raise TaskError('%s failed on worker %s: the worker died while running it (tried on %d worker(s); out of '
                        'memory? see the workers\' logs)'
                        % (task, getattr(error.last_worker, 'address', error.last_worker),
                           error.allowed_failures + 1)) from None
    except Exception as error:
        # Raised before run_task_on_worker could run, e.g. by a scheduler or worker that cannot load this module.
        raise TaskError('%s failed on the cluster: %s' % (task, _reason(error))) from None


def make(out, net, settings, tasks, header, *, client=None, examples_folder=None, progress=True):
    """Claim OUT for header, run the tasks not finished, find examples, and write the page; returns the catalog.

    net: a network.Network loaded from a file (workers load it from there, at
    the same path); tasks: from plan() (and shard_of()); header: make_header();
    client: a dask.distributed Client, or None for this process;
    examples_folder: a folder of images for write_examples, or None.
    ValueError when OUT holds another atlas; TaskError when a task failed on
    a worker; files.WriteError when a file could not be written. The page is
    written from what is finished even then.
    """
    spec = cluster.ModelSpec.of(net, threads=net.threads)
    header = claim(out, header)
    try:
        render(out, spec, settings, header, tasks, client, progress=progress)
        if examples_folder:
            write_examples(out, net, examples_folder, tasks, precision=settings.precision, client=client,
                           progress=progress)
    finally:
        catalog = write_index(out)
    return catalog


def build_parser():
    parser = argparse.ArgumentParser(
        description='Render, measure and lay out on one page every filter of the chosen units of a network '
                    '(VGG16 by default; the model flags are those of visualize.py). Resumable: run the same '
                    "command again after an interruption. --precision auto is decided once, by the machine "
                    'that starts the run.')
    parser.add_argument('out', metavar='OUT', help='output folder (shared by every worker and shard)')
    parser.add_argument('--layers', default='all',
                        help="units: 'all' (default), or unit names and/or indices separated by commas, e.g. 0,5 "
                             '(names as the network lists them, e.g. `python vgg16.py`)')
    parser.add_argument('--filters', default='all', help="filter ids of each unit: 'all' (default), '0-15', '1,4,9'")
    parser.add_argument('--method', choices=visualize.METHOD_CHOICES, default='regularized',
                        help='regularized (default) or blog, as in visualize.py')
    parser.add_argument('--iters', type=int, default=200, help='steps per filter (default 200)')
    parser.add_argument('--size', type=int, default=None,
                        help="image side in pixels (default: the network's fixed input size, else 224)")
    parser.add_argument('--seed', type=int, default=0, help='seed of the start images (default 0)')
    parser.add_argument('--step-size', type=float, default=None, help='blog method: step size (default 2)')
    parser.add_argument('--batch-size', type=int, default=None,
                        help='filters per task, and pictures per session.run (default: automatic per unit, as '
                             'visualize.py)')
    parser.add_argument('--views', default='channel', metavar='VIEW,...',
                        help='the views of each filter, separated by commas (default channel): channel (the mean '
                             'of the filter: what turns it on), negative (minus the mean: what turns it off), '
                             "neuron (the centre unit of the filter's map), diversityN (N >= 2 pictures of the "
                             'channel pushed apart). Each view costs its pictures per filter: diversity4 is 4 '
                             'pictures (each within a few %% of a channel picture\'s time), and '
                             'channel,negative,neuron,diversity4 is 7, about 7x the time and disk of channel '
                             'alone. Views may be added to an atlas later; finished ones are kept')
    parser.add_argument('--diversity-weight', type=float, default=None, metavar='W',
                        help='with a diversityN view: how hard its pictures push apart, a share of their '
                             'activation (default %g for --method blog, %g for regularized, as visualize.py)'
                             % (visualize.DEFAULT_DIVERSITY_WEIGHT['blog'],
                                visualize.DEFAULT_DIVERSITY_WEIGHT['regularized']))
    models.add_model_arguments(parser)   # --model, --weights, --preprocess, --precision
    cluster.add_arguments(parser)
    parser.add_argument('--shard', default=None, metavar='I/N',
                        help='render only the I-th of N disjoint parts of the tasks (0 <= I < N), for array jobs')
    parser.add_argument('--index-only', action='store_true',
                        help='only rebuild catalog.json and index.html from the finished filters')
    parser.add_argument('--examples', default=None, metavar='DIR',
                        help='also show, for each filter, the %d patches of the images in DIR (PNG, JPEG) that '
                             'excite it most (examples.py)' % EXAMPLES_K)
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    parser.add_argument('--verbose', action='store_true', help="show TensorFlow's start-up lines")
    return parser


def model_words(args):
    """The model flags of visualize.py that load the network of `args` (models.model_args), files by name.

    The page travels to other machines, so a path becomes its file name
    (run the command where that file is). With no model flag, none: the
    command then takes visualize.py's default, the model folder's graph.
    """
    if not (args.model or args.weights or args.preprocess):
        return []
    words = models.model_args(args)
    return [os.path.basename(word) if flag in ('--model', '--weights') else word
            for flag, word in zip([None] + words, words)]


def visualize_command(settings, model_words):
    """The visualize.py command, without --layer and --filters, that renders a filter as the atlas does."""
    words = ['python', 'visualize.py'] + model_words + ['--method', settings.method, '--iters', str(settings.iters),
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
        settings = Settings(args.method, args.iters, 224 if args.size is None else args.size, args.seed,
                            args.step_size, args.batch_size, args.precision, args.views.split(','),
                            args.diversity_weight).checked()
        if args.diversity_weight is not None and not any(parse_view(v).diversity for v in settings.views):
            raise ValueError('--diversity-weight %g goes with a diversityN view (e.g. --views channel,diversity4)'
                             % args.diversity_weight)
        check_writable(args.out)
        if args.examples:
            examples.list_images(args.examples)     # a missing or empty folder: said now, not after the ascent
        # Unit names that are no default unit of a Keras model (a batch norm, an Add) load every layer.
        names = [] if args.layers.strip() == 'all' else [part.strip() for part in args.layers.split(',')]
        net = models.network_from_args(args, quiet=args.quiet, threads=cluster.threads_from_args(args),
                                       layers=[n for n in names if not n.lstrip('-').isdigit()])
        if args.size is None and net.input_size:
            settings = replace(settings, size=net.input_size)
        tasks = shard_of(plan(net, settings, select(net, settings, args.layers, args.filters)), shard)
        header = make_header(net, settings, visualize_command(settings, model_words(args)), weights=args.weights)
        with cluster.client_from_args(args) as client:
            catalog = make(args.out, net, settings, tasks, header, client=client, examples_folder=args.examples,
                           progress=not args.quiet)
    except KeyboardInterrupt:
        print('interrupted: the finished views are kept; run the same command again to go on', file=sys.stderr)
        return 130
    except (ValueError, OSError, TaskError) as error:
        # One line: a failed write names its file and cause (files.WriteError), a failed task its worker.
        print('error: %s' % error, file=sys.stderr)
        return 2
    if not args.quiet:
        print('%s: %d filters, %d pictures' % (os.path.join(args.out, PAGE_FILE), len(catalog),
                                               sum(len(v['pictures']) for e in catalog for v in e['views'])))
    return 0


# ---------------------------------------------------------------------------
# The catalog and the page

def examples_file(folder, feature_id):
    """The examples record of a filter, relative to OUT: UNIT/NNNN-examples.json."""
    return '%s/%04d-examples.json' % (folder, feature_id)


def build_catalog(out):
    """One entry per filter with a finished view, by unit (network order) then filter; a view in two records
    (runs that raced) once.

    An entry holds layer, layer_index, filter, and `views`: one object per
    finished view, in page order, each {view, pictures: [picture, ...]} (one
    picture, or N for diversityN, with `diversity`, the group's measure), a
    picture being {png, thumb, curve, npz, activation, dead_fraction,
    blur_robustness, no_gradient, dead, objective}. The first view's first
    picture is the filter's tile: its fields are also the entry's own, with
    `view` naming it. With --examples, an entry also holds `examples`:
    [{png, file, activation}], strongest first.
    """
    views = {}
    for record in read_records(out):
        for entry in record['entries']:
            views.setdefault((entry['layer_index'], entry['filter']), {}).setdefault(record['view'], entry)
    catalog = []
    for key in sorted(views):
        found = [views[key][name] for name in sorted(views[key], key=lambda name: parse_view(name).order)]
        first = found[0]
        entry = {'layer': first['layer'], 'layer_index': first['layer_index'], 'filter': first['filter'],
                 'view': first['view']}
        entry.update(first['pictures'][0])
        entry['views'] = [{k: v for k, v in view.items() if k not in ('layer', 'layer_index', 'filter')}
                          for view in found]
        path = os.path.join(out, examples_file(unit_folder(entry['layer_index'], entry['layer']), entry['filter']))
        if os.path.isfile(path):
            entry['examples'] = read_json(path)['examples']
        catalog.append(entry)
    return catalog


def write_index(out):
    """Write OUT/catalog.json and OUT/index.html from the finished views; returns the catalog (list)."""
    header = read_header(out)
    catalog = build_catalog(out)
    data = json.dumps(catalog, indent=0).encode('utf8')
    files.write_atomic(os.path.join(out, CATALOG_FILE), lambda f: f.write(data))
    page = page_html(header, catalog).encode('utf8')
    files.write_atomic(os.path.join(out, PAGE_FILE), lambda f: f.write(page))
    return catalog


def view_text(view, settings):
    """{'title': what a view's pictures show, 'flags': the visualize.py flags that render them} (text)."""
    parsed = parse_view(view)
    if parsed.diversity is None:
        return {'title': VIEW_TITLES[view], 'flags': '' if view == 'channel' else '--objective %s' % view}
    weight = settings['diversity_weight']
    return {'title': '%d pictures of the channel pushed apart (weight %g)' % (parsed.diversity, weight),
            'flags': '--diversity %d --diversity-weight %g' % (parsed.diversity, weight)}


def page_html(header, catalog):
    """index.html: atlas.html with the header, the catalog and the views' texts in its JSON script block.

    Pages opened from file:// may not fetch() local files, so the data travels
    inside the page. Every text from files reaches the page through
    textContent, never as markup; in the script block, < > & are escaped so
    that no text can close it.
    """
    names = set(header['settings']['views']) | {view['view'] for entry in catalog for view in entry['views']}
    views = {name: view_text(name, header['settings']) for name in sorted(names, key=lambda n: parse_view(n).order)}
    data = json.dumps({'atlas': header, 'catalog': catalog, 'views': views}, separators=(',', ':'))
    data = data.replace('<', '\\u003c').replace('>', '\\u003e').replace('&', '\\u0026')
    with open(PAGE_TEMPLATE, encoding='utf8') as f:
        template = f.read()
    return template.replace(PAGE_DATA, data, 1)


if __name__ == '__main__':
    # One copy of this module, so that Dask pickles run_task by reference to `atlas`, not to __main__.
    import atlas
    raise SystemExit(atlas.main())

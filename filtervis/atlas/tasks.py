"""
Running an atlas: one task (render, measure, write its pictures and, last,
its record), the same task on a Dask worker, the tasks of a run in this
process or on a cluster, the real-image examples, and make(), which does it
all and lays out the page.

    from filtervis import atlas
    atlas.make(out, net, settings, tasks, atlas.make_header(net, settings, command=''))
"""

import json
import os
import time
import warnings

import numpy as np

from filtervis import cluster
from filtervis.analysis import attribution, examples, measures, verdict
from filtervis.atlas.page import CLASSES_FILE, examples_file, write_index
from filtervis.atlas.store import (ATLAS_FILE, claim, done_views, header_differences, number_text, pending, picture_base,
                                   picture_of, read_json, save_image, without_views, write_picture)
from filtervis.atlas.views import TaskError, parse_view, unit_folder
from filtervis.optvis import ascent, maco
from filtervis.util import files, pictures

# Real-image patches per filter with --examples.
EXAMPLES_K = 6


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
        result = ascent.ascend(net, task.layer_index, ids, settings.iters, settings.step_size,
                                  seed=settings.seed, size=settings.size, batch_size=len(ids),
                                  method=settings.method, precision=settings.precision, objective=view.objective,
                                  diversity=view.diversity,
                                  diversity_weight=settings.diversity_weight if view.diversity else None)
    per = view.pictures
    # The network's view of a picture for its measures and verdict: a maco picture larger than the network's
    # input is resized to it, as visualize.py does.
    seen = pictures.resized(result.images, maco.seen_side(net, settings.size)) \
        if settings.method == 'maco' else result.images
    # Picture p is group p % per of filter ids[p // per]; each is measured by its own objective, after the ReLU
    # but for a negative view, whose filter ends up off there (as visualize.py measures it).
    values = measures.measure_objectives(
        net, [ascent.filter_objective(view.objective, task.layer_index, f) for f in ids for _ in range(per)],
        seen, pre_relu=view.objective == 'negative')
    # A class picture (a unit of a classifier's head) also gets the network's own verdict on it.
    logits = net.classifier_of(task.layer_index)
    if logits is not None and view.objective != 'negative':
        judged = verdict.verdict(net, logits, [f for f in ids for _ in range(per)], seen)
        values.update({key: value.astype(np.float64) for key, value in judged.items()})
    entries = []
    for i, f in enumerate(ids):
        written = [write_picture(out, picture_base(task.layer_index, task.layer, f, task.view, g),
                                 result.images[p], result.objectives[:, p], result.dead[p],
                                 {k: v[p] for k, v in values.items()}, whole=view.objective != 'neuron')
                   for g, p in enumerate(range(i * per, (i + 1) * per))]
        entry = {'layer': task.layer, 'layer_index': task.layer_index, 'filter': f, 'view': task.view,
                 'pictures': written}
        if view.diversity:
            entry['diversity'] = number_text(measures.diversity(net, task.layer_index, seen[i * per:(i + 1) * per]))
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


def write_examples(out, net, folder, tasks, *, precision, client=None, progress=True, k=EXAMPLES_K,
                   attribution_method=None):
    """For each filter of `tasks`: the k patches of the images in `folder` that excite it most (examples.py).

    Writes UNIT/NNNN-example-R.png (the unit's receptive field, as the
    network sees it: RGB or greyscale) and then UNIT/NNNN-examples.json, each
    atomically; write_index() puts them into the catalog. A shard finds the
    examples of its own filters only (each once, whatever its views).
    attribution_method: None, or one of attribution.EXAMPLE_METHODS: each
    example then also gets UNIT/NNNN-example-R-map.png, its filter's map over
    the patch (pictures.overlay), named in the JSON by its example's `map`
    and the method by `attribution`. Without it nothing else is computed or
    written, and the files are those of an atlas that knows no maps.
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
    bar = None
    if attribution_method and progress:
        from tqdm import tqdm
        bar = tqdm(total=len(found.records), unit='example', desc=attribution_method)
    try:
        for index, ids in filters.items():
            for feature_id in ids:
                records = by_filter.get((net.short_names[index], feature_id), [])
                _write_filter_examples(out, net, folder, found, index, feature_id, records, attribution_method)
                if bar is not None:
                    bar.update(len(records))
    finally:
        if bar is not None:
            bar.close()
    return len(found.records)


def _write_filter_examples(out, net, folder, found, index, feature_id, records, attribution_method):
    """One filter's example tiles (and map tiles), then its examples JSON; see write_examples.

    A filter's maps are computed here, with its patches, so that an atlas's
    examples never hold every map in memory at once.
    """
    unit = unit_folder(index, net.short_names[index])
    tiles = examples.patches(net, folder, records, found.size) if records else []
    maps = (attribution.example_maps(net, folder, records, attribution_method, size=found.size,
                                     precision=found.precision) if attribution_method and records else [])
    shown = []
    for position, (record, tile) in enumerate(zip(records, tiles)):
        name = '%s/%04d-example-%d.png' % (unit, feature_id, record['rank'])
        picture = picture_of(np.clip(np.round(tile), 0, 255).astype(np.uint8))
        save_image(os.path.join(out, name), picture, 'PNG')
        shown.append({'png': name, 'file': record['file'], 'activation': number_text(record['activation'])})
        if attribution_method:
            map_name = '%s/%04d-example-%d-map.png' % (unit, feature_id, record['rank'])
            tile_map = pictures.overlay(tile, maps[position])
            save_image(os.path.join(out, map_name), picture_of(np.round(tile_map).astype(np.uint8)), 'PNG')
            shown[-1]['map'] = map_name
    data = {'folder': os.path.abspath(folder), 'images': found.count, 'examples': shown}
    if attribution_method:
        data['attribution'] = attribution_method
    data = json.dumps(data, indent=1).encode('utf8')
    files.write_atomic(os.path.join(out, examples_file(unit, feature_id)), lambda f: f.write(data))


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


def make(out, net, settings, tasks, header, *, client=None, examples_folder=None, progress=True, classes=None,
         attribution_method=None):
    """Claim OUT for header, run the tasks not finished, find examples, and write the page; returns the catalog.

    net: a network.Network loaded from a file (workers load it from there, at
    the same path); tasks: from plan() (and shard_of()); header: make_header();
    client: a dask.distributed Client, or None for this process;
    examples_folder: a folder of images for write_examples, or None;
    attribution_method: the examples' maps (write_examples), or None.
    classes: {unit index: [class name per neuron]} (--classes), written
    beside atlas.json (not in it: names change no picture) for the page.
    ValueError when OUT holds another atlas; TaskError when a task failed on
    a worker; files.WriteError when a file could not be written. The page is
    written from what is finished even then.
    """
    spec = cluster.ModelSpec.of(net, threads=net.threads)
    header = claim(out, header)
    if classes:
        data = json.dumps({net.short_names[i]: names for i, names in classes.items()}, indent=1).encode('utf8')
        files.write_atomic(os.path.join(out, CLASSES_FILE), lambda f: f.write(data))
    try:
        render(out, spec, settings, header, tasks, client, progress=progress)
        if examples_folder:
            write_examples(out, net, examples_folder, tasks, precision=settings.precision, client=client,
                           progress=progress, attribution_method=attribution_method)
    finally:
        catalog = write_index(out)
    return catalog

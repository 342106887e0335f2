"""
Which tasks an atlas runs: the units and filters asked for, cut into tasks by
the settings alone (so every engine and every shard runs the same tasks),
and the I-th of N disjoint shards.

    from filtervis.atlas import planning
    tasks = planning.plan(net, settings, planning.select(net, settings, '5', '0-15'))   # unit 5, filters 0-15
    mine = planning.shard_of(tasks, planning.parse_shard('3/16'))
"""

from filtervis.atlas.views import Task
from filtervis.core import checks
from filtervis.optvis import ascent, maco
from filtervis.optvis import regularized

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
        checks.check_size(net, index, settings.size, larger=settings.method == 'maco')
        if settings.method == 'regularized':
            seen = regularized.transformed_size(settings.size, regularized.Config())
            if seen < net.layer_min_sizes[index]:
                raise ValueError('--size %d: the regularized method shows %s a %d px picture, it needs %d'
                                 % (settings.size, net.short_names[index], seen, net.layer_min_sizes[index]))
        ids = checks.parse_filters(filters, net.layer_channels[index])
        filters_by_layer[index] = checks.check_feature_ids(net, index, ids)
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
        # A maco picture sends its crops through the network: the batch holds as many network images as the
        # other methods' (only for maco, so that the tasks of existing atlases stay cut as they were).
        crops = {'method': 'maco', 'crops': maco.Config().crops} if settings.method == 'maco' else {}
        batch = settings.batch_size or ascent.auto_batch_size(net, index, settings.size, **crops)
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

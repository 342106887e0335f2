"""
What an atlas renders: its views of a filter (channel, negative, neuron,
diversityN), the settings that make a picture, and the task, one unit's batch
of filters in one view. Names of the folders and files a view writes.

    from filtervis.atlas.views import Settings, parse_view
    settings = Settings(iters=50, size=64, views=('channel', 'negative')).checked()
    parse_view('diversity4')          # View(name='diversity4', diversity=4)
"""

import math
import re
from dataclasses import dataclass

from filtervis.core import checks
from filtervis.core import precision
from filtervis.optvis import ascent

# A unit name that can be a folder name as it is (no path separators, dots or
# markup); others get INDEX~NAME, which no such name can be.
PLAIN_NAME = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_-]{0,63}')
# The views of a filter (--views), in the order the page shows them; diversityN follows, by N.
SINGLE_VIEWS = ('channel', 'negative', 'neuron')
DIVERSITY_VIEW = re.compile(r'diversity(0|[1-9][0-9]*)')
VIEW_TITLES = {'channel': 'the mean of the filter: what turns it on',
               'negative': 'minus the mean: what turns it off (measured before the ReLU)',
               'neuron': "the centre unit of the filter's map"}


@dataclass(frozen=True)
class View:
    """One view of a filter: its name (as --views spells it), the objective of its pictures
    (ascent.filter_objective's kind) and its pictures per filter (diversity: None for one)."""
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

    method: 'regularized', 'blog' or 'maco' (see ascent.ascend); iters: steps >= 1;
    size: image side in pixels; seed: int >= 0 (a filter's start depends only
    on it and the filter id); step_size: the blog method's (default 2), None
    for the regularized one; batch_size: filters per task and pictures per
    session.run, None for ascent.auto_batch_size of each unit; precision:
    'float32' or 'bfloat16' ('auto' is resolved here, on the machine that
    starts the run, so that workers on other machines cannot pick another
    one); views: names of views (see parse_view), kept in page order;
    diversity_weight: how hard the pictures of a diversity view push apart
    (None: ascent.DEFAULT_DIVERSITY_WEIGHT of the method), recorded even
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
        if self.method not in ascent.METHOD_CHOICES:
            raise ValueError('method=%r: expected one of %s' % (self.method, ', '.join(ascent.METHOD_CHOICES)))
        step_size = self.step_size
        if self.method == 'blog':
            step_size = 2.0 if step_size is None else step_size
            if not isinstance(step_size, (int, float)) or not math.isfinite(step_size) or step_size <= 0:
                raise ValueError('step_size=%r: expected a finite number > 0' % (step_size,))
            step_size = float(step_size)
        elif step_size is not None:
            raise ValueError('step_size=%r belongs to the blog method; the %s method has none'
                             % (step_size, self.method))
        if self.seed is None:
            raise ValueError('seed=None: an atlas needs a seed (>= 0), so that a filter gets the same picture '
                             'in any task, worker or shard')
        batch_size = None if self.batch_size is None else checks.check_int('batch_size', self.batch_size, 1)
        weight = self.diversity_weight
        weight = ascent.DEFAULT_DIVERSITY_WEIGHT[self.method] if weight is None else weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError('diversity_weight=%r: expected a finite number >= 0 (0: no push)' % (weight,))
        return Settings(self.method, checks.check_int('iters', self.iters, 1),
                        checks.check_int('size', self.size, 1), checks.check_seed(self.seed), step_size,
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

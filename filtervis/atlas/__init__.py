"""
An atlas of every filter: each filter of each unit of a network rendered
(optvis/ascent.py), measured (analysis/measures.py) and laid out on one static page,
OUT/index.html, that opens straight from the file system. The network is any
network.Network (by default VGG16's conv layers, chosen with the model flags
of cli/model_flags.py). Each filter can be shown in several views (--views): what
turns it on (channel), what turns it off (negative), its centre unit
(neuron), and N pictures pushed apart (diversityN). The work runs in this
process, on a local Dask cluster or on a running one (filtervis/cluster.py), or in
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

    from filtervis import atlas
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
    catalog.json             one object per filter with a finished view; index.html  the page (page.html filled in)

The piece of work (a task) is one unit, one batch of its filters and one
view; batches are cut from the unit's filter ids by the settings alone, the
same for every view, so every engine and every shard runs the same tasks. A
filter's view is done once its task's record exists.
"""

from filtervis.atlas.page import CATALOG_FILE, PAGE_FILE, build_catalog, page_html, view_text, write_index
from filtervis.atlas.planning import parse_layers, parse_shard, plan, select, shard_of
from filtervis.atlas.store import (ATLAS_FILE, DEAD_PICTURE, FORMAT, claim, done_views, make_header, picture_base,
                                   read_header, read_json, read_records, without_views, write_picture)
from filtervis.atlas.tasks import make, render, run_task
from filtervis.atlas.views import Settings, Task, TaskError, id_ranges, parse_view, unit_folder

__all__ = ['ATLAS_FILE', 'CATALOG_FILE', 'DEAD_PICTURE', 'FORMAT', 'PAGE_FILE', 'Settings', 'Task', 'TaskError',
           'build_catalog', 'claim', 'done_views', 'id_ranges', 'make', 'make_header', 'page_html', 'parse_layers',
           'parse_shard', 'parse_view', 'picture_base', 'plan', 'read_header', 'read_json', 'read_records', 'render',
           'run_task', 'select', 'shard_of', 'unit_folder', 'view_text', 'without_views', 'write_index',
           'write_picture']

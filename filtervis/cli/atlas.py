"""
The command line of atlas.py: every filter of the chosen units rendered,
measured and laid out on one page; resumable, sharded, on Dask.

    python atlas.py OUT                                   # every filter of every unit, regularized, 224 px, 200 steps, seed 0
    python atlas.py OUT --layers 0,5 --filters 0-15 --method blog --iters 150 --size 128 --seed 0
    python atlas.py OUT --views channel,negative,neuron,diversity4   # 7 pictures per filter: 7x the time and disk
    python atlas.py OUT --weights my.h5 --preprocess unit # the network of visualize.py's model flags
    python atlas.py OUT --workers 2                       # a local Dask cluster of 2 worker processes
    python atlas.py OUT --scheduler tcp://HOST:8786       # a running Dask cluster; OUT is a folder every worker sees
    python atlas.py OUT --shard 3/16                      # the 4th of 16 disjoint parts, for array jobs
    python atlas.py OUT --index-only                      # rebuild catalog.json and index.html from what is finished
    python atlas.py OUT --examples DIR --attribution gradcam   # each example patch also as its attribution map
"""

import argparse
import os
import shlex
import sys
from dataclasses import replace

from filtervis import cluster
from filtervis.analysis import attribution, examples
from filtervis.atlas.page import PAGE_FILE, write_index
from filtervis.atlas.planning import parse_shard, plan, select, shard_of
from filtervis.atlas.store import ATLAS_FILE, check_writable, make_header, read_json
from filtervis.atlas.tasks import EXAMPLES_K, make
from filtervis.atlas.views import Settings, TaskError, parse_view
from filtervis.cli import model_flags
from filtervis.cli import maco as maco_flags
from filtervis.core import memory
from filtervis.optvis import ascent, maco

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
    parser.add_argument('--method', choices=ascent.METHOD_CHOICES, default=None,
                        help='blog, regularized or maco, as in visualize.py. An atlas resumed without --method '
                             'keeps the method of its atlas.json; a new one takes the method for what is loaded '
                             '(%s; docs/maco.md says why)' % '; '.join(
                                 '%s: %s' % (kind, maco_flags.ATLAS_DEFAULTS.get(kind)
                                             or maco_flags.DEFAULT_METHODS.get((kind, 'map'), 'blog'))
                                 for kind in ('vgg16', 'keras', 'onnx')))
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
                             % (ascent.DEFAULT_DIVERSITY_WEIGHT['blog'],
                                ascent.DEFAULT_DIVERSITY_WEIGHT['regularized']))
    model_flags.add_model_arguments(parser)   # --model, --weights, --preprocess, --precision
    cluster.add_arguments(parser)
    parser.add_argument('--shard', default=None, metavar='I/N',
                        help='render only the I-th of N disjoint parts of the tasks (0 <= I < N), for array jobs')
    parser.add_argument('--index-only', action='store_true',
                        help='only rebuild catalog.json and index.html from the finished filters')
    parser.add_argument('--examples', default=None, metavar='DIR',
                        help='also show, for each filter, the %d patches of the images in DIR (PNG, JPEG) that '
                             'excite it most (examples.py)' % EXAMPLES_K)
    parser.add_argument('--attribution', default=None, metavar='METHOD',
                        help="with --examples: also each example's attribution map for its filter, a tile of the "
                             "map over the patch that the page's detail view toggles with the patch: gradcam "
                             "(Grad-CAM at the filter's own unit) or gradient-x-input (default: none). Not a "
                             'setting of the pictures: each run with --examples writes its examples again, with '
                             'the maps of its --attribution or none')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    parser.add_argument('--verbose', action='store_true', help="show TensorFlow's start-up lines")
    return parser


def model_words(args):
    """The model flags of visualize.py that load the network of `args` (model_flags.model_args), files by name.

    The page travels to other machines, so a path becomes its file name
    (run the command where that file is). With no model flag, none: the
    command then takes visualize.py's default, the model folder's graph.
    """
    if not (args.model or args.weights or args.preprocess):
        return []
    words = model_flags.model_args(args)
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


def resumed_method(out):
    """The method in OUT/atlas.json, or None where there is none (a new atlas)."""
    path = os.path.join(out, ATLAS_FILE)
    if not os.path.isfile(path):
        return None
    method = read_json(path).get('settings', {}).get('method')
    return method if method in ascent.METHOD_CHOICES else None


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
        # Checked as the other settings are; a method left open is resolved once the network is known.
        settings = Settings(args.method or 'regularized', args.iters, 224 if args.size is None else args.size, args.seed,
                            args.step_size if args.method else None, args.batch_size, args.precision, args.views.split(','),
                            args.diversity_weight).checked()
        if args.diversity_weight is not None and not any(parse_view(v).diversity for v in settings.views):
            raise ValueError('--diversity-weight %g goes with a diversityN view (e.g. --views channel,diversity4)'
                             % args.diversity_weight)
        if args.attribution is not None:
            attribution.check_example_method(args.attribution)
            if not args.examples:
                raise ValueError('--attribution %s draws the maps of the examples: give --examples DIR too'
                                 % args.attribution)
        check_writable(args.out)
        if args.examples:
            examples.list_images(args.examples)     # a missing or empty folder: said now, not after the ascent
        # Unit names that are no default unit of a Keras model (a batch norm, an Add) load every layer.
        names = [] if args.layers.strip() == 'all' else [part.strip() for part in args.layers.split(',')]
        net = model_flags.network_from_args(args, quiet=args.quiet, threads=cluster.threads_from_args(args),
                                       layers=[n for n in names if not n.lstrip('-').isdigit()])
        if args.method is None:
            method = resumed_method(args.out) or maco_flags.atlas_default(args)
            # The flags as given, not as checked above: there a weight left open became regularized's default.
            settings = replace(settings, method=method, step_size=args.step_size,
                               diversity_weight=args.diversity_weight).checked()
        if args.size is None and net.input_size:
            settings = replace(settings, size=net.input_size)
        tasks = shard_of(plan(net, settings, select(net, settings, args.layers, args.filters)), shard)
        # Before the first step, on this machine: the largest task of each unit must fit (a task is one batch).
        largest = {}
        for task in tasks:
            largest[task.layer_index] = max(largest.get(task.layer_index, 0), task.pictures)
        for layer_index, pictures in largest.items():
            maco_picture = settings.method == 'maco'
            memory.check(net, [layer_index], settings.size, pictures, pictures, settings.method,
                         what='a task of %s' % net.short_names[layer_index],
                         crops=maco.Config().crops if maco_picture else 1,
                         seen=maco.seen_side(net, settings.size) if maco_picture else None)
        if args.attribution is not None:
            # Before the first step: Grad-CAM cannot read a vector unit, found now rather than after the ascent.
            attribution.check_example_method(args.attribution, net, sorted({task.layer_index for task in tasks}))
        header = make_header(net, settings, visualize_command(settings, model_words(args)), weights=args.weights)
        names = model_flags.class_names(args, net)
        with cluster.client_from_args(args) as client:
            catalog = make(args.out, net, settings, tasks, header, client=client, examples_folder=args.examples,
                           progress=not args.quiet, classes=names, attribution_method=args.attribution)
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

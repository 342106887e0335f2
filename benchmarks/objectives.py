"""
What the objectives beyond the channel cost and give, on the real MRI weights:
the time per picture-step of each view against the channel's (interleaved
repeats, one run), and for diversity the push it gives against the
activation it keeps, over a sweep of weights.

    python benchmarks/objectives.py --time                       # ms per picture-step, channel/negative/neuron/diversity4
    python benchmarks/objectives.py --sweep 0,0.5,1,2,4           # group diversity and kept activation per weight
    python benchmarks/objectives.py --sweep 0,1 --layers conv3_2,conv4_3 --filters 0-3 --iters 150 --size 224

The model is ../shared/models/vgg16-mri-notop.h5 (VGG16 conv weights fine-tuned
on brain MRI, inputs scaled to 0..1); full-size random weights when absent.
"""

import argparse
import functools
import os
import statistics
import sys
import tempfile
import warnings

# harness.py sits beside this file; a test that loads this file by path has not put the folder on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (first: the repository root on sys.path, TensorFlow imported quietly)

import numpy as np  # noqa: E402

import visualize  # noqa: E402
from filtervis.analysis import measures  # noqa: E402
from filtervis.core import checks  # noqa: E402
from filtervis.models import vgg16  # noqa: E402
from filtervis.optvis import ascent, objectives  # noqa: E402

VIEWS = ('channel', 'negative', 'neuron', 'diversity4')


def render(model, view, layer, filters, iters, args, weight=None):
    options = dict(seed=0, size=args.size, method=args.method, precision=args.precision, progress=False)
    if args.method == 'blog':
        options['step_size'] = 2.0
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        if view.startswith('diversity'):
            return visualize.ascend(model, layer, filters, iters, diversity=int(view[len('diversity'):]),
                                    diversity_weight=weight, batch_size=4 * int(view[len('diversity'):]), **options)
        return visualize.ascend(model, layer, filters, iters, objective=view, batch_size=4, **options)


def time_views(model, args):
    """Median ms per picture-step of each view, repeats interleaved so that load hits all alike."""
    filters = list(range(4))
    for view in VIEWS:
        render(model, view, args.layers[0], filters, 1, args)          # build the ops outside the timing
    runs = harness.interleaved({view: functools.partial(render, model, view, args.layers[0], filters, args.steps,
                                                        args) for view in VIEWS}, args.repeats)
    times = {}
    for view in VIEWS:
        pictures = len(filters) * (int(view[len('diversity'):]) if view.startswith('diversity') else 1)
        times[view] = [wall * 1000 / (pictures * args.steps) for wall, _ in runs[view]]
    base = statistics.median(times['channel'])
    print('\n%s, %s, %dx%d, %s, %s: ms per picture-step, median of %d interleaved repeats of %d steps'
          % (model.description, args.layers[0], args.size, args.size, args.method, args.precision, args.repeats,
             args.steps))
    for view in VIEWS:
        median = statistics.median(times[view])
        print('  %-11s %7.2f ms   %.2fx the channel   (runs: %s)'
              % (view, median, median / base, ', '.join('%.1f' % t for t in times[view])))


def sweep(model, args):
    """Per layer and weight: each group's diversity and each picture's activation against weight 0's."""
    filters = checks.parse_filters(args.filters, 1 << 20)
    per = 4
    for layer in args.layers:
        index = model.layer_index(layer)
        print('\n%s, %s filters %s, %d pictures each, %dx%d, %s %d steps, seed 0'
              % (model.description, layer, args.filters, per, args.size, args.size, args.method, args.iters))
        reference = None
        for weight in args.sweep:
            result = render(model, 'diversity%d' % per, layer, filters, args.iters, args, weight)
            plain = [objectives.channel(index, f) for f in filters for _ in range(per)]
            activation = measures.measure_objectives(model, plain, result.images)['activation']
            groups = [measures.diversity(model, index, result.images[i:i + per])
                      for i in range(0, len(result.images), per)]
            if reference is None:
                reference = activation
            kept = activation / np.maximum(reference, 1e-12)
            print('  weight %-5g group diversity %s   kept activation: min %.2f, median %.2f   (activations %s)'
                  % (weight, ' '.join('%.3f' % g for g in groups), kept.min(), np.median(kept),
                     ' '.join('%.1f' % a for a in activation)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip())
    parser.add_argument('--time', action='store_true', help='time each view per picture-step')
    parser.add_argument('--sweep', default=None, help="diversity weights to compare, e.g. '0,0.5,1,2'")
    parser.add_argument('--layers', default='conv3_2,conv4_3')
    parser.add_argument('--filters', default='0-3')
    parser.add_argument('--iters', type=int, default=100, help='steps per picture in the sweep (default 100)')
    parser.add_argument('--steps', type=int, default=5, help='steps per timing (default 5)')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--method', default='blog', choices=ascent.METHOD_CHOICES)
    parser.add_argument('--precision', default='float32')
    parser.add_argument('--weights', default=harness.MRI_WEIGHTS)
    parser.add_argument('--gram-every', type=int, default=objectives.GRAM_EVERY,
                        help='rows and columns apart that the diversity term reads the map (default %(default)s)')
    parser.add_argument('--verbose', action='store_true')
    args = parser.parse_args(argv)
    args.layers = args.layers.split(',')
    objectives.GRAM_EVERY = args.gram_every
    args.sweep = [float(w) for w in args.sweep.split(',')] if args.sweep else None
    harness.print_machine()
    with tempfile.TemporaryDirectory() as folder:
        path, _ = harness.load_model_file(args.weights, folder)
        model = vgg16.VGG16(path)
        if args.time:
            time_views(model, args)
        if args.sweep:
            sweep(model, args)


if __name__ == '__main__':
    main()

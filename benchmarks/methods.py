"""
The post's plain gradient ascent (visualize.py, method 'blog') against the
regularized method (regularized.py), measured (measures.py) on real trained
weights: VGG16 conv weights fine-tuned on brain MRI,
../shared/models/vgg16-mri-notop.h5, with inputs scaled to 0..1 as they were
trained. Not the ImageNet model, and every figure says so.

Both methods render conv3_2 filters 0-15 at 224x224 with the same number of
steps (200) and seed 0, as one batch of 16; the blog method with the step size
of the post's demo (2). The script prints a markdown table of the three
measures per filter, the targets of the comparison (met or not) and the time
per step of each method, measured in the same run, then saves

  docs/methods-conv3_2.png       the post's demo filters 0-5 by both methods, side by side
  docs/walk-through-layers.png   filter 0 of each of the 13 conv layers, regularized

    python benchmarks/methods.py            # the full run: about 21 minutes on the 2-core machine
    python benchmarks/methods.py --quick    # 6 filters, 128 px, 60 steps, figures to a temp folder: ~2 minutes

With --compare-precision it renders the same pictures (both methods) in
float32 and in bfloat16 instead, measures both in float32, prints the
targets of the precision switch (README, Precision) and saves
docs/precision-conv3_2.png, float32 | bfloat16 side by side:

    python benchmarks/methods.py --compare-precision           # ~25 minutes on the 2-core machine
    python benchmarks/methods.py --compare-precision --quick   # ~3 minutes
"""

import argparse
import os
import sys
import tempfile

# harness.py sits beside this file; a test that loads this file by path has not put the folder on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (first: the repository root on sys.path, TensorFlow imported quietly)

import numpy as np  # noqa: E402

import visualize  # noqa: E402
from filtervis.analysis import measures  # noqa: E402
from filtervis.models import vgg16  # noqa: E402

LAYER = 'conv3_2'
# The post's demo: conv3_2, filters 0-5, step size 2.
DEMO_FILTERS = list(range(6))
BLOG_STEP_SIZE = 2.0
SEED = 0
NAMES = {'blog': "post's method", 'regularized': 'regularized'}


def run(model, method, layer, feature_ids, iters, size, batch_size, precision='float32'):
    """(Result, seconds per step) of one method; the ops are built and warmed up before the clock starts."""
    options = dict(seed=SEED, size=size, batch_size=batch_size, method=method, precision=precision)
    if method == 'blog':
        options['step_size'] = BLOG_STEP_SIZE
    # One untimed step builds the graph and lets TensorFlow pick its kernels.
    visualize.ascend(model, layer, feature_ids, 1, **options)
    wall, _, result = harness.timed(visualize.ascend, model, layer, feature_ids, iters, **options)
    return result, wall / iters


def table(feature_ids, values):
    lines = ['| filter | activation: post | regularized | dead fraction: post | regularized '
             '| blur robustness: post | regularized |',
             '|---:|---:|---:|---:|---:|---:|---:|']
    for i, feature_id in enumerate(feature_ids):
        cells = []
        for name in ('activation', 'dead_fraction', 'blur_robustness'):
            cells += ['%.2f' % values[method][name][i] for method in ('blog', 'regularized')]
        lines.append('| %d | %s |' % (feature_id, ' | '.join(cells)))
    return '\n'.join(lines)


def targets(values, seconds):
    """[(description, met)] for the targets of the comparison."""
    blog, ours = values['blog'], values['regularized']
    lowest = ours['activation'].min() / blog['activation'].min()
    median = np.median(ours['activation']) / np.median(blog['activation'])
    blur_blog, blur_ours = np.nanmedian(blog['blur_robustness']), np.nanmedian(ours['blur_robustness'])
    slower = seconds['regularized'] / seconds['blog']
    return [
        ('regularized dead fraction 0 for every filter: largest %.3f (post: largest %.3f)'
         % (ours['dead_fraction'].max(), blog['dead_fraction'].max()), ours['dead_fraction'].max() == 0),
        ('lowest activation >= 3x the post\'s: %.1f vs %.1f, %.1fx'
         % (ours['activation'].min(), blog['activation'].min(), lowest), lowest >= 3),
        ('median activation >= 90%% of the post\'s: %.1f vs %.1f, %.0f%%'
         % (np.median(ours['activation']), np.median(blog['activation']), 100 * median), median >= 0.9),
        ('median blur robustness above the post\'s: %.2f vs %.2f' % (blur_ours, blur_blog), blur_ours > blur_blog),
        ('time per step within 2x of the post\'s: %.0f ms vs %.0f ms, %.2fx'
         % (1000 * seconds['regularized'], 1000 * seconds['blog'], slower), slower <= 2),
    ]


def precision_targets(single, half):
    """[(description, met)]: bfloat16 (half) against float32 (single) measures of one method."""
    lowest = half['activation'].min() / single['activation'].min()
    median = np.median(half['activation']) / np.median(single['activation'])
    blur = np.nanmedian(half['blur_robustness']) - np.nanmedian(single['blur_robustness'])
    return [
        ('lowest activation >= 95%% of float32\'s: %.2f vs %.2f, %.1f%%'
         % (half['activation'].min(), single['activation'].min(), 100 * lowest), lowest >= 0.95),
        ('median activation >= 95%% of float32\'s: %.2f vs %.2f, %.1f%%'
         % (np.median(half['activation']), np.median(single['activation']), 100 * median), median >= 0.95),
        ('worst dead fraction no higher: %.4f vs %.4f' % (half['dead_fraction'].max(), single['dead_fraction'].max()),
         half['dead_fraction'].max() <= single['dead_fraction'].max()),
        ('median blur robustness within 0.03: %.3f vs %.3f (%+.3f)'
         % (np.nanmedian(half['blur_robustness']), np.nanmedian(single['blur_robustness']), blur), abs(blur) <= 0.03),
    ]


def compare_precision(model, feature_ids, iters, size, out_dir):
    """Both methods in float32 and bfloat16, measured in float32; prints the tables, saves the figure."""
    precisions = ('float32', 'bfloat16')
    results, seconds, values = {}, {}, {}
    for method in ('blog', 'regularized'):
        for precision in precisions:
            key = (method, precision)
            results[key], seconds[key] = run(model, method, LAYER, feature_ids, iters, size, len(feature_ids),
                                             precision)
            values[key] = measures.measure_all(model, LAYER, feature_ids, results[key].images)
            print('%s, %s: %.0f ms per step (%.0f ms per picture and step)'
                  % (NAMES[method], precision, 1000 * seconds[key], 1000 * seconds[key] / len(feature_ids)),
                  flush=True)
    print()
    lines = ['| filter | method | activation: float32 | bfloat16 | dead fraction: float32 | bfloat16 '
             '| blur robustness: float32 | bfloat16 |', '|---:|---|---:|---:|---:|---:|---:|---:|']
    for method in ('blog', 'regularized'):
        for i, feature_id in enumerate(feature_ids):
            cells = ['%.2f' % values[(method, p)][name][i]
                     for name in ('activation', 'dead_fraction', 'blur_robustness') for p in precisions]
            lines.append('| %d | %s | %s |' % (feature_id, NAMES[method], ' | '.join(cells)))
    print('\n'.join(lines))
    print('\n## Targets (bfloat16 against float32)\n')
    for method in ('blog', 'regularized'):
        for description, ok in precision_targets(values[(method, 'float32')], values[(method, 'bfloat16')]):
            print('- [%s] %s: %s' % ('x' if ok else ' ', NAMES[method], description))
        print('- time per step, %s: float32 %.0f ms, bfloat16 %.0f ms, %.2fx'
              % (NAMES[method], 1000 * seconds[(method, 'float32')], 1000 * seconds[(method, 'bfloat16')],
                 seconds[(method, 'float32')] / seconds[(method, 'bfloat16')]))
    print()

    images, captions = [], []
    for i in [i for i, f in enumerate(feature_ids) if f in DEMO_FILTERS]:
        for method in ('blog', 'regularized'):
            for precision in precisions:
                images.append(results[(method, precision)].images[i])
                captions.append('filter %d, %s, %s\n%s' % (feature_ids[i], NAMES[method], precision,
                                                           measures.caption(values[(method, precision)], i)))
    title = ('%s\n%s, %dx%d px, %d steps, seed %d: the post\'s method float32 | bfloat16, '
             'regularized float32 | bfloat16' % (model.description, LAYER, size, size, iters, SEED))
    figure_path = visualize.save_figure(visualize.plot_images(images, captions, title, ncols=4, size=3),
                                        os.path.join(out_dir, 'precision-%s.png' % LAYER))
    print('saved %s' % figure_path, flush=True)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.strip().split('\n\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='filters 0-5 at 128 px with 60 steps, figures to a temp folder (a smoke run)')
    parser.add_argument('--compare-precision', action='store_true',
                        help='both methods in float32 and bfloat16: measures, targets, docs/precision-conv3_2.png')
    parser.add_argument('--iters', type=int, default=None, help='steps of each method (default 200; quick 60)')
    parser.add_argument('--weights', default=harness.MRI_WEIGHTS, help='the MRI VGG16 weight file (h5)')
    parser.add_argument('--out-dir', default=None,
                        help='folder for the figures (default docs/; with --quick a temp folder)')
    parser.add_argument('--verbose', action='store_true',
                        help="also show TensorFlow's own start-up and log lines (hidden by default)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not os.path.exists(args.weights):
        print('error: the MRI weights %s are absent. This comparison needs those real weights '
              '(see ../shared/models/README.md); pass --weights FILE.h5 if they are elsewhere.'
              % os.path.abspath(args.weights), file=sys.stderr)
        return 1
    feature_ids = DEMO_FILTERS if args.quick else list(range(16))
    size = 128 if args.quick else 224
    iters = args.iters or (60 if args.quick else 200)
    out_dir = args.out_dir or (tempfile.mkdtemp(prefix='methods-') if args.quick else
                               os.path.join(harness.ROOT, 'docs'))
    os.makedirs(out_dir, exist_ok=True)

    harness.print_machine()
    print()
    with tempfile.TemporaryDirectory() as folder:
        path, _ = harness.load_model_file(args.weights, folder)
        # The description names the weights by md5 (vgg16.KNOWN_WEIGHTS), so
        # another --weights file is never captioned as the MRI model.
        model = vgg16.VGG16(path)
    weights_title = model.description
    if args.compare_precision:
        print('# %s: bfloat16 against float32\n' % LAYER)
        print('%s; filters %d-%d, %dx%d px, %d steps each, seed %d, one batch of %d; measured in float32.\n'
              % (weights_title, feature_ids[0], feature_ids[-1], size, size, iters, SEED, len(feature_ids)),
              flush=True)
        return compare_precision(model, feature_ids, iters, size, out_dir)

    print('# %s: the post\'s method against the regularized one\n' % LAYER)
    print('%s; filters %d-%d, %dx%d px, %d steps each, seed %d, one batch of %d.\n'
          % (weights_title, feature_ids[0], feature_ids[-1], size, size, iters, SEED, len(feature_ids)),
          flush=True)
    results, seconds, values = {}, {}, {}
    for method in ('blog', 'regularized'):
        results[method], seconds[method] = run(model, method, LAYER, feature_ids, iters, size, len(feature_ids))
        values[method] = measures.measure_all(model, LAYER, feature_ids, results[method].images)
        print('%s: %.0f ms per step (%.0f ms per picture and step)'
              % (NAMES[method], 1000 * seconds[method], 1000 * seconds[method] / len(feature_ids)), flush=True)
    print()
    print(table(feature_ids, values))
    print('\n## Targets\n')
    met = targets(values, seconds)
    for description, ok in met:
        print('- [%s] %s' % ('x' if ok else ' ', description))
    print()

    demo = [i for i, f in enumerate(feature_ids) if f in DEMO_FILTERS]
    images, captions = [], []
    for i in demo:
        for method in ('blog', 'regularized'):
            images.append(results[method].images[i])
            captions.append('filter %d, %s\n%s' % (feature_ids[i], NAMES[method], measures.caption(values[method], i)))
    title = '%s\n%s filters %d-%d, %dx%d px, %d steps each: the post\'s method (step size %g) | regularized' % (
        weights_title, LAYER, DEMO_FILTERS[0], DEMO_FILTERS[-1], size, size, iters, BLOG_STEP_SIZE)
    figure_path = visualize.save_figure(visualize.plot_images(images, captions, title, ncols=4, size=3),
                                        os.path.join(out_dir, 'methods-%s.png' % LAYER))
    print('saved %s' % figure_path, flush=True)

    images, captions = [], []
    for layer in model.short_names:
        result = visualize.ascend(model, layer, [0], iters, seed=SEED, size=size, method='regularized')
        layer_values = measures.measure_all(model, layer, [0], result.images)
        images.append(result.images[0])
        captions.append('%s filter 0\n%s' % (layer, measures.caption(layer_values, 0)))
        print('%-8s filter 0: %s' % (layer, measures.caption(layer_values, 0)), flush=True)
    title = '%s\nfilter 0 of each conv layer, regularized, %dx%d px, %d steps' % (weights_title, size, size, iters)
    figure_path = visualize.save_figure(visualize.plot_images(images, captions, title, ncols=5, size=3),
                                        os.path.join(out_dir, 'walk-through-layers.png'))
    print('saved %s' % figure_path)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

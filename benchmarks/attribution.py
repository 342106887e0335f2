"""
Attribution maps (filtervis/analysis/attribution) on a real trained network:
VGG16 conv weights fine-tuned on brain MRI (../shared/models/vgg16-mri-notop.h5,
inputs scaled to 0..1), not the ImageNet model, on the MRI slices in
../shared/data/mri-slices. Four parts, each printing a markdown table:

- timing: seconds per image of each method, a batch of 16 slices at 224 px, a
  conv5_3 filter, float32 and bfloat16 interleaved, medians of --repeats;
  SmoothGrad at 50 copies, Integrated Gradients at 64 steps (the defaults);
- sanity: the cascading randomization of Adebayo et al. (2018): conv5_3 .. conv1_1
  re-initialized one after the other from the top; the Spearman rank
  correlation of each method's map with the trained network's, median over
  the slices, after each layer;
- deletion: Petsiuk et al.'s (2018) deletion, 5 % of the pixels at a time set
  to black in the order of the map, against a random order, pixel by pixel
  and in 16 x 16 squares (--squares); the area under the objective's curve,
  normalized per image to 1 before and 0 after;
- figure: docs/attribution-mri.png, rows = methods, columns = 4 slices, a
  conv5_3 filter; docs/attribution-fer.png, the same for the "happy" logit of
  the shared fer classifier (greyscale, 64 px) on three faces of the shared
  photos and a cat.

    python benchmarks/attribution.py --part timing --repeats 1   # 14 minutes on the 2-core Xeon (AMX)
    python benchmarks/attribution.py --part sanity      # 20 slices: about 45 minutes in bfloat16
    python benchmarks/attribution.py --part deletion    # 110 slices, 4 + 4 filters, pixels and squares
    python benchmarks/attribution.py --part figure      # about 5 minutes
    python benchmarks/attribution.py --part sanity --quick   # 4 slices, 96 px: a few minutes

The filter of the timing, sanity and figure parts is the conv5_3 filter whose
maps vary most within a slice (the mean over the slices of the map's standard
deviation): a filter on everywhere alike has nothing to attribute. The
deletion part takes the --top filters of each layer whose mean drops most
from the slices to a black image, which is what deleting to black can show. Wall times on a shared machine swing
with the free cores: medians, and the load average is printed with the machine.
"""

import argparse
import os
import sys
import tempfile

# harness.py sits beside this file; a test that loads this file by path has not put the folder on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (first: the repository root on sys.path, TensorFlow imported quietly)

import numpy as np  # noqa: E402

from filtervis import plots  # noqa: E402
from filtervis.analysis import attribution, examples  # noqa: E402
from filtervis.core import network  # noqa: E402
from filtervis.models import vgg16  # noqa: E402

MRI_SLICES = os.path.join(harness.ROOT, '..', 'shared', 'data', 'mri-slices')
FIGURE = os.path.join(harness.ROOT, 'docs', 'attribution-mri.png')
FIGURE_SLICES = ('axial-z075.png', 'coronal-y120.png', 'sagittal-x070.png', 'axial-z120.png')
PHOTOS = os.path.join(harness.ROOT, '..', 'shared', 'data', 'photos')
FER_FIGURE = os.path.join(harness.ROOT, 'docs', 'attribution-fer.png')
# The faces of the shared photos, (left, top, right, bottom) in the file's pixels, and a cat: what fer sees.
FER_CROPS = (('astronaut.png', (150, 30, 310, 190)), ('grace_hopper.jpg', (150, 110, 370, 330)),
             ('camera.png', (170, 60, 280, 170)), ('chelsea.png', None))
FER_CLASS = ('predictions', 3, 'happy')   # the fer package's order: angry, disgust, fear, happy, sad, surprise, neutral


def load_slices(count, size):
    """(names, float32 [count, size, size, 3]): `count` slices spread evenly over the sorted folder."""
    names = examples.list_images(MRI_SLICES)
    chosen = [names[int(i)] for i in np.linspace(0, len(names) - 1, count).round()] if count < len(names) else names
    return chosen, np.stack([examples.load_image(os.path.join(MRI_SLICES, n), size) for n in chosen])


def most_selective(net, layer, images, top):
    """The `top` filters of `layer` whose maps vary most within an image (the mean over the images of the
    map's standard deviation), most first: a filter on everywhere alike has nothing to attribute."""
    index = net.layer_index(layer)
    spread = network.session(net).run(net.layer_tensors[index], {net.input: images}).std(axis=(1, 2)).mean(axis=0)
    return [int(f) for f in np.argsort(-spread, kind='stable')[:top]]


def largest_change(net, layer, images, top):
    """The `top` filters of `layer` whose channel mean drops most from the images to a black image (mean
    over the images), most first: what deletion to black can show."""
    index = net.layer_index(layer)
    inputs = np.concatenate([images, np.zeros_like(images[:1])])
    means = network.session(net).run(net.layer_tensors[index], {net.input: inputs}).mean(axis=(1, 2))
    change = (means[:-1] - means[-1]).mean(axis=0)
    return [int(f) for f in np.argsort(-change, kind='stable')[:top]]


def config_of(args):
    return attribution.Config(samples=args.samples, steps=args.steps, scorecam_channels=args.scorecam_channels)


def timing(args, net):
    names, images = load_slices(16, args.size)
    filter_id = most_selective(net, 'conv5_3', images, 1)[0]
    objective = 'conv5_3:%d' % filter_id
    config = attribution.Config()   # SmoothGrad 50 copies, IG 64 steps, Score-CAM 32 channels
    functions = {}
    for precision in ('float32', 'bfloat16'):
        for method in attribution.METHODS:
            functions[method, precision] = (lambda m=method, p=precision: attribution.attribute(
                net, images, objective, [m], config, precision=p, batch_size=16))
    for function in functions.values():
        function()   # ops built, kernels chosen
    print('warmed up', flush=True)
    times = harness.interleaved(functions, args.repeats, after_round=lambda times: print(
        '  round %d: %s' % (len(times['gradient', 'float32']), ' '.join(
            '%s/%s %.1f s' % (m, p[0] + p[-2:], t[-1][0]) for (m, p), t in times.items())), flush=True))
    print('\n%s, batch of 16 slices at %d px, %s; SmoothGrad %d copies, IG %d steps, Score-CAM %d channels; '
          'each run includes one forward pass for the objective\'s values; medians of %d:\n'
          % (net.description, args.size, objective, config.samples, config.steps, config.scorecam_channels,
             args.repeats))
    print('| method | float32 s/image | bfloat16 s/image | float32 / bfloat16 |')
    print('|---|---|---|---|')
    for method in attribution.METHODS:
        wall32 = harness.medians(times[method, 'float32'])[0] / 16
        wall16 = harness.medians(times[method, 'bfloat16'])[0] / 16
        print('| %s | %.3f | %.3f | %.1fx |' % (method, wall32, wall16, wall32 / wall16))


def randomized(weights, layers, seed=0):
    """The weights with the last `layers` conv layers re-initialized (He normal, zero bias), as Adebayo et al.
    re-initialize from the top."""
    out = list(weights)
    for index in range(len(weights) - layers, len(weights)):
        kernel, bias = weights[index]
        fan_in = kernel.shape[0] * kernel.shape[1] * kernel.shape[2]
        rng = np.random.default_rng([seed, index])
        out[index] = (rng.normal(0, np.sqrt(2.0 / fan_in), kernel.shape).astype(np.float32),
                      np.zeros_like(bias))
    return out


def sanity(args, net):
    names, images = load_slices(args.images or 20, args.size)
    filter_id = most_selective(net, 'conv5_3', images, 1)[0]
    objective = 'conv5_3:%d' % filter_id
    config = config_of(args)
    original = attribution.attribute(net, images, objective, attribution.METHODS, config,
                                     precision=args.precision).maps
    weights = vgg16.read_h5_weights(harness.MRI_WEIGHTS)
    rows = []
    for layers in range(1, len(weights) + 1):
        changed = vgg16.VGG16(graph_def=vgg16.build_graph_def(randomized(weights, layers), 'unit'),
                              description='randomized')
        with changed:
            maps = attribution.attribute(changed, images, objective, attribution.METHODS, config,
                                         precision=args.precision).maps
        correlations = [[attribution.spearman(original[i, j], maps[i, j]) for i in range(len(images))]
                        for j in range(len(attribution.METHODS))]
        rows.append((vgg16.CONV_LAYERS[len(weights) - layers], [np.nanmedian(c) for c in correlations]))
        print('  randomized down to %s: %s' % (rows[-1][0], ' '.join('%.3f' % v for v in rows[-1][1])), flush=True)
    print('\nCascading randomization, %s, objective %s, %d slices at %d px, %s; SmoothGrad %d copies, IG %d '
          'steps (black baseline), Score-CAM %d channels. Spearman rank correlation of each map with the trained '
          "network's, median over the slices:\n" % (net.description, objective, len(images), args.size,
                                                     args.precision, config.samples, config.steps,
                                                     config.scorecam_channels))
    print('| randomized down to | %s |' % ' | '.join(attribution.METHODS))
    print('|---|%s' % ('---|' * len(attribution.METHODS)))
    for layer, values in rows:
        print('| %s | %s |' % (layer, ' | '.join('%.2f' % v for v in values)))
    last = rows[0][1]
    failed = [m for m, v in zip(attribution.METHODS, last) if not v < 0.5]
    print('\nmethods whose map keeps a rank correlation of 0.5 or more after conv5_3 alone is re-initialized: %s'
          % (', '.join(failed) or 'none'))


def deletion(args, net):
    names, images = load_slices(args.images or 110, args.size)
    config = config_of(args)
    squares = [int(p) for p in args.squares.split(',')]
    columns = list(attribution.METHODS) + ['random order']
    print('\nDeletion, %s, %d slices at %d px, %s; SmoothGrad %d copies, IG %d steps (black baseline), Score-CAM '
          '%d channels; pixels set to %s 5 %% at a time, one by one (square 1) or in P x P squares in the order '
          "of the map's mean over each (square P). Normalized AUC: the objective minus its value on the "
          'baseline, over the same on the image, averaged over the curve (lower: the map found what matters '
          'sooner). Images where the filter changes by less than 5 %% of its largest change are left out.\n'
          % (net.description, len(images), args.size, args.precision, config.samples, config.steps,
             config.scorecam_channels, args.baseline), flush=True)
    results = {square: {} for square in squares}
    for layer in args.layers.split(','):
        filters = largest_change(net, layer, images, args.top)
        for filter_id in filters:
            objective = '%s:%d' % (layer, filter_id)
            curves = {square: [] for square in squares}
            for start in range(0, len(images), 16):
                batch = images[start:start + 16]
                found = attribution.attribute(net, batch, objective, attribution.METHODS, config,
                                              precision=args.precision)
                maps = np.concatenate([found.maps, attribution.random_maps(len(batch), args.size, seed=start)],
                                      axis=1)
                for square in squares:
                    curves[square].append(attribution.deletion_curves(net, batch, objective, maps, square=square,
                                                                     baseline=args.baseline,
                                                                     precision=args.precision))
            for square in squares:
                both = np.concatenate(curves[square]).astype(np.float64)              # [N, M + 1, 21]
                change = both[:, 0, 0] - both[:, 0, -1]
                kept = change > 0.05 * change.max()
                normalized = (both[kept] - both[kept, :, -1:]) / change[kept, None, None]
                results[square][objective] = attribution.area_under(normalized)       # [kept, M + 1]
                print('  %s, square %d: %d of %d slices; %s' % (objective, square, kept.sum(), len(images), ' '.join(
                    '%.3f' % v for v in results[square][objective].mean(axis=0))), flush=True)
    for square in squares:
        print('\n**%s**\n' % ('pixel by pixel' if square == 1 else '%d x %d squares' % (square, square)))
        print_deletion_table(results[square], columns, args.layers.split(','))


def print_deletion_table(results, columns, layers):
    """The markdown table of deletion AUCs, {objective: [kept images, methods + 1]}, and which methods lose."""
    print('| objective | %s |' % ' | '.join(columns))
    print('|---|%s' % ('---|' * len(columns)))
    for objective, aucs in results.items():
        print('| %s (%d slices) | %s |' % (objective, len(aucs), ' | '.join('%.3f' % v for v in aucs.mean(axis=0))))
    for layer in layers:
        pooled = np.concatenate([a for o, a in results.items() if o.startswith(layer + ':')])
        print('| **%s, all** (%d) | %s |' % (layer, len(pooled), ' | '.join('%.3f' % v for v in pooled.mean(axis=0))))
    pooled = np.concatenate(list(results.values()))
    wins = (pooled[:, :-1] < pooled[:, -1:]).mean(axis=0)
    print('\nshare of (image, filter) pairs where the method deletes faster than random order: %s'
          % ', '.join('%s %.0f %%' % (m, 100 * w) for m, w in zip(attribution.METHODS, wins)))
    means = pooled.mean(axis=0)
    print('methods that do not beat random order on average over all: %s'
          % (', '.join(m for m, v in zip(attribution.METHODS, means[:-1]) if not v < means[-1]) or 'none'))
    losing = ['%s on %s' % (m, o) for o, aucs in results.items()
              for m, v in zip(attribution.METHODS, aucs.mean(axis=0)[:-1]) if not v < aucs.mean(axis=0)[-1]]
    print('(method, filter) pairs that do not beat random order: %s' % (', '.join(losing) or 'none'))


def figure(args, net):
    images = np.stack([examples.load_image(os.path.join(MRI_SLICES, n), args.size) for n in FIGURE_SLICES])
    filter_id = most_selective(net, 'conv5_3', load_slices(20, args.size)[1], 1)[0]
    objective = 'conv5_3:%d' % filter_id
    save_sheet(net, images, objective, objective + ' (channel mean)',
               [os.path.splitext(n)[0] for n in FIGURE_SLICES], args.figure or FIGURE)
    fer = harness.load_keras('fer')
    faces = np.stack([face(name, box, fer.input_size) for name, box in FER_CROPS])
    unit, neuron, name = FER_CLASS
    save_sheet(fer, faces, '%s:%d' % (unit, neuron), '%s:%d, the logit of "%s"' % (unit, neuron, name),
               [os.path.splitext(n)[0] for n, _ in FER_CROPS], args.fer_figure or FER_FIGURE)


def face(name, box, side):
    """float32 [side, side, 1], 0..255: a crop of a shared photo as fer sees a face, grey."""
    from PIL import Image
    with Image.open(os.path.join(PHOTOS, name)) as image:
        image = image.convert('L')
        image = image.crop(box) if box else image.crop(((image.width - min(image.size)) // 2, 0,
                                                        (image.width + min(image.size)) // 2, min(image.size)))
        return np.asarray(image.resize((side, side), Image.BICUBIC), np.float32)[:, :, None]


def save_sheet(net, images, objective, what, labels, out):
    """Every method's map of `objective` on the images, rows = methods, saved to `out`."""
    found = attribution.attribute(net, images, objective, attribution.METHODS, attribution.Config(),
                                  precision='float32')
    methods = ['%s (%s)' % (m, found.layer) if m in attribution.CAM_METHODS else m for m in attribution.METHODS]
    title = ("%s\nobjective %s; each map's colours end at its 99.5th percentile\n"
             'python benchmarks/attribution.py --part figure' % (net.description, what))
    fig = plots.plot_attribution_sheet(images, found.maps, methods, labels, title=title, by='method', tile=1.9)
    plots.save_figure(fig, out)
    print('saved %s (%s; values %s)' % (out, objective, ' '.join('%.3g' % v for v in found.values)), flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--part', choices=('timing', 'sanity', 'deletion', 'figure'), required=True)
    parser.add_argument('--quick', action='store_true', help='4 slices at 96 px, few copies and steps: minutes')
    parser.add_argument('--size', type=int, default=224, help='slice side in pixels (default 224)')
    parser.add_argument('--images', type=int, default=None,
                        help='slices (default: 20 for sanity, 110 for deletion; timing takes 16)')
    parser.add_argument('--precision', default='bfloat16',
                        help='sanity and deletion: float32 or bfloat16 (default; timing runs both)')
    parser.add_argument('--samples', type=int, default=16, help='sanity and deletion: SmoothGrad copies (default 16)')
    parser.add_argument('--steps', type=int, default=16, help='sanity and deletion: IG steps (default 16)')
    parser.add_argument('--scorecam-channels', type=int, default=16,
                        help='sanity and deletion: Score-CAM channels (default 16)')
    parser.add_argument('--layers', default='conv4_3,conv5_3', help='deletion: units (default conv4_3,conv5_3)')
    parser.add_argument('--squares', default='1,16',
                        help='deletion: square sides to delete by, 1 = pixel by pixel (default 1,16)')
    parser.add_argument('--baseline', default='black', choices=attribution.BASELINES,
                        help='deletion: what deleted pixels become (default black)')
    parser.add_argument('--top', type=int, default=4, help='deletion: filters per unit, those that black drops most (default 4)')
    parser.add_argument('--repeats', type=int, default=3, help='timing: interleaved repeats (default 3)')
    parser.add_argument('--figure', default=None, help='figure: the MRI PNG to write (default docs/attribution-mri.png)')
    parser.add_argument('--fer-figure', default=None,
                        help='figure: the fer PNG to write (default docs/attribution-fer.png)')
    parser.add_argument('--verbose', action='store_true', help="show TensorFlow's start-up lines")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.images, args.samples, args.steps, args.scorecam_channels = 96, 4, 4, 4, 4
        args.top, args.repeats = 1, 1
    return args


def main(argv=None):
    args = parse_args(argv)
    harness.print_machine()
    with tempfile.TemporaryDirectory(prefix='attribution-bench-') as work:
        path, description = harness.load_model_file(harness.MRI_WEIGHTS, work)
        with vgg16.VGG16(path) as net:
            print('model: %s' % description, flush=True)
            {'timing': timing, 'sanity': sanity, 'deletion': deletion, 'figure': figure}[args.part](args, net)
    return 0


if __name__ == '__main__':
    sys.exit(main())

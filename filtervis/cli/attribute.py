"""
The command line of attribute.py: why an image fires an objective, as
attribution maps of a user's own images (filtervis/analysis/attribution).

    python attribute.py IMAGES... --objective "conv4_3:5" --method gradcam,smoothgrad --out DIR
    python attribute.py ../shared/data/mri-slices --weights ../shared/models/vgg16-mri-notop.h5 \\
        --preprocess unit --objective conv5_3 --filters 0-3 --method all --out mri-maps --npz mri-maps.npz
    python attribute.py face.png --model fer-emotion-minixception.hdf5 --preprocess tf \\
        --classes fer-classes.txt --objective predictions:happy --method gradcam,integrated-gradients --out fer-maps
    python attribute.py chelsea.png --model efficientnet-lite0-imagenet.onnx --preprocess tf \\
        --classes imagenet-classes.txt --objective '_fc:"Egyptian cat" - _fc:tabby' --method gradcam

--objective is an expression (LAYER:N a channel, LAYER:N@Y,X a neuron, sums
of them; with --classes, LAYER:NAME a class of a classifier's head, or
LAYER:"NAME" for a name with spaces or signs), or a unit's name with
--filters, which gives one objective per filter. --layer is the unit
Grad-CAM, Grad-CAM++ and Score-CAM read.
IMAGES are files or folders (PNG, JPEG, searched recursively). Into --out go,
per image and objective, an overlay PNG and the maps as .npz, and per
objective a contact sheet of images x methods.
"""

import argparse
import os
import re
import sys

import numpy as np

from filtervis import plots
from filtervis.analysis import attribution, examples
from filtervis.cli import model_flags
from filtervis.core import checks
from filtervis.optvis import objectives
from filtervis.util import files

UNIT_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_./]*')
DEFAULT_METHODS = 'gradcam,smoothgrad'


def _layer_arg(text):
    return int(text) if text.lstrip('-').isdigit() else text


def build_parser():
    defaults = attribution.Config()
    parser = argparse.ArgumentParser(
        description='Attribution maps: which pixels of your images make an objective of a CNN fire, by '
                    'gradient, SmoothGrad, Integrated Gradients, Grad-CAM, Grad-CAM++ and Score-CAM.')
    parser.add_argument('images', nargs='+', help='image files or folders of images (PNG, JPEG, recursively)')
    parser.add_argument('--objective', required=True, metavar='EXPRESSION|UNIT',
                        help='what the maps explain: an expression such as "conv4_3:5" (LAYER:N a channel, '
                             'LAYER:N@Y,X a neuron; numbers, + - * and parentheses; %s), or a unit name with '
                             '--filters (one objective per filter)' % model_flags.CLASS_SYNTAX)
    parser.add_argument('--filters', default=None,
                        help="with --objective UNIT: filter ids, a range '0-7', a list '1,4,9', 'all', or "
                             "class names of --classes ('happy,sad')")
    parser.add_argument('--method', default=DEFAULT_METHODS,
                        help='methods, comma-separated, or all: %s (default %s)'
                             % (', '.join(attribution.METHODS), DEFAULT_METHODS))
    parser.add_argument('--layer', type=_layer_arg, default=None,
                        help='the unit of gradcam, gradcam++ and scorecam: a name from --list-layers of '
                             'visualize.py, or an index (default: the last 4-D unit the objective depends on)')
    parser.add_argument('--samples', type=int, default=defaults.samples,
                        help='smoothgrad: noisy copies per image (default %d)' % defaults.samples)
    parser.add_argument('--noise', type=float, default=defaults.noise,
                        help="smoothgrad: the noise's sigma, a share of the pixel range (default %g)" % defaults.noise)
    parser.add_argument('--steps', type=int, default=defaults.steps,
                        help='integrated-gradients: midpoint steps from the baseline (default %d)' % defaults.steps)
    parser.add_argument('--baseline', choices=attribution.BASELINES, default=defaults.baseline,
                        help='integrated-gradients: where the path starts (default %s)' % defaults.baseline)
    parser.add_argument('--scorecam-channels', type=int, default=defaults.scorecam_channels,
                        help='scorecam: mask with the unit\'s channels that Grad-CAM ranks first, at most this '
                             'many (default %d; 0: every channel, one forward pass each)'
                             % defaults.scorecam_channels)
    parser.add_argument('--seed', type=int, default=defaults.seed, help='seed of the noise (default 0)')
    parser.add_argument('--size', type=int, default=None,
                        help="images are scaled and centre-cropped to this side (default: the network's fixed "
                             "input size, else 224)")
    parser.add_argument('--batch-size', type=int, default=attribution.DEFAULT_BATCH_SIZE,
                        help='inputs per session.run: images, noisy copies, path steps, masked images (default %d)'
                             % attribution.DEFAULT_BATCH_SIZE)
    parser.add_argument('--out', default='attribution',
                        help='folder for the overlays, maps and contact sheets (default ./attribution)')
    parser.add_argument('--npz', default=None,
                        help='also save every map, float32 [images, methods, H, W] (with several objectives '
                             '[objectives, images, methods, H, W]), the methods, images and objective values')
    model_flags.add_model_arguments(parser)   # --model, --weights, --preprocess, --precision, --unsafe
    parser.add_argument('--quiet', action='store_true', help='no progress bar, no summary')
    parser.add_argument('--verbose', action='store_true', help="show TensorFlow's start-up lines")
    return parser


def image_files(arguments):
    """[(path, name)] of the images the arguments name: files as given, folders searched recursively; the
    names are unique file stems for the outputs."""
    found = []
    for argument in arguments:
        if os.path.isdir(argument):
            found += [(os.path.join(argument, name), name) for name in examples.list_images(argument)]
        elif os.path.exists(argument):
            found.append((argument, os.path.basename(argument)))
        else:
            raise ValueError('image %s does not exist' % argument)
    names, stems = [], set()
    for _, name in found:
        stem = re.sub(r'[^A-Za-z0-9_.-]+', '_', os.path.splitext(name)[0])
        unique, number = stem, 2
        while unique in stems:
            unique, number = '%s-%d' % (stem, number), number + 1
        stems.add(unique)
        names.append(unique)
    return [path for path, _ in found], names


def objective_texts(args, net=None):
    """The objectives the flags ask for: [(label, expression)], the label as the user wrote it
    ('predictions:happy', '_fc:"Egyptian cat"'), the expression with class names as indices ('predictions:3',
    '_fc:285'). Without net only the syntax is checked (before the network loads), and None returned."""
    text = args.objective.strip()
    if UNIT_NAME.fullmatch(text):
        if args.filters is None:
            raise ValueError('--objective %s names a unit: add --filters (e.g. 0-7), or write an expression '
                             'such as %s:0' % (text, text))
        if net is None:
            return None
        index = net.layer_index(text)
        names = model_flags.class_names(args, net).get(index)
        ids = dict.fromkeys(checks.parse_filters(args.filters, net.layer_channels[index], names))
        return [(model_flags.class_ref(text, names[f]) if names and 0 <= f < len(names) else '%s:%d' % (text, f),
                 '%s:%d' % (text, f)) for f in ids]
    if args.filters is not None:
        raise ValueError('an expression names its own filters (LAYER:N); leave out --filters')
    if net is None:
        model_flags.expression_classes(text)   # a typo fails before the network loads
        return None
    return [(text, model_flags.expression_classes(text, args, net))]


def _read_images(net, paths, size):
    from PIL import Image
    images = []
    for path in paths:
        try:
            images.append(examples.load_image(path, size, net.input_channels))
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
            raise ValueError('cannot read image %s (%s: %s); give PNG or JPEG files'
                             % (path, type(error).__name__, error)) from None
    return np.stack(images)


def _labels(found, config):
    """What each map is, under it: the method and its knobs, or the CAM unit."""
    labels = []
    for method in found.methods:
        if method in attribution.CAM_METHODS:
            labels.append('%s at %s' % (method, found.layer))
        elif method == 'smoothgrad':
            labels.append('smoothgrad, %d copies, sigma %g' % (config.samples, config.noise))
        elif method == 'integrated-gradients':
            labels.append('integrated-gradients, %s, %d steps' % (config.baseline, config.steps))
        else:
            labels.append(method)
    return labels


def _slug(text):
    return re.sub(r'[^A-Za-z0-9_.-]+', '-', text).strip('-')


def main(argv=None):
    args = build_parser().parse_intermixed_args(argv)
    try:
        # Everything a user can get wrong is checked before the first map, and nothing is written before the last.
        methods = attribution.parse_methods(args.method)
        objective_texts(args)
        config = attribution.Config(samples=args.samples, noise=args.noise, steps=args.steps,
                                    baseline=args.baseline, layer=args.layer,
                                    scorecam_channels=args.scorecam_channels, seed=args.seed).check()
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise ValueError('--out %s is a file; give a folder' % args.out)
        parent = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(parent):
            raise ValueError('cannot write into %s: folder %s does not exist' % (args.out, parent))
        if args.npz:
            files.check_output(args.npz)
        paths, names = image_files(args.images)
        wanted = [args.layer] if isinstance(args.layer, str) else []
        unit = args.objective.strip()
        if UNIT_NAME.fullmatch(unit):
            wanted.append(unit)
        else:
            wanted += [term.layer for _, term in objectives.parse(model_flags.expression_classes(unit)).terms]
        net = model_flags.network_from_args(args, quiet=args.quiet, layers=wanted)
        texts = objective_texts(args, net)
        size = args.size or net.input_size or 224
        images = _read_images(net, paths, size)
        for _, text in texts:
            bound = attribution.bind_objective(net, text, size)
            if set(methods) & set(attribution.CAM_METHODS):
                attribution.cam_layer(net, bound, config.layer)
        results = [attribution.attribute(net, images, text, methods, config, precision=args.precision,
                                         batch_size=args.batch_size, progress=not args.quiet) for _, text in texts]
        _write(args, net, names, images, [label for label, _ in texts], results, config)
    except (ValueError, OSError) as error:
        print('error: %s' % error, file=sys.stderr)
        return 2
    if not args.quiet:
        print('saved %d overlays, %d contact sheet%s and the maps of %s to %s%s'
              % (len(names) * len(texts), len(texts), '' if len(texts) == 1 else 's', ', '.join(methods), args.out,
                 ' and ' + args.npz if args.npz else ''))
    return 0


def _write(args, net, names, images, texts, results, config):
    """The overlays, per-image maps and contact sheets into args.out, and --npz."""
    os.makedirs(args.out, exist_ok=True)
    several = len(texts) > 1
    for text, found in zip(texts, results):
        suffix = '-' + _slug(text) if several else ''
        labels = _labels(found, config)
        for position, name in enumerate(names):
            title = ('%s on %s, %s\n%s' % (text, name, found.precision, net.description))
            if found.completeness is not None:
                change = found.values[position] - found.baseline_values[position]
                title += '\nintegrated-gradients: the map sums to f(image) - f(baseline) = %.4g within %.2g' % (
                    change, found.completeness[position])
            fig = plots.plot_attribution(images[position], found.maps[position], labels, title=title)
            plots.save_figure(fig, os.path.join(args.out, name + suffix + '.png'))
            plots.save_arrays(os.path.join(args.out, name + suffix + '.npz'), maps=found.maps[position],
                              methods=np.array(found.methods), objective=np.float32(found.values[position]),
                              objective_text=text, image=name, layer=found.layer or '')
        short = ['%s (%s)' % (m, found.layer) if m in attribution.CAM_METHODS else m for m in found.methods]
        sheet = plots.plot_attribution_sheet(images, found.maps, short, names,
                                             title='%s, %s; %s\n%s' % (text, found.precision, '; '.join(labels),
                                                                        net.description))
        plots.save_figure(sheet, os.path.join(args.out, 'contact-sheet%s.png' % suffix))
    if args.npz:
        maps = np.stack([found.maps for found in results])
        values = np.stack([found.values for found in results])
        arrays = dict(maps=maps if several else maps[0], objective=values if several else values[0],
                      methods=np.array(results[0].methods), images=np.array(names), objectives=np.array(texts),
                      layer=results[0].layer or '', precision=results[0].precision, network=net.description)
        if results[0].completeness is not None:
            completeness = np.stack([found.completeness for found in results])
            arrays['completeness'] = completeness if several else completeness[0]
        plots.save_arrays(args.npz, **arrays)

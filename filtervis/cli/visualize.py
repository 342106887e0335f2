"""
The command line of visualize.py: render what filters (or an objective) of a
network respond to, save the grid as PNG and, optionally, the arrays.

    python visualize.py                                   # the post's demo: conv3_2, filters 0-5
    python visualize.py --layer conv3_2 --filters 0-5 --iters 150 --step-size 2 --out filters.png
    python visualize.py --weights ../shared/models/vgg16-mri-notop.h5 --preprocess unit
    python visualize.py --model my_model.keras --preprocess tf --list-layers
"""

import argparse
import math
import os
import sys

import numpy as np

from filtervis import plots
from filtervis.analysis import examples, measures, verdict
from filtervis.cli import dream as dream_flags
from filtervis.cli import maco as maco_flags
from filtervis.cli import model_flags
from filtervis.core import network
from filtervis.core.checks import parse_filters
from filtervis.optvis import objectives
from filtervis.optvis.ascent import (DEFAULT_DIVERSITY_WEIGHT, METHOD_CHOICES, OBJECTIVE_CHOICES, ascend,
                                     filter_objective, render_objectives)
from filtervis.optvis import maco
from filtervis.optvis.blog import NORMALIZE_CHOICES
from filtervis.util import files
from filtervis.util.images import list_images, load_image
from filtervis.util.pictures import resized

def _layer_arg(text):
    return int(text) if text.lstrip('-').isdigit() else text


def build_parser():
    parser = argparse.ArgumentParser(
        description='Render what filters of a CNN respond to, by gradient ascent on a noise image. With no '
                    "arguments: the post's demo on VGG16 (layer 5 = conv3_2, filters 0-5, 150 steps, step size 2). "
                    'Any Keras CNN works with --model FILE.')
    parser.add_argument('--layer', type=_layer_arg, default=None,
                        help='unit: an index or a name (VGG16: conv1_1 .. conv5_3, default 5 = conv3_2; a Keras '
                             'model: any layer with a 4-D output, default the middle convolution unit; '
                             '--list-layers names them)')
    parser.add_argument('--filters', default=None,
                        help="filter ids: a range '0-5', a list '1,4,9' or 'all' (default 0-5)")
    parser.add_argument('--objective', default='channel', metavar='channel|neuron|negative|EXPRESSION',
                        help='what each picture maximizes: channel (the mean of the filter, the default), neuron '
                             '(the centre unit of the filter\'s map), negative (minus the mean: what turns the filter '
                             'off), or an expression such as "conv3_2:0 - 0.5 * conv4_1:7" (LAYER:N a channel, '
                             'LAYER:N@Y,X a neuron; numbers, + - * and parentheses; %s), which renders one '
                             'picture and takes no --layer or --filters' % model_flags.CLASS_SYNTAX)
    parser.add_argument('--probability', action='store_true',
                        help='with a head that ends in softmax or sigmoid (--layer predictions): maximize the '
                             'probability instead of the logit (the default, which keeps rising where the '
                             'probability saturates); same as --layer NAME_probability')
    parser.add_argument('--diversity', type=int, default=None, metavar='N',
                        help='render N >= 2 pictures of each filter, pushed apart by their Gram similarity '
                             '(Distill, Feature Visualization, 2017)')
    parser.add_argument('--diversity-weight', type=float, default=None, metavar='W',
                        help='with --diversity: how hard the pictures push apart, a share of their activation '
                             '(default %g for --method blog, %g for regularized; 0: the same N starts, no push)'
                             % (DEFAULT_DIVERSITY_WEIGHT['blog'], DEFAULT_DIVERSITY_WEIGHT['regularized']))
    parser.add_argument('--iters', type=int, default=None,
                        help='ascent steps (default 150, %d for --method maco; 0 with --start gives the pictures '
                             'back); Adam steps for --method regularized, NAdam steps for maco; steps per octave '
                             'with --dream' % maco.DEFAULT_STEPS)
    parser.add_argument('--step-size', type=float, default=None,
                        help="blog method: step size (default 2, the post's demo); with --normalize max the "
                             'pixel with the largest gradient moves by this much per step')
    parser.add_argument('--method', choices=METHOD_CHOICES, default=None,
                        help="blog: the post's plain gradient ascent; regularized: Fourier-basis image, random "
                             'transforms and Adam (regularized.py); maco: the phase of a natural spectrum, '
                             'random crops and NAdam (maco.py), readable pictures on deep modern networks, '
                             'larger than the network\'s input with --size. The %s' % maco_flags.default_method_help())
    parser.add_argument('--normalize', choices=NORMALIZE_CHOICES, default=None,
                        help='blog method: scale the step by the largest |gradient| (max, the default) or by '
                             'its std')
    parser.add_argument('--pre-relu', action='store_true', default=None,
                        help='maximize the filter before its activation (avoids dead starts; the regularized '
                             'method does so by default)')
    parser.add_argument('--size', type=int, default=None,
                        help="image side in pixels (default: the network's fixed input size, else 224); with "
                             '--method maco the picture may be larger (e.g. 512): the network sees crops of it '
                             'resized to its input side')
    parser.add_argument('--start', default=None, metavar='PATH',
                        help='start from a picture instead of noise: an image file (every filter starts from it, '
                             "scaled and centre-cropped to the network's size) or a folder (one image per filter, "
                             'in name order); the regularized method starts its Fourier coefficients from it; '
                             'the photo to dream on with --dream')
    parser.add_argument('--examples', default=None, metavar='DIR',
                        help='also draw, beside each picture, the 9 patches of the images in DIR (PNG, JPEG, '
                             'recursively) that excite the filter most (examples.py)')
    parser.add_argument('--seed', type=int, default=None, help='random seed of the start noise')
    parser.add_argument('--batch-size', type=int, default=None,
                        help='images per session.run (default: the fastest batch that keeps memory under 4 GB)')
    parser.add_argument('--out', default='filters.png', help='PNG file for the grid (default filters.png)')
    parser.add_argument('--cols', type=int, default=None,
                        help='images per row of the grid (default 3, or a square grid for more than 12)')
    parser.add_argument('--npz', default=None,
                        help='also save the raw images (float32 [N, size, size, C]), filter ids, group index and '
                             'objectives to this .npz file')
    parser.add_argument('--list-layers', action='store_true',
                        help='print the units (name, type, channels, output size, receptive field) and exit')
    parser.add_argument('--all', action='store_true',
                        help='with --list-layers and a Keras model: every layer with a 4-D output, not only '
                             'one unit per convolution')
    model_flags.add_model_arguments(parser)   # --model, --weights, --preprocess, --precision, --unsafe
    dream_flags.add_arguments(parser)   # --dream, --octaves, --octave-scale, --tile
    maco_flags.add_arguments(parser)    # --crops, --crop-scale, --spectrum, --transparency
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    parser.add_argument('--verbose', action='store_true',
                        help="also show TensorFlow's own start-up and log lines (hidden by default)")
    return parser


def unit_lines(model, size=None):
    """One line per unit of a network: name, kind, channels, output side and receptive field for size x size
    pictures (default: the fixed input size, else 224)."""
    size = size or model.input_size or 224
    return [model.unit_line(index, size) for index in range(len(model.units))]


def probability_unit(model, layer_index):
    """The unit of the probabilities of unit `layer_index` (--probability); ValueError where it has none."""
    logits = model.logits_of(layer_index)
    if logits is None:
        raise ValueError('--probability: %s ends in no softmax or sigmoid; it has no probabilities to maximize'
                         % model.short_names[layer_index])
    return model.layer_index(model.short_names[logits] + network.PROBABILITY_SUFFIX)


def neuron_label(model, layer_index, feature_id, names=None):
    """What a caption calls a filter: 'filter 5', 'neuron 5' of a vector, or its class name (--classes)."""
    if names:
        return names[feature_id]
    return '%s %d' % ('neuron' if model.is_vector(layer_index) else 'filter', feature_id)


def read_starts(path, count, size, channels):
    """None, or the start pictures of --start, float32 [count, size, size, channels], 0..255: one image for
    every picture, or a folder of exactly `count` images, one per picture in name order."""
    if path is None:
        return None
    names = [path]
    if os.path.isdir(path):
        names = [os.path.join(path, name) for name in list_images(path)]
        if len(names) != count:
            raise ValueError('--start %s holds %d images for %d filters: give one image per filter (in name '
                             'order), or one image file for all of them' % (path, len(names), count))
    pictures = []
    for name in names:
        try:
            pictures.append(load_image(name, size, channels))
        except (OSError, ValueError, SyntaxError) as error:
            raise ValueError('--start %s: cannot read it as a picture (%s)' % (name, error)) from None
    return np.stack(pictures if len(pictures) == count else pictures * count)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        expression = None
        if args.objective not in OBJECTIVE_CHOICES:
            # Parsed before anything is loaded: a typo costs a second.
            expression = objectives.parse(model_flags.expression_classes(args.objective))
            if args.diversity is not None:
                raise ValueError('--diversity renders N pictures of each filter; an expression renders one '
                                 'picture: leave out one of them')
            if args.layer is not None or args.filters is not None:
                raise ValueError('an expression names its own layers and filters (LAYER:N); leave out --layer '
                                 'and --filters')
        if args.diversity is not None and args.diversity < 2:
            raise ValueError('--diversity %d: expected 2 or more pictures per filter' % args.diversity)
        if args.diversity_weight is not None and args.diversity is None:
            raise ValueError('--diversity-weight needs --diversity N')
        if args.all and not args.list_layers:
            raise ValueError('--all goes with --list-layers')
        for path in (args.out, args.npz):
            # Checked first: finding a missing folder after an hour of ascent loses the hour.
            if path and not args.list_layers:
                files.check_output(path)
        if args.examples:
            if expression is not None:
                raise ValueError('--examples shows the patches of filters; an expression has no single filter')
            examples.list_images(args.examples)   # a bad folder fails before the ascent, not after
        dream_flags.check(args)
        maco_flags.check(args)
        if args.dream:
            names = [p.strip() for p in args.dream.split(',') if p.strip() and not p.strip().lstrip('-').isdigit()]
            model = model_flags.network_from_args(args, quiet=args.quiet, layers=names)
            message = dream_flags.run(args, model)
            if not args.quiet:
                print(message)
            return 0
        if args.start is not None and not os.path.exists(args.start):
            raise ValueError('--start %s: no such file or folder' % args.start)
        if args.method in ('regularized', 'maco') and (args.step_size is not None or args.normalize is not None):
            raise ValueError('--step-size and --normalize belong to --method blog; the %s method uses its '
                             "optimizer's learning rate (%s.Config)" % (args.method, args.method))
        wanted = [t.layer for _, t in expression.terms] if expression is not None else [args.layer]
        model = model_flags.network_from_args(args, quiet=args.quiet, layers=[w for w in wanted if w is not None],
                                         all_layers=args.all)
        if args.list_layers:
            if model_flags.is_keras(args) or model_flags.is_onnx(args):
                size = model.input_size or 224      # the model file's unit_lines' size
                lines = model_flags.unit_lines(args, model, args.all)
            else:
                size = args.size or model.input_size or 224
                lines = unit_lines(model, size)
            print('\n'.join(['%s: %d units; sizes for %dx%d pictures' % (model.description, len(lines),
                                                                        size, size)] + lines))
            return 0
        if expression is not None:
            # Now that the network is known: the classes it names (--classes) as their neurons.
            expression = objectives.parse(model_flags.expression_classes(args.objective, args, model))
        size = args.size or model.input_size or 224
        if expression is not None:
            first_unit = model.layer_index(expression.terms[0][1].layer)
        else:
            first_unit = model.layer_index(model.default_layer() if args.layer is None else args.layer)
        method = maco_flags.resolve_method(args, model, first_unit)
        if method != 'blog' and (args.step_size is not None or args.normalize is not None):
            raise ValueError('--step-size and --normalize belong to --method blog; this unit renders with --method '
                             '%s by default (add --method blog)' % method)
        if args.iters is None:
            args.iters = maco.DEFAULT_STEPS if method == 'maco' else 150
        step_size = None
        if method == 'blog':
            step_size = 2.0 if args.step_size is None else args.step_size
        options = dict(seed=args.seed, size=size, normalize=args.normalize, pre_relu=args.pre_relu,
                       batch_size=args.batch_size, progress=not args.quiet, method=method,
                       precision=args.precision, step_size=step_size)
        if method == 'maco':
            options.update(config=maco_flags.config(args), spectrum=args.spectrum)
        # What the network is shown of a picture, for its measures and its verdict: the picture itself, or
        # (maco, larger than the input) the picture resized to the network's input side.
        seen = maco.seen_side(model, size) if method == 'maco' else size
        if expression is not None:
            options['init'] = read_starts(args.start, 1, size, model.input_channels)
            result = render_objectives(model, [expression], args.iters, **options)
            picture_objectives, group_index, feature_ids, per = [expression], [0], [-1], 1
            subject = str(expression)
            values = measures.measure_objectives(model, picture_objectives, resized(result.images, seen))
            captions = ['%s\n%s' % (expression, c) for c in measures.captions(values)]
        else:
            layer_index = model.layer_index(model.default_layer() if args.layer is None else args.layer)
            if args.probability:
                layer_index = probability_unit(model, layer_index)
            layer = model.short_names[layer_index]
            names = model_flags.class_names(args, model).get(layer_index)
            channels = model.layer_channels[layer_index]
            requested = parse_filters(args.filters or '0-%d' % (min(6, channels) - 1), channels, names)
            starts = read_starts(args.start, len(requested), size, model.input_channels)
            # Every picture of a filter's diversity group starts from the filter's picture.
            options['init'] = None if starts is None else np.repeat(starts, args.diversity or 1, axis=0)
            result = ascend(model, layer_index, requested, args.iters, objective=args.objective,
                            diversity=args.diversity, diversity_weight=args.diversity_weight, **options)
            per = args.diversity or 1
            feature_ids = [f for f in requested for _ in range(per)]
            group_index = [g for _ in requested for g in range(per)]
            picture_objectives = [filter_objective(args.objective, layer_index, f) for f in feature_ids]
            subject = '%s%s' % (layer, '' if args.objective == 'channel' else ', %s' % args.objective)
            captions = None
        # Under a class picture, the network's own verdict on it (its head's top-1, the target's probability,
        # the share of jittered copies still seen as the target).
        logits = None if expression is not None else model.classifier_of(layer_index)
        judged = {} if logits is None else verdict.verdict(model, logits, feature_ids, resized(result.images, seen))
        extra = {} if result.importance is None else {'importance': result.importance}
        if args.npz:
            # Saved before plotting: a whole layer takes long, and the arrays are the result.
            plots.save_arrays(args.npz, images=result.images, filter_ids=np.array(feature_ids),
                              group_index=np.array(group_index), objectives=result.objectives, dead=result.dead,
                              objective=args.objective, layer='' if expression is not None else layer,
                              weights=model.description, precision=result.precision, method=method, **extra,
                              **judged)
        many = len(feature_ids) > 12
        if captions is None:
            if many:
                captions = [names[f] if names else '%d' % f for f in feature_ids]
            else:
                # The three measures of measures.py, the same for both methods and every objective:
                # after the ReLU, but for a negative view, whose filter ends up off there.
                values = measures.measure_objectives(model, picture_objectives, resized(result.images, seen),
                                                     pre_relu=args.objective == 'negative')
                captions = ['%s%s\n%s' % (neuron_label(model, layer_index, f, names), '' if per == 1 else ' #%d' % g, c)
                            for f, g, c in zip(feature_ids, group_index, measures.captions(values))]
                if judged:
                    head = model_flags.class_names(args, model).get(logits)
                    captions = ['%s\n%s' % (c, verdict.caption(judged, i, head)) for i, c in enumerate(captions)]
                if per > 1:
                    for start in range(0, len(feature_ids), per):
                        score = measures.diversity(model, layer_index, resized(result.images[start:start + per], seen))
                        captions[start] += ' · group diversity %.3f' % score
        if method == 'blog':
            how = '%s%s, %d steps of size %g' % (subject, ' (pre-ReLU)' if args.pre_relu else '', args.iters,
                                                 step_size)
        elif method == 'maco':
            crops = options['config'].crops
            how = '%s, maco, %d steps, %d crop%s%s%s' % (
                subject, args.iters, crops, '' if crops == 1 else 's',
                ', %d px' % size if size != seen else '', ', spectrum of %s' % args.spectrum if args.spectrum else '')
        else:
            how = '%s, regularized, %d steps' % (subject, args.iters)
        if args.diversity:
            weight = DEFAULT_DIVERSITY_WEIGHT[method] if args.diversity_weight is None else args.diversity_weight
            how += ', %d pictures per filter %s' % (args.diversity, 'pushed apart (weight %g)' % weight if weight
                                                    else 'from their own starts, no push (weight 0)')
        title = '%s\n%s, %s' % (model.description, how, result.precision)
        ncols = args.cols or (math.ceil(math.sqrt(len(feature_ids))) if many else (per if 1 < per <= 6 else 3)
                              if expression is None else 1)
        if args.examples:
            # The precision the pictures were made in, resolved once by ascend().
            found = examples.find(model, args.examples, [layer_index], filters=requested,
                                  precision=result.precision, progress=not args.quiet, size=seen)
            title += '\nbeside each: its top %d patches of %d images in %s' % (examples.DEFAULT_K, found.count,
                                                                                args.examples)
            # Rows follow the pictures, repeats too (find() looks for each filter once).
            rows = [(layer_index, f) for f in feature_ids]
            plots.save_figure(plots.plot_found(model, args.examples, found, result.images, captions, title, rows),
                        args.out)
        else:
            alphas = result.importance if args.transparency else None
            plots.save_grid(result.images, args.out, captions, title, ncols=ncols, size=1.6 if many else 4,
                            scale=method != 'maco', alphas=alphas)
    except (ValueError, OSError) as error:
        print('error: %s' % error, file=sys.stderr)
        return 2
    if not args.quiet:
        if expression is not None:
            print('saved 1 picture of %s to %s' % (expression, args.out))
        else:
            print('saved %d filters of %s%s to %s' % (len(requested), subject,
                                                      ', %d pictures each' % per if per > 1 else '', args.out))
    return 0

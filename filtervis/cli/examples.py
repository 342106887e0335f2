"""
The command line of examples.py: the patches of a folder of images that
excite each filter most, drawn one row per filter.

    python examples.py DIR --layers conv3_2 --filters 0-5 --out examples.png
    python examples.py ../shared/data/mri-slices --weights ../shared/models/vgg16-mri-notop.h5 \\
        --preprocess unit --layers conv3_2,conv5_1 --filters 0-5 --json examples.json --workers 2
    python examples.py DIR --layers conv3_2 --filters 0-5 --attribution gradcam   # each patch beside its map
"""

import argparse
import json
import os
import sys

from filtervis import cluster, plots
from filtervis.analysis import attribution
from filtervis.analysis.examples import DEFAULT_BATCH_SIZE, DEFAULT_K, find, list_images
from filtervis.cli import model_flags
from filtervis.core import checks
from filtervis.util import files



def _layers_arg(text):
    return [int(part) if part.strip().lstrip('-').isdigit() else part.strip() for part in text.split(',')]


def build_parser():
    parser = argparse.ArgumentParser(
        description='Find the patches of a folder of images (PNG, JPEG, recursively) that excite each '
                    'filter of VGG16 most, and draw them, one row per filter.')
    parser.add_argument('folder', help='folder of images, searched recursively')
    parser.add_argument('--layers', type=_layers_arg, default=None,
                        help='units, comma-separated: names (VGG16: conv1_1 .. conv5_3; a Keras model: layer names) '
                             'or indices (default: VGG16 conv3_2, else the middle unit); one forward pass gives '
                             'them all')
    parser.add_argument('--filters', default='0-5',
                        help="filter ids of every layer: a range '0-5', a list '1,4,9' or 'all' (default 0-5)")
    parser.add_argument('--k', type=int, default=DEFAULT_K, help='patches per filter (default %d)' % DEFAULT_K)
    parser.add_argument('--out', default='examples.png', help='PNG file for the figure (default examples.png)')
    parser.add_argument('--json', default=None,
                        help='also write the records (layer, filter, rank, file, y, x, activation) to this '
                             'JSON file')
    parser.add_argument('--attribution', default=None, metavar='METHOD',
                        help='also draw, beside each patch, the attribution map of its filter over it: gradcam '
                             "(Grad-CAM at the filter's own unit) or gradient-x-input (default: none); the "
                             'records of --json then name it in an "attribution" field')
    parser.add_argument('--size', type=int, default=None,
                        help="images are scaled and centre-cropped to this side (default: the network's fixed "
                             "input size, else 224)")
    parser.add_argument('--batch-size', type=int, default=DEFAULT_BATCH_SIZE,
                        help='images per forward pass (default %d)' % DEFAULT_BATCH_SIZE)
    model_flags.add_model_arguments(parser)   # --model, --weights, --preprocess, --precision
    cluster.add_arguments(parser)
    parser.add_argument('--quiet', action='store_true', help='no progress bar, no summary')
    parser.add_argument('--verbose', action='store_true',
                        help="name every skipped file and why; show TensorFlow's start-up lines")
    return parser


def _write_json(path, records, method=None):
    if method:
        records = [dict(record, attribution=method) for record in records]
    data = json.dumps(records, indent=1).encode('utf8')
    return files.write_atomic(path, lambda f: f.write(data))


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.attribution is not None:
            attribution.check_example_method(args.attribution)
        # Checked first: a bad output path found after the whole folder of images was read loses the run.
        for path in (args.out, args.json):
            if path:
                files.check_output(path)
        if args.json and os.path.abspath(args.json) == os.path.abspath(args.out):
            raise ValueError('--json and --out both name %s; give two files' % args.out)
        list_images(args.folder)
        model = model_flags.network_from_args(args, quiet=args.quiet, layers=args.layers or [])
        layer_indices = [model.layer_index(layer) for layer in args.layers or [model.default_layer()]]
        filters = {index: checks.parse_filters(args.filters, model.layer_channels[index])
                   for index in layer_indices}
        if args.attribution is not None:
            attribution.check_example_method(args.attribution, model, layer_indices)
        with cluster.client_from_args(args) as client:
            found = find(model, args.folder, layer_indices, k=args.k, filters=filters,
                         batch_size=args.batch_size, progress=not args.quiet, size=args.size, client=client,
                         threads=cluster.threads_from_args(args), precision=args.precision)
        maps = None
        if args.attribution is not None:
            maps = attribution.example_maps(model, args.folder, found.records, args.attribution, size=found.size,
                                            precision=found.precision, batch_size=args.batch_size,
                                            progress=not args.quiet)
        if args.json:
            _write_json(args.json, found.records, args.attribution)
        title = '%s\ntop %d of %d images in %s, receptive field of the strongest unit, %s' % (
            model.description, args.k, found.count, args.folder, found.precision)
        if args.attribution is not None:
            title += '\neach patch beside its %s map for its filter' % args.attribution
        fig = plots.plot_found(model, args.folder, found, title=title, maps=maps, map_label=args.attribution)
        files.write_atomic(args.out, lambda f: fig.savefig(f, dpi=100, format='png'))
    except (ValueError, OSError) as error:
        # OSError: also what the file system says while writing, e.g. a full disk or no permission.
        print('error: %s' % error, file=sys.stderr)
        return 2
    total = found.count + len(found.skipped)
    if found.skipped:
        print('skipped %s of %s files%s' % (format(len(found.skipped), ','), format(total, ','),
                                             '' if args.verbose else ' (--verbose names them)'), file=sys.stderr)
        if args.verbose:
            for name, reason in zip(found.skipped, found.reasons):
                print('  %s: %s' % (name, reason), file=sys.stderr)
    if not args.quiet:
        print('saved the top %d of %s images for %d filters to %s%s'
              % (args.k, format(found.count, ','), len(found.filters),
                 args.out, ' and ' + args.json if args.json else ''))
    return 0

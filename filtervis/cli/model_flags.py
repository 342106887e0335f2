"""
Which network the user means: the model flags every command line shares
(visualize.py, examples.py, atlas.py, attribute.py), the Network they name,
and the names of its classes (--classes), also where an objective expression
names them.

    python visualize.py                                    # vgg16.tfmodel in the model folder
    python visualize.py --weights vgg16-mri-notop.h5 --preprocess unit
    python visualize.py --model fer-emotion-minixception.hdf5 --preprocess tf --list-layers
    python visualize.py --model my.keras --preprocess tf --layer block_3_expand_relu
    python visualize.py --model resnet18.onnx --preprocess torch --list-layers     # PyTorch, exported to ONNX

    from filtervis.cli import model_flags as models
    models.add_model_arguments(parser)       # --model, --weights, --preprocess, --bgr, --precision, --unsafe
    net = models.network_from_args(args, layers=['conv3_2'])
    again = models.model_args(args)          # flags that load the same network in another command
    lines = models.unit_lines(args, net)     # --list-layers of a Keras or ONNX model
    models.expression_classes('2 * _fc:"tiger cat" - _fc:tabby')              # the syntax only, before loading
    text = models.expression_classes('2 * _fc:"tiger cat" - _fc:tabby', args, net)   # '2 * _fc:282 - _fc:281'
"""

import difflib
import os
import re

from filtervis.core import checks, precision
from filtervis.models import keras_model, onnx_model, preprocess, vgg16
from filtervis.optvis import objectives

# A class of --classes by name in an objective expression: LAYER:NAME for a name of letters, digits, _ and -
# that starts as no number does (LAYER:5 stays channel 5), LAYER:"NAME" for any name without a double quote.
CLASS_REF = re.compile(r'(?P<unit>[A-Za-z_][A-Za-z0-9_./]*):(?:"(?P<quoted>[^"]*)"|(?P<bare>[A-Za-z_][A-Za-z0-9_-]*))')
BARE_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_-]*')
# The --objective help of every command line that takes an expression says this about classes.
CLASS_SYNTAX = ('with --classes, LAYER:NAME a class (predictions:happy), in double quotes where the name has '
                'anything but letters, digits, _ and - (\'_fc:"Egyptian cat"\')')


def add_model_arguments(parser):
    """--model, --weights, --preprocess, --bgr, --precision, --unsafe and --classes on an argparse parser."""
    parser.add_argument('--model', default=None,
                        help='the network: a Keras model (.keras, .h5/.hdf5 with its architecture, or a '
                             'SavedModel folder), a PyTorch model exported to ONNX (.onnx, docs/pytorch.md) or a '
                             'frozen vgg16.tfmodel (default: the one in the model folder, $VGG16_DIR or %s)'
                             % vgg16.data_dir)
    parser.add_argument('--weights', default=None,
                        help='build VGG16 from this Keras VGG16 h5 weight file first (see download.py)')
    parser.add_argument('--preprocess', choices=preprocess.CHOICES, default=None,
                        help='input scaling the weights were trained with: %s. VGG16 --weights take %s '
                             '(default caffe); tf suits MobileNet, Xception and EfficientNet, torch '
                             "torchvision's models; a Keras model without its own Rescaling/Normalization and "
                             'an ONNX model need it'
                             % (preprocess.describe(), ', '.join(preprocess.VGG16_CHOICES)))
    parser.add_argument('--bgr', action='store_true',
                        help='with an ONNX --model: the model takes its channels in BGR order (trained on OpenCV '
                             'images); pictures stay RGB and are reversed inside the graph, after --preprocess')
    parser.add_argument('--precision', choices=precision.PRECISION_CHOICES, default='auto',
                        help='precision of the convolutions: auto (bfloat16 where the CPU does it natively, '
                             'e.g. AVX-512 BF16, else float32; the default), float32 or bfloat16')
    parser.add_argument('--unsafe', action='store_true',
                        help='let a Keras model with Lambda layers or custom classes load: this RUNS CODE FROM '
                             'THE FILE; only for files you trust')
    parser.add_argument('--classes', default=None, metavar='FILE',
                        help="the names of the classes of the network's head, one per line, in order: they name "
                             'its neurons in captions, in --filters (--filters happy,sad) and on the atlas page')


def is_keras(args):
    """True when --model names a Keras model file or SavedModel folder (not a frozen .tfmodel)."""
    return bool(args.model) and keras_model.is_model_path(args.model)


def is_onnx(args):
    """True when --model names an ONNX model file (.onnx)."""
    return bool(args.model) and onnx_model.is_model_path(args.model)


def model_path_from_args(args, quiet=False):
    """The VGG16 graph file the flags of add_model_arguments() name, built from --weights first if given.

    ValueError for flags that exclude each other; the graph itself is
    checked when it is loaded. With no flag: the model folder's vgg16.tfmodel
    (nothing is downloaded; a missing one is an error that says how to get it).
    """
    if args.model:
        if args.weights:
            raise ValueError('--model (a ready graph or a Keras model) and --weights (build VGG16 from weights) '
                             'exclude each other; give one')
        if args.preprocess and not (is_keras(args) or is_onnx(args)):
            raise ValueError('--preprocess goes with --weights (VGG16 weights) or a Keras or ONNX --model; %s is a '
                             'frozen graph, whose scaling is inside it' % args.model)
        return os.path.abspath(args.model)
    if args.weights or args.preprocess:
        if not args.weights:
            raise ValueError('--preprocess needs --weights FILE.h5 or a Keras --model FILE')
        if args.preprocess not in (None,) + preprocess.VGG16_CHOICES:
            raise ValueError('--preprocess %s: VGG16 weights take %s' % (args.preprocess,
                                                                      ', '.join(preprocess.VGG16_CHOICES)))
        return vgg16.maybe_download(weights=args.weights, preprocess=args.preprocess, quiet=quiet)
    return vgg16.model_path()


def model_args(args):
    """Flags that load the network of `args` again in another command (absolute paths)."""
    if args.weights:
        return ['--weights', os.path.abspath(args.weights), '--preprocess', args.preprocess or 'caffe']
    if is_keras(args):
        words = ['--model', os.path.abspath(args.model)]
        words += ['--preprocess', args.preprocess] if args.preprocess else []
        return words + (['--unsafe'] if args.unsafe else [])
    if is_onnx(args):
        words = ['--model', os.path.abspath(args.model)]
        words += ['--preprocess', args.preprocess] if args.preprocess else []
        return words + (['--bgr'] if args.bgr else [])
    return ['--model', model_path_from_args(args, quiet=True)]


def network_from_args(args, quiet=False, threads=None, layers=(), all_layers=False):
    """The Network the flags name: a Keras model's (keras_model.load), an ONNX model's (onnx_model.load) or
    a vgg16.VGG16.

    layers: unit names the caller will ask for; a layer that is not one of
    the default units (one per convolution) loads every layer with a 4-D
    output as a unit, as all_layers=True does.
    """
    if args.bgr and not is_onnx(args):
        raise ValueError('--bgr is for an ONNX --model (a .onnx file); leave it out')
    if is_onnx(args):
        if args.unsafe:
            raise ValueError('--unsafe is for Keras model files; an ONNX file is data and runs no code')
        if args.preprocess is None:
            raise ValueError('%s: say how its inputs were scaled in training with --preprocess: %s'
                             % (os.path.basename(args.model), preprocess.describe()))
        return _load_wider(lambda all_: onnx_model.load(args.model, args.preprocess, bgr=args.bgr, threads=threads,
                                                        quiet=quiet, all_layers=all_), layers, all_layers)
    if not is_keras(args):
        if args.unsafe:
            raise ValueError('--unsafe is for Keras model files; VGG16 graphs run no code of their own')
        return vgg16.VGG16(model_path_from_args(args, quiet=quiet), threads=threads)
    return _load_wider(lambda all_: keras_model.load(args.model, args.preprocess, unsafe=args.unsafe,
                                                     threads=threads, quiet=quiet, all_layers=all_),
                       layers, all_layers)


def _load_wider(load, layers, all_layers):
    """load(all_layers), loaded again with every layer when a named layer is not a default unit."""
    net = load(all_layers)
    wanted = [name for name in layers if isinstance(name, str)]
    if not all_layers and any(name not in net.short_names for name in wanted):
        net.close()
        net = load(True)
    return net


def unit_lines(args, net, all_layers=False):
    """The --list-layers lines of a Keras or ONNX model file (the ONNX ones end in onnx=TENSOR)."""
    return (onnx_model if is_onnx(args) else keras_model).unit_lines(net, all_layers)


def class_names(args, net):
    """{unit index: [name per neuron]} for the vector units (a classifier's head: its logits and their
    probabilities) with as many neurons as --classes has lines; {} without --classes. ValueError when no
    vector unit has that many."""
    if not args.classes:
        return {}
    vectors = [i for i in range(len(net.units)) if net.is_vector(i)]
    sizes = sorted({net.layer_channels[i] for i in vectors})
    try:
        with open(args.classes, encoding='utf-8') as f:
            count = len(f.read().rstrip('\n').split('\n'))
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError('--classes %s: cannot read it (%s)' % (args.classes, error)) from None
    if count not in sizes:
        if not vectors:
            raise ValueError('--classes names the neurons of a vector unit (a Dense layer, a classifier\'s head), '
                             'and this network has none (--list-layers --all)')
        heads = ', '.join('%s (%d)' % (net.short_names[i], net.layer_channels[i]) for i in vectors)
        raise ValueError('--classes %s has %d lines, but the vector units have %s neurons: give one name per '
                         'line, in order' % (args.classes, count, heads))
    names = checks.read_classes(args.classes, count)
    return {i: names for i in vectors if net.layer_channels[i] == count}


def class_ref(unit, name):
    """How an expression names class `name` of `unit`: 'predictions:happy', or '_fc:"Egyptian cat"' where the
    name needs the quotes."""
    return '%s:%s' % (unit, name if BARE_NAME.fullmatch(name) else '"%s"' % name)


def expression_classes(text, args=None, net=None):
    """The objective expression `text` with each class it names (CLASS_REF) as LAYER:INDEX, the text that
    objectives.parse takes: '2 * _fc:"tiger cat" - _fc:tabby' -> '2 * _fc:282 - _fc:281'.

    With net, the names are looked up in --classes (args.classes, class_names()); without it, only the syntax
    is checked (each class read as neuron 0, objectives.parse) so that a typo fails before the network loads,
    and the text returned names the expression's units (objectives.parse(text).terms) but no real classes.
    ValueError in one line for a quote left open (and where), a class without --classes, or a name that is no
    class of its unit.
    """
    text = str(text)
    refs = list(CLASS_REF.finditer(text))
    outside = list(text)
    for ref in refs:
        outside[ref.start():ref.end()] = ' ' * (ref.end() - ref.start())
    if '"' in outside:
        at = outside.index('"')
        if '"' in outside[at + 1:]:
            raise ValueError('objective %r: the quoted name at character %d follows no unit; write '
                             'LAYER:"NAME"' % (text, at + 1))
        raise ValueError('objective %r: the " at character %d is never closed; a class name goes in double '
                         'quotes, LAYER:"NAME"' % (text, at + 1))
    for ref in refs:
        # Only an operator or ')' may follow a class; anything else is the rest of a name that needed quotes
        # (_fc:Egyptian cat), which parse() would call a bad token.
        rest = re.match(r'\s*([^\s+\-*)]\S*)', text[ref.end():])
        if ref['bare'] is not None and rest:
            if rest[1].startswith(':') and '-' in ref['bare']:
                raise ValueError('objective %r: a - right after a class name is part of the name (%s); put spaces '
                                 'around a minus between two classes' % (text, ref[0]))
            raise ValueError('objective %r: %r at character %d goes on from the class %s; a name with anything '
                             'but letters, digits, _ and - goes in double quotes, %s:"NAME"'
                             % (text, rest[1], ref.end() + rest.start(1) + 1, ref[0], ref['unit']))
    if net is None:
        # Padded to the reference's length: the characters parse() names are where the user typed them.
        checked = CLASS_REF.sub(lambda ref: ('%s:0' % ref['unit']).ljust(len(ref[0])), text)
        try:
            objectives.parse(checked)
        except ValueError as error:
            raise ValueError(str(error).replace(repr(checked), repr(text), 1)) from None
        return checked
    names_of = class_names(args, net) if args is not None else {}

    def class_index(ref):
        unit, name = ref['unit'], ref['bare'] if ref['quoted'] is None else ref['quoted']
        names = names_of.get(net.layer_index(unit))
        if names is None:
            if args is not None and args.classes:
                heads = sorted({net.short_names[i] for i in names_of})
                raise ValueError('%s names a class of %s, but --classes %s names the neurons of %s'
                                 % (ref[0], unit, args.classes, ', '.join(heads)))
            raise ValueError('%s names a class of %s: give --classes FILE, its names one per line'
                             % (ref[0], unit))
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            raise ValueError('%r is no class of %s in --classes (%s)%s' % (
                name, unit, ', '.join(names[:12]) + (', ... %d names' % len(names) if len(names) > 12 else ''),
                '; closest: %s' % class_ref(unit, close[0]) if close else ''))
        return '%s:%d' % (unit, names.index(name))
    return CLASS_REF.sub(class_index, text)

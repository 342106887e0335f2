"""
Which network the user means: the model flags every command line shares
(visualize.py, examples.py, atlas.py) and the Network they name.

    python visualize.py                                    # vgg16.tfmodel in the model folder
    python visualize.py --weights vgg16-mri-notop.h5 --preprocess unit
    python visualize.py --model my.tfmodel

    import models
    models.add_model_arguments(parser)       # --model, --weights, --preprocess, --precision
    net, again = models.network_from_args(args)   # again: flags that load the same network elsewhere
"""

import os

import precision
import vgg16


def add_model_arguments(parser):
    """--model, --weights, --preprocess and --precision on an argparse parser."""
    parser.add_argument('--model', default=None,
                        help='a vgg16.tfmodel file to use (default: the one in the model folder, '
                             '$VGG16_DIR or %s)' % vgg16.data_dir)
    parser.add_argument('--weights', default=None,
                        help='build the graph from this Keras VGG16 h5 weight file first (see download.py)')
    parser.add_argument('--preprocess', choices=vgg16.PREPROCESS_CHOICES, default=None,
                        help='with --weights: input scaling the weights were trained with: caffe '
                             '(BGR minus ImageNet mean, default), unit (pixels/255) or none')
    parser.add_argument('--precision', choices=precision.PRECISION_CHOICES, default='auto',
                        help='precision of the convolutions: auto (bfloat16 where the CPU does it natively, '
                             'e.g. AVX-512 BF16, else float32; the default), float32 or bfloat16')


def model_path_from_args(args, quiet=False):
    """The graph file the flags of add_model_arguments() name, built from --weights first if given.

    ValueError for flags that exclude each other; the graph itself is
    checked when it is loaded. With no flag: the model folder's vgg16.tfmodel
    (nothing is downloaded; a missing one is an error that says how to get it).
    """
    if args.model:
        if args.weights or args.preprocess:
            raise ValueError('--model (a ready graph) and --weights/--preprocess (build one) exclude '
                             'each other; give one')
        return os.path.abspath(args.model)
    if args.weights or args.preprocess:
        if not args.weights:
            raise ValueError('--preprocess needs --weights FILE.h5')
        return vgg16.maybe_download(weights=args.weights, preprocess=args.preprocess, quiet=quiet)
    return vgg16.model_path()


def model_args(args):
    """Flags that load the network of `args` again in another command (absolute paths)."""
    if args.weights:
        return ['--weights', os.path.abspath(args.weights), '--preprocess', args.preprocess or 'caffe']
    return ['--model', model_path_from_args(args, quiet=True)]


def network_from_args(args, quiet=False, threads=None):
    """The Network the flags name: a vgg16.VGG16 of the graph file model_path_from_args() gives."""
    return vgg16.VGG16(model_path_from_args(args, quiet=quiet), threads=threads)

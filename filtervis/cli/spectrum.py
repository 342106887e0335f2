"""
The command line of optvis/spectrum.py: the mean magnitude spectrum of a
folder of images (PNG, JPEG, recursively), saved as float32 .npy
[C, side, side//2+1], for MaCo pictures (optvis/maco.py).

    python -m filtervis.cli.spectrum DIR --channels 3 --out DIR-rgb.npy
    python -m filtervis.cli.spectrum ../shared/data/natural-photos --channels 1 \\
        --out filtervis/optvis/spectra/natural-grey.npy        # the shipped greyscale spectrum

`filtervis-spectrum` once the package is installed. Takes about a second
per 100 images of 512 px at side 256.
"""

import argparse
import os
import sys

import numpy as np

from filtervis.optvis import spectrum
from filtervis.util import files
from filtervis.util.images import list_images


def build_parser():
    parser = argparse.ArgumentParser(
        description='The mean magnitude spectrum (|rfft2| of the decorrelated, mean-removed colour channels) '
                    'of a folder of images, saved as float32 .npy [C, side, side//2+1].')
    parser.add_argument('folder', metavar='DIR', help='folder of images (PNG, JPEG), searched recursively')
    parser.add_argument('--channels', type=int, choices=(1, 3), default=3,
                        help='3: RGB, decorrelated colours (default); 1: greyscale (colour images are converted)')
    parser.add_argument('--side', type=int, default=spectrum.SIDE,
                        help='each image is scaled so its short side is this, then centre-cropped '
                             '(default %d)' % spectrum.SIDE)
    parser.add_argument('--out', required=True, metavar='FILE.npy', help='where to save the spectrum')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    parser.add_argument('--verbose', action='store_true',
                        help="also show TensorFlow's own start-up lines (hidden by default)")
    return parser


def main(argv=None):
    """The command line; returns the exit status: 0, or 2 with one `error:` line on stderr and nothing written."""
    args = build_parser().parse_args(argv)
    try:
        # Checked first: a bad output path found after every image was read loses the run.
        files.check_output(args.out)
        names = list_images(args.folder)
        spec = spectrum.compute([os.path.join(args.folder, name) for name in names], args.channels,
                                side=args.side, progress=not args.quiet)
        files.write_atomic(args.out, lambda file: np.save(file, spec))
    except (ValueError, OSError) as error:
        # OSError: also what the file system says while writing, e.g. a full disk or no permission.
        print('error: %s' % error, file=sys.stderr)
        return 2
    try:
        slope = 'radial power slope %.3f' % spectrum.radial_slope(spec)
    except ValueError:
        # A spectrum smaller than the slope's band is still a spectrum; it just has no slope to show.
        slope = 'no radial slope below a side of 24'
    print('wrote %s: float32 %s, the mean spectrum of %d images of %s; %s'
          % (args.out, list(spec.shape), len(names), args.folder, slope))
    return 0


if __name__ == '__main__':
    sys.exit(main())

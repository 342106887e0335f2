"""
The command line of download.py: fetch and verify known VGG16 weights (or a
URL of your own, or a local file), then build vgg16.tfmodel from them.

    python download.py                      # Keras ImageNet weights (59 MB) into the model folder
    python download.py --source cadl        # the blog post's original frozen graph (~550 MB)
    python download.py --check              # verify what is there, download nothing
    python download.py --weights FILE.h5 --preprocess unit   # build from a local file
"""

import argparse
import os
import sys

from filtervis.models import preprocess
from filtervis.util.download import MD5_PATTERN, DEFAULT_SOURCE, SOURCES, DownloadError

def _build_parser():
    source_lines = '\n'.join(f'  {name}: {source.description} '
                             f"(preprocess {source.preprocess or 'inside the graph'})"
                             for name, source in SOURCES.items())
    parser = argparse.ArgumentParser(
        description='Download and verify the VGG16 weights, then let vgg16.py build vgg16.tfmodel.\n'
                    'Downloads resume, retry, fall back to mirrors and are checksummed before use.',
        epilog=f'sources:\n{source_lines}\n\nThe model folder is $VGG16_DIR if set, else vgg16.data_dir.',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--source', choices=sorted(SOURCES),
                        help=f'which known weights to fetch (default: {DEFAULT_SOURCE})')
    parser.add_argument('--dir', help='model folder to use instead of $VGG16_DIR / vgg16.data_dir')
    parser.add_argument('--url', help='bring your own: download Keras-layout VGG16 .h5 weights from URL '
                                      '(needs --md5)')
    parser.add_argument('--md5', help='md5 the --url download must have: 32 hexadecimal characters')
    parser.add_argument('--weights', metavar='FILE', help='bring your own: a local Keras-layout VGG16 .h5 file')
    parser.add_argument('--preprocess', choices=preprocess.VGG16_CHOICES,
                        help='pixel convention of --url/--weights weights (default caffe, as Keras weights): '
                             + preprocess.describe(preprocess.VGG16_CHOICES))
    parser.add_argument('--force', action='store_true',
                        help='download and rebuild even if valid files are present (they are replaced '
                             'only once the new ones verify)')
    parser.add_argument('--check', action='store_true',
                        help='only verify what is in the model folder; print problems, download nothing')
    parser.add_argument('--quiet', action='store_true', help='no progress bar and no messages except errors')
    parser.add_argument('--verbose', action='store_true',
                        help="also show TensorFlow's own start-up and log lines (hidden by default)")
    return parser


def _argument_problem(args):
    """What is wrong with the combination of flags, or None. Needs no vgg16."""
    if args.check:
        extra = [flag for flag, value in (('--source', args.source), ('--url', args.url), ('--md5', args.md5),
                                          ('--weights', args.weights), ('--preprocess', args.preprocess),
                                          ('--force', args.force)) if value]
        if extra:
            return f"--check only verifies and takes --dir and --quiet; drop {', '.join(extra)}"
        return None
    if args.weights and args.url:
        return '--weights (a local file) and --url (a download) exclude each other; give one'
    if args.source and (args.url or args.weights):
        return '--source picks a known download; leave it out when you give --url or --weights'
    if args.url and not args.md5:
        return '--url needs --md5 HASH so the download can be verified (md5sum FILE prints it)'
    if args.md5 and not args.url:
        return '--md5 goes with --url; give the URL it checks'
    if args.md5 and not MD5_PATTERN.fullmatch(args.md5):
        return f'--md5 must be 32 hexadecimal characters, got {args.md5!r}'
    if args.preprocess and not (args.url or args.weights):
        source = SOURCES[args.source or DEFAULT_SOURCE]
        return (f'--preprocess applies to --url or --weights; the {source.name} source uses '
                f"{source.preprocess or 'the preprocessing inside its graph'} by itself")
    if args.weights and not os.path.isfile(args.weights):
        return f'--weights {args.weights}: no such file'
    return None


def main(argv=None):
    """The command line; returns the exit status (argument errors exit 2 via argparse)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    problem = _argument_problem(args)
    if problem:
        parser.error(problem)
    if args.md5:
        args.md5 = args.md5.lower()

    # Imported only now: building the graph needs TensorFlow, which argument
    # errors above should not have to wait for.
    from filtervis.util import quiet
    quiet.import_tensorflow(verbose=args.verbose)
    from filtervis.models import vgg16

    try:
        if args.check:
            problems = vgg16.check_model(dir=args.dir)
            for line in problems:
                print(line)
            if not problems and not args.quiet:
                print(f'{args.dir or vgg16.model_dir()}: all files present and valid')
            return 1 if problems else 0
        ready_path = vgg16.maybe_download(source=args.source, dir=args.dir, url=args.url, md5=args.md5,
                                          weights=args.weights, preprocess=args.preprocess, force=args.force,
                                          quiet=args.quiet)
    except DownloadError as error:
        print(f'error: {error}', file=sys.stderr)
        if not args.url:
            print('Then run `python download.py` again to verify it and build the graph, or build it from '
                  'weights you have: `python download.py --weights FILE.h5 --preprocess %s`.'
                  % '|'.join(preprocess.VGG16_CHOICES),
                  file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('interrupted; run the same command again to resume the download', file=sys.stderr)
        return 130
    if not args.quiet:
        print(ready_path)
    return 0

"""
Which real pictures drive a filter: the patches of a folder of images that
excite each filter most. The library is filtervis/analysis/examples.py; this
is its command line (`filtervis-examples` once the package is installed).

    python examples.py DIR --layers conv3_2 --filters 0-5 --out examples.png
    python examples.py ../shared/data/mri-slices --weights ../shared/models/vgg16-mri-notop.h5 \\
        --preprocess unit --layers conv3_2,conv5_1 --filters 0-5 --json examples.json --workers 2
"""
import sys

if __name__ == '__main__':
    from filtervis.cli import console
    sys.exit(console.examples())

"""
Fetch the VGG16 weights and build the graph: resumable, checksummed,
atomic, locked downloads (filtervis/util/download.py), then vgg16.tfmodel
(filtervis/models/vgg16.py). Needs no TensorFlow until the graph is built.

    python download.py                      # Keras ImageNet weights (59 MB) into the model folder
    python download.py --source cadl        # the blog post's original frozen graph (~550 MB)
    python download.py --check              # verify what is there, download nothing
    python download.py --weights FILE.h5 --preprocess unit   # build from weights you have
    python download.py --help               # every flag

`import download` is the package's downloader itself (fetch, SOURCES, DownloadError).
"""
import sys

from filtervis.util import download as _download

if __name__ == '__main__':
    from filtervis.cli import console
    sys.exit(console.download())
sys.modules[__name__] = _download

"""
The post's `vgg16` module: `import vgg16` as the blog post does, then
`vgg16.maybe_download()`, `vgg16.VGG16()`, `model.get_layer_tensors(...)`,
`model.create_feed_dict(image=...)`; `vgg16.data_dir` is the model folder.

The graph contract (input `images:0`, float32 [N, H, W, 3], RGB 0..255; the
13 conv layers `conv1_1/conv1_1:0` ... `conv5_3/conv5_3:0` after ReLU) and
the code live in the package, filtervis/models/vgg16.py. This file makes
`import vgg16` that very module, so that `vgg16.data_dir = ...` set here is
the one the package reads.

    python download.py          # fetch the weights and build models/vgg16.tfmodel
"""
import sys

from filtervis.models import vgg16 as _vgg16

sys.modules[__name__] = _vgg16

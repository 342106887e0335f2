"""
PyTorch models (and any NCHW CNN exported to ONNX) as Networks: a `.onnx`
file is translated once, node by node, into a tf.compat.v1 GraphDef whose
input is `images:0` (float32 [N, H, W, C], pixels 0..255, the model's
scaling inside) and whose units are its feature maps, held NHWC, named by
the PyTorch module path the exporter recorded. onnx is needed only to build
that graph: a model loaded before comes from the cache without it.

    python visualize.py --model resnet18.onnx --preprocess torch --list-layers
    python visualize.py --model resnet18.onnx --preprocess torch --layer layer3.1.conv2 --filters 0-5

    from filtervis.models import onnx_model
    net = onnx_model.load('resnet18.onnx', preprocess='torch')    # a network.Network
    net.short_names[:2]                                           # ['conv1', 'layer1.0.conv1']
    print('\\n'.join(onnx_model.unit_lines(net)))                 # each line ends in onnx=TENSOR

One question per module, bottom first:
    layout.py      where an ONNX tensor's axes sit in its TensorFlow tensor (NCHW held as NHWC)
    ops_shape.py   constants, shape arithmetic, Reshape, Transpose, Concat, Split, Slice, ...
    ops_math.py    elementwise ops, activations, normalizations, reductions, Gemm, MatMul
    ops_spatial.py Conv, ConvTranspose, pools, Pad, Resize
    formats.py     which files are ONNX models, their md5, their image input, refused domains
    translate.py   the ONNX graph rebuilt as a TensorFlow graph, one node at a time
    units.py       which tensors are units, their names, the --list-layers lines
    cache.py       load(): where the translated graph lives and when it is reused

Safety: an ONNX file is data. Only the ops of translate.OPS are built from
it; a node of any other op, or of a custom domain, is refused by name.
"""

from filtervis.models.onnx_model.cache import CACHE_FOLDER, load
from filtervis.models.onnx_model.formats import is_model_path
from filtervis.models.onnx_model.translate import OPS
from filtervis.models.onnx_model.units import unit_lines

__all__ = ['CACHE_FOLDER', 'OPS', 'is_model_path', 'load', 'unit_lines']

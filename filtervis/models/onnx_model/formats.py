"""
Which files are ONNX models and whether this route can read them: the file
parsed as an ONNX ModelProto (protobuf data: nothing in it runs), its md5 and
that of the weight files it names, its one image input, and the refusal of
ops from other domains than ONNX's own, all before a graph is built.

    from filtervis.models.onnx_model import formats
    formats.is_model_path('resnet18.onnx')        # True: the extension decides
    model, external = formats.read('resnet18.onnx')   # onnx.ModelProto, its weight files; ValueError saying why not
    formats.image_input(model, 'resnet18.onnx')   # ImageInput(name='input', batch=1, channels=3, size=224)

The onnx package is imported only here and in translate.py, and only when a
model is built: a model taken from the cache needs neither.
"""

import os
from dataclasses import dataclass

from filtervis.core import network
from filtervis.util import files

EXPORT_HINT = ("export it with a fixed input size, e.g. torch.onnx.export(model, torch.zeros(1, 3, 224, 224), "
               "'model.onnx', opset_version=17) without dynamic_axes")
# Before opset 7 several ops (BatchNormalization, Upsample, ...) had other signatures.
MIN_OPSET = 7


@dataclass(frozen=True)
class ImageInput:
    """The model's image input: its ONNX name, the batch size shape arithmetic folds with (the model's
    own, or 1 for a dynamic batch), channels (1 or 3) and the side of its square input."""
    name: str
    batch: int
    channels: int
    size: int


def is_model_path(path):
    """True for a path that names an ONNX model (a .onnx file, which read() then checks)."""
    return os.path.splitext(os.fspath(path))[1].lower() == '.onnx'


def read(path):
    """(onnx.ModelProto with its external weights loaded, [names of the files they came from]).

    FileNotFoundError / ValueError saying why not.
    """
    import onnx
    from google.protobuf.message import DecodeError
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise FileNotFoundError('no ONNX model at %s; check the path' % path)
    try:
        model = onnx.load_model(path, load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise ValueError('%s is not an ONNX model (%s: %s); %s' % (name, type(error).__name__, error,
                                                                   EXPORT_HINT)) from None
    if model.ir_version <= 0 or not model.graph.node:
        raise ValueError('%s is not an ONNX model (no graph in it); %s' % (name, EXPORT_HINT))
    external = external_files(model)
    missing = [f for f in external if not os.path.isfile(os.path.join(os.path.dirname(path), f))]
    if missing:
        raise ValueError('%s keeps its weights in %s, which is not beside it; copy it there'
                         % (name, ', '.join(missing)))
    if external:
        from onnx.external_data_helper import load_external_data_for_model
        load_external_data_for_model(model, os.path.dirname(path))
    _check_ops(model, name)
    return model, external


def external_files(model):
    """The file names (relative to the model's folder) of weights stored outside the .onnx file."""
    from onnx import TensorProto
    found = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            found.update(entry.value for entry in tensor.external_data if entry.key == 'location')
    return sorted(found)


def model_md5(path, external=(), file_md5=None):
    """Hex md5 of the .onnx file (file_md5 when already known), or of it and the external weight files named
    (relative to its folder)."""
    digest = file_md5 or files.md5sum(path)
    if not external:
        return digest
    import hashlib
    combined = hashlib.md5(digest.encode())
    for name in external:
        combined.update(b'\0' + name.encode() + b'\0' + files.md5sum(os.path.join(os.path.dirname(path), name)).encode())
    return combined.hexdigest()


def _check_ops(model, name):
    """ValueError for an opset this route does not read or a node of a custom domain (code outside ONNX)."""
    opset = next((entry.version for entry in model.opset_import if entry.domain in ('', 'ai.onnx')), None)
    if opset is None or opset < MIN_OPSET:
        raise ValueError('%s uses ONNX opset %s; this route reads opset %d and later: export with '
                         'opset_version=17' % (name, opset, MIN_OPSET))
    for node in model.graph.node:
        if node.domain not in ('', 'ai.onnx'):
            raise ValueError("%s: node %r is a %s of the custom domain %r, which is refused (it names code "
                             "outside ONNX); export with standard ops only (no custom_opsets)"
                             % (name, node.name or node.output[0], node.op_type, node.domain))


def image_input(model, name):
    """The ImageInput of the model's one graph input: float32 [N, C, H, W], C = 1 or 3, H = W fixed.

    ValueError naming the input and the next step otherwise; a dynamic
    batch is fine (shape arithmetic folds with a batch of 1).
    """
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ValueError('%s: it has %d inputs (%s); only models with one image input are supported'
                         % (name, len(inputs), ', '.join(i.name for i in inputs)))
    graph_input = inputs[0]
    tensor_type = graph_input.type.tensor_type
    if tensor_type.elem_type != 1:   # onnx.TensorProto.FLOAT
        raise ValueError('%s: input %r is not float32 (ONNX type %d); export the model with a float32 input'
                         % (name, graph_input.name, tensor_type.elem_type))
    dims = [d.dim_value if d.HasField('dim_value') else (d.dim_param or '?') for d in tensor_type.shape.dim]
    shape = '[%s]' % ', '.join(map(str, dims))
    if len(dims) != 4:
        raise ValueError('%s: input %r has shape %s, rank %d; expected an image batch [N, C, H, W]'
                         % (name, graph_input.name, shape, len(dims)))
    batch, channels, height, width = dims
    if channels not in network.INPUT_CHANNELS:
        hint = (' (it looks channels-last, NHWC; this route reads NCHW models, as PyTorch exports them)'
                if dims[3] in network.INPUT_CHANNELS else '')
        raise ValueError('%s: input %r of shape %s has %s channels; only greyscale (1) and RGB (3) images are '
                         'supported%s' % (name, graph_input.name, shape, channels, hint))
    if not isinstance(height, int) or not isinstance(width, int):
        raise ValueError('%s: input %r of shape %s has a dynamic height or width; this route builds the graph '
                         'at a fixed size: %s' % (name, graph_input.name, shape, EXPORT_HINT))
    if height != width:
        raise ValueError('%s: input %r is %dx%d; only square inputs are supported: export it at a square size'
                         % (name, graph_input.name, height, width))
    return ImageInput(graph_input.name, batch if isinstance(batch, int) and batch > 0 else 1, channels, height)

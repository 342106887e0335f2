"""
Small ONNX networks for the tests of filtervis.models.onnx_model, built with
onnx.helper (no PyTorch), and onnxruntime's values of their tensors: the
reference every translated tensor is checked against.

    import onnx_nets
    net = onnx_nets.Net(opset=17)                     # input 'input' [N, 3, 20, 20]
    y = net.add('Conv', [net.input, net.weight(8, 3, 3, 3)], name='/conv1/Conv', pads=[1, 1, 1, 1])
    model = net.model([y])
    worst = onnx_nets.fidelity(model, images, 'torch')   # {ONNX tensor: max |TF - onnxruntime| / max |onnxruntime|}

    python tests/onnx_nets.py ../shared/models/ddddocr-yolox-detector.onnx --preprocess none --bgr

The command measures a model for docs/pytorch.md: the worst relative
difference over its units against onnxruntime (random pictures and the
photos in ../shared/data/photos), and the time and peak memory of a first
(cold cache) and a cached load, each in a fresh process.
"""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED_MODEL = os.path.join(ROOT, '..', 'shared', 'models', 'ddddocr-yolox-detector.onnx')
PHOTOS = os.path.join(ROOT, '..', 'shared', 'data', 'photos')
# The largest value of ONNX's int64 bounds: "to the end" in Slice.
INT_MAX = 2 ** 63 - 1


class Net:
    """An ONNX graph under construction: add nodes, weights and constants, then model()."""

    def __init__(self, opset=17, channels=3, size=20, batch='N', seed=0):
        self.opset = opset
        self.input = 'input'
        self.input_info = helper.make_tensor_value_info('input', TensorProto.FLOAT, [batch, channels, size, size])
        self.nodes, self.initializers, self.count = [], [], 0
        self.rng = np.random.default_rng(seed)

    def const(self, value, dtype=None):
        """The name of an initializer holding value (numpy; int lists become int64)."""
        value = np.asarray(value, dtype=dtype or (np.int64 if np.asarray(value).dtype.kind == 'i' else np.float32))
        name = 'c%d' % len(self.initializers)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def weight(self, *shape, scale=None):
        """Random float32 weights of shape, scaled by 1/sqrt(fan in) so that values stay near 1."""
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        values = self.rng.standard_normal(shape) * (scale if scale is not None else 1 / np.sqrt(fan_in))
        return self.const(values.astype(np.float32))

    def add(self, op, inputs, name=None, outputs=1, domain='', **attrs):
        """Add a node; returns its output name (or a list of them when outputs > 1).

        name: the node's name ('/layer1/conv/Conv' as new exporters write it,
        default OP_N as PyTorch 1.9 did); its outputs are NAME_output_K.
        """
        self.count += 1
        name = name or '%s_%d' % (op, self.count)
        names = ['%s_output_%d' % (name, k) for k in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), names, name=name, domain=domain, **attrs))
        return names if outputs > 1 else names[0]

    def model(self, outputs):
        graph = helper.make_graph(self.nodes, 'net', [self.input_info],
                                  [onnx.ValueInfoProto(name=name) for name in outputs], self.initializers)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid('', self.opset)],
                                 producer_name='onnx_nets')


def conv(net, x, in_channels, out_channels, kernel=3, name=None, **attrs):
    bias = net.weight(out_channels, scale=0.1)
    return net.add('Conv', [x, net.weight(out_channels, in_channels // attrs.get('group', 1), kernel, kernel), bias],
                   name=name, **attrs)


def batch_norm(net, x, channels, name=None):
    return net.add('BatchNormalization', [x, net.const(net.rng.uniform(0.5, 1.5, channels)),
                                          net.const(net.rng.uniform(-0.2, 0.2, channels)),
                                          net.const(net.rng.uniform(-0.2, 0.2, channels)),
                                          net.const(net.rng.uniform(0.5, 2.0, channels))], name=name, epsilon=1e-3)


def tiny_cnn(opset=17):
    """The small CNN the command-line tests use: 20x20 RGB, module-path node names as PyTorch 2 writes them.

    features.0 conv -> BN -> ReLU; features.3 a strided conv with
    asymmetric pads -> LeakyReLU; a ceil_mode max pool; features.6 a
    depthwise conv -> Clip(0, 6); features.8 a grouped conv -> HardSwish;
    features.10 a conv -> SiLU; global average pool, Flatten, Gemm, Softmax.
    """
    net = Net(opset=opset)
    x = conv(net, net.input, 3, 8, name='/features/features.0/Conv', pads=[1, 1, 1, 1])
    x = batch_norm(net, x, 8, name='/features/features.1/BatchNormalization')
    x = net.add('Relu', [x], name='/features/features.2/Relu')
    x = conv(net, x, 8, 8, name='/features/features.3/Conv', strides=[2, 2], pads=[0, 0, 1, 1])
    x = net.add('LeakyRelu', [x], name='/features/features.4/LeakyRelu', alpha=0.1)
    x = net.add('MaxPool', [x], name='/features/features.5/MaxPool', kernel_shape=[3, 3], strides=[2, 2],
                pads=[1, 1, 1, 1], ceil_mode=1)
    x = conv(net, x, 8, 8, name='/features/features.6/Conv', group=8, pads=[1, 1, 1, 1])
    x = net.add('Clip', [x, net.const(np.float32(0)), net.const(np.float32(6))], name='/features/features.7/Clip')
    x = conv(net, x, 8, 12, kernel=1, name='/features/features.8/Conv', group=2)
    x = net.add('HardSwish', [x], name='/features/features.9/HardSwish')
    x = conv(net, x, 12, 12, name='/features/features.10/Conv', pads=[1, 1, 1, 1])
    gate = net.add('Sigmoid', [x], name='/features/features.11/Sigmoid')
    x = net.add('Mul', [x, gate], name='/features/features.11/Mul')
    x = net.add('GlobalAveragePool', [x], name='/avgpool/GlobalAveragePool')
    x = net.add('Flatten', [x], name='/Flatten')
    x = net.add('Gemm', [x, net.weight(5, 12), net.weight(5, scale=0.1)], name='/classifier/Gemm', transB=1)
    return net.model([net.add('Softmax', [x], name='/Softmax')])


def resnet18(size=224):
    """torchvision's ResNet-18 as torch.onnx.export (PyTorch 2, opset 17) writes it: batch norms folded into
    the convs, module-path names; random weights (11.7 M parameters). For measurements, not the fast tests."""
    net = Net(opset=17, size=size, batch=1)

    def conv_unit(x, c_in, c_out, scope, kernel=3, stride=1):
        return conv(net, x, c_in, c_out, kernel, name='/%s/Conv' % scope, strides=[stride, stride],
                    pads=[kernel // 2] * 4)

    x = net.add('Relu', [conv_unit(net.input, 3, 64, 'conv1', kernel=7, stride=2)], name='/relu/Relu')
    x = net.add('MaxPool', [x], name='/maxpool/MaxPool', kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    channels = 64
    for stage, width in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            scope = '/layer%d/layer%d.%d' % (stage, stage, block)
            stride = 2 if stage > 1 and block == 0 else 1
            y = net.add('Relu', [conv_unit(x, channels, width, scope[1:] + '/conv1', stride=stride)],
                        name='%s/relu/Relu' % scope)
            y = conv_unit(y, width, width, scope[1:] + '/conv2')
            if stride != 1 or channels != width:
                x = conv(net, x, channels, width, 1, name='%s/downsample/downsample.0/Conv' % scope,
                         strides=[stride, stride])
            x = net.add('Relu', [net.add('Add', [y, x], name='%s/Add' % scope)], name='%s/relu_1/Relu' % scope)
            channels = width
    x = net.add('Flatten', [net.add('GlobalAveragePool', [x], name='/avgpool/GlobalAveragePool')], name='/Flatten')
    return net.model([net.add('Gemm', [x, net.weight(1000, 512), net.weight(1000)], name='/fc/Gemm', transB=1)])


def mobilenet_v3_like(size=224):
    """A MobileNetV3-style net as PyTorch 2 exports it: HardSwish, depthwise convs, squeeze-and-excite with
    HardSigmoid (alpha 1/6, as PyTorch writes it), residual Adds, a Flatten and Gemm head; random weights."""
    net = Net(opset=17, size=size, batch=1)
    x = conv(net, net.input, 3, 16, name='/features/features.0/features.0.0/Conv', strides=[2, 2], pads=[1] * 4)
    x = net.add('HardSwish', [x], name='/features/features.0/features.0.2/HardSwish')
    channels = 16
    for index, (expand, out, stride, excite) in enumerate(((64, 24, 2, False), (72, 24, 1, False),
                                                           (96, 40, 2, True), (240, 40, 1, True),
                                                           (240, 80, 2, True), (480, 80, 1, True)), start=1):
        scope = '/features/features.%d/block' % index
        y = net.add('HardSwish', [conv(net, x, channels, expand, 1, name='%s/block.0/block.0.0/Conv' % scope)],
                    name='%s/block.0/block.0.2/HardSwish' % scope)
        y = net.add('HardSwish', [conv(net, y, expand, expand, 3, name='%s/block.1/block.1.0/Conv' % scope,
                                       group=expand, strides=[stride, stride], pads=[1] * 4)],
                    name='%s/block.1/block.1.2/HardSwish' % scope)
        if excite:
            gate = net.add('GlobalAveragePool', [y], name='%s/block.2/avgpool/GlobalAveragePool' % scope)
            gate = net.add('Relu', [conv(net, gate, expand, expand // 4, 1, name='%s/block.2/fc1/Conv' % scope)],
                           name='%s/block.2/relu/Relu' % scope)
            gate = net.add('HardSigmoid', [conv(net, gate, expand // 4, expand, 1, name='%s/block.2/fc2/Conv' % scope)],
                           name='%s/block.2/scale_activation/HardSigmoid' % scope, alpha=1 / 6)
            y = net.add('Mul', [gate, y], name='%s/block.2/Mul' % scope)
        y = conv(net, y, expand, out, 1, name='%s/block.3/block.3.0/Conv' % scope)
        x = net.add('Add', [y, x], name='/features/features.%d/Add' % index) if stride == 1 and out == channels else y
        channels = out
    x = net.add('Flatten', [net.add('GlobalAveragePool', [x], name='/avgpool/GlobalAveragePool')], name='/Flatten')
    return net.model([net.add('Gemm', [x, net.weight(10, channels), net.weight(10)], name='/classifier/Gemm',
                              transB=1)])


# ---------------------------------------------------------------------------
# The reference: onnxruntime, and the translation run by TensorFlow

def preprocessed(images, preprocess, bgr=False):
    """float32 [N, C, H, W]: what the model's input receives for pictures [N, H, W, C], 0..255."""
    from filtervis.models import preprocess as scaling
    x = np.asarray(images, np.float32)
    if preprocess == 'unit':
        x = x / 255
    elif preprocess == 'tf':
        x = x / 127.5 - 1
    elif preprocess == 'torch':
        x = (x / 255 - np.float32(scaling.TORCH_MEAN)) / np.float32(scaling.TORCH_STD)
    elif preprocess == 'caffe':
        x = x[..., ::-1] - np.float32(scaling.CAFFE_MEAN_BGR)
    if bgr:
        x = x[..., ::-1]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32)


def reference(model, images, preprocess, names, bgr=False):
    """{ONNX tensor name: onnxruntime's value} for pictures [N, H, W, C], 0..255; one run per picture when
    the model's batch is fixed."""
    import onnxruntime
    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    present = {o.name for o in extended.graph.output}
    extended.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names if n not in present])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(extended.SerializeToString(), options,
                                           providers=['CPUExecutionProvider'])
    x = preprocessed(images, preprocess, bgr)
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    chunks = [x[i:i + 1] for i in range(len(x))] if batch.HasField('dim_value') else [x]
    runs = [session.run(list(names), {model.graph.input[0].name: chunk}) for chunk in chunks]
    return {name: np.concatenate([run[k] for run in runs]) for k, name in enumerate(names)}


def translated_values(model, images, preprocess, names=None, bgr=False):
    """{ONNX tensor name: the translated graph's value in ONNX's axis order} for every tensor that depends on
    the image (or those in names)."""
    from filtervis.models.onnx_model import formats, translate
    from filtervis.util import quiet
    tf = quiet.import_tensorflow()
    spec = formats.image_input(model, 'test.onnx')
    result = translate.translate(model, spec, preprocess, bgr)
    names = [n for n in (names or result.tensors) if n in result.tensors and n != spec.name]
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(result.graph_def, name='')
    # TensorFlow 2.21's remapper fuses Conv2D + BiasAdd + LeakyRelu (or SiLU) and then cannot fetch the
    # BiasAdd in the same run; here every tensor is fetched at once.
    config = tf.ConfigProto()
    config.graph_options.rewrite_options.remapping = 2   # RewriterConfig.OFF
    with tf.Session(graph=graph, config=config) as session:
        values = session.run([result.tensors[n][0] for n in names], {'images:0': np.asarray(images, np.float32)})
    return {n: np.transpose(v, [result.tensors[n][1].index(axis) for axis in range(v.ndim)])
            for n, v in zip(names, values)}


def relative_difference(actual, expected):
    """max |actual - expected| / max |expected| (exact comparison for integer and boolean tensors)."""
    if actual.shape != expected.shape:
        return np.inf
    if expected.dtype.kind in 'biu':
        return 0.0 if np.array_equal(actual, expected) else np.inf
    scale = max(float(np.abs(expected).max()), 1e-6) if expected.size else 1.0
    return float(np.abs(actual.astype(np.float64) - expected).max()) / scale if expected.size else 0.0


def fidelity(model, images, preprocess, names=None, bgr=False):
    """{ONNX tensor: relative_difference of the translation from onnxruntime} over the tensors translated."""
    ours = translated_values(model, images, preprocess, names, bgr)
    theirs = reference(model, images, preprocess, list(ours), bgr)
    return {name: relative_difference(ours[name], theirs[name]) for name in ours}


def photos(size, count=None):
    """float32 [N, size, size, 3], the shared photos resized (centre square), 0..255; [] when absent."""
    from PIL import Image
    if not os.path.isdir(PHOTOS):
        return np.zeros((0, size, size, 3), np.float32)
    pictures = []
    for name in sorted(os.listdir(PHOTOS))[:count]:
        image = Image.open(os.path.join(PHOTOS, name)).convert('RGB')
        side = min(image.size)
        left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
        pictures.append(np.asarray(image, np.float32))
    return np.stack(pictures)


def measure(path, preprocess, bgr=False):
    """Print what docs/pytorch.md reports of a model: fidelity of its units, import time and peak memory."""
    import json
    import shutil
    import subprocess
    import tempfile
    folder = tempfile.mkdtemp()
    copy = os.path.join(folder, os.path.basename(path))
    shutil.copyfile(path, copy)
    # A fresh process per load: the import of TensorFlow and filtervis is timed apart from the load, and the
    # peak resident memory is read after each.
    child = ('import json, resource, sys, time; sys.path.insert(0, %r); start = time.time(); '
             'from filtervis.models import onnx_model; imported = time.time(); '
             'peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; after_import = peak(); '
             'net = onnx_model.load(%r, %r, bgr=%r, quiet=True, all_layers=True); '
             'print(json.dumps({"import_s": imported - start, "load_s": time.time() - imported, '
             '"units": len(net.units), "peak_mb_after_import": after_import, "peak_mb": peak()}))'
             % (ROOT, copy, preprocess, bgr))
    for run in ('first load (cold cache)', 'cached load', 'cached load'):
        if run.startswith('first'):
            shutil.rmtree(os.path.join(folder, 'onnx-cache'), ignore_errors=True)
        output = subprocess.run([sys.executable, '-c', child], capture_output=True, text=True, check=True).stdout
        print('%s: %s' % (run, json.loads(output.strip().splitlines()[-1])))
    from filtervis.models import onnx_model
    net = onnx_model.load(copy, preprocess, bgr=bgr, quiet=True, all_layers=True)
    stamp = json.load(open(net.path + '.json'))
    names = [stamp['onnx'][unit.name] for unit in net.units]
    model = onnx.load(copy)
    size = net.input_size
    rng = np.random.default_rng(0)
    for label, images in (('random', rng.uniform(0, 255, (2, size, size, 3)).astype(np.float32)),
                          ('photos', photos(size))):
        worst = {}
        for start in range(0, len(images), 2):
            for name, value in fidelity(model, images[start:start + 2], preprocess, names, bgr).items():
                worst[name] = max(worst.get(name, 0.0), value)
        name = max(worst, key=worst.get)
        print('%s: %d pictures, %d units, worst relative difference %.2e (%s)'
              % (label, len(images), len(worst), worst[name], name))
    shutil.rmtree(folder)


if __name__ == '__main__':
    import argparse
    parser = argparse.ArgumentParser(description='Measure an ONNX model for docs/pytorch.md')
    parser.add_argument('model')
    parser.add_argument('--preprocess', default='torch')
    parser.add_argument('--bgr', action='store_true')
    arguments = parser.parse_args()
    measure(arguments.model, arguments.preprocess, arguments.bgr)

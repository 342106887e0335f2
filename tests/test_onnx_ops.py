"""The translation of every ONNX op filtervis.models.onnx_model imports, checked tensor by tensor against
onnxruntime on ONNX graphs built here (tests/onnx_op_nets.py): every tensor that depends on the image, in
every net, within 1e-5 of onnxruntime's value relative to its largest magnitude, on a batch of 2 random
pictures (the models with a fixed batch of 1 run per picture in onnxruntime).

Also the traps one by one: HardSigmoid's alpha is the node's, a Flatten before Gemm keeps ONNX's order,
NCHW constants broadcast over NHWC maps, ConvNeXt's permutes and squeeze-and-excite move no data, a Reshape
of a fixed batch of 1 keeps any batch, and the module paths of node names.
"""
import numpy as np
import pytest

import onnx_nets
import onnx_op_nets
from filtervis.models.onnx_model import formats, translate, units

TOLERANCE = 1e-5


def pictures(model, count=2, seed=0):
    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize('name', sorted(onnx_op_nets.NETS))
def test_every_tensor_equals_onnxruntime(name):
    model = onnx_op_nets.NETS[name]()
    worst = onnx_nets.fidelity(model, pictures(model), 'torch')
    produced = {o for node in model.graph.node for o in node.output}
    # Every node output that depends on the image was compared (the rest is folded shape arithmetic).
    assert len(worst) >= len(model.graph.output)
    assert set(worst) <= produced
    bad = {tensor: value for tensor, value in worst.items() if not value <= TOLERANCE}
    assert not bad


def test_the_cli_network_equals_onnxruntime_on_random_pictures_and_photos():
    model = onnx_nets.tiny_cnn()
    for images in (pictures(model), onnx_nets.photos(20)):
        if len(images):
            worst = onnx_nets.fidelity(model, images, 'torch')
            assert len(worst) == len(model.graph.node) and max(worst.values()) <= TOLERANCE


def test_hard_sigmoid_reads_alpha_from_the_node():
    net = onnx_nets.Net(size=8)
    x = onnx_nets.conv(net, net.input, 3, 2, pads=[1, 1, 1, 1])
    pytorch = net.add('HardSigmoid', [x], alpha=1 / 6)
    default = net.add('HardSigmoid', [x])
    model = net.model([pytorch, default])
    values = onnx_nets.translated_values(model, pictures(model), 'torch', [pytorch, default, x])
    expected_x = values[x]
    assert np.allclose(values[pytorch], np.clip(expected_x / 6 + 0.5, 0, 1), atol=1e-6)
    assert np.allclose(values[default], np.clip(expected_x * 0.2 + 0.5, 0, 1), atol=1e-6)
    assert not np.allclose(values[pytorch], values[default])


def test_flatten_before_gemm_keeps_onnx_order():
    """Gemm weights of a PyTorch classifier expect C, H, W order: a Flatten of an NHWC map must not see
    H, W, C; one weight row reads exactly one (c, y, x)."""
    net = onnx_nets.Net(size=4, batch=1)
    x = onnx_nets.conv(net, net.input, 3, 2, pads=[1, 1, 1, 1])
    picker = np.zeros((2 * 4 * 4, 1), np.float32)
    picker[1 * 16 + 2 * 4 + 3] = 1    # channel 1, row 2, column 3
    y = net.add('Gemm', [net.add('Flatten', [x]), net.const(picker)])
    model = net.model([y])
    values = onnx_nets.translated_values(model, pictures(model), 'unit', [x, y])
    assert np.allclose(values[y][:, 0], values[x][:, 1, 2, 3])


def op_types(model):
    result = translate.translate(model, formats.image_input(model, 'test.onnx'), 'torch')
    return result, {node.name: node.op for node in result.graph_def.node}


def test_permutes_and_squeeze_and_excite_move_no_data():
    """ConvNeXt's Transpose -> LayerNorm -> MatMul -> Transpose back, and squeeze-and-excite's pooled [N, C]
    values multiplied back onto the map, become ops on the NHWC map itself: no Transpose in the graph."""
    net = onnx_nets.Net(size=8)
    t = onnx_nets.conv(net, net.input, 3, 4, pads=[1, 1, 1, 1])
    normed = net.add('LayerNormalization', [net.add('Transpose', [t], perm=[0, 2, 3, 1]), net.weight(4),
                                            net.weight(4)], name='/block/norm/LayerNormalization')
    back = net.add('Transpose', [net.add('MatMul', [normed, net.weight(4, 4)], name='/block/pwconv/MatMul')],
                   perm=[0, 3, 1, 2])
    pooled = net.add('ReduceMean', [back], axes=[2, 3], keepdims=0)
    gate = net.add('Unsqueeze', [net.add('Sigmoid', [net.add('MatMul', [pooled, net.weight(4, 4)])]),
                                 net.const([2, 3])])
    model = net.model([net.add('Mul', [back, gate])])
    result, ops = op_types(model)
    assert 'Transpose' not in ops.values()
    assert ops['block/pwconv/MatMul'] == 'Conv2D'       # a Linear over channels is a 1x1 conv
    assert result.tensors[back][1] == (0, 2, 3, 1)         # the map is NHWC again, a unit
    assert max(onnx_nets.fidelity(model, pictures(model), 'torch').values()) <= TOLERANCE


def test_a_fixed_batch_of_one_in_reshapes_keeps_any_batch():
    """torch.onnx.export at batch 1 writes [1, -1] into Reshape targets; 3 pictures give 3 rows."""
    net = onnx_nets.Net(size=8, batch=1)
    x = onnx_nets.conv(net, net.input, 3, 2, pads=[1, 1, 1, 1])
    y = net.add('Reshape', [x, net.const([1, -1])])
    model = net.model([y])
    values = onnx_nets.translated_values(model, pictures(model, count=3), 'unit', [x, y])
    assert values[y].shape == (3, 2 * 8 * 8)
    assert np.array_equal(values[y], values[x].reshape(3, -1))


def test_a_reshape_that_folds_the_batch_away_is_refused_naming_the_node():
    net = onnx_nets.Net(size=8, batch=1)
    x = onnx_nets.conv(net, net.input, 3, 2, pads=[1, 1, 1, 1])
    model = net.model([net.add('Reshape', [x, net.const([2, -1])], name='/gram/Reshape')])
    with pytest.raises(ValueError, match=r"node '/gram/Reshape' \(Reshape\): it folds the batch axis"):
        translate.translate(model, formats.image_input(model, 'test.onnx'), 'unit')


@pytest.mark.parametrize('label, path', [
    ('/layer3/layer3.1/conv2/Conv', 'layer3.1.conv2'),
    ('/features/features.0/Conv', 'features.0'),
    ('/layer1/layer1.0/downsample/downsample.0/Conv', 'layer1.0.downsample.0'),
    ('/backbone/stem/conv/Conv', 'backbone.stem.conv'),
    ('/Conv', 'Conv'),
    ('Conv_41', 'Conv_41')])
def test_units_are_named_by_module_path(label, path):
    assert units.module_path(label) == path


def test_op_names_follow_the_onnx_nodes():
    model = onnx_nets.tiny_cnn()
    result, ops = op_types(model)
    assert ops['features/features.0/Conv'] == 'BiasAdd'           # conv + bias: units.py's fast path
    assert ops['features/features.0/Conv/Conv2D'] == 'Conv2D'
    assert ops['features/features.6/Conv/depthwise'] == 'DepthwiseConv2dNative'
    # Grouped and depthwise: a plain Add for the bias, not the fast path's pattern (it would break the groups).
    assert ops['features/features.6/Conv'] == ops['features/features.8/Conv'] == 'AddV2'
    assert result.tensors['/features/features.11/Mul_output_0'] == ('features/features.11/Mul:0', (0, 2, 3, 1))

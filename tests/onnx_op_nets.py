"""
ONNX graphs that hold every op filtervis.models.onnx_model translates, with
the traps of each: asymmetric pads, auto_pad, ceil_mode, count_include_pad,
groups and dilations, HardSigmoid's alpha, the Resize modes, broadcasting of
NCHW constants, Flatten before Gemm, ConvNeXt's permute and LayerNorm, shape
arithmetic, and the signatures of opsets 9, 10, 11, 13 and 18. Built with
onnx.helper; tests/test_onnx_ops.py checks every tensor against onnxruntime.

    import onnx_op_nets
    model = onnx_op_nets.NETS['spatial']()        # an onnx.ModelProto, input [1, 3, 17, 17]
"""

import numpy as np
from onnx import numpy_helper

from onnx_nets import INT_MAX, Net, batch_norm, conv


def spatial():
    """Convolutions, pools, pads, resizes: odd size 17, fixed batch 1 (Resize sizes name the batch)."""
    net = Net(opset=13, size=17, batch=1)
    x = net.input
    outs = [conv(net, x, 3, 4, dilations=[2, 2], pads=[2, 2, 2, 2]),
            conv(net, x, 3, 4, strides=[2, 2], auto_pad='SAME_UPPER'),
            conv(net, x, 3, 4, kernel=4, strides=[2, 2], auto_pad='SAME_LOWER'),
            conv(net, x, 3, 6, group=3, dilations=[2, 2], pads=[1, 2, 2, 1]),      # dilated depthwise, multiplier 2
            conv(net, x, 3, 6, group=3, strides=[2, 2], pads=[0, 1, 1, 0]),        # depthwise, asymmetric pads
            conv(net, x, 3, 4, kernel=1),                                          # no padding: VALID
            net.add('AveragePool', [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
            net.add('AveragePool', [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1], ceil_mode=1,
                    count_include_pad=1),
            net.add('AveragePool', [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),   # TF's SAME
            net.add('AveragePool', [x], kernel_shape=[2, 2], strides=[2, 2]),
            net.add('MaxPool', [x], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1]),
            net.add('MaxPool', [x], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
            net.add('MaxPool', [x], kernel_shape=[3, 3], auto_pad='SAME_UPPER'),
            net.add('GlobalMaxPool', [x]),
            net.add('ConvTranspose', [x, net.weight(3, 4, 3, 3), net.weight(4, scale=0.1)], strides=[2, 2],
                    pads=[1, 1, 1, 1], output_padding=[1, 1]),
            net.add('ConvTranspose', [x, net.weight(3, 2, 2, 2)], group=3, strides=[2, 2], dilations=[2, 2],
                    pads=[0, 1, 1, 0]),
            net.add('Pad', [x, net.const([0, 0, 1, 2, 0, 0, 2, 1])], mode='reflect'),
            net.add('Pad', [x, net.const([0, 0, 2, 0, 0, 0, 1, 3])], mode='edge'),
            net.add('Pad', [x, net.const([0, 0, 3, -2, 0, 0, -1, 2]), net.const(np.float32(1.5))]),
            net.add('Resize', [x, '', net.const([1, 1, 2, 2], np.float32)], mode='nearest',
                    coordinate_transformation_mode='asymmetric', nearest_mode='floor'),
            net.add('Resize', [x, '', net.const([1, 1, 0.6, 0.6], np.float32)], mode='nearest'),
            net.add('Resize', [x, '', net.const([1, 1, 1.5, 1.5], np.float32)], mode='linear'),
            net.add('Resize', [x, '', net.const([1, 1, 0.5, 0.5], np.float32)], mode='linear',
                    coordinate_transformation_mode='pytorch_half_pixel'),
            net.add('Resize', [x, '', '', net.const([1, 3, 25, 30])], mode='linear',
                    coordinate_transformation_mode='align_corners'),
            net.add('Resize', [x, '', net.const([1, 1, 1.7, 1.7], np.float32)], mode='cubic'),
            net.add('Resize', [x, '', net.const([1, 1, 2, 2], np.float32)], mode='cubic', exclude_outside=1,
                    cubic_coeff_a=-0.5, coordinate_transformation_mode='asymmetric'),
            net.add('Resize', [x, '', net.const([1, 1, 3, 3], np.float32)], mode='nearest',
                    nearest_mode='round_prefer_ceil')]
    return net.model(outs)


def arithmetic():
    """Activations, broadcasting, normalizations, reductions, squeeze-and-excite, Softmax over channels."""
    net = Net(opset=17, size=12)
    t = conv(net, net.input, 3, 6, pads=[1, 1, 1, 1], name='/stem/Conv')
    c = lambda *shape: net.weight(*shape, scale=0.5)
    gelu = net.add('Mul', [net.add('Mul', [t, net.add('Add', [net.add('Erf', [net.add('Div', [
        t, net.const(np.float32(np.sqrt(2)))])]), net.const(np.float32(1))])]), net.const(np.float32(0.5))])
    outs = [net.add('Mul', [t, net.add('Sigmoid', [t])]), gelu,
            net.add('HardSigmoid', [t], alpha=1 / 6), net.add('HardSigmoid', [t]),
            net.add('PRelu', [t, c(6, 1, 1)]), net.add('Elu', [t], alpha=0.5), net.add('Elu', [t]),
            net.add('Selu', [t]), net.add('Tanh', [t]), net.add('Softplus', [t]), net.add('Softsign', [t]),
            net.add('Clip', [t, net.const(np.float32(-1)), net.const(np.float32(1))]),
            net.add('Clip', [t, '', net.const(np.float32(0.5))]),
            net.add('Sqrt', [net.add('Add', [net.add('Abs', [t]), net.const(np.float32(1))])]),
            net.add('Pow', [t, net.const(np.float32(2))]), net.add('Pow', [net.add('Exp', [net.add('Neg', [t])]),
                                                                         net.const(np.float32(0.5))]),
            net.add('Reciprocal', [net.add('Add', [net.add('Abs', [t]), net.const(np.float32(1))])]),
            net.add('Log', [net.add('Add', [net.add('Abs', [t]), net.const(np.float32(1))])]),
            net.add('Floor', [t]), net.add('Ceil', [t]), net.add('Sign', [t]),
            net.add('Mul', [t, c(6, 1, 1)]), net.add('Add', [t, c(1, 6, 1, 1)]), net.add('Add', [c(12), t]),
            net.add('Sub', [net.const(np.float32(1)), t]), net.add('Div', [t, net.const(np.full((6, 1, 1), 2.5, np.float32))]),
            net.add('Max', [t, c(6, 1, 1), net.add('Neg', [t])]), net.add('Min', [t, c(1, 12)]),
            net.add('Sum', [t, t, c(6, 1, 1)]), net.add('Mean', [t, c(6, 1, 1)]),
            net.add('Where', [net.add('Greater', [t, net.const(np.float32(0))]), t,
                              net.add('Mul', [t, net.const(np.float32(0.1))])]),
            net.add('Where', [net.add('Less', [t, net.const(np.float32(0))]), net.const(np.float32(0.5)), t]),
            net.add('Cast', [net.add('Cast', [t], to=7)], to=1),
            batch_norm(net, t, 6),
            net.add('InstanceNormalization', [t, c(6), c(6)]),
            net.add('LayerNormalization', [t, c(6, 12, 12), c(6, 12, 12)], axis=1),
            net.add('Mul', [t, net.add('ReduceMean', [t], axes=[1])]),
            net.add('ReduceMax', [t], axes=[2, 3], keepdims=0),
            net.add('ReduceSum', [t, net.const([2, 3])]), net.add('ReduceL2', [t], axes=[1], keepdims=0),
            net.add('ReduceSumSquare', [t], axes=[3]), net.add('ReduceMin', [t]), net.add('ReduceL1', [t], axes=[2]),
            net.add('ReduceProd', [net.add('Sigmoid', [t])], axes=[1]),
            net.add('Softmax', [t], axis=1), net.add('LogSoftmax', [t])]
    # Squeeze-and-excite, twice: pooled with keepdims (1x1 convs), and pooled flat (MatMul, Unsqueeze).
    gate = net.add('HardSigmoid', [conv(net, net.add('Relu', [conv(net, net.add('GlobalAveragePool', [t]), 6, 3,
                                                                    kernel=1)]), 3, 6, kernel=1)], alpha=1 / 6)
    outs.append(net.add('Mul', [t, gate]))
    flat = net.add('ReduceMean', [t], axes=[2, 3], keepdims=0)
    gate = net.add('Sigmoid', [net.add('MatMul', [net.add('Relu', [flat]), c(6, 6)])])
    outs.append(net.add('Mul', [t, net.add('Unsqueeze', [gate, net.const([2, 3])])]))
    return net.model(outs)


def shapes():
    """Reshape, Flatten, Transpose, Concat, Split, Slice, Gather, Expand, shape arithmetic, Gemm, MatMul; a
    fixed batch of 1, as torch.onnx.export writes it, which the shapes hold (they then stand for any batch)."""
    net = Net(opset=13, size=12, batch=1)
    t = conv(net, net.input, 3, 6, pads=[1, 1, 1, 1])
    # Flatten of a map feeds Gemm weights laid out for NCHW order.
    logits = net.add('Gemm', [net.add('Flatten', [t]), net.weight(6 * 12 * 12, 4), net.weight(4)], alpha=0.5,
                     beta=2.0)
    # x.view(x.size(0), -1) as PyTorch 1.x exports it: Shape -> Gather -> Unsqueeze -> Concat -> Reshape.
    batch = net.add('Unsqueeze', [net.add('Gather', [net.add('Shape', [t]), net.const(np.int64(0))], axis=0),
                                  net.const([0])])
    flat = net.add('Reshape', [t, net.add('Concat', [batch, net.const([-1])], axis=0)])
    # Channel shuffle: [N, 2, 3, H, W] -> swap the groups -> [N, 6, H, W].
    grouped = net.add('Reshape', [t, net.const([1, 2, 3, 12, 12])])
    shuffled = net.add('Reshape', [net.add('Transpose', [grouped], perm=[0, 2, 1, 3, 4]), net.const([0, 6, 12, 12])])
    # ConvNeXt's block: permute to NHWC, LayerNorm, Linear (MatMul), GELU, Linear, permute back, residual.
    nhwc = net.add('Transpose', [t], perm=[0, 2, 3, 1])
    normed = net.add('LayerNormalization', [nhwc, net.weight(6, scale=1), net.weight(6, scale=0.1)], axis=-1)
    hidden = net.add('Add', [net.add('MatMul', [normed, net.weight(6, 12)]), net.weight(12)])
    hidden = net.add('Relu', [hidden])
    block = net.add('Add', [t, net.add('Transpose', [net.add('MatMul', [hidden, net.weight(12, 6)])],
                                      perm=[0, 3, 1, 2])])
    parts = net.add('Split', [t, net.const([2, 4])], axis=1, outputs=2)
    focus = [net.add('Slice', [t, net.const([r, c]), net.const([INT_MAX, INT_MAX]), net.const([2, 3]),
                               net.const([2, 2])]) for r, c in ((0, 0), (1, 0), (0, 1), (1, 1))]
    pooled = net.add('GlobalAveragePool', [t])
    outs = [logits, net.add('Softmax', [logits]), flat, net.add('MatMul', [flat, net.weight(6 * 144, 3)]),
            shuffled, block, net.add('Concat', [parts[1], parts[0]], axis=1),
            conv(net, net.add('Concat', focus, axis=1), 24, 4),
            net.add('Slice', [t, net.const([-1]), net.const([-INT_MAX]), net.const([1]), net.const([-1])]),
            net.add('Slice', [t, net.const([1, -3]), net.const([-1, 100]), net.const([3, -2])]),
            net.add('Gather', [t, net.const(np.int64(2))], axis=1),
            net.add('Gather', [t, net.const([0, 5, -1])], axis=1),
            net.add('Add', [t, net.add('Expand', [pooled, net.add('Shape', [t])])]),
            net.add('Add', [t, net.add('ConstantOfShape', [net.const([1, 6, 1, 1])],
                                       value=numpy_helper.from_array(np.array([0.5], np.float32)))]),
            net.add('Unsqueeze', [net.add('Squeeze', [pooled, net.const([2, 3])]), net.const([1])]),
            net.add('Identity', [net.add('Dropout', [t])]),
            net.add('Transpose', [t], perm=[0, 1, 3, 2]),
            net.add('Add', [net.add('Constant', [], value_float=2.0), t]),
            net.add('MatMul', [t, net.weight(12, 5)])]
    return net.model(outs)


def opset11():
    """The opset 11 signatures: Slice with steps, Split and Squeeze/Unsqueeze attributes, Clip bounds,
    Resize with roi, Pad inputs, Softmax over everything after axis 1."""
    net = Net(opset=11, size=12)
    t = conv(net, net.input, 3, 4, pads=[1, 1, 1, 1])
    parts = net.add('Split', [t], axis=1, split=[1, 3], outputs=2)
    sliced = net.add('Slice', [t, net.const([1]), net.const([INT_MAX]), net.const([2]), net.const([2])])
    pooled = net.add('GlobalAveragePool', [t])
    outs = [parts[0], parts[1], sliced,
            net.add('Unsqueeze', [net.add('Squeeze', [pooled], axes=[2, 3])], axes=[2, 3]),
            net.add('Clip', [t, net.const(np.float32(0)), net.const(np.float32(6))]),
            net.add('Resize', [t, net.const(np.zeros(0, np.float32)), net.const([1, 1, 2, 2], np.float32)],
                    mode='nearest', coordinate_transformation_mode='asymmetric', nearest_mode='floor'),
            net.add('Resize', [t, net.const(np.zeros(0, np.float32)), net.const([1, 1, 2, 2], np.float32)],
                    mode='linear', coordinate_transformation_mode='align_corners'),
            net.add('Pad', [t, net.const([0, 0, 1, 0, 0, 0, 0, 1]), net.const(np.float32(-1))]),
            net.add('Softmax', [t], axis=1), net.add('Softmax', [t], axis=3),
            net.add('ReduceMean', [t], axes=[1], keepdims=0)]
    return net.model(outs)


def opset10():
    """Opset 10: Resize of (X, scales) and Slice of inputs; Clip and Dropout of opset 7's form."""
    net = Net(opset=10, size=12)
    t = conv(net, net.input, 3, 4, pads=[1, 1, 1, 1])
    outs = [net.add('Resize', [t, net.const([1, 1, 2, 2], np.float32)], mode='nearest'),
            net.add('Resize', [t, net.const([1, 1, 2, 2], np.float32)], mode='linear'),
            net.add('Slice', [t, net.const([0, 1]), net.const([2, 10]), net.const([1, 3])]),
            net.add('Clip', [t], min=-0.5, max=0.5), net.add('Dropout', [t])]
    return net.model(outs)


def opset9():
    """Opset 9: Upsample, Pad, Slice and BatchNormalization of attributes."""
    net = Net(opset=9, size=12)
    t = conv(net, net.input, 3, 4, pads=[1, 1, 1, 1])
    outs = [net.add('Upsample', [t, net.const([1, 1, 2, 2], np.float32)], mode='nearest'),
            net.add('Pad', [t], pads=[0, 0, 2, 1, 0, 0, 0, 1], value=0.25),
            net.add('Slice', [t], starts=[2, 1], ends=[10, 9], axes=[2, 3]),
            batch_norm(net, t, 4), net.add('Unsqueeze', [net.add('Flatten', [t], axis=1)], axes=[2])]
    return net.model(outs)


def opset18():
    """Opset 18 and 20: Split's num_outputs, reductions' and Pad's axes as inputs, Resize's axes, Gelu, Mish."""
    net = Net(opset=20, size=12)
    t = conv(net, net.input, 3, 5, pads=[1, 1, 1, 1])
    parts = net.add('Split', [t], axis=1, num_outputs=2, outputs=2)
    outs = parts + [net.add('ReduceMean', [t, net.const([2, 3])]),
                    net.add('ReduceMax', [t, net.const([1])], keepdims=0),
                    net.add('Pad', [t, net.const([1, 2, 0, 1]), net.const(np.float32(0)), net.const([2, 3])]),
                    net.add('Resize', [t, '', '', net.const([18, 20])], axes=[2, 3], mode='linear'),
                    net.add('Gelu', [t]), net.add('Gelu', [t], approximate='tanh'), net.add('Mish', [t])]
    return net.model(outs)


NETS = {'spatial': spatial, 'arithmetic': arithmetic, 'shapes': shapes, 'opset11': opset11,
        'opset10': opset10, 'opset9': opset9, 'opset18': opset18}

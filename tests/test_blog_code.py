"""The blog post's own code runs unchanged against vgg16.py.

Below, between the markers, is the post's code as published, with one change:
`import tensorflow as tf` became `import tensorflow.compat.v1 as tf;
tf.disable_v2_behavior()`. It relies on a global `vgg`, builds new gradient
ops and a new Session on every call, and updates the image in place after
`create_feed_dict` made the feed; all of that must keep working.
"""
import os

import matplotlib
matplotlib.use('Agg')

import numpy as np
import pytest

from filtervis.models import vgg16
from builders import random_weights

# ---- the post's code, unchanged but for the import line --------------------
import tensorflow.compat.v1 as tf; tf.disable_v2_behavior()  # noqa: E702
import matplotlib.pyplot as plt


def normalize_image(x):
    """
    Chuẩn hoá giá trị các pixel ảnh về [0,1]
    """
    x_min = x.min()
    x_max = x.max()
    x_norm = (x - x_min) / (x_max - x_min)
    return x_norm


def plot_image(image):
    img_norm = normalize_image(image)
    plt.figure(figsize=(4,4))
    plt.axis('off')
    plt.imshow(img_norm, interpolation='nearest')
    plt.show()


def plot_images(images):
    (m, n) = (len(images)//3, 3)
    fig, axs = plt.subplots(m, n, figsize=(12,8))
    for i, img in enumerate(images):
        ax = axs[i//3, i% 3]
        img = normalize_image(img)
        ax.imshow(img, interpolation='nearest')
        ax.set_xticks([])
        ax.set_yticks([])
    plt.show()


def cost(model, layer_id, feature_id):
    with model.graph.as_default():
        layer = model.get_layer_tensors([layer_id])[0]
        feature_map = layer[:,:,:,feature_id]
        loss = tf.reduce_mean(feature_map)
        return loss


def visual(model, layer_id, feature_id, iters,step_size = 0.5):

    # khởi tạo 1 ảnh nhiễu bất kì
    generate_img = np.random.uniform(size=(224,224,3)) + 128.0

    with model.graph.as_default():
        loss = cost(vgg, layer_id, feature_id)
        gradient = tf.gradients(loss, model.input)

        # feed_dict là input tensor chứa ảnh input đầu vào
        feed_dict = vgg.create_feed_dict(image=generate_img)
        session = tf.Session(graph=vgg.graph)
        init = tf.global_variables_initializer()
        session.run(init)

        for i in range(iters):
            grad_val, loss_val = session.run([gradient, loss], feed_dict=feed_dict)
            grad_val = np.array(grad_val).squeeze()

            # tính learning rate
            lrate = step_size/(grad_val.max() + 1e-8)
            generate_img += lrate * grad_val
        return generate_img
# ---- end of the post's code -------------------------------------------------

vgg = None


@pytest.fixture(scope='module')
def blog_model_dir(tmp_path_factory):
    """A model folder holding a small test VGG16 as vgg16.tfmodel, found through VGG16_DIR."""
    folder = tmp_path_factory.mktemp('blog_models')
    graph_def = vgg16.build_graph_def(random_weights(seed=3), preprocess='caffe')
    with open(folder / 'vgg16.tfmodel', 'wb') as f:
        f.write(graph_def.SerializeToString())
    return str(folder)


@pytest.mark.slow
def test_post_demo_runs_unchanged(blog_model_dir, monkeypatch):
    global vgg
    monkeypatch.setenv('VGG16_DIR', blog_model_dir)
    np.random.seed(0)

    # "Load và tạo model" — with a valid file present, no network is touched.
    vgg16.maybe_download()
    vgg = vgg16.VGG16()

    # The post's demo: layer 5 (conv3_2), filters 0-5, 150 steps, step size 2.
    images = []
    feature_ids = [0,1,2,3,4,5]
    layer_id = 5
    for f_id in feature_ids:
        img = visual(vgg, layer_id, f_id, 150, 2)
        images.append(img)
    plot_images(images)
    plot_image(images[0])
    plt.close('all')

    # What the demo must have done: each picture moved away from its noise
    # and raised its filter's mean activation.
    # Each visual() drew its start from numpy's global generator, in order.
    np.random.seed(0)
    starts = [np.random.uniform(size=(224, 224, 3)) + 128.0 for _ in feature_ids]
    layer = vgg.get_layer_tensors([layer_id])[0]
    with tf.Session(graph=vgg.graph) as session:
        for f_id, img, start in zip(feature_ids, images, starts):
            assert img.shape == (224, 224, 3) and np.isfinite(img).all()
            # 150 steps of 2 for the pixel with the largest gradient: far from the start.
            assert np.abs(img - start).max() > 50
            before = session.run(layer, vgg.create_feed_dict(image=start))[..., f_id].mean()
            after = session.run(layer, vgg.create_feed_dict(image=img))[..., f_id].mean()
            assert after > before
    assert vgg.layer_names[layer_id] == 'conv3_2/conv3_2'


def test_feed_dict_sees_in_place_updates(blog_model_dir):
    # The post builds feed_dict once and then changes the image in place: the
    # fed array must be a view of the caller's image, not a copy.
    model = vgg16.VGG16(os.path.join(blog_model_dir, 'vgg16.tfmodel'))
    image = np.zeros((8, 8, 3))
    feed = model.create_feed_dict(image=image)
    image += 5
    assert feed[model.input].shape == (1, 8, 8, 3)
    assert (feed[model.input] == 5).all()

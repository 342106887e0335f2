"""preprocess.py: the choices, their meanings and the scaling op, against the formulas in numpy."""
import subprocess
import sys

import numpy as np
import pytest

from builders import ROOT
from filtervis.core import network
from filtervis.models import preprocess

tf = network.tf

FORMULAS = {
    'caffe': lambda x: x[..., ::-1] - np.array(preprocess.CAFFE_MEAN_BGR),
    'unit': lambda x: x / 255.0,
    'none': lambda x: x,
    'tf': lambda x: x / 127.5 - 1,
    'torch': lambda x: (x / 255.0 - np.array(preprocess.TORCH_MEAN)) / np.array(preprocess.TORCH_STD),
}


@pytest.mark.parametrize('choice', preprocess.CHOICES)
def test_scale_matches_its_formula(choice):
    images = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        images_t = tf.placeholder(tf.float32, [None, None, None, 3])
        scaled_t = preprocess.scale(images_t, choice)
        with tf.Session() as session:
            scaled = session.run(scaled_t, {images_t: images})
    np.testing.assert_allclose(scaled, FORMULAS[choice](images), rtol=1e-5, atol=1e-4)


def test_every_choice_has_a_meaning_and_vgg16_takes_a_subset():
    assert set(preprocess.MEANINGS) == set(preprocess.CHOICES)
    assert set(preprocess.VGG16_CHOICES) == {'caffe', 'unit', 'none'}


def test_bad_choices_say_what_to_use():
    with pytest.raises(ValueError, match="preprocess='bgr': expected one of caffe, unit, none, tf, torch"):
        preprocess.check('bgr')
    with pytest.raises(ValueError, match="preprocess='tf': expected one of caffe, unit, none "):
        preprocess.check('tf', preprocess.VGG16_CHOICES)
    with pytest.raises(ValueError, match='greyscale.*use .tf., .unit. or .none.'):
        preprocess.resolve('caffe', 'fer.hdf5', False, 1)
    with pytest.raises(ValueError, match='--preprocess') as info:
        preprocess.resolve(None, 'my.keras', False, 3)
    assert all(choice + ':' in str(info.value) for choice in preprocess.CHOICES)
    assert preprocess.resolve(None, 'my.keras', True, 1) == 'none'
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="'torch' is defined for RGB images; these have 1 channels"):
            preprocess.scale(tf.placeholder(tf.float32, [None, 8, 8, 1]), 'torch')


def test_the_choices_load_without_tensorflow():
    # The downloader's command line takes its --preprocess choices from here before any graph is built.
    code = 'import sys; import filtervis.models.preprocess; print("tensorflow" in sys.modules)'
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'False'

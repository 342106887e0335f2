"""
How pixels are scaled before a network's first layer: the choices, what each
means, and the one op that applies them. Every graph this project builds
takes pixels 0..255 at `images:0` and carries the scaling its weights were
trained with inside it, so the rest of the project never scales pixels.

    python download.py --weights my.h5 --preprocess unit        # VGG16 weights: caffe, unit or none
    python visualize.py --model my.keras --preprocess tf        # a Keras model: any of CHOICES

    from filtervis.models import preprocess
    preprocess.check('tf')                           # ValueError naming the choices for an unknown one
    x_t = preprocess.scale(images_t, 'caffe')         # inside a graph: what the weights expect

This module imports no TensorFlow until scale() runs, so the downloader,
which must not load TensorFlow, takes its choices from here.
"""

from filtervis.util import quiet

# The ImageNet mean in BGR order, the constant Caffe-trained weights (Keras' VGG16) subtract.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# torchvision's ImageNet mean and standard deviation, RGB, on pixels 0..1.
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)

MEANINGS = {
    'caffe': 'RGB->BGR minus the ImageNet mean %s' % (CAFFE_MEAN_BGR,),
    'unit': 'pixels/255 (0..1)',
    'none': 'pixels as they are (0..255)',
    'tf': 'pixels/127.5 - 1 (-1..1)',
    'torch': 'pixels/255, minus %s, over %s' % (TORCH_MEAN, TORCH_STD),
}
CHOICES = tuple(MEANINGS)
# VGG16 weight files (download.py --weights) come in the first three; 'tf'
# and 'torch' are the conventions of other networks a user brings as a Keras model.
VGG16_CHOICES = CHOICES[:3]
# Defined on the three colour channels, so not for greyscale models.
RGB_ONLY = ('caffe', 'torch')


def describe(choices=CHOICES):
    """'caffe: RGB->BGR minus ...; unit: pixels/255 (0..1); ...', for help texts and error messages."""
    return '; '.join('%s: %s' % (choice, MEANINGS[choice]) for choice in choices)


def check(choice, choices=CHOICES):
    """Raise ValueError unless choice is one of choices; the message lists them with their meanings."""
    if choice not in choices:
        raise ValueError('preprocess=%r: expected one of %s (%s)' % (choice, ', '.join(choices), describe(choices)))


def resolve(choice, model_name, own_scaling, channels):
    """The preprocessing to build a model with: choice, or 'none' for a model that scales pixels itself.

    choice: one of CHOICES, or None, allowed only when own_scaling (the
    model's first layer is a Rescaling or Normalization). channels: 1 or 3,
    the model's input channels. ValueError naming the model and the next step
    when a choice is missing or does not fit a greyscale input.
    """
    if choice is None:
        if own_scaling:
            return 'none'
        raise ValueError('%s: say how its inputs were scaled in training with --preprocess (preprocess=...): %s'
                         % (model_name, describe()))
    if channels == 1 and choice in RGB_ONLY:
        raise ValueError("%s takes greyscale (1-channel) images; preprocess %r is defined for RGB only: use "
                         "'tf', 'unit' or 'none'" % (model_name, choice))
    return choice


def scale(images_t, choice):
    """What the weights expect, from images_t float32 [N, H, W, C], pixels 0..255, C = 1 or 3.

    choice: one of CHOICES; 'caffe' and 'torch' need C = 3 (ValueError
    otherwise). Returns a float32 tensor of the same shape, made of plain
    ops that geometry.py follows.
    """
    check(choice)
    channels = images_t.shape.as_list()[-1]
    if choice in RGB_ONLY and channels != 3:
        raise ValueError("preprocess %r is defined for RGB images; these have %s channels: use 'tf', 'unit' "
                         "or 'none'" % (choice, channels))
    tf = quiet.import_tensorflow()
    if choice == 'tf':
        return images_t / 127.5 - 1.0
    if choice == 'unit':
        return images_t / 255.0
    if choice == 'torch':
        return (images_t / 255.0 - tf.constant(TORCH_MEAN, tf.float32)) / tf.constant(TORCH_STD, tf.float32)
    if choice == 'caffe':
        return tf.reverse(images_t, axis=[3]) - tf.constant(CAFFE_MEAN_BGR, tf.float32)
    return tf.identity(images_t)

"""
Users' Keras models as Networks: a `.keras` file, a legacy HDF5 model (`.h5`,
`.hdf5`, also Keras 2 files) or a TensorFlow SavedModel folder is frozen once
into a GraphDef whose input is `images:0` (pixels 0..255, the scaling the
model expects inside the graph) and whose units are the model's layers under
their Keras names. Keras runs only to build that graph: a model loaded before
comes from the cache without Keras.

    python visualize.py --model fer-emotion-minixception.hdf5 --preprocess tf --layer activation_3
    python visualize.py --model my_model.keras --preprocess tf --list-layers --all

    from filtervis.models import keras_model
    net = keras_model.load('fer-emotion-minixception.hdf5', preprocess='tf')   # a network.Network
    net.short_names[:2]                        # ['activation_1', 'activation_2']: one unit per convolution
    keras_model.load(path, 'tf', all_layers=True)   # every layer with a 4-D output is a unit
    print('\\n'.join(keras_model.unit_lines(net)))

One question per module, bottom first:
    formats.py  which files are models, their md5, and safe mode (read from the config, before Keras)
    trace.py    a Keras model run layer by layer, every layer's output seen
    units.py    which layers or ops are units, which geometry.py follows, the --list-layers lines
    freeze.py   one function per route (keras_file, saved_model) -> a Frozen graph in memory
    cache.py    load(): where the frozen graph lives and when it is reused

Units. By default one per convolution layer (Conv2D, SeparableConv2D,
DepthwiseConv2D, Conv2DTranspose, and Dense on a map: a 1x1 conv), in the
order of model.layers: the last layer of the chain conv -> [BatchNormalization
or LayerNormalization] -> [activation layer] in which each layer is the only
consumer of the one before, named after that layer, with the conv's class as
its kind; and one per block output (a residual Add, ConvNeXt's x + branch,
InceptionResNetV2's scaled sum, with the activation after it). With
all_layers=True every layer
with a 4-D output is a unit under its own name and class; both lists point
into the same frozen graph. Layers of a nested model are units too; where a
name is also used outside it, it is prefixed with the nested model's name
and '/'. Units behind an op geometry.py cannot follow (a transposed
convolution, a resize) are left out, and unit_lines(all_layers=True) says why.
Every keras.applications family is covered (tests/test_keras_applications.py).

Safety. Keras safe mode stays on: a Lambda layer or a custom class is refused
before anything from the file runs, unless the caller opts in with
unsafe=True (`--unsafe`), which runs code from the file.

The input scaling (preprocess=) is one of filtervis.models.preprocess.CHOICES.
"""

from filtervis.models.keras_model.cache import CACHE_FOLDER, load
from filtervis.models.keras_model.formats import is_model_path, model_md5, unsafe_reason
from filtervis.models.keras_model.freeze import tf2_mode
from filtervis.models.keras_model.units import unit_lines

__all__ = ['CACHE_FOLDER', 'is_model_path', 'load', 'model_md5', 'tf2_mode', 'unit_lines', 'unsafe_reason']

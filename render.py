"""
The one loop that renders pictures, whatever the method: batching, the
progress bar, which pictures moved, the warning for filters that never had a
gradient, and the Result. A method (visualize.py's 'blog', regularized.py)
supplies only its start and its step.

    import render
    result = render.run(net, layer_index, feature_ids, iters, method, batch_size=4, progress=True)
    result.images        # float32 [N, size, size, C]

A method is an object with
    start(session, positions)  positions: indices into feature_ids of one batch; sets up its pictures
    step(session, step)        one step for that batch: (objective float32 [B], gradient scale float32 [B])
    images(session)            the batch's pictures, float32 [B, size, size, C]
    size, channels, precision, dead_hint (text added to the dead-filter warning)
"""

import warnings
from dataclasses import dataclass

import numpy as np

import network


@dataclass
class Result:
    """What one ascent made, by either method (visualize.ascend, regularized.render).

    images:     float32 [N, size, size, C] (C = the network's input channels),
                around 0..255 (not clipped)
    objectives: float32 [iters, N], the objective of each image before each step
    dead:       bool [N], True where the gradient was exactly zero at every
                step: the filter never saw the image, which is still the start
    precision:  'float32' or 'bfloat16', the precision that made the images
                (what 'auto' resolved to)
    """
    images: np.ndarray
    objectives: np.ndarray
    dead: np.ndarray
    precision: str = 'float32'


def warn_dead(net, layer_index, feature_ids, dead, hint):
    """The RuntimeWarning for filters whose gradient stayed exactly zero."""
    if dead.any():
        warnings.warn('%s filter(s) %s: the gradient was exactly zero at every step, so the image never '
                      'moved from its start (no unit of the filter is active on it).%s'
                      % (net.short_names[layer_index], [f for f, d in zip(feature_ids, dead) if d],
                         hint), RuntimeWarning, stacklevel=4)


def run(net, layer_index, feature_ids, iters, method, *, batch_size, progress=False, desc=None):
    """Render feature_ids (filters of unit layer_index) in batches of batch_size with `iters` steps each.

    Arguments are checked by the caller. One session.run per step moves a
    whole batch; progress shows a tqdm bar that counts picture-steps.
    Returns a Result.
    """
    sess = network.session(net)
    count = len(feature_ids)
    images = np.zeros((count, method.size, method.size, method.channels), np.float32)
    objectives = np.zeros((iters, count), np.float32)
    moved = np.zeros(count, bool)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=iters * count, unit='step', desc=desc or net.short_names[layer_index])
    try:
        for begin in range(0, count, batch_size):
            chunk = slice(begin, min(begin + batch_size, count))
            method.start(sess, range(chunk.start, chunk.stop))
            for step in range(iters):
                objectives[step, chunk], scale = method.step(sess, step)
                moved[chunk] |= scale > 0
                if bar is not None:
                    bar.update(chunk.stop - chunk.start)
                    if step % 10 == 0:
                        bar.set_postfix(objective='%.3g' % objectives[step, chunk].mean())
            images[chunk] = method.images(sess)
    finally:
        if bar is not None:
            bar.close()
    dead = ~moved
    warn_dead(net, layer_index, feature_ids, dead, method.dead_hint)
    return Result(images, objectives, dead, method.precision)

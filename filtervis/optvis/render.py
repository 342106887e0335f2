"""
The one loop that renders pictures, whatever the method: batching, the
progress bar, which pictures moved, the warning for filters that never had a
gradient, and the Result. A method (blog.py, the post's; regularized.py)
supplies only its start and its step.

    from filtervis.optvis import render
    result = render.run(net, job, iters, method, batch_size=4, progress=True)
    result.images        # float32 [N, size, size, C]

A job (render.Job) says what each picture maximizes and where it starts. A
method is an object with
    start(session, positions)  positions: a slice of the job's pictures, one batch; sets up its pictures
    step(session, step)        one step for that batch: (objective float32 [B], gradient scale float32 [B])
    images(session)            the batch's pictures, float32 [B, size, size, C]
    size, channels, precision, dead_hint (text added to the dead-filter warning)
"""

import warnings
from dataclasses import dataclass

import numpy as np

from filtervis.core import network

# A picture whose pixels all stayed within this many grey levels of its start never moved: its
# gradient was zero, or too small to move a pixel (a kernel of 1e-34 behind a batch norm gives 1e-38).
MOVED_GREY_LEVELS = 1e-3


@dataclass
class Result:
    """What one ascent made, by either method (ascent.ascend, regularized.render).

    images:     float32 [N, size, size, C] (C = the network's input channels),
                around 0..255 (not clipped)
    objectives: float32 [iters, N], the objective of each image before each step
    dead:       bool [N], True where no pixel moved by more than MOVED_GREY_LEVELS
                from the start: the gradient was zero (or too small to move a
                pixel) at every step, so the filter never saw the image
    precision:  'float32' or 'bfloat16', the precision that made the images
                (what 'auto' resolved to)
    importance: None, or float32 [N, size, size], 0..1: where each picture's objective was most
                sensitive (the phase-only method's transparency, maco.py)
    """
    images: np.ndarray
    objectives: np.ndarray
    dead: np.ndarray
    precision: str = 'float32'
    importance: np.ndarray = None


@dataclass
class Job:
    """What to render, one entry per picture, in order.

    bounds:  objectives.Bound of each picture, all of one form
    keys:    tuple of ints per picture: its start depends on (seed, *key) only, so a
             picture is the same alone or in any batch
    groups:  int per picture; pictures of one group push apart (diversity) and are
             never split between batches; consecutive
    labels:  per picture, what the dead-picture warning calls it (e.g. 5 for filter 5)
    subject: what the labels are of, e.g. 'conv3_2 filter(s)'
    """
    bounds: list
    keys: list
    groups: list
    labels: list
    subject: str


def warn_dead(subject, labels, dead, hint):
    """The RuntimeWarning for pictures whose gradient stayed exactly zero."""
    if dead.any():
        warnings.warn('%s %s: the gradient was exactly zero (or too small to move a pixel) at every step, '
                      'so the image never moved from its start (no unit of the filter is active on it, or its '
                      'weights are near zero).%s'
                      % (subject, [label for label, d in zip(labels, dead) if d], hint), RuntimeWarning,
                      stacklevel=4)


def batches(groups, batch_size):
    """Slices of consecutive pictures, up to batch_size each, that never split a group (a group larger
    than batch_size is a batch of its own)."""
    runs, begin = [], 0
    for i in range(1, len(groups) + 1):
        if i == len(groups) or groups[i] != groups[i - 1]:
            runs.append((begin, i))
            begin = i
    slices, start, end = [], None, None
    for first, last in runs:
        if start is not None and last - start <= batch_size:
            end = last
            continue
        if start is not None:
            slices.append(slice(start, end))
        start, end = first, last
    if start is not None:
        slices.append(slice(start, end))
    return slices


def run(net, job, iters, method, *, batch_size, progress=False, desc=None):
    """Render the pictures of `job` with `iters` steps each (0: the starts), in batches of about batch_size.

    Arguments are checked by the caller. One session.run per step moves a
    whole batch; progress shows a tqdm bar that counts picture-steps.
    Returns a Result.
    """
    sess = network.session(net)
    count = len(job.bounds)
    images = np.zeros((count, method.size, method.size, method.channels), np.float32)
    objectives = np.zeros((iters, count), np.float32)
    moved = np.zeros(count, bool)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=iters * count, unit='step', desc=desc)
    try:
        for chunk in batches(job.groups, batch_size):
            method.start(sess, chunk)
            starts = method.images(sess)
            for step in range(iters):
                objectives[step, chunk], _ = method.step(sess, step)
                if bar is not None:
                    bar.update(chunk.stop - chunk.start)
                    if step % 10 == 0:
                        bar.set_postfix(objective='%.3g' % objectives[step, chunk].mean())
            images[chunk] = method.images(sess)
            moved[chunk] = np.abs(images[chunk] - starts).max(axis=(1, 2, 3)) > MOVED_GREY_LEVELS
    finally:
        if bar is not None:
            bar.close()
    # With no step there is nothing to judge: the pictures are their starts (a photo, say).
    dead = ~moved if iters else np.zeros(count, bool)
    warn_dead(job.subject, job.labels, dead, method.dead_hint)
    return Result(images, objectives, dead, method.precision)

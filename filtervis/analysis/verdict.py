"""
The network's own verdict on a class picture: which class it sees (top-1 and
that class's probability), the probability of the class the picture was made
for, and how robust that is: the share of 32 jittered copies (shifts of up to
8 pixels, scale 0.9-1.1, a blur of sigma 1 pixel) still classified as that
class. A picture that only its exact pixels make "happy" keeps few copies.

    from filtervis.analysis import verdict
    head = net.classifier_of(layer_index)        # the head that judges pictures of a unit, or None
    values = verdict.verdict(net, head, [3, 4], images)   # images [2, H, W, C], 0..255
    values['top1'], values['top1_probability'], values['target_probability'], values['jitter_kept']
    verdict.caption(values, 0, names)                      # 'seen as happy 0.97\ntarget 0.97 · kept 31/32'

The copies are drawn from a fixed seed, so the numbers are the same on every
run; the network runs in float32 whatever made the pictures. A head of bare
logits (a PyTorch export's, which ends without a softmax) is judged by a
softmax this module takes of them, and says so (softmax_by_project).
"""

import numpy as np

from filtervis.analysis import measures
from filtervis.core import checks, network
from filtervis.util import quiet

tf = quiet.import_tensorflow()

COPIES = 32
MAX_SHIFT = 8
SCALE_RANGE = (0.9, 1.1)
BATCH_SIZE = 32


def probability_ops(net, layer_index):
    """(logits_t [N, K], probabilities_t [N, K]) of a vector unit, built once: the unit's own probabilities
    (its softmax or sigmoid) where the network has them, else a softmax of its values."""
    def build():
        logits_t = net.layer_tensors[layer_index]
        name = getattr(net.units[layer_index], 'probability', None)
        if name:
            return logits_t, net.graph.get_tensor_by_name(name)
        with tf.name_scope('verdict_%s' % net.scope(layer_index)):
            return logits_t, tf.nn.softmax(logits_t)
    return net.cached_ops(('verdict', layer_index), build)


def jittered(image, rng, copies=COPIES):
    """copies float32 [copies, H, W, C] of image [H, W, C]: each scaled by 0.9-1.1 about its centre, shifted by
    up to MAX_SHIFT pixels in y and x (edges repeated), before the blur that verdict() applies."""
    from PIL import Image
    height, width, channels = image.shape
    out = np.empty((copies, height, width, channels), np.float32)
    for i in range(copies):
        scale = rng.uniform(*SCALE_RANGE)
        dy, dx = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, 2)
        side_y, side_x = max(1, round(height * scale)), max(1, round(width * scale))
        planes = [np.asarray(Image.fromarray(image[:, :, c], mode='F').resize((side_x, side_y), Image.BILINEAR))
                  for c in range(channels)]
        scaled = np.stack(planes, axis=-1)
        # Back to H x W about the centre (cropped, or padded with the edge), then moved by (dy, dx).
        top, left = (side_y - height) // 2 - dy, (side_x - width) // 2 - dx
        rows = np.clip(np.arange(height) + top, 0, side_y - 1)
        cols = np.clip(np.arange(width) + left, 0, side_x - 1)
        out[i] = scaled[rows][:, cols]
    return out


def verdict(net, layer_id, targets, images, *, copies=COPIES, seed=0):
    """The verdict on each picture: a dict of float32/int arrays [N].

    layer_id: a vector unit ([N, K]: a Dense layer, a classifier's logits).
    targets: the class each picture was made for, ints 0..K-1.
    images: float32 [N, H, W, C], 0..255, the size the network takes.
    Returns top1 (int), top1_probability, target_probability, jitter_kept
    (0..1, the share of `copies` jittered and blurred copies whose top-1 is
    the target) and softmax_by_project (bool: True where the unit has no
    probabilities of the network's own and the softmax of its values was
    taken here), each [N], so that a caller may save or index them alike.
    """
    layer_index = net.layer_index(layer_id)
    if net.layer_tensors[layer_index].shape.rank != 2:
        raise ValueError('%s is a map, not a vector of classes: a verdict needs a Dense or logits unit'
                         % net.short_names[layer_index])
    targets = checks.check_feature_ids(net, layer_index, list(targets))
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or len(images) != len(targets) or images.shape[-1] != net.input_channels:
        raise ValueError('images of shape %s: expected [%d, H, W, %d]' % (images.shape, len(targets),
                                                                        net.input_channels))
    copies = checks.check_int('copies', copies, 1)
    _, probabilities_t = probability_ops(net, layer_index)
    by_project = not getattr(net.units[layer_index], 'probability', None)
    session = network.session(net)

    def probabilities(batch):
        return np.concatenate([session.run(probabilities_t, {net.input: batch[i:i + BATCH_SIZE]})
                               for i in range(0, len(batch), BATCH_SIZE)])

    seen = probabilities(images)
    rng = np.random.default_rng(seed)
    kept = np.zeros(len(images), np.float32)
    for i, (image, target) in enumerate(zip(images, targets)):
        moved = measures.blur(net, jittered(image, rng, copies))
        kept[i] = np.mean(np.argmax(probabilities(moved), axis=1) == target)
    rows = np.arange(len(images))
    top1 = np.argmax(seen, axis=1)
    return {'top1': top1.astype(np.int64), 'top1_probability': seen[rows, top1].astype(np.float32),
            'target_probability': seen[rows, targets].astype(np.float32), 'jitter_kept': kept,
            'softmax_by_project': np.full(len(images), by_project)}


def caption(values, index, names=None, copies=COPIES):
    """Two lines for picture `index`: 'seen as NAME 0.97' and 'target 0.97 · kept 31/32' (class names when
    given, else class ids); the first ends in '(softmax by filtervis)' where the network has no softmax."""
    top1 = int(values['top1'][index])
    name = names[top1] if names else str(top1)
    ours = ' (softmax by filtervis)' if 'softmax_by_project' in values and values['softmax_by_project'][index] else ''
    return 'seen as %s %.2f%s\ntarget %.2f · kept %d/%d' % (
        name, values['top1_probability'][index], ours, values['target_probability'][index],
        round(values['jitter_kept'][index] * copies), copies)

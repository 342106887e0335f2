"""
Which real pictures drive a filter: the patches of a folder of images that
excite each filter of VGG16 most ("dataset examples", as OpenAI Microscope
shows them beside every feature visualization).

Every image of the folder goes once through the network; one forward pass per
batch gives every requested layer, all channels. For each filter the k
largest activations are kept, at most one per image (the image's strongest
unit), and the patch shown is that unit's receptive field in the image.

    python examples.py DIR --layers conv3_2 --filters 0-5 --out examples.png
    python examples.py ../shared/data/mri-slices --weights ../shared/models/vgg16-mri-notop.h5 \\
        --preprocess unit --layers conv3_2,conv5_1 --filters 0-5 --json examples.json --workers 2

    from filtervis.analysis import examples
    found = examples.find(model, 'DIR', ['conv3_2'], filters=range(6))   # found.records: list of dict
    tile = examples.patch(model, 'DIR', found.records[0])                 # float32 [32, 32, 3], RGB 0..255

Each record's attribution map for its filter, cropped to its patch (examples.py --attribution), is
attribution.example_maps in analysis/attribution/patches.py, which builds on this module.
"""

import math
import os
from dataclasses import dataclass, field

import numpy as np

from filtervis import cluster
from filtervis.core import checks, memory, network, units
from filtervis.core.precision import resolve_precision
from filtervis.util import quiet
from filtervis.util.images import list_images, load_image  # noqa: F401  (examples.list_images, load_image)

# Also on Dask workers, which import this module to run its tasks: the start-up lines stay held back.
tf = quiet.import_tensorflow()

DEFAULT_K = 9
DEFAULT_BATCH_SIZE = 16


def receptive_field(model, layer_index, size=224):
    """(size, stride, offset) in input pixels of a unit of the layer for size x size images
    (network.Network.receptive_field, from one walk of the graph).

    Unit (y, x) of the layer's feature map sees input rows
    offset + stride * y ... offset + stride * y + size - 1, and the same for
    columns. VGG16: 3 px at conv1_1, 40 at conv3_3, 196 at conv5_3.
    """
    return model.receptive_field(layer_index, size)


# ---------------------------------------------------------------------------
# Images

def _read(folder, name, size, channels):
    """(image, None) or (None, reason) for one file; reading errors are the file's, not ours."""
    from PIL import Image
    try:
        return load_image(os.path.join(folder, name), size, channels), None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
        return None, '%s: %s' % (type(error).__name__, error)


# ---------------------------------------------------------------------------
# Top k per filter: partial results that merge in any order

@dataclass
class Top:
    """The k strongest images of some filters of one layer; row r is rank r.

    activation: float32 [n, F] (n <= k rows, F filters), the image's largest
    unit after ReLU; image: int32 [n, F], index into the sorted file list;
    y, x: int32 [n, F], that unit's row and column in the feature map.
    """
    activation: np.ndarray
    image: np.ndarray
    y: np.ndarray
    x: np.ndarray


def empty_top(filters):
    zeros = np.zeros((0, len(filters)), np.int32)
    return Top(np.zeros((0, len(filters)), np.float32), zeros, zeros, zeros)


def merge_tops(a, b, k):
    """The k best rows of both, per filter: activation descending, then file, then y, then x.

    The file's index in the sorted list stands for its name, so the order is
    total and the result the same for any order or split of the images.
    """
    both = [np.concatenate([u, v]) for u, v in zip((a.activation, a.image, a.y, a.x),
                                                   (b.activation, b.image, b.y, b.x))]
    activation, image, y, x = both
    order = np.lexsort((x, y, image, -activation), axis=0)[:k]          # [min(n, k), F]
    return Top(*(np.take_along_axis(v, order, axis=0) for v in both))


@dataclass
class Partial:
    """What a run over some images found: picklable, merged by `merge_partials`.

    tops: {layer_index: Top}; skipped: [(file, reason)]; count: images read.
    """
    tops: dict
    skipped: list = field(default_factory=list)
    count: int = 0


def merge_partials(a, b, k):
    """Two Partials of disjoint images as one; associative and commutative, for a reduction."""
    tops = {index: merge_tops(a.tops[index], b.tops[index], k) for index in a.tops}
    return Partial(tops, sorted(a.skipped + b.skipped), a.count + b.count)


# ---------------------------------------------------------------------------
# The forward pass

def feature_side(model, layer_index, size):
    """Side of the layer's feature map for size x size images."""
    return model.output_side(layer_index, size)


def bfloat16_layers(model):
    """Every unit's tensor computed with the convolutions after the first layer in bfloat16, one chain.

    A list like model.layer_tensors (units.bfloat16_chain: first-layer
    units stay float32, the others are bfloat16 [N, h, w, C]). Built once per
    model; a fetch computes only the units it needs.
    """
    return model.cached_ops(('examples', 'bfloat16_layers'),
                            lambda: units.bfloat16_chain(model, model.layer_tensors))


def layer_ops(model, layer_index, size, precision='float32'):
    """(max_t, position_t), both [N, channels]: each image's largest unit per channel and its
    position y * width + x in the feature map, for size x size images.

    precision: 'float32' or 'bfloat16' (resolved; see bfloat16_layers); the
    max is returned as float32 either way.
    Built once per model, layer, size and precision. Reducing inside the graph moves
    [N, C] numbers out of TensorFlow instead of whole feature maps; see max_and_position, which gives the first largest
    unit in row-major order (smallest y, then x), the order of the ties rule.
    """
    def build():
        side = feature_side(model, layer_index, size)
        maps_t = units.as_map((bfloat16_layers(model) if precision == 'bfloat16' else model.layer_tensors)[layer_index])
        with tf.name_scope('examples_%s' % model.scope(layer_index)):
            return max_and_position(maps_t, side)
    return model.cached_ops(('examples', layer_index, size, precision), build)


# From this feature-map side up, max_and_position looks at 2x2 blocks first
# (conv1_x and conv2_x at 224 px): a map that large costs more to search
# pixel by pixel than to pool once and search a quarter of it.
BLOCK_SEARCH_SIDE = 112


def max_and_position(maps_t, side):
    """(max_t float32 [N, C], position_t int32 [N, C]) of feature maps [N, side, side, C] (float32 or bfloat16).

    position = y * side + x of the first largest unit in row-major order
    (smallest y, then x), as the ties rule wants. Small maps: one max pool
    over the whole map (its CPU kernel keeps the first of equal values, and
    it is faster than reduce_max and argmax of the flattened map). Large
    maps: see _block_search.
    """
    if side >= BLOCK_SEARCH_SIDE:
        return _block_search(maps_t, side)
    channels = int(maps_t.shape[-1])
    # bfloat16 -> float32 is exact, and the pool then runs faster than on bfloat16
    # maps, which its CPU kernel compares one by one in software.
    max_t, index_t = tf.nn.max_pool_with_argmax(tf.cast(maps_t, tf.float32), [1, side, side, 1], [1, 1, 1, 1],
                                                'VALID', include_batch_in_index=False)
    # index = (y * side + x) * channels + channel
    return (tf.reshape(max_t, [-1, channels]),
            tf.cast(tf.reshape(index_t, [-1, channels]) // channels, tf.int32))


def _block_search(maps_t, side):
    """max_and_position of a large map: a 2x2 max pool in the map's own precision (fast
    in oneDNN), the first row of blocks that holds the max, then the first
    largest pixel of that row's two pixel rows. The first largest pixel of the
    map lies in the first row of blocks that holds the max, so the result is
    the same as a search pixel by pixel, ties included."""
    count, channels = tf.shape(maps_t)[0], int(maps_t.shape[-1])
    # 'SAME' pads an odd side with values the max ignores.
    blocks_t = tf.cast(tf.nn.max_pool2d(maps_t, 2, 2, 'SAME'), tf.float32)    # [N, side/2, side/2, C]
    row_max_t = tf.reduce_max(blocks_t, axis=2)                                # [N, side/2, C]
    max_t = tf.reduce_max(row_max_t, axis=1)                                   # [N, C]
    block_row_t = tf.argmax(row_max_t, axis=1, output_type=tf.int32)           # [N, C], first such row
    # The two pixel rows of that block row, for each image and channel: [N, C, 2, side].
    rows_t = tf.minimum(2 * block_row_t[:, :, None] + tf.range(2)[None, None, :], side - 1)
    shape = [count, channels, 2, side]
    indices_t = tf.stack([tf.broadcast_to(tf.range(count)[:, None, None, None], shape),
                          tf.broadcast_to(rows_t[:, :, :, None], shape),
                          tf.broadcast_to(tf.range(side)[None, None, None, :], shape),
                          tf.broadcast_to(tf.range(channels)[None, :, None, None], shape)], axis=-1)
    pair_t = tf.cast(tf.gather_nd(maps_t, indices_t), tf.float32)              # [N, C, 2, side]
    first_t = tf.argmax(tf.reshape(pair_t, [count, channels, 2 * side]), axis=2, output_type=tf.int32)
    y_t = tf.minimum(2 * block_row_t + first_t // side, side - 1)
    return max_t, y_t * side + first_t % side


def scan(model, folder, files, first, layer_indices, filters, *, k=DEFAULT_K, size=224,
         batch_size=DEFAULT_BATCH_SIZE, precision='float32', bar=None):
    """Top k per filter over `files` (relative paths under folder); returns a Partial.

    files[i] has index first + i in the sorted list of the whole folder (the
    tie order). filters: {layer_index: [filter ids]}. precision: 'float32' or
    'bfloat16' (resolved). Every batch is padded to
    batch_size images, so each image meets the same kernels whatever its chunk:
    TensorFlow may pick other code paths for other batch sizes, and results
    that differ in the last bit would break ties differently.
    """
    ops = [layer_ops(model, index, size, precision) for index in layer_indices]
    widths = {index: feature_side(model, index, size) for index in layer_indices}
    columns = {index: np.asarray(filters[index], np.intp) for index in layer_indices}
    tops = {index: empty_top(filters[index]) for index in layer_indices}
    skipped, count = [], 0
    sess = network.session(model)
    batch = np.zeros((batch_size, size, size, model.input_channels), np.float32)
    ids = []
    position = 0
    while position < len(files) or ids:
        # Fill the batch, skipping unreadable files.
        while len(ids) < batch_size and position < len(files):
            image, reason = _read(folder, files[position], size, model.input_channels)
            if image is None:
                skipped.append((files[position], reason))
                if bar is not None:
                    bar.update(1)
            else:
                batch[len(ids)] = image
                ids.append(first + position)
            position += 1
        if not ids:
            break
        batch[len(ids):] = 0
        values = sess.run(ops, {model.input: batch})
        real = len(ids)
        image_ids = np.asarray(ids, np.int32)
        for index, (max_v, arg_v) in zip(layer_indices, values):
            cols, width = columns[index], widths[index]
            arg = arg_v[:real, cols]
            batch_top = Top(max_v[:real, cols].astype(np.float32),
                            np.broadcast_to(image_ids[:, None], arg.shape),
                            (arg // width).astype(np.int32), (arg % width).astype(np.int32))
            tops[index] = merge_tops(tops[index], batch_top, k)
        count += real
        if bar is not None:
            bar.update(real)
        ids = []
    return Partial(tops, skipped, count)


@dataclass
class Found:
    """What find() found.

    records: list of dict, one per (layer, filter, rank), up to k per filter
      (images where the filter is off everywhere, activation 0, are left
      out, so a filter may have fewer): layer (short name),
      filter, rank (0 = strongest), file (path under the folder, '/'-separated),
      y, x (the unit's row and column in the layer's feature map), activation
      (that unit's value after ReLU); ordered by layer, filter, rank.
    skipped: files that could not be read; reasons: why, one per skipped file.
    count: images read. size: side of the square the images were scaled to.
    filters: [(layer, filter)] asked for, in order, with or without records.
    precision: 'float32' or 'bfloat16', what computed the activations.
    """
    records: list
    skipped: list
    reasons: list
    count: int
    size: int
    filters: list
    precision: str


def check_filters(model, layer_indices, filters):
    """{layer_index: [filter ids]} from None (all), a sequence (every layer) or {layer id: sequence}."""
    if filters is None:
        return {index: list(range(model.layer_channels[index])) for index in layer_indices}
    if isinstance(filters, dict):
        given = {model.layer_index(layer): ids for layer, ids in filters.items()}
        missing = [model.short_names[i] for i in layer_indices if i not in given]
        if missing:
            raise ValueError('filters names no ids for %s; give ids for every layer or a single sequence'
                             % ', '.join(missing))
        checked = {index: checks.check_feature_ids(model, index, given[index]) for index in layer_indices}
    else:
        filters = list(filters) if hasattr(filters, '__iter__') and not isinstance(filters, str) else filters
        checked = {index: checks.check_feature_ids(model, index, filters) for index in layer_indices}
    # A filter asked for twice is found once.
    return {index: list(dict.fromkeys(ids)) for index, ids in checked.items()}


def _records(model, tops, filters, files, layer_indices):
    records = []
    for index in layer_indices:
        top = tops[index]
        for column, filter_id in enumerate(filters[index]):
            for rank in range(top.activation.shape[0]):
                if top.activation[rank, column] <= 0:
                    break   # the filter is off everywhere on this image and the rest: nothing to show
                records.append({'layer': model.short_names[index], 'filter': int(filter_id), 'rank': rank,
                                'file': files[top.image[rank, column]],
                                'y': int(top.y[rank, column]), 'x': int(top.x[rank, column]),
                                'activation': float(top.activation[rank, column])})
    return records


def find(model, folder, layer_indices, *, k=DEFAULT_K, filters=None, batch_size=DEFAULT_BATCH_SIZE,
         progress=True, client=None, precision='auto', size=None, chunk_size=None, threads=None):
    """The k images of `folder` that excite each filter most, with the unit that does it; returns a Found.

    layer_indices: layers as indices or names ('conv3_2'), or one of them; filters: None (every
    filter), a sequence of ids for every layer, or {layer: ids}. Images (PNG,
    JPEG, recursively) are scaled and centre-cropped to size x size (default:
    the network's fixed input size, else 224), RGB (greyscale for a 1-channel network)
    0..255, and stream through in batches of batch_size, so memory does not
    grow with the folder. Unreadable files are skipped and listed in
    Found.skipped. client: a dask.distributed Client (see cluster.py) to spread
    chunks of chunk_size images (default: 4 chunks per worker, whole batches)
    over its workers, each with `threads` TensorFlow threads (default: the
    machine's cores shared out for a local cluster, else TensorFlow's
    default); the result is the same as without it.
    precision: 'auto' (bfloat16 where the CPU does it natively, else
    float32), 'float32' or 'bfloat16': the convolutions after conv1_1 (see
    precision.resolve_precision); activations are then bfloat16 values, 3
    significant digits, and more of them tie (broken by the same order).
    """
    precision_name = resolve_precision(precision)
    if isinstance(layer_indices, (str, int, np.integer)):
        layer_indices = [layer_indices]
    layer_indices = sorted({model.layer_index(layer) for layer in layer_indices})
    if not layer_indices:
        raise ValueError('no layers given; name at least one, e.g. conv3_2')
    k = checks.check_int('k', k, 1)
    batch_size = checks.check_int('batch_size', batch_size, 1)
    size = model.input_size or 224 if size is None else size
    for index in layer_indices:
        size = checks.check_size(model, index, size)
    if precision_name == 'bfloat16':
        precision_name = units.unit_precision(model, max(layer_indices), precision_name, auto=precision == 'auto')
    filters = check_filters(model, layer_indices, filters)
    # Before any image is read: one batch of a forward pass must fit.
    memory.check(model, list(layer_indices), size, batch_size, 0, 'forward', what='finding examples')
    files = list_images(folder)

    if client is not None:
        partial = _scan_on_cluster(client, model, folder, files, layer_indices, filters, k=k, size=size,
                                   batch_size=batch_size, chunk_size=chunk_size, progress=progress,
                                   threads=threads, precision=precision_name)
    else:
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(files), unit='img', desc='images')
        try:
            partial = scan(model, folder, files, 0, layer_indices, filters, k=k, size=size,
                           batch_size=batch_size, precision=precision_name, bar=bar)
        finally:
            if bar is not None:
                bar.close()
    if partial.count == 0:
        raise ValueError('none of the %d image files under %s could be read (first: %s)'
                         % (len(files), folder, partial.skipped[0][1]))
    skipped = sorted(partial.skipped)
    return Found(_records(model, partial.tops, filters, files, layer_indices),
                 [name for name, _ in skipped], [reason for _, reason in skipped], partial.count, size,
                 [(model.short_names[index], f) for index in layer_indices for f in filters[index]], precision_name)


def _scan_task(chunk, spec, folder, layer_indices, filters, options):
    """scan() of one chunk (first index, [files]) on a Dask worker, with the worker's copy of the model."""
    first, files = chunk
    return scan(cluster.worker_model(spec), folder, files, first, layer_indices, filters, **options)


def _scan_on_cluster(client, model, folder, files, layer_indices, filters, *, k, size, batch_size,
                     chunk_size, progress, threads, precision):
    """scan() of chunks of `files` mapped over the client's workers, merged as they finish."""
    if model.path is None:
        raise ValueError('client=...: the workers load the model from its file, and this model was given in '
                         'memory; save its graph and load it from the file')
    workers = max(1, len(client.scheduler_info()['workers']))
    if chunk_size is None:
        # About 4 chunks per worker keeps them all busy to the end; whole batches waste no padding.
        chunk_size = batch_size * max(1, math.ceil(len(files) / (4 * workers * batch_size)))
    chunk_size = checks.check_int('chunk_size', chunk_size, 1)
    if threads is None and getattr(client, 'cluster', None) is not None:
        # Worker processes of a cluster on this machine share its cores.
        threads = cluster.threads_per_worker(workers)
    spec = cluster.ModelSpec.of(model, threads=threads)
    chunks = [(start, files[start:start + chunk_size]) for start in range(0, len(files), chunk_size)]
    options = dict(k=k, size=size, batch_size=batch_size, precision=precision)
    futures = client.map(_scan_task, chunks, spec=spec, folder=os.path.abspath(folder),
                         layer_indices=layer_indices, filters=filters, options=options, pure=False)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(files), unit='img', desc='images')
    from dask.distributed import as_completed
    merged = None
    try:
        # The merge is commutative and associative: the order chunks finish in does not matter.
        for future in as_completed(futures):
            partial = future.result()
            merged = partial if merged is None else merge_partials(merged, partial, k)
            if bar is not None:
                bar.update(partial.count + len(partial.skipped))
    finally:
        if bar is not None:
            bar.close()
    return merged


# ---------------------------------------------------------------------------
# Patches

def crop(image, top, left, side):
    """image[top:top+side, left:left+side] with zeros (black) where the window leaves the image."""
    height, width = image.shape[:2]
    out = np.zeros((side, side) + image.shape[2:], image.dtype)
    rows = slice(max(top, 0), min(top + side, height))
    cols = slice(max(left, 0), min(left + side, width))
    out[rows.start - top:rows.stop - top, cols.start - left:cols.stop - left] = image[rows, cols]
    return out


def patch(model, folder, record, size=224):
    """The receptive field of a record's unit in its image: float32 [p, p, 3], RGB 0..255.

    p is the layer's receptive field (40 px for conv3_3), the same for every
    record of a layer; where the field leaves the image the patch is black, as
    the network's zero padding sees it for 'unit' and 'none' preprocessing.
    size: the side find() used (Found.size).
    """
    return patches(model, folder, [record], size)[0]


def patches(model, folder, records, size=224):
    """patch() of records of one layer, float32 [n, p, p, 3], reading each image once."""
    images, tiles = {}, []
    for record in records:
        side, stride, offset = receptive_field(model, model.layer_index(record['layer']), size)
        if record['file'] not in images:
            images[record['file']] = load_image(os.path.join(folder, record['file']), size, model.input_channels)
        tiles.append(crop(images[record['file']], offset + stride * record['y'], offset + stride * record['x'],
                          side))
    return np.stack(tiles)

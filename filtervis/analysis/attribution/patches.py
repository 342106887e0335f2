"""
The attribution maps of a filter's dataset examples (analysis/examples.py):
for each record find() gave, the map of that filter's channel objective on
the record's image, cropped to the record's patch (the receptive field of
its unit), so that a map tile lies over its patch tile. Two methods:

- gradcam: Grad-CAM at the filter's own unit. The channel mean's gradient to
  the unit is the same at every position of the channel and 0 elsewhere, so
  the map is the channel's own map after ReLU, bilinearly resized to the image;
- gradient-x-input: the channel mean's gradient to the pixels times the
  pixels, summed with its sign over colour channels (methods.gradient_x_input).

    python examples.py DIR --layers conv3_2 --filters 0-5 --attribution gradcam --out examples.png
    python atlas.py OUT --examples DIR --attribution gradient-x-input

    from filtervis.analysis import attribution, examples
    found = examples.find(net, 'DIR', ['conv3_2'], filters=range(6))
    maps = attribution.example_maps(net, 'DIR', found.records, 'gradcam', size=found.size)   # [p, p] each
"""

import os

import numpy as np

from filtervis.analysis import examples
from filtervis.analysis.attribution.methods import Config, attribute, gradient_x_input
from filtervis.analysis.attribution.ops import DEFAULT_BATCH_SIZE
from filtervis.core.checks import check_int
from filtervis.optvis import objectives
from filtervis.util.images import load_image

EXAMPLE_METHODS = ('gradcam', 'gradient-x-input')


def check_example_method(method, net=None, layer_indices=()):
    """The method, checked: one of EXAMPLE_METHODS, and for gradcam every unit of layer_indices a map.

    ValueError naming what is wrong: Grad-CAM at a filter's own unit needs
    positions, which a vector unit (a Dense layer, logits) does not have.
    """
    if method not in EXAMPLE_METHODS:
        raise ValueError('attribution %r: expected %s' % (method, ' or '.join(EXAMPLE_METHODS)))
    if method == 'gradcam' and net is not None:
        vectors = [net.short_names[index] for index in layer_indices if net.is_vector(index)]
        if vectors:
            raise ValueError('attribution gradcam reads the filter\'s own unit, and %s %s a vector (no positions '
                             'to weigh); use gradient-x-input' % (', '.join(vectors),
                                                                  'is' if len(vectors) == 1 else 'are'))
    return method


def example_maps(net, folder, records, method, *, size=224, precision='auto', batch_size=DEFAULT_BATCH_SIZE,
                 progress=False):
    """The attribution map of each record's filter on its image, cropped to its patch: a list with one
    float32 [p, p] per record, in the records' order (p: the receptive field of the record's unit, as
    examples.patches gives it; 0 where the field leaves the image).

    records: examples.find's records (dicts with layer, filter, file, y, x),
    any layers and filters; folder and size: what find() read (Found.size).
    method: one of EXAMPLE_METHODS. gradcam is >= 0; gradient-x-input is
    signed. precision: 'auto', 'float32' or 'bfloat16', as attribute().
    The records are grouped by filter, whose channel objective is the same for
    all of them, and each group's images go through batch_size at a time,
    read once per group; the ops are built once per objective form (the
    filter id is fed), so the graph does not grow from call to call.
    progress: a tqdm bar of the records.
    """
    layer_indices = {net.layer_index(record['layer']) for record in records}
    check_example_method(method, net, layer_indices)
    batch_size = check_int('batch_size', batch_size, 1)
    groups = {}
    for position, record in enumerate(records):
        groups.setdefault((record['layer'], record['filter']), []).append(position)
    found = [None] * len(records)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(records), unit='example', desc=method)
    try:
        for (layer, feature_id), positions in groups.items():
            index = net.layer_index(layer)
            side, stride, offset = examples.receptive_field(net, index, size)
            objective = objectives.channel(index, feature_id)
            for start in range(0, len(positions), batch_size):
                chunk = positions[start:start + batch_size]
                images = np.stack([load_image(os.path.join(folder, records[p]['file']), size, net.input_channels)
                                   for p in chunk])
                if method == 'gradcam':
                    maps = attribute(net, images, objective, ['gradcam'], Config(layer=index), precision=precision,
                                     batch_size=batch_size).maps[:, 0]
                else:
                    maps = gradient_x_input(net, images, objective, precision=precision, batch_size=batch_size)
                for p, full in zip(chunk, maps):
                    record = records[p]
                    found[p] = examples.crop(full, offset + stride * record['y'], offset + stride * record['x'], side)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return found

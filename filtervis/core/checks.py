"""
Checks of what callers ask for, shared by every method and command line:
integers, seeds, filter ids within a unit, image sizes a unit accepts, and
the --filters syntax. Each error names the value and the valid range.

    from filtervis.core.checks import check_int, parse_filters
    check_int('iters', 150, 1)           # 150
    parse_filters('0-5', 64)             # [0, 1, 2, 3, 4, 5]
"""

import numbers

import numpy as np

def check_int(name, value, minimum):
    """value as int, or ValueError naming `name` unless it is an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError('%s=%r: expected an integer >= %d' % (name, value, minimum))
    return int(value)


def check_seed(seed):
    """None, or the seed as int >= 0."""
    return None if seed is None else check_int('seed', seed, 0)


def check_feature_ids(net, layer_index, feature_ids):
    """Filter ids as a list of int, each within the channels of unit `layer_index` (an index)."""
    channels = net.layer_channels[layer_index]
    short = net.short_names[layer_index]
    if isinstance(feature_ids, (numbers.Integral, str)) or not hasattr(feature_ids, '__iter__'):
        raise ValueError('feature_ids=%r: expected a sequence of filter ids, e.g. [0, 1, 2] or range(%d)'
                         % (feature_ids, channels))
    ids = []
    for feature_id in feature_ids:
        if isinstance(feature_id, bool) or not isinstance(feature_id, (int, np.integer)):
            raise ValueError('filter id %r is not an integer; %s has filters 0..%d'
                             % (feature_id, short, channels - 1))
        if not 0 <= feature_id < channels:
            raise ValueError('filter %d is out of range: %s has %d filters, 0..%d'
                             % (feature_id, short, channels, channels - 1))
        ids.append(int(feature_id))
    if not ids:
        raise ValueError('no filter ids given')
    return ids


def check_size(net, layer_index, size, larger=False):
    """size as int, or ValueError unless unit `layer_index` accepts size x size inputs.

    larger: the picture may be larger than a fixed-size network's input (the maco method, whose network
    sees crops of it resized to its input side); never smaller than the unit's smallest input.
    """
    minimum = net.layer_min_sizes[layer_index]
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < minimum:
        raise ValueError('size=%r: %s needs images of at least %d pixels (the post uses 224)'
                         % (size, net.short_names[layer_index], minimum))
    if net.input_size is not None and larger and size < net.input_size:
        raise ValueError('size=%r: the pictures must be at least %d pixels, the network\'s input side (larger '
                         'ones are shown to it as crops)' % (size, net.input_size))
    if net.input_size is not None and size != net.input_size and not larger:
        raise ValueError('size=%r: this network takes %dx%d images only; use size %d'
                         % (size, net.input_size, net.input_size, net.input_size))
    return int(size)


def parse_filters(text, channels, names=None):
    """'0-5' -> [0..5], '1,4,9' -> [1, 4, 9], 'all' -> range(channels); spaces allowed. With names (the
    --classes of the unit, one per channel), a name stands for its index: 'happy,sad' -> [3, 4].

    Ids beyond the layer are left for check_feature_ids, which names the layer's range.
    """
    text = text.strip()
    if text == 'all':
        return list(range(channels))
    ids = []
    for part in text.split(','):
        part = part.strip()
        if names is not None and part in names:
            ids.append(names.index(part))
            continue
        try:
            if '-' in part[1:]:
                first, last = (int(v) for v in part.split('-'))
                if last < first:
                    raise ValueError
                ids.extend(range(first, last + 1))
            else:
                ids.append(int(part))
        except ValueError:
            if names is not None:
                raise ValueError('--filters %r: %r is no class of --classes (%s) and no id or range'
                                 % (text, part, ', '.join(names[:12]) + (', ...' if len(names) > 12 else ''))
                                 ) from None
            raise ValueError("--filters %r: expected e.g. '0-5', '1,4,9' or 'all' (a range runs upwards)"
                             % text) from None
    return ids


def read_classes(path, count, unit='the unit'):
    """The class names in `path`, one per line (blank lines at the end ignored): a list of `count` strings,
    one per neuron of the unit; ValueError naming the file and what is wrong."""
    try:
        with open(path, encoding='utf-8') as f:
            lines = [line.strip() for line in f.read().split('\n')]
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError('--classes %s: cannot read it (%s)' % (path, error)) from None
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) != count:
        raise ValueError('--classes %s has %d lines, but %s has %d classes: give one name per line, in order'
                         % (path, len(lines), unit, count))
    empty = [i for i, line in enumerate(lines) if not line]
    if empty:
        raise ValueError('--classes %s: line %d is empty; every class needs a name' % (path, empty[0] + 1))
    repeated = sorted({line for line in lines if lines.count(line) > 1})
    if repeated:
        raise ValueError('--classes %s names %s more than once' % (path, ', '.join(repeated)))
    return lines

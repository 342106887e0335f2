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


def check_size(net, layer_index, size):
    """size as int, or ValueError unless unit `layer_index` accepts size x size inputs."""
    minimum = net.layer_min_sizes[layer_index]
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < minimum:
        raise ValueError('size=%r: %s needs images of at least %d pixels (the post uses 224)'
                         % (size, net.short_names[layer_index], minimum))
    if net.input_size is not None and size != net.input_size:
        raise ValueError('size=%r: this network takes %dx%d images only; use size %d'
                         % (size, net.input_size, net.input_size, net.input_size))
    return int(size)


def parse_filters(text, channels):
    """'0-5' -> [0..5], '1,4,9' -> [1, 4, 9], 'all' -> range(channels); spaces allowed.

    Ids beyond the layer are left for check_feature_ids, which names the layer's range.
    """
    text = text.strip()
    if text == 'all':
        return list(range(channels))
    ids = []
    try:
        for part in text.split(','):
            if '-' in part.strip()[1:]:
                first, last = (int(v) for v in part.split('-'))
                if last < first:
                    raise ValueError
                ids.extend(range(first, last + 1))
            else:
                ids.append(int(part))
    except ValueError:
        raise ValueError("--filters %r: expected e.g. '0-5', '1,4,9' or 'all' (a range runs upwards)"
                         % text) from None
    return ids

"""
What an atlas folder holds, and how it is read and written safely by many
processes: atlas.json (the header: settings, views, the network's identity),
claimed under a lock; each finished task's record; each picture's .npz, PNG,
thumbnail and objective curve, written whole. A JSON file caught half written
is read again before it is called damaged.

    from filtervis.atlas import store
    header = store.read_header(out)             # None for a new folder
    records = store.read_records(out)           # {(unit, filter, view): record}
"""

import json
import math
import os
import tempfile
import time
import uuid
from dataclasses import asdict

from PIL import Image
import numpy as np

from filtervis.atlas.views import Task, check_views, parse_view, unit_folder, view_suffix
from filtervis.util import files
from filtervis.util import pictures

# 2: the header names the network by its weights' md5 and its preprocessing, and files by name, not path.
# 3: the settings hold the views and the diversity weight; records and catalog entries hold views.
FORMAT = 3
# A format-2 atlas is read as one of channel views only (and upgraded when a run claims it).
OLD_FORMAT = 2
THUMB_SIDE = 96
# A picture counts as dead on the page when its filter never had a gradient,
# or when it cannot see at least this share of it (measures.dead_fraction);
# the latter not in the neuron view, whose unit sees only its receptive field.
DEAD_PICTURE = 0.5
ATLAS_FILE = 'atlas.json'
# Held by a run that adds views to atlas.json, for the moment it rewrites it.
LOCK_FILE = '.atlas.lock'
LOCK_SECONDS = 60


def read_json(path, who='', attempts=5):
    """The JSON object in `path` (dict); ValueError naming the file when it is not one.

    Every file of an atlas is written whole (files.write_atomic), but a person
    or another tool may rewrite atlas.json in place, and a reader that comes
    in between sees it empty or cut short. So a file that does not parse is
    read again a few times (0.1, 0.2, 0.4, 0.8 s apart) before it is called
    damaged. who: how the error names the reader, e.g. 'this worker (pid 12)'.
    """
    for attempt in range(attempts):
        with open(path, 'rb') as f:
            data = f.read()
        try:
            value = json.loads(data.decode('utf8'))    # a cut in a multi-byte character is damage too
            if isinstance(value, dict):
                return value
            kinds = {list: 'array', str: 'string', bool: 'boolean', type(None): 'null'}
            error = 'a JSON %s, not an object' % kinds.get(type(value), 'number')
        except ValueError as problem:                   # UnicodeDecodeError is a ValueError
            error = problem
        if attempt == attempts - 1:
            raise ValueError('%s%s is damaged: it is not a JSON object (%s, %d bytes); restore it, or render into '
                             'another folder' % (who + ' finds that ' if who else '', path, error, len(data)))
        time.sleep(0.1 * 2 ** attempt)


def read_records(out):
    """Every task record under out: list of dict, in a fixed order (unit folder, then file name).

    A record of a format-2 atlas (one picture per filter, no view) is read as
    one of the channel view, in today's form.
    """
    records = []
    for name in sorted(os.listdir(out)):
        folder = os.path.join(out, name)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.startswith('task-') and name.endswith('.json'):
                record = read_json(os.path.join(folder, name))
                if 'view' not in record:
                    record = dict(record, view='channel', entries=[
                        {'layer': e['layer'], 'layer_index': e['layer_index'], 'filter': e['filter'],
                         'view': 'channel', 'pictures': [{k: v for k, v in e.items()
                                                          if k not in ('layer', 'layer_index', 'filter')}]}
                        for e in record['entries']])
                records.append(record)
    return records


def pending(tasks, done):
    """The tasks narrowed to their filters not in `done` (a set of (layer, filter, view)); empty ones dropped."""
    left = []
    for task in tasks:
        ids = tuple(f for f in task.filters if (task.layer, f, task.view) not in done)
        if ids:
            left.append(Task(task.layer_index, task.layer, ids, task.view))
    return left


def done_views(out):
    """{(layer, filter, view)} of every finished view of a filter under out."""
    return {(entry['layer'], entry['filter'], record['view'])
            for record in read_records(out) for entry in record['entries']}


def picture_of(pixels):
    """A PIL image of uint8 pixels [H, W, 3] (RGB) or [H, W, 1] (greyscale)."""
    return Image.fromarray(pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels)


def _png(image):
    """The picture of an image [H, W, C], scaled to 0..255 by its own min and max (pictures.normalize_image)."""
    return picture_of(np.round(pictures.normalize_image(image) * 255).astype(np.uint8))


def save_image(path, picture, format, **options):
    files.write_atomic(path, lambda f: picture.save(f, format=format, **options))


def objective_svg(objectives, width=240, height=100):
    """A line chart of objectives (float [iters]) as SVG text, with its lowest and highest value.

    The page shows it at 200 px wide, under its picture: near its own size, so that its 11 px text stays legible.
    """
    values = np.nan_to_num(np.asarray(objectives, np.float64))
    low, high = float(values.min()), float(values.max())
    span = high - low if high - low > 1e-12 else 1.0
    left, right, top, bottom = 48, width - 8, 8, height - 22
    every = max(1, len(values) // (right - left))
    steps = list(range(0, len(values), every)) + ([len(values) - 1] if (len(values) - 1) % every else [])
    xs = [left + (right - left) * (i / max(1, len(values) - 1)) for i in steps]
    ys = [bottom - (bottom - top) * (values[i] - low) / span for i in steps]
    points = ' '.join('%.1f,%.1f' % (x, y) for x, y in zip(xs, ys))
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
            'font-family="sans-serif" font-size="11">'
            '<rect width="100%%" height="100%%" fill="#fff"/>'
            '<path d="M%d %dV%dH%d" fill="none" stroke="#888"/>'
            '<polyline points="%s" fill="none" stroke="#1565c0" stroke-width="1.5"/>'
            '<text x="%d" y="%d" text-anchor="end">%.4g</text><text x="%d" y="%d" text-anchor="end">%.4g</text>'
            '<text x="%d" y="%d">step 1</text><text x="%d" y="%d" text-anchor="end">step %d</text></svg>'
            % (width, height, width, height, left, top, bottom, right, points,
               left - 4, top + 8, high, left - 4, bottom, low,
               left, height - 6, right, height - 6, len(values)))


def number_text(value):
    """A measure for JSON: 5 significant digits, None for NaN, 0.0 for -0.0 (a negative view's dead filter)."""
    value = float(value)
    return None if math.isnan(value) else float('%.5g' % value) + 0.0


def picture_base(layer_index, layer, feature_id, view, group=0):
    """A picture's files under OUT, without their ending: UNIT/NNNN, UNIT/NNNN-negative, UNIT/NNNN-diversity4-2."""
    return '%s/%04d%s' % (unit_folder(layer_index, layer), feature_id,
                          view_suffix(view, group if parse_view(view).diversity else None))


def write_picture(out, base, image, objectives, no_gradient, values, whole=True):
    """Write one picture's files (base: picture_base()), each atomically; returns its catalog entry (dict).

    image: float32 [size, size, C] ~0..255; objectives: float32 [iters];
    values: its measures (measures.measure_objectives, one picture's), and for a class picture its
      verdict (top1, top1_probability, target_probability, jitter_kept);
    whole: whether its objective looks at the whole picture, so that a large
    dead fraction makes it dead (not so a neuron's).
    files.WriteError (naming the file and the cause) when one cannot be written.
    """
    path = os.path.join(out, base)
    files.write_atomic(path + '.npz', lambda f: np.savez(f, image=image, objectives=objectives,
                                                         dead=np.bool_(no_gradient)))
    picture = _png(image)
    save_image(path + '.png', picture, 'PNG')
    side = min(THUMB_SIDE, picture.width)
    save_image(path + '-thumb.jpg', picture.resize((side, side), Image.LANCZOS), 'JPEG', quality=85)
    svg = objective_svg(objectives).encode('utf8')
    files.write_atomic(path + '-objective.svg', lambda f: f.write(svg))
    dead_fraction = number_text(values['dead_fraction'])
    entry = {'png': base + '.png', 'thumb': base + '-thumb.jpg', 'curve': base + '-objective.svg',
             'npz': base + '.npz',
             'activation': number_text(values['activation']), 'dead_fraction': dead_fraction,
             'blur_robustness': number_text(values['blur_robustness']),
             'no_gradient': bool(no_gradient), 'dead': bool(no_gradient) or whole and dead_fraction >= DEAD_PICTURE,
             'objective': number_text(objectives[-1])}
    # A class picture's verdict (verdict.verdict): what the network sees in it, and how robustly.
    if 'top1' in values:
        entry['top1'] = int(values['top1'])
        for key in ('top1_probability', 'target_probability', 'jitter_kept'):
            entry[key] = number_text(values[key])
    return entry


def check_writable(out):
    """OSError naming `out` unless it is, or can be made as, a folder this process writes into. Creates nothing."""
    probe = os.path.abspath(out)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise NotADirectoryError('cannot write the atlas into %s: %s is not a folder' % (out, probe))
    try:
        # os.access says yes to root even on a read-only mount; creating a file is the real test.
        fd, path = tempfile.mkstemp(dir=probe, prefix='.atlas-probe-')
        os.close(fd)
        os.remove(path)
    except OSError as error:
        raise PermissionError('cannot write the atlas into %s: %s is not writable (%s)'
                              % (out, probe, error.strerror)) from None


def make_header(net, settings, command, weights=None):
    """What OUT/atlas.json records about a run (dict), before claim() gives it an atlas_id.

    net: the network.Network; its identity is the weights' md5 (net.md5) and
      the preprocessing inside its graph (net.preprocess, None when unknown):
      the same h5 weights under another preprocessing make other pictures.
    settings: checked Settings; command: the visualize.py command that
      renders one filter the same way (visualize_command), shown on the page;
      weights: the path of the h5 file the graph was built from, if any.
    Files are kept by name only: the page travels to other machines.
    """
    return {'format': FORMAT, 'settings': dict(asdict(settings), views=list(settings.views)), 'weights_md5': net.md5, 'preprocess': net.preprocess,
            'description': net.description, 'weights': os.path.basename(weights) if weights else None,
            'model': os.path.basename(net.path) if net.path else None, 'command': command}


def header_differences(there, header):
    """What makes two atlas.json headers (dicts) render other pictures: list of text, empty when they agree.

    The views are no such difference: a run may add views (claim()).
    """
    if there.get('format') != FORMAT:
        return ['format: %r there, %d now (the atlas was made by another version of atlas.py)'
                % (there.get('format'), FORMAT)]
    differences = ['%s: %r there, %r now' % (key, there.get('settings', {}).get(key), value)
                   for key, value in header['settings'].items()
                   if key != 'views' and there.get('settings', {}).get(key) != value]
    if there.get('weights_md5') != header['weights_md5']:
        differences.append('weights md5: %s there (%s), %s now (%s)' % (
            there.get('weights_md5'), there.get('description'), header['weights_md5'], header['description']))
    if there.get('preprocess') != header['preprocess']:
        differences.append('preprocess: %r there, %r now' % (there.get('preprocess'), header['preprocess']))
    return differences


def without_views(header):
    """A header (dict) without its settings' views: what must stay the same while runs add views."""
    return dict(header, settings={k: v for k, v in header.get('settings', {}).items() if k != 'views'})


def upgraded(there, header=None):
    """A format-2 header (dict) as format 3: channel views only, and the diversity weight of `header` (the
    run's: the old atlas has no diversity picture to disagree with), else None. Other headers as they are."""
    if there.get('format') != OLD_FORMAT:
        return there
    weight = header['settings']['diversity_weight'] if header else None
    return dict(there, format=FORMAT, settings=dict(there.get('settings', {}), views=['channel'],
                                                    diversity_weight=weight))


def claim(out, header):
    """Create OUT/atlas.json from header (dict), or check the one there; ValueError on other settings or weights.

    Returns the header found or made there: what the run sends its workers.
    A new atlas gets a random atlas_id, so that a worker that sees another
    folder with the same settings at that path tells them apart. Views that
    the atlas.json there lacks are added to it (its views are those of every
    run so far, in page order); a format-2 atlas.json is upgraded. Otherwise
    an atlas.json that is there already is only read: a refused run changes
    nothing in OUT. Two shards starting at once race here: the file is
    linked into place (files.link_new), so exactly one wins and the other
    compares against it; runs adding views take a lock (OUT/.atlas.lock) so
    that none loses another's.
    """
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, ATLAS_FILE)
    if not os.path.exists(path):
        files.link_new(path, _header_bytes(dict(header, atlas_id=uuid.uuid4().hex)))
    written = read_json(path)
    there = upgraded(written, header)
    differences = header_differences(there, header)
    if differences:
        raise ValueError('%s was made with other settings or another network (%s); render into another folder, '
                         'or run with the settings it records' % (path, '; '.join(differences)))
    if there is not written or not set(header['settings']['views']) <= set(there['settings']['views']):
        # Only the views (and the format) change: the rest was checked above, and no run changes it.
        with files.exclusive_lock(os.path.join(out, LOCK_FILE), timeout=LOCK_SECONDS, quiet=True):
            there = upgraded(read_json(path), header)
            views = check_views(set(there['settings']['views']) | set(header['settings']['views']))
            there = dict(there, settings=dict(there['settings'], views=list(views)))
            data = _header_bytes(there)
            files.write_atomic(path, lambda f: f.write(data))
    return there


def _header_bytes(header):
    return json.dumps(header, indent=1, sort_keys=True).encode('utf8')


def read_header(out):
    """OUT/atlas.json (dict), a format-2 one as format 3 (upgraded); FileNotFoundError when OUT is no atlas."""
    path = os.path.join(out, ATLAS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError('%s does not exist: %s is not an atlas folder (make one with `python atlas.py %s`)'
                                % (path, out, out))
    return upgraded(read_json(path))

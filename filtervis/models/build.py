"""
A frozen graph built once and then reused: the graph file, its JSON stamp
beside it (what made the graph), and a lock so that two processes never
build the same file at once. VGG16 graphs built from h5 weights (vgg16.py)
and users' Keras models frozen into a cache (keras_model) both go through it.

    from filtervis.models import build
    stamp = build.build_once('models/vgg16.tfmodel', fits=lambda stamp: stamp['md5'] == md5,
                             build=lambda: (graph_def, {'md5': md5}))
    build.read_stamp('models/vgg16.tfmodel')       # {'md5': ...}, from models/vgg16.tfmodel.json

Files: GRAPH, GRAPH.json (the stamp) and GRAPH.lock (left behind on purpose,
see files.exclusive_lock). The graph is written before its stamp, each
atomically, so a crash in between leaves a graph without a matching stamp,
which the next call builds again. No TensorFlow here: build() returns the
GraphDef, which only needs SerializeToString().
"""

import hashlib
import json
import os

from filtervis.util import files

STAMP_SUFFIX = '.json'
LOCK_SUFFIX = '.lock'
# Long enough for another process to freeze a large Keras model or read 59 MB of weights.
LOCK_TIMEOUT = 600


def read_stamp(graph_path):
    """The stamp (dict) beside graph_path, or None when it is missing or not a JSON object."""
    try:
        with open(graph_path + STAMP_SUFFIX) as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def reusable_stamp(graph_path, fits, *, graph_md5=False):
    """The stamp of the graph at graph_path when fits(stamp) is true and the graph is there, else None.

    fits(stamp) -> bool says whether the stamp records what the caller
    would build now; it may raise (a refusal the stamp records).
    graph_md5: the stamp holds the graph's md5 and the graph's bytes must
    match it, so a graph left by another build is never used.
    """
    stamp = read_stamp(graph_path)
    if stamp is None or not fits(stamp):
        return None
    if not graph_md5:
        return stamp if os.path.exists(graph_path) else None
    try:
        actual = files.md5sum(graph_path)
    except OSError:
        return None
    return stamp if actual == stamp.get('graph_md5') else None


def write_graph(graph_path, graph_def, stamp, *, graph_md5=False):
    """Write graph_def (a tf.GraphDef) to graph_path and stamp (dict) beside it; return the stamp written.

    graph_md5: record the md5 of the graph's bytes in the stamp, for
    reusable_stamp(graph_md5=True) to check. The folder must exist.
    """
    data = graph_def.SerializeToString()
    if graph_md5:
        stamp = dict(stamp, graph_md5=hashlib.md5(data).hexdigest())
    # An old stamp must not outlive the graph it described, even for the moment between the two writes.
    files.remove(graph_path + STAMP_SUFFIX)
    files.write_atomic(graph_path, lambda f: f.write(data))
    text = json.dumps(stamp, indent=1).encode('utf8')
    files.write_atomic(graph_path + STAMP_SUFFIX, lambda f: f.write(text))
    return stamp


def build_once(graph_path, fits, build, *, graph_md5=False, force=False, quiet=False):
    """The stamp of a graph at graph_path that fits, built by build() unless one is there; under a lock.

    fits(stamp) -> bool: whether a stamp records what build() would make.
    build() -> (graph_def, stamp dict): called at most once, with the lock
      held, and only when no fitting graph is there (another process may
      have built it while this one waited).
    graph_md5: see reusable_stamp. force: build even when a graph fits.
    The folder of graph_path must exist; files.LockError when another
    process holds the lock for more than LOCK_TIMEOUT seconds.
    """
    if not force:
        stamp = reusable_stamp(graph_path, fits, graph_md5=graph_md5)
        if stamp is not None:
            return stamp
    with files.exclusive_lock(graph_path + LOCK_SUFFIX, timeout=LOCK_TIMEOUT, quiet=quiet):
        if not force:
            stamp = reusable_stamp(graph_path, fits, graph_md5=graph_md5)
            if stamp is not None:
                return stamp
        graph_def, stamp = build()
        return write_graph(graph_path, graph_def, stamp, graph_md5=graph_md5)


def cache_folders(path, folder_name):
    """Cache folders for a model file, in order of preference: `folder_name` beside it, then
    ~/.cache/filtervis/folder_name/KEY (XDG_CACHE_HOME wins), KEY naming the model's folder so that two
    models of one name in different folders are kept apart."""
    parent = os.path.dirname(os.path.normpath(path))
    home_cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    key = hashlib.md5(parent.encode()).hexdigest()[:12]
    return [os.path.join(parent, folder_name), os.path.join(home_cache, 'filtervis', folder_name, key)]


def writable_folder(candidates, what='the frozen graph'):
    """The first candidate folder that exists or can be made and is writable (made here); files.WriteError
    naming each candidate and why not."""
    errors = []
    for folder in candidates:
        try:
            os.makedirs(folder, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
            errors.append('%s: not writable' % folder)
        except OSError as error:
            errors.append('%s: %s' % (folder, error.strerror or error))
    raise files.WriteError('cannot make a cache folder for %s (%s); pass cache_dir= a writable folder'
                           % (what, '; '.join(errors)))

"""
Which files are Keras models, what they hold, and whether safe mode lets them
load: all read from the file's bytes and its JSON config, before Keras (or
TensorFlow) sees the file, so a refused file runs none of its code.

    from filtervis.models.keras_model import formats
    formats.is_model_path('fer.hdf5')              # True: a Keras file (load() says when it holds weights only)
    formats.model_format('fer.hdf5')               # 'h5' (or 'keras', 'savedmodel'); ValueError saying why not
    formats.refusal('my.keras', 'keras', known_layer=lambda kind: kind in ('Conv2D', 'Dense'))
    formats.unsafe_reason(config)                  # 'Keras safe mode refuses it: layer 'l' is a Lambda ...'
"""

import hashlib
import json
import os
import zipfile

from filtervis.util import files

UNSAFE_HINT = ('opt in with --unsafe (command line) or unsafe=True (Python) only if you trust the file: '
               'that runs code from it')


def is_model_path(path):
    """True for what load() takes or can say the most about: a .keras file, an .h5/.hdf5 file, a SavedModel folder.

    False for a .tfmodel and anything else. An h5 that holds weights only
    (model.save_weights, a VGG16 weight file), a .keras/.h5 path that does
    not exist, or an h5 that is not HDF5 at all, counts as meant for load(),
    which then says what it is and what to do.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, 'saved_model.pb'))
    return os.path.splitext(path)[1].lower() in ('.keras', '.h5', '.hdf5')


def _h5_kind(path):
    """'model' (an h5 with a model_config), 'weights' (HDF5 without one: model.save_weights, Keras 2 or 3, or
    a VGG16 weight file) or 'unreadable'."""
    import h5py
    try:
        with h5py.File(path, 'r') as h5:
            return 'model' if 'model_config' in h5.attrs else 'weights'
    except OSError:
        return 'unreadable'


def model_format(path):
    """'keras', 'h5' or 'savedmodel' for a model path; FileNotFoundError / ValueError with the next step."""
    name = os.path.basename(os.path.normpath(path))
    if not os.path.exists(path):
        raise FileNotFoundError('no Keras model at %s; check the path' % path)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, 'saved_model.pb')):
            return 'savedmodel'
        raise ValueError('%s is a folder without saved_model.pb, so not a SavedModel; give a .keras or .h5 '
                         'model file or a SavedModel folder' % path)
    extension = os.path.splitext(path)[1].lower()
    if extension == '.keras':
        try:
            with zipfile.ZipFile(path) as archive:
                if 'config.json' in archive.namelist():
                    return 'keras'
        except (zipfile.BadZipFile, OSError):
            pass
        raise ValueError('%s is not a Keras model file (no zip archive with a config.json: empty or corrupt); '
                         'save the model again with model.save(%r)' % (path, name))
    if extension in ('.h5', '.hdf5'):
        kind = _h5_kind(path)
        if kind == 'model':
            return 'h5'
        if kind == 'weights':
            raise ValueError("%s holds weights only (model.save_weights, no architecture), not a whole model: "
                             "save the whole model with model.save('m.keras') and pass that file (VGG16 weights "
                             "go with --weights %s)" % (name, path))
        raise ValueError('%s is not a readable HDF5 file (corrupt, or not a model); save the model again '
                         'with model.save(%r)' % (path, name))
    raise ValueError('%s is not a Keras model: expected a .keras or .h5/.hdf5 file or a SavedModel folder '
                     '(a .tfmodel graph is loaded without keras_model)' % path)


def model_md5(path):
    """Hex md5 of a model file, or for a SavedModel folder of its saved_model.pb and variables files."""
    if not os.path.isdir(path):
        return files.md5sum(path)
    digest = hashlib.md5()
    variables = os.path.join(path, 'variables')
    names = ['saved_model.pb'] + sorted(os.path.relpath(os.path.join(folder, name), path)
                                        for folder, _, names in os.walk(variables) for name in names)
    for name in names:
        # The name goes in too, so that moving bytes between files changes the sum.
        digest.update(name.encode() + b'\0' + files.md5sum(os.path.join(path, name)).encode())
    return digest.hexdigest()


def model_config(path, fmt):
    """The model's config (parsed JSON) from the file, read without Keras; None for a SavedModel."""
    if fmt == 'keras':
        with zipfile.ZipFile(path) as archive:
            text = archive.read('config.json')
    elif fmt == 'h5':
        import h5py
        with h5py.File(path, 'r') as h5:
            text = h5.attrs['model_config']
    else:
        return None
    try:
        return json.loads(text.decode('utf8') if isinstance(text, bytes) else text)
    except ValueError as error:
        raise ValueError('%s: its model config is not valid JSON (%s); save the model again'
                         % (path, error)) from None


def refusal(path, fmt, known_layer=None):
    """Why safe mode refuses the model at path (str), or None; a SavedModel holds no config to refuse."""
    config = model_config(path, fmt)
    return unsafe_reason(config, known_layer) if config is not None else None


def unsafe_reason(config, known_layer=None):
    """Why safe mode refuses a model config (str), or None.

    A Lambda layer holds Python code; a class whose `module` is outside Keras
    (Keras 3 configs) or, in a legacy config without modules, a layer class
    for which known_layer(class_name) is False, is custom code.
    """
    found = []

    def visit(value, in_layers):
        if isinstance(value, dict):
            kind = value.get('class_name')
            label = (value.get('config') or {}).get('name') if isinstance(value.get('config'), dict) else None
            module = value.get('module')
            if kind == 'Lambda':
                found.append("layer %r is a Lambda, whose Python code is stored in the file" % label)
            elif isinstance(kind, str) and isinstance(module, str) and not module.startswith('keras'):
                found.append('%s is a custom class (module %s)' % ('%s %r' % (kind, label) if label else kind, module))
            elif (in_layers and isinstance(kind, str) and 'module' not in value and known_layer is not None
                  and not known_layer(kind)):
                found.append('layer %r is of class %s, unknown to Keras (custom code)' % (label, kind))
            for key, item in value.items():
                visit(item, key == 'layers')
        elif isinstance(value, list):
            for item in value:
                visit(item, in_layers)

    visit(config, False)
    if not found:
        return None
    more = ' (and %d more)' % (len(found) - 1) if len(found) > 1 else ''
    return 'Keras safe mode refuses it: %s%s' % (found[0], more)


def refused(name, reason):
    """The ValueError a safe load of the model `name` raises for `reason` (from unsafe_reason)."""
    return ValueError('%s: %s; %s' % (name, reason, UNSAFE_HINT))

"""`pip install` of the package into a new venv, used from a folder outside the clone.

The wheel is built from a copy of the clone (so that the build writes nothing
into it) with pip's own build backend call, offline (--no-index,
--no-build-isolation: the setuptools beside pip builds it). The new venv sees
the test process's packages (TensorFlow, numpy, ...) through one .pth line,
so nothing is downloaded; the package itself comes from the wheel only.
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from builders import ROOT, random_weights
from filtervis.models import vgg16

pytestmark = pytest.mark.slow
SCRIPTS = ('filtervis-visualize', 'filtervis-examples', 'filtervis-atlas', 'filtervis-download')
FER = os.path.join(ROOT, '..', 'shared', 'models', 'fer-emotion-minixception.hdf5')


def clone_files(root=ROOT):
    """The clone's files as git sees them (tracked, and new ones that .gitignore does not hide)."""
    listed = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard', '-z'], cwd=root,
                            capture_output=True, check=True).stdout.decode()
    return [name for name in listed.split('\0') if name and os.path.isfile(os.path.join(root, name))]


def run(command, cwd, env, timeout=600):
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    if shutil.which('git') is None or not os.path.isdir(os.path.join(ROOT, '.git')):
        pytest.skip('needs the clone as a git checkout')
    copy = tmp_path_factory.mktemp('clone')
    for name in clone_files():
        os.makedirs(os.path.dirname(os.path.join(copy, name)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, name), os.path.join(copy, name))
    dist = tmp_path_factory.mktemp('dist')
    built = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-index', '--no-build-isolation',
                            '-w', str(dist), str(copy)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    wheels = [name for name in os.listdir(dist) if name.endswith('.whl')]
    assert len(wheels) == 1, wheels
    return os.path.join(dist, wheels[0])


@pytest.fixture(scope='module')
def venv(wheel, tmp_path_factory):
    """(bin folder, environment) of a new venv with the wheel installed and nothing else of its own."""
    home = tmp_path_factory.mktemp('venv')
    folder = str(home / 'venv')
    subprocess.run([sys.executable, '-m', 'venv', folder], check=True, timeout=300)
    bin_folder = os.path.join(folder, 'bin')
    installed = subprocess.run([os.path.join(bin_folder, 'python'), '-m', 'pip', 'install', '--no-deps', '--no-index',
                                wheel], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    env = {key: value for key, value in os.environ.items() if not key.startswith(('PYTHON', 'VGG16'))}
    env.update(PATH=bin_folder + os.pathsep + env.get('PATH', ''), HOME=str(home / 'home'),
               XDG_CACHE_HOME=str(home / 'cache'), MPLBACKEND='Agg')
    return bin_folder, env


def site_packages(bin_folder):
    return subprocess.run([os.path.join(bin_folder, 'python'), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                          capture_output=True, text=True, check=True).stdout.strip()


def listing(folder):
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names
                  if '__pycache__' not in d)


def test_a_console_script_without_tensorflow_says_what_to_install_in_one_line(venv, tmp_path):
    bin_folder, env = venv
    # Before the venv can see the test process's packages: no TensorFlow there.
    result = run([os.path.join(bin_folder, 'filtervis-visualize'), '--help'], str(tmp_path), env)
    assert result.returncode == 2
    lines = result.stderr.strip().split('\n')
    assert len(lines) == 1, result.stderr
    assert 'tensorflow' in lines[0] and 'pip install' in lines[0]


def test_the_installed_package_runs_from_outside_the_clone(venv, tmp_path):
    bin_folder, env = venv
    purelib = site_packages(bin_folder)
    # The test process's packages (TensorFlow, numpy, ...), seen after the venv's own.
    with open(os.path.join(purelib, 'test-process-packages.pth'), 'w') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')
    before = listing(purelib)
    work = str(tmp_path)
    python = os.path.join(bin_folder, 'python')

    code = ('import filtervis, os; from filtervis.models import vgg16; '
            'print(os.path.dirname(filtervis.__file__)); print(vgg16.data_dir); '
            'print(callable(filtervis.ascend), callable(filtervis.load_keras), callable(filtervis.VGG16))')
    result = run([python, '-c', code], work, env)
    assert result.returncode == 0, result.stderr
    package_folder, data_dir, callables = result.stdout.strip().split('\n')
    assert package_folder == os.path.join(purelib, 'filtervis')
    # An installed package keeps its models in the user's cache, never in site-packages.
    assert data_dir == os.path.join(env['XDG_CACHE_HOME'], 'filtervis', 'models')
    assert callables == 'True True True'

    for script in SCRIPTS:
        result = run([os.path.join(bin_folder, script), '--help'], work, env)
        assert result.returncode == 0, (script, result.stderr)
        assert result.stdout.startswith('usage: %s' % script), result.stdout[:200]

    # A picture from a model file, as a user would make it.
    model = os.path.join(work, 'tiny.tfmodel')
    with open(model, 'wb') as f:
        f.write(vgg16.build_graph_def(random_weights(), 'unit').SerializeToString())
    result = run([os.path.join(bin_folder, 'filtervis-visualize'), '--model', model, '--layer', 'conv2_1',
                  '--filters', '0-1', '--iters', '3', '--size', '32', '--out', 'tiny.png', '--quiet'], work, env)
    assert result.returncode == 0, result.stderr
    assert open(os.path.join(work, 'tiny.png'), 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    if os.path.exists(FER):
        shutil.copyfile(FER, os.path.join(work, 'fer.hdf5'))
        result = run([os.path.join(bin_folder, 'filtervis-visualize'), '--model', 'fer.hdf5', '--preprocess', 'tf',
                      '--filters', '0-1', '--iters', '3', '--out', 'fer.png', '--quiet'], work, env)
        assert result.returncode == 0, result.stderr
        assert open(os.path.join(work, 'fer.png'), 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
        # The frozen graph's cache sits beside the model.
        assert any(name.endswith('.tfmodel') for name in os.listdir(os.path.join(work, 'keras-cache')))
    # Nothing was written into site-packages but Python's own bytecode caches.
    assert listing(purelib) == before


def test_pip_refuses_a_python_older_than_the_supported_one(wheel, tmp_path):
    # Any Python 3.9 with pip: on PATH, or one that pyenv keeps.
    found = [shutil.which('python3.9')] + sorted(glob.glob(os.path.expanduser('~/.pyenv/versions/3.9*/bin/python3.9')))
    working = [p for p in found if p and subprocess.run([p, '-m', 'pip', '--version'], capture_output=True).returncode == 0]
    if not working:
        pytest.skip('no Python 3.9 with pip on this machine')
    old = working[0]
    result = subprocess.run([old, '-m', 'pip', 'install', '--no-deps', '--no-index', '--target', str(tmp_path / 't'),
                             wheel], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "requires a different Python: 3.9" in result.stdout + result.stderr and '>=3.10' in result.stdout + result.stderr

"""A first run reads cleanly: TensorFlow's start-up lines are held back, an offline download ends short.

The command lines run as real subprocesses, with TF_CPP_MIN_LOG_LEVEL unset,
because what is tested is exactly what a person sees in the terminal.
"""
import os
import socket
import subprocess
import sys

import pytest

from filtervis.cli import download as download_cli
from filtervis.util import download
from filtervis.models import vgg16
from builders import ROOT, random_weights

PYTHON_SNIPPET_NOISE = '''
import os, sys
from filtervis.util import quiet
try:
    with quiet.stderr_captured(show=%s):
        os.write(2, b"noise from C++\\n")
        %s
except RuntimeError:
    pass
print("done")
'''


def run(args, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    # Bytes, then decoded without newline translation: tqdm redraws its bar
    # with carriage returns on one terminal line, which text mode would split.
    result = subprocess.run([sys.executable] + args, cwd=str(tmp_path), capture_output=True, timeout=300, env=env)
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    return result


def lines_of(result):
    return [line for line in (result.stdout + result.stderr).split('\n') if line.strip()]


@pytest.fixture(scope='module')
def tiny_model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('quiet') / 'vgg16.tfmodel'
    path.write_bytes(vgg16.build_graph_def(random_weights(), 'unit').SerializeToString())
    return str(path)


@pytest.mark.slow
def test_visualize_prints_only_its_bar_and_the_saved_line(tiny_model_file, tmp_path):
    result = run([os.path.join(ROOT, 'visualize.py'), '--model', tiny_model_file, '--iters', '2', '--size', '32',
                  '--seed', '0', '--out', 'f.png'], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = lines_of(result)
    assert len(lines) <= 2, 'expected the bar and one "saved" line, got:\n' + '\n'.join(lines)
    assert result.stdout == 'saved 6 filters of conv3_2 to f.png\n'
    text = result.stdout + result.stderr
    for noise in ('oneDNN', 'cuda', 'absl', 'cpu_feature_guard', 'deprecated'):
        assert noise not in text


@pytest.mark.slow
def test_verbose_shows_what_was_held_back(tiny_model_file, tmp_path):
    quiet_run = run([os.path.join(ROOT, 'visualize.py'), '--model', tiny_model_file, '--iters', '1',
                     '--size', '32', '--quiet', '--out', 'f.png'], tmp_path)
    verbose_run = run([os.path.join(ROOT, 'visualize.py'), '--model', tiny_model_file, '--iters', '1',
                       '--size', '32', '--quiet', '--verbose', '--out', 'f.png'], tmp_path)
    assert quiet_run.returncode == verbose_run.returncode == 0, verbose_run.stderr
    assert lines_of(quiet_run) == []
    # disable_v2_behavior's deprecation notice is printed by every TensorFlow 2.x on import.
    assert 'deprecated' in verbose_run.stderr and len(lines_of(verbose_run)) >= 3


@pytest.mark.parametrize('show, failing, shown', [
    ('False', 'pass', False),                              # quiet and fine: held back
    ('True', 'pass', True),                                # --verbose: shown
    ('False', 'raise RuntimeError("import failed")', True),  # a failure: never hidden
])
def test_the_capture_is_shown_on_failure_or_when_asked(tmp_path, show, failing, shown):
    code = PYTHON_SNIPPET_NOISE % (show, failing)
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == 'done'
    assert ('noise from C++' in result.stderr) == shown


def no_name_resolves(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, 'Name or service not known')


def test_offline_download_names_each_url_once_and_says_what_to_do(monkeypatch, capsys, tmp_path):
    # No network at all, as on a machine without internet: every name lookup
    # fails inside urllib3's real connection code.
    monkeypatch.setattr(socket, 'getaddrinfo', no_name_resolves)
    status = download_cli.main(['--dir', str(tmp_path)])
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).split('\n') if line.strip()]
    assert status == 1
    assert len(lines) < 10, '\n'.join(lines)
    source = download.SOURCES[download.DEFAULT_SOURCE]
    for url in source.urls:
        assert sum(url in line for line in lines) == 1
    assert 'no network: could not resolve storage.googleapis.com' in captured.err
    assert 'save it as %s' % os.path.join(str(tmp_path), source.filename) in captured.err
    assert 'python download.py --weights FILE.h5' in captured.err
    assert 'Traceback' not in captured.err
    # Only the lock file that guards the folder (kept, as after any download) is there: no weights, no .part.
    assert [name for name in os.listdir(tmp_path) if not name.endswith('.lock')] == []


def test_a_name_that_does_not_resolve_is_not_retried(monkeypatch, tmp_path):
    monkeypatch.setattr(socket, 'getaddrinfo', no_name_resolves)
    urls = ['http://weights.example.test/w.h5', 'http://mirror.example.test/w.h5']
    with pytest.raises(download.DownloadError) as caught:
        download.fetch(urls, str(tmp_path / 'w.h5'), retries=3, backoff=30, quiet=True)
    # One attempt per URL: with a 30 s backoff, a retry would also take minutes.
    assert caught.value.attempts == [(urls[0], 'no network: could not resolve weights.example.test'),
                                     (urls[1], 'no network: could not resolve mirror.example.test')]

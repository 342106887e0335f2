"""files.py: atomic writes, their errors, the race for a new file, and output checks."""
import os
import subprocess
import sys
import threading
import time

import pytest

from filtervis.util import files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_bytes(path):
    with open(path, 'rb') as f:
        return f.read()


def test_two_writers_of_one_path_each_leave_a_whole_file(tmp_path):
    # Shards on two machines (or two containers, both pid 1) may write the same
    # catalog at once: each writer needs a temporary name of its own, and the
    # final file must be one writer's bytes, never a mix.
    target = str(tmp_path / 'catalog.json')
    started = threading.Barrier(2)
    errors = []

    def writer(byte):
        def write(file):
            started.wait()
            for _ in range(50):
                file.write(byte * 1000)
                time.sleep(0.001)
        try:
            files.write_atomic(target, write)
        except Exception as error:  # noqa: BLE001 -- any failure is the finding
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(b,)) for b in (b'A', b'B')]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    data = read_bytes(target)
    assert data in (b'A' * 50000, b'B' * 50000)
    assert os.listdir(tmp_path) == ['catalog.json']
    assert oct(os.stat(target).st_mode & 0o777) == oct(0o666 & ~files._UMASK)


def test_a_write_past_the_file_size_limit_names_the_file_and_the_cause_and_leaves_nothing(tmp_path):
    # ulimit -f is in blocks of 1024 bytes; the kernel refuses the write past it (EFBIG).
    target = str(tmp_path / 'big.bin')
    code = ('import signal, sys; from filtervis.util import files; signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n'
            'try:\n    files.write_atomic(sys.argv[1], lambda f: f.write(b"x" * 200000))\n'
            'except OSError as error:\n    print(error)\n')
    result = subprocess.run(['bash', '-c', 'ulimit -f 64; "$0" -c "$1" "$2"', sys.executable, code, target],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith('cannot write %s: File too large' % target) and 'ulimit -f' in line, line
    assert os.listdir(tmp_path) == []


def test_a_failing_writer_leaves_nothing_and_its_error_passes_through(tmp_path):
    target = str(tmp_path / 'x.png')

    def write(file):
        file.write(b'half')
        raise RuntimeError('the plot failed')
    with pytest.raises(RuntimeError, match='the plot failed'):
        files.write_atomic(target, write)
    assert os.listdir(tmp_path) == []


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(files.WriteError, match=r'cannot write .*nowhere/x.bin: No such file or directory'):
        files.write_atomic(str(tmp_path / 'nowhere' / 'x.bin'), lambda f: f.write(b'x'))


def test_link_new_lets_exactly_one_of_many_racers_create_the_file(tmp_path):
    target = str(tmp_path / 'atlas.json')
    start = threading.Barrier(8)
    won = []

    def racer(i):
        start.wait()
        won.append((i, files.link_new(target, b'%d' % i * 1000)))
    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, w in won if w]
    assert len(winners) == 1
    assert read_bytes(target) == b'%d' % winners[0] * 1000
    assert os.listdir(tmp_path) == ['atlas.json']


def test_check_output_says_what_is_wrong(tmp_path):
    (tmp_path / 'a_file').write_text('x')
    files.check_output(str(tmp_path / 'ok.png'))
    for path, message in ((str(tmp_path), 'it is a folder'),
                          (str(tmp_path / 'no' / 'x.png'), 'does not exist'),
                          (str(tmp_path / 'a_file' / 'x.png'), 'is a file, not a folder')):
        with pytest.raises(OSError, match=message):
            files.check_output(path)

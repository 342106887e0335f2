"""download.fetch against a real HTTP server on 127.0.0.1 that misbehaves on purpose.

No mocks and no network beyond localhost: tests/httpserver.py serves bytes,
drops connections, ignores Range, fails with 500, stalls, and logs every
request so a test can assert what was sent (or that nothing was).

    python -m pytest tests/test_download.py -q     # ~10 s, most of it importing TensorFlow in conftest
"""
import fcntl
import hashlib
import os
import random
import select
import socket
import subprocess
import sys
import time

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
for folder in (REPO_ROOT, TESTS_DIR):
    if folder not in sys.path:
        sys.path.insert(0, folder)

from filtervis.util import download
from filtervis.cli import download as download_cli  # noqa: E402
from filtervis.util import files  # noqa: E402
from httpserver import Behaviour, LocalServer  # noqa: E402

PAYLOAD = random.Random(1234).randbytes(200_000)
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
NAME = 'weights.h5'
# Small enough for a whole test file in seconds, large enough to time out quickly on a stall.
FAST = dict(quiet=True, timeout=(2, 2), retries=3, backoff=0.01)


@pytest.fixture
def server():
    with LocalServer() as local_server:
        yield local_server


@pytest.fixture
def target(tmp_path):
    """Final path of the download, in a folder that does not exist yet."""
    return str(tmp_path / 'models' / NAME)


def closed_port_url(path='/gone'):
    """A URL whose port refuses connections: bound, then released."""
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    return f'http://127.0.0.1:{port}{path}'


def read_bytes(path):
    with open(path, 'rb') as file:
        return file.read()


def write_bytes(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as file:
        file.write(data)


def ranges(server, path):
    return [request['range'] for request in server.requests(path)]


def fetch_error(*args, **kwargs):
    with pytest.raises(download.DownloadError) as caught:
        download.fetch(*args, **kwargs)
    return caught.value


# 1. A clean download.

def test_clean_download_is_verified_and_leaves_only_the_file_and_its_lock(server, target, capsys):
    url = server.serve('/w', Behaviour(body=PAYLOAD))

    returned = download.fetch(url, target, size=len(PAYLOAD), md5=PAYLOAD_MD5, **FAST)

    assert returned == target
    assert read_bytes(target) == PAYLOAD
    # The lock stays by design (see exclusive_lock); it holds only a pid.
    assert sorted(os.listdir(os.path.dirname(target))) == [NAME, NAME + '.lock']
    assert read_bytes(target + '.lock').strip().isdigit()
    assert ranges(server, '/w') == [None]
    assert server.requests('/w')[0]['user_agent'] == download.USER_AGENT
    captured = capsys.readouterr()
    assert captured.out == '' and captured.err == ''


def test_progress_bar_shows_bytes_rate_and_time_left_unless_quiet(server, target, capsys):
    url = server.serve('/w', Behaviour(body=PAYLOAD))

    download.fetch(url, target, size=len(PAYLOAD), **{**FAST, 'quiet': False})

    bar = capsys.readouterr().err
    assert NAME in bar and '100%' in bar and '195k/195k' in bar and 'B/s' in bar and '<' in bar


# 2. Resume after a dropped connection or a leftover .part.

def test_dropped_connection_is_resumed_with_a_range_request(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD, drop_after=100_000))

    # chunk_size divides the drop point, so every byte received is on disk when it drops.
    download.fetch(url, target, size=len(PAYLOAD), md5=PAYLOAD_MD5, chunk_size=10_000, **FAST)

    assert ranges(server, '/w') == [None, 'bytes=100000-']
    assert read_bytes(target) == PAYLOAD
    assert not os.path.exists(target + '.part')


def test_dropped_connection_with_the_default_chunk_size_still_resumes(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD, drop_after=150_000))

    download.fetch(url, target, size=len(PAYLOAD), md5=PAYLOAD_MD5, **FAST)

    first, resumed = ranges(server, '/w')
    assert first is None
    # urllib3 drops a half-filled read buffer, so the resume point is a chunk boundary at or before the drop.
    offset = int(resumed.removeprefix('bytes=').rstrip('-'))
    assert 0 < offset <= 150_000 and offset % download.CHUNK_SIZE == 0
    assert read_bytes(target) == PAYLOAD


def test_leftover_part_from_an_earlier_run_is_resumed(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD))
    write_bytes(target + '.part', PAYLOAD[:50_000])

    download.fetch(url, target, size=len(PAYLOAD), md5=PAYLOAD_MD5, **FAST)

    assert ranges(server, '/w') == ['bytes=50000-']
    assert read_bytes(target) == PAYLOAD


def test_complete_leftover_part_of_unknown_size_is_confirmed_by_416(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD))
    write_bytes(target + '.part', PAYLOAD)

    download.fetch(url, target, md5=PAYLOAD_MD5, **FAST)

    assert ranges(server, '/w') == [f'bytes={len(PAYLOAD)}-']
    assert read_bytes(target) == PAYLOAD


def test_complete_leftover_part_of_known_size_needs_no_request(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD))
    write_bytes(target + '.part', PAYLOAD)

    download.fetch(url, target, size=len(PAYLOAD), md5=PAYLOAD_MD5, **FAST)

    assert server.requests('/w') == []
    assert read_bytes(target) == PAYLOAD


def test_leftover_part_longer_than_the_file_is_discarded(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD))
    write_bytes(target + '.part', PAYLOAD + b'junk')

    download.fetch(url, target, size=len(PAYLOAD), md5=PAYLOAD_MD5, **FAST)

    assert ranges(server, '/w') == [None]
    assert read_bytes(target) == PAYLOAD


# 3. Servers that do not honour Range properly.

def test_server_ignoring_range_makes_the_download_start_over(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD, drop_after=100_000, ignore_range=True))

    download.fetch(url, target, size=len(PAYLOAD), md5=PAYLOAD_MD5, chunk_size=10_000, **FAST)

    assert ranges(server, '/w') == [None, 'bytes=100000-']
    assert read_bytes(target) == PAYLOAD  # no bytes duplicated by appending a full body


def test_leftover_part_with_a_server_ignoring_range_is_overwritten(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD, ignore_range=True))
    write_bytes(target + '.part', PAYLOAD[:50_000])

    download.fetch(url, target, size=len(PAYLOAD), md5=PAYLOAD_MD5, **FAST)

    assert ranges(server, '/w') == ['bytes=50000-']
    assert read_bytes(target) == PAYLOAD


def test_206_from_the_wrong_offset_is_not_appended(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD, wrong_range_start_times=1))
    write_bytes(target + '.part', PAYLOAD[:50_000])

    download.fetch(url, target, size=len(PAYLOAD), md5=PAYLOAD_MD5, **FAST)

    assert ranges(server, '/w') == ['bytes=50000-', None]
    assert read_bytes(target) == PAYLOAD


# 4. Retries with backoff on 5xx.

def test_500_twice_then_success_retries_with_backoff(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD, fail_times=2))
    started = time.monotonic()

    download.fetch(url, target, size=len(PAYLOAD), md5=PAYLOAD_MD5, **{**FAST, 'backoff': 0.1})

    assert len(server.requests('/w')) == 3
    assert time.monotonic() - started >= 0.1 + 0.2  # backoff, then twice that
    assert read_bytes(target) == PAYLOAD


def test_500_every_time_gives_up_after_the_retries(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD, fail_times=100))

    error = fetch_error(url, target, size=len(PAYLOAD), **{**FAST, 'retries': 2})

    assert len(server.requests('/w')) == 3
    assert 'HTTP 500' in str(error) and 'gave up after 2 retries' in str(error)
    assert not os.path.exists(target) and not os.path.exists(target + '.part')


# 5. Wrong bytes.

def test_wrong_bytes_fail_the_checksum_and_are_deleted(server, target):
    wrong = bytes(reversed(PAYLOAD))
    url = server.serve('/w', Behaviour(body=wrong))

    error = fetch_error(url, target, size=len(PAYLOAD), md5=PAYLOAD_MD5, **FAST)

    message = str(error)
    assert 'checksum (md5) mismatch' in message and hashlib.md5(wrong).hexdigest() in message
    assert f'deleted {target}.part' in message
    assert not os.path.exists(target) and not os.path.exists(target + '.part')
    assert len(server.requests('/w')) == 1  # a mismatch is not retried on the same URL


def test_checksum_mismatch_on_the_primary_moves_on_to_the_mirror(server, target):
    primary = server.serve('/primary', Behaviour(body=bytes(reversed(PAYLOAD))))
    mirror = server.serve('/mirror', Behaviour(body=PAYLOAD))

    download.fetch([primary, mirror], target, size=len(PAYLOAD), md5=PAYLOAD_MD5, **FAST)

    assert read_bytes(target) == PAYLOAD
    assert len(server.requests('/primary')) == 1 and len(server.requests('/mirror')) == 1


def test_announced_size_that_differs_is_refused_without_retries(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD[:1000]))

    error = fetch_error(url, target, size=len(PAYLOAD), **FAST)

    assert 'offers 1,000 bytes, expected 200,000' in str(error)
    assert len(server.requests('/w')) == 1
    assert not os.path.exists(target)


# 6. A dead primary and a working mirror.

def test_404_primary_is_not_retried_and_the_mirror_is_used(server, target):
    primary = server.serve('/primary', Behaviour(status=404))
    mirror = server.serve('/mirror', Behaviour(body=PAYLOAD))

    download.fetch([primary, mirror], target, size=len(PAYLOAD), md5=PAYLOAD_MD5, **FAST)

    assert len(server.requests('/primary')) == 1
    assert len(server.requests('/mirror')) == 1
    assert read_bytes(target) == PAYLOAD


def test_refused_primary_is_retried_then_the_mirror_is_used(server, target):
    mirror = server.serve('/mirror', Behaviour(body=PAYLOAD))

    download.fetch([closed_port_url(), mirror], target, size=len(PAYLOAD), md5=PAYLOAD_MD5, **FAST)

    assert len(server.requests('/mirror')) == 1
    assert read_bytes(target) == PAYLOAD


# 7. Nothing reachable.

def test_nothing_reachable_lists_every_attempt_and_the_manual_fix(server, target):
    refused = closed_port_url()
    missing = server.serve('/missing', Behaviour(status=404))

    error = fetch_error([refused, missing], target, size=len(PAYLOAD), md5=PAYLOAD_MD5, **{**FAST, 'retries': 1})

    message = str(error)
    assert refused in message and missing in message
    assert 'ConnectionError' in message and 'HTTP 404' in message
    assert f'save it as {target}' in message
    assert PAYLOAD_MD5 in message and '200,000 bytes' in message
    assert [url for url, _ in error.attempts] == [refused, refused, missing]
    assert 'gave up after 1 retry' in error.attempts[1][1] and 'not retried' in error.attempts[2][1]
    assert not os.path.exists(target) and not os.path.exists(target + '.part')


def test_failed_download_keeps_the_part_for_a_later_resume(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD, drop_after=100_000))

    fetch_error(url, target, size=len(PAYLOAD), chunk_size=10_000, **{**FAST, 'retries': 0})
    assert read_bytes(target + '.part') == PAYLOAD[:100_000]

    download.fetch(url, target, size=len(PAYLOAD), md5=PAYLOAD_MD5, **FAST)
    assert ranges(server, '/w') == [None, 'bytes=100000-']
    assert read_bytes(target) == PAYLOAD


# 8. Two processes downloading into one folder.

CHILD_SCRIPT = '''
import sys
from filtervis.util import download
url, path, size, md5, quiet = sys.argv[1:]
download.fetch(url, path, size=int(size), md5=md5, quiet=quiet == 'quiet', timeout=(5, 30), retries=0,
               lock_timeout=30)
'''


def start_child(url, target, quiet):
    return subprocess.Popen(
        [sys.executable, '-u', '-c', CHILD_SCRIPT, url, target, str(len(PAYLOAD)), PAYLOAD_MD5,
         'quiet' if quiet else 'loud'],
        cwd=REPO_ROOT, env={**os.environ, 'PYTHONPATH': REPO_ROOT}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f'timed out after {seconds} s waiting for {what}')
        time.sleep(0.02)


def test_two_processes_share_one_download_through_the_lock(server, target):
    # The server pauses mid-body until the second process is seen waiting on the lock,
    # so the two downloads really overlap.
    behaviour = Behaviour(body=PAYLOAD, pause_after=100_000)
    url = server.serve('/w', behaviour)
    first = start_child(url, target, quiet=True)
    second = None
    try:
        wait_for(lambda: server.requests('/w') or first.poll() is not None, 20, 'the first request')
        second = start_child(url, target, quiet=False)
        waiting_line = b''
        deadline = time.monotonic() + 20
        while b'Waiting for another download' not in waiting_line and time.monotonic() < deadline:
            readable, _, _ = select.select([second.stderr], [], [], 0.5)
            if readable:
                line = second.stderr.readline()
                if not line:
                    break
                waiting_line = line
        assert b'Waiting for another download' in waiting_line, 'the second process never waited on the lock'
        behaviour.gate.set()
        first_out, first_err = first.communicate(timeout=30)
        second_out, second_err = second.communicate(timeout=30)
    finally:
        behaviour.gate.set()
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()

    assert first.returncode == 0, first_err.decode()
    assert second.returncode == 0, second_err.decode()
    assert read_bytes(target) == PAYLOAD
    assert ranges(server, '/w') == [None]  # one download; the second found the file valid after the lock
    assert not os.path.exists(target + '.part')


def test_lock_held_too_long_gives_a_clear_error(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD))
    os.makedirs(os.path.dirname(target))
    with open(target + '.lock', 'w') as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write('4242\n')
        held.flush()
        started = time.monotonic()
        error = fetch_error(url, target, size=len(PAYLOAD), lock_timeout=0.3, **FAST)
    assert time.monotonic() - started < 2
    message = str(error)
    assert 'pid 4242' in message and target + '.lock' in message and 'lock_timeout' in message
    assert server.requests('/w') == []
    # Released locks are free again.
    download.fetch(url, target, size=len(PAYLOAD), lock_timeout=0.3, **FAST)
    assert read_bytes(target) == PAYLOAD


# 9. What is already there.

def test_valid_file_present_means_no_requests_at_all(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD))
    write_bytes(target, PAYLOAD)

    assert download.fetch(url, target, size=len(PAYLOAD), md5=PAYLOAD_MD5, **FAST) == target
    assert download.fetch(closed_port_url(), target, size=len(PAYLOAD), md5=PAYLOAD_MD5, **FAST) == target

    assert server.requests('/w') == []
    assert not os.path.exists(target + '.lock')  # not even the lock was needed


def test_force_downloads_again(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD))
    write_bytes(target, PAYLOAD)

    download.fetch(url, target, size=len(PAYLOAD), md5=PAYLOAD_MD5, force=True, **FAST)

    assert len(server.requests('/w')) == 1
    assert read_bytes(target) == PAYLOAD


def test_force_keeps_the_good_file_when_the_new_download_fails(server, target):
    url = server.serve('/w', Behaviour(body=bytes(reversed(PAYLOAD))))
    write_bytes(target, PAYLOAD)

    fetch_error(url, target, size=len(PAYLOAD), md5=PAYLOAD_MD5, force=True, **FAST)

    assert read_bytes(target) == PAYLOAD
    assert not os.path.exists(target + '.part')


def test_present_file_of_the_wrong_size_is_fetched_again(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD))
    write_bytes(target, PAYLOAD[:1234])

    download.fetch(url, target, size=len(PAYLOAD), md5=PAYLOAD_MD5, **FAST)

    assert len(server.requests('/w')) == 1
    assert read_bytes(target) == PAYLOAD


def test_present_file_with_the_wrong_md5_is_fetched_again_unless_verify_is_size(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD))
    corrupt = bytes(reversed(PAYLOAD))
    write_bytes(target, corrupt)

    # verify='size' trusts a matching size: documented as the fast, weaker check.
    download.fetch(url, target, size=len(PAYLOAD), md5=PAYLOAD_MD5, verify='size', **FAST)
    assert server.requests('/w') == [] and read_bytes(target) == corrupt

    download.fetch(url, target, size=len(PAYLOAD), md5=PAYLOAD_MD5, **FAST)
    assert len(server.requests('/w')) == 1 and read_bytes(target) == PAYLOAD


def test_error_mentions_the_unusable_file_already_there(server, target):
    write_bytes(target, b'half')

    error = fetch_error(closed_port_url(), target, size=len(PAYLOAD), **{**FAST, 'retries': 0})

    assert 'The file there now is not usable' in str(error) and '4 bytes' in str(error)


# 10. The caller's validate check and the sha256 record.

def test_validate_rejecting_the_bytes_discards_them_and_says_why(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD))
    seen = []

    def validate(part_path):
        seen.append(part_path)
        raise ValueError('not a GraphDef')

    error = fetch_error(url, target, validate=validate, record_sha256=True, **FAST)

    assert seen == [target + '.part']
    assert 'rejected by validate: not a GraphDef' in str(error)
    assert 'no published size or checksum' in str(error)
    assert not os.path.exists(target) and not os.path.exists(target + '.part')
    assert not os.path.exists(target + '.sha256')


def test_record_sha256_writes_the_hash_beside_the_file(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD))
    accepted = []

    download.fetch(url, target, validate=accepted.append, record_sha256=True, **FAST)

    sha256 = hashlib.sha256(PAYLOAD).hexdigest()
    assert accepted == [target + '.part']
    assert read_bytes(target + '.sha256').decode() == f'{sha256}  {NAME}\n'
    assert download.read_sha256_record(target) == sha256
    assert download.file_problems(target, sha256=download.read_sha256_record(target)) == []


def test_stale_sha256_record_is_removed_when_the_file_is_replaced(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD))
    write_bytes(target + '.sha256', b'0' * 64 + b'  old\n')

    download.fetch(url, target, force=True, **FAST)

    assert not os.path.exists(target + '.sha256')


# 11. Read timeouts.

def test_server_stalling_past_the_read_timeout_is_retried_then_reported(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD, stall_times=100, stall_seconds=10))
    started = time.monotonic()

    error = fetch_error(url, target, size=len(PAYLOAD), **{**FAST, 'timeout': (1, 0.2), 'retries': 1})

    assert time.monotonic() - started < 3
    assert len(server.requests('/w')) == 2
    assert 'ReadTimeout' in str(error)


def test_stall_mid_body_times_out_and_resumes(server, target):
    url = server.serve('/w', Behaviour(body=PAYLOAD, stall_times=1, stall_after=100_000, stall_seconds=10))
    started = time.monotonic()

    download.fetch(url, target, size=len(PAYLOAD), md5=PAYLOAD_MD5, chunk_size=10_000,
                   **{**FAST, 'timeout': (1, 0.2)})

    assert time.monotonic() - started < 3
    assert ranges(server, '/w') == [None, 'bytes=100000-']
    assert read_bytes(target) == PAYLOAD


# Helpers and argument checks.

def test_unusable_folder_gives_a_clear_error(server, tmp_path):
    url = server.serve('/w', Behaviour(body=PAYLOAD))
    write_bytes(str(tmp_path / 'a-file'), b'')

    error = fetch_error(url, str(tmp_path / 'a-file' / NAME), **FAST)

    assert 'Could not create the folder' in str(error) and 'Choose another folder' in str(error)
    assert server.requests('/w') == []


def test_file_problems_and_md5sum(tmp_path):
    path = str(tmp_path / 'file')
    assert download.file_problems(path, size=3) == [f'{path} is missing']
    write_bytes(path, b'abc')
    assert files.md5sum(path) == hashlib.md5(b'abc').hexdigest()
    assert download.file_problems(path) == []
    assert download.file_problems(path, size=3, md5=hashlib.md5(b'abc').hexdigest().upper()) == []
    assert 'is 3 bytes, expected 4' in download.file_problems(path, size=4)[0]
    assert 'has md5' in download.file_problems(path, md5='0' * 32)[0]
    assert 'not a regular file' in download.file_problems(str(tmp_path))[0]


@pytest.mark.parametrize('arguments, complaint', [
    (dict(urls='http://127.0.0.1:9/x', md5='xyz'), 'md5 must be 32 hexadecimal'),
    (dict(urls=[]), 'urls must be'),
    (dict(urls='http://127.0.0.1:9/x', size=0), 'size must be'),
    (dict(urls='http://127.0.0.1:9/x', retries=-1), 'retries must be'),
    (dict(urls='http://127.0.0.1:9/x', verify='sha1'), "verify must be 'md5' or 'size'"),
    (dict(urls='http://127.0.0.1:9/x', validate='yes'), 'validate must be a callable'),
])
def test_fetch_rejects_bad_arguments_before_any_work(tmp_path, arguments, complaint):
    urls = arguments.pop('urls')
    with pytest.raises(ValueError, match=complaint):
        download.fetch(urls, str(tmp_path / 'sub' / NAME), **arguments)
    assert not os.path.exists(tmp_path / 'sub')


def test_sources_describe_the_known_downloads():
    keras = download.SOURCES[download.DEFAULT_SOURCE]
    assert keras.size == 58_889_256 and keras.md5 == '6d6bbae143d832006294945121d1f1fc'
    assert len(keras.urls) == 2 and all(url.endswith(keras.filename) for url in keras.urls)
    cadl = download.SOURCES['cadl']
    assert cadl.filename == 'vgg16.tfmodel' and cadl.md5 is None and cadl.size is None
    assert download.SOURCES["keras"].preprocess == "caffe" and download.SOURCES["cadl"].preprocess is None


# The command line: argument errors are found before vgg16 (and TensorFlow) is imported.

@pytest.mark.parametrize('argv, complaint', [
    (['--url', 'http://example.invalid/w.h5'], '--url needs --md5'),
    (['--weights', 'w.h5', '--url', 'http://example.invalid/w.h5', '--md5', '0' * 32], 'exclude each other'),
    (['--url', 'http://example.invalid/w.h5', '--md5', 'xyz'], '32 hexadecimal characters'),
    (['--md5', '0' * 32], '--md5 goes with --url'),
    (['--source', 'cadl', '--weights', 'w.h5'], 'leave it out'),
    (['--preprocess', 'unit'], '--preprocess applies to --url or --weights'),
    (['--weights', 'no/such/file.h5'], 'no such file'),
    (['--check', '--force'], '--check only verifies'),
    (['--source', 'imagenet'], 'invalid choice'),
])
def test_command_line_argument_errors(monkeypatch, capsys, argv, complaint):
    # A None entry makes `import vgg16` fail, proving these errors never need it.
    monkeypatch.setitem(sys.modules, 'filtervis.models.vgg16', None)
    with pytest.raises(SystemExit) as caught:
        download_cli.main(argv)
    assert caught.value.code == 2
    assert complaint in capsys.readouterr().err


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as caught:
        download_cli.main(['--help'])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    for flag in ('--source', '--dir', '--url', '--md5', '--weights', '--preprocess', '--force', '--check',
                 '--quiet'):
        assert flag in text


@pytest.mark.slow
def test_command_line_check_on_an_empty_folder_reports_problems(tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    command = [sys.executable, os.path.join(REPO_ROOT, 'download.py'), '--check', '--dir', str(empty)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
                            env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
    assert result.returncode == 1, result.stderr
    assert result.stdout.strip(), 'expected the problems to be printed'
    assert 'Traceback' not in result.stderr
    assert os.listdir(empty) == []


def test_command_line_prints_a_download_error_without_a_traceback(server, tmp_path, capsys):
    url = server.serve('/mine.h5', Behaviour(status=404))

    status = download_cli.main(['--url', url, '--md5', PAYLOAD_MD5, '--dir', str(tmp_path), '--quiet'])

    captured = capsys.readouterr()
    assert status == 1
    assert captured.err.startswith('error: Could not download mine.h5') and 'HTTP 404' in captured.err
    assert 'Traceback' not in captured.err and captured.out == ''


@pytest.mark.slow
def test_script_prints_a_download_error_without_a_traceback(tmp_path):
    # As a script, download.py is __main__ while vgg16 raises download.DownloadError.
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    command = [sys.executable, os.path.join(REPO_ROOT, 'download.py'), '--url', 'http://127.0.0.1:%d/w.h5' % port,
               '--md5', PAYLOAD_MD5, '--dir', str(tmp_path), '--quiet']
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
                            env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
    assert result.returncode == 1
    assert 'error: Could not download w.h5' in result.stderr and 'Traceback' not in result.stderr

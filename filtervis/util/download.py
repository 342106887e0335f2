"""Fetch the VGG16 weights robustly: resumable, checksummed, atomic, locked.

`fetch()` streams a URL into `NAME.part`, resumes it with an HTTP Range
request when the connection drops (or a `.part` is left from an earlier run),
retries transient failures with exponential backoff, falls back to mirror
URLs, and verifies size, md5 and an optional caller check before an atomic
`os.replace` puts the file at its final path. So a file at the final path is
always complete and verified; a broken download never looks like a model.
A lock file (`NAME.lock`) keeps two processes from downloading into the same
folder at once: the second waits, then finds the file ready.

This module only moves bytes. `vgg16.py` owns the graph: it calls `fetch()`
with one of `SOURCES` and turns the weights into `vgg16.tfmodel`.

    from filtervis.util.download import fetch
    fetch(['https://host/w.h5', 'https://mirror/w.h5'], 'models/w.h5', size=58889256, md5='...')

`python download.py` (filtervis/cli/download.py) is its command line.

Needs `requests` and `tqdm`; the file helpers (atomic writes, md5, locks) are
files.py's, POSIX only.
"""
import contextlib
import os
import re
import socket
import sys
import time
import urllib.parse
from dataclasses import dataclass

import requests
from tqdm import tqdm

from filtervis.util import files

USER_AGENT = 'vgg16-filter-visualization-downloader/1.0 (python-requests)'
# urllib3 discards a partly filled read buffer when the connection drops, so
# a resume restarts at the last whole chunk: 64 KiB keeps that loss small
# while still being few writes per second.
CHUNK_SIZE = 64 * 1024
MD5_PATTERN = re.compile(r'[0-9a-fA-F]{32}')
_CONTENT_RANGE_PATTERN = re.compile(r'bytes\s+(\d+)-(\d+)/(\d+|\*)')


class DownloadError(RuntimeError):
    """No URL gave verified bytes. `attempts` holds (url, what happened) pairs in order."""

    def __init__(self, message, attempts=()):
        super().__init__(message)
        self.attempts = list(attempts)


@dataclass(frozen=True)
class Source:
    """A known file to fetch: where from, how to check it, how vgg16 must feed its input.

    preprocess names the pixel convention the weights were trained with:
    'caffe' = BGR 0..255 minus the ImageNet mean, 'unit' = RGB 0..1,
    'none' = RGB 0..255 as is.
    """
    name: str
    filename: str
    urls: tuple
    size: int | None
    md5: str | None
    preprocess: str | None
    description: str


SOURCES = {
    'keras': Source(
        name='keras',
        filename='vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5',
        urls=(
            'https://storage.googleapis.com/tensorflow/keras-applications/vgg16/'
            'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5',
            'https://github.com/fchollet/deep-learning-models/releases/download/v0.1/'
            'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5',
        ),
        size=58_889_256,
        md5='6d6bbae143d832006294945121d1f1fc',
        # Keras converted these from the Caffe model, so inputs are Caffe-style.
        preprocess='caffe',
        description='Keras ImageNet VGG16 convolution weights (no classifier), 59 MB',
    ),
    'cadl': Source(
        name='cadl',
        filename='vgg16.tfmodel',
        urls=('https://s3.amazonaws.com/cadl/models/vgg16.tfmodel',),
        # No published size or checksum: vgg16 checks that the GraphDef parses,
        # and fetch records a sha256 beside the file for later checks.
        size=None,
        md5=None,
        # Loaded as is, preprocessing and all, as the post did: it fed noise
        # around 128, the 0..255 range that Hvass's wrapper documents for this
        # file (the README of the graph it was converted from says 0..1).
        preprocess=None,
        description="the blog post's original frozen VGG16 graph, ~550 MB, no published checksum",
    ),
}
DEFAULT_SOURCE = 'keras'


class _Retryable(Exception):
    """A failure worth trying again on the same URL (network trouble, 5xx)."""


class _Fatal(Exception):
    """A failure that trying the same URL again will not fix (4xx, wrong size)."""


def sha256_record_path(path):
    return path + '.sha256'


def read_sha256_record(path):
    """The sha256 that fetch(record_sha256=True) wrote beside path, or None if there is none."""
    try:
        with open(sha256_record_path(path)) as record:
            fields = record.read().split()
    except FileNotFoundError:
        return None
    return fields[0].lower() if fields else None


def file_problems(path, *, size=None, md5=None, sha256=None):
    """Human-readable problems with the file at path; [] when present and matching.

    size: expected bytes, md5/sha256: expected hex digests; None skips that check.
    md5 is only computed when the size already matches, since a wrong size
    settles it and hashing ~550 MB is not free.
    """
    if not os.path.exists(path):
        return [f'{path} is missing']
    if not os.path.isfile(path):
        return [f'{path} is not a regular file']
    actual_size = os.path.getsize(path)
    if size is not None and actual_size != size:
        return [f'{path} is {actual_size:,} bytes, expected {size:,} (incomplete or a different file)']
    wanted = {name: value.lower() for name, value in (('md5', md5), ('sha256', sha256)) if value}
    if not wanted:
        return []
    digests = files.file_digests(path, *wanted)
    return [f'{path} has {name} {digests[name]}, expected {value} (corrupt or a different file)'
            for name, value in wanted.items() if digests[name] != value]


def _normalized_md5(md5):
    if md5 is None:
        return None
    if not isinstance(md5, str) or not MD5_PATTERN.fullmatch(md5.strip()):
        raise ValueError(f'md5 must be 32 hexadecimal characters, got {md5!r}')
    return md5.strip().lower()


def _url_list(urls):
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if not url_list or not all(isinstance(url, str) and url for url in url_list):
        raise ValueError(f'urls must be a URL string or a non-empty sequence of them, got {urls!r}')
    return url_list


def _say(message, quiet):
    if not quiet:
        # tqdm.write keeps an active progress bar from being torn by the message.
        tqdm.write(message, file=sys.stderr)


def _describe(error):
    return f'{type(error).__name__}: {error}'


def _root_cause(error):
    """The innermost exception under requests' and urllib3's wrappers."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = getattr(error, 'reason', None) or error.__cause__ or error.__context__
        if inner is None and error.args and isinstance(error.args[0], BaseException):
            inner = error.args[0]
        if not isinstance(inner, BaseException):
            break
        error = inner
    return error


def _host(url):
    return urllib.parse.urlsplit(url).hostname or url


def _connection_problem(url, error):
    """(one-line reason, whether trying the same host again can help) for a failed connection.

    urllib3's own text repeats the pool, the URL and every wrapper (about 300
    characters); a person needs the cause. A name that does not resolve means
    no network or no DNS, which a retry a second later does not fix.
    """
    root = _root_cause(error)
    if isinstance(root, socket.gaierror) or 'NameResolutionError' in type(root).__name__ \
            or 'Name or service not known' in str(root) or 'Temporary failure in name resolution' in str(root):
        return f'no network: could not resolve {_host(url)}', False
    if isinstance(error, requests.Timeout):
        return f'{type(error).__name__}: no answer from {_host(url)} in time', True
    if isinstance(root, ConnectionRefusedError) or 'Connection refused' in str(root):
        parts = urllib.parse.urlsplit(url)
        return f'ConnectionError: connection refused by {parts.hostname}:{parts.port or parts.scheme}', True
    reason = str(root).split('\n')[0]
    if len(reason) > 160:
        reason = reason[:157] + '...'
    return f'{type(error).__name__}: {reason}', True


def _part_size(part_path):
    try:
        return os.path.getsize(part_path)
    except FileNotFoundError:
        return 0


@contextlib.contextmanager
def _lock(lock_path, *, timeout, quiet):
    """files.exclusive_lock, whose failure is a DownloadError like every other failure of fetch()."""
    try:
        with files.exclusive_lock(lock_path, timeout=timeout, quiet=quiet, say=lambda text: _say(text, quiet)):
            yield
    except files.LockError as error:
        raise DownloadError(str(error)) from None


def _transfer(session, url, part_path, *, size, timeout, chunk_size, quiet, label):
    """Bring part_path to the full body of url, resuming what it already holds.

    Returns normally when the server says the body is complete (the caller
    still verifies it); raises _Retryable or _Fatal with a one-line reason.
    """
    offset = _part_size(part_path)
    if size is not None and offset > size:
        # Longer than the real file: not a prefix of it, so nothing to resume.
        files.remove(part_path)
        offset = 0
    if size is not None and offset == size:
        return
    # identity: Range offsets and sizes must count the file's own bytes, not gzip's.
    headers = {'Accept-Encoding': 'identity'}
    if offset:
        headers['Range'] = f'bytes={offset}-'
    try:
        response = session.get(url, headers=headers, stream=True, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as error:
        reason, worth_retrying = _connection_problem(url, error)
        raise (_Retryable if worth_retrying else _Fatal)(reason) from None
    except requests.RequestException as error:
        # A malformed URL or the like: the same request fails the same way.
        raise _Fatal(_describe(error)) from None

    with response:
        status = f'HTTP {response.status_code} {response.reason}'.strip()
        if response.status_code == 416 and offset:
            total = _content_range_total(response.headers.get('Content-Range', ''))
            if total == offset:
                return  # The .part already holds the whole file.
            files.remove(part_path)
            raise _Retryable(f'{status} for Range bytes={offset}-; discarded the .part to start over')
        if response.status_code >= 500:
            raise _Retryable(status)
        if response.status_code not in (200, 206):
            raise _Fatal(f'{status} (not retried)')

        if response.status_code == 206:
            match = _CONTENT_RANGE_PATTERN.fullmatch(response.headers.get('Content-Range', '').strip())
            if not offset or not match or int(match[1]) != offset:
                # Appending bytes from another offset would silently corrupt the file.
                files.remove(part_path)
                raise _Retryable(f"{status} with Content-Range {response.headers.get('Content-Range')!r}, "
                                 f'expected bytes {offset}-...; discarded the .part to start over')
            mode = 'ab'
            expected_total = None if match[3] == '*' else int(match[3])
        else:
            if offset:
                _say(f'{url} ignored the Range request; starting over from byte 0', quiet)
            offset = 0
            mode = 'wb'
            content_length = response.headers.get('Content-Length', '')
            expected_total = int(content_length) if content_length.isdigit() else None
        if size is not None and expected_total is not None and expected_total != size:
            raise _Fatal(f'{status}: the server offers {expected_total:,} bytes, expected {size:,} '
                         f'(a different file)')

        received = offset
        try:
            with open(part_path, mode) as part_file, tqdm(
                    total=size or expected_total, initial=offset, desc=label, unit='B', unit_scale=True,
                    unit_divisor=1024, disable=quiet, file=sys.stderr, dynamic_ncols=True) as bar:
                try:
                    for chunk in response.iter_content(chunk_size):
                        part_file.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                        if size is not None and received > size:
                            break
                except requests.RequestException as error:
                    # The bytes so far are kept: the retry resumes after them.
                    raise _Retryable(f'connection lost after {received:,} bytes: {_describe(error)}') from None
                finally:
                    part_file.flush()
                    os.fsync(part_file.fileno())
        except OSError as error:
            # A full disk or a read-only folder: no URL will fix that.
            raise DownloadError(f'Could not write {part_path}: {error}') from error

    if size is not None and received > size:
        files.remove(part_path)
        raise _Fatal(f'the server sent more than the expected {size:,} bytes; discarded the .part')
    if expected_total is not None and received < expected_total:
        raise _Retryable(f'connection closed after {received:,} of {expected_total:,} bytes')


def _content_range_total(content_range):
    """The total from a 416 answer's 'bytes */TOTAL', or None."""
    match = re.fullmatch(r'bytes\s+\*/(\d+)', content_range.strip())
    return int(match[1]) if match else None


def _verification_problem(part_path, *, size, md5, validate):
    """Why the finished .part is unusable, or None when it passes every check."""
    problems = file_problems(part_path, size=size, md5=md5)
    if problems:
        label = 'checksum (md5) mismatch' if md5 and 'md5' in problems[0] else 'size mismatch'
        return f'{label}: {problems[0]}'
    if validate is not None:
        try:
            validate(part_path)
        except ValueError as error:
            return f'rejected by validate: {error}'
    return None


def _fetch_from(session, url, part_path, attempts, *, size, md5, validate, timeout, retries, backoff,
                chunk_size, quiet, label):
    """Try one URL with retries. True when part_path now holds verified bytes."""
    # Counts consecutive failures that made no progress, so a flaky link that
    # still moves the .part forward is not abandoned halfway through 550 MB.
    failures = 0
    high_water = _part_size(part_path)
    while True:
        try:
            _transfer(session, url, part_path, size=size, timeout=timeout, chunk_size=chunk_size,
                      quiet=quiet, label=label)
        except _Fatal as error:
            # Not said here: the final error names each URL once with its reason.
            attempts.append((url, str(error)))
            return False
        except _Retryable as error:
            grown = _part_size(part_path)
            if grown > high_water:
                high_water = grown
                failures = 0
            failures += 1
            if failures > retries:
                retry_word = 'retry' if retries == 1 else 'retries'
                attempts.append((url, f'{error} (gave up after {retries} {retry_word})'))
                return False
            delay = backoff * 2 ** (failures - 1)
            attempts.append((url, f'{error} (retrying in {delay:.3g} s)'))
            _say(f'{url}: {error}; retrying in {delay:.3g} s', quiet)
            time.sleep(delay)
            continue
        problem = _verification_problem(part_path, size=size, md5=md5, validate=validate)
        if problem is None:
            return True
        # Bad bytes must never linger where a later resume or a loader could use them.
        files.remove(part_path)
        attempts.append((url, f'{problem}; deleted {part_path}'))
        _say(f'{url}: {problem}; deleted {part_path}', quiet)
        return False


def _install(part_path, path, *, record_sha256):
    """Atomically move the verified .part into place and keep the sha256 record in step."""
    sha256 = files.file_digests(part_path, 'sha256')['sha256'] if record_sha256 else None
    os.replace(part_path, path)
    record_path = sha256_record_path(path)
    if sha256 is None:
        # A record of the bytes just replaced would make check report a false mismatch.
        files.remove(record_path)
        return
    files.write_atomic(record_path, lambda record: record.write(f'{sha256}  {os.path.basename(path)}\n'.encode()))


def _failure_message(path, url_list, attempts, *, size, md5, present_problems):
    """A short message: each URL once with its last reason, then where a hand-fetched file goes."""
    lines = [f'Could not download {os.path.basename(path)}. Tried:']
    for url in url_list:
        reasons = [what for attempted, what in attempts if attempted == url]
        if reasons:
            tries = f' ({len(reasons)} tries)' if len(reasons) > 1 else ''
            lines.append(f'  {url}: {reasons[-1]}{tries}')
    expected = []
    if size is not None:
        expected.append(f'{size:,} bytes')
    if md5:
        expected.append(f'md5 {md5}')
    check = f" ({', '.join(expected)})" if expected else ' (no published size or checksum)'
    lines.append(f'Fetch it by hand from one of these URLs and save it as {path}{check}.')
    if present_problems:
        lines.append('The file there now is not usable: ' + '; '.join(present_problems))
    return '\n'.join(lines)


def fetch(urls, path, *, size=None, md5=None, validate=None, record_sha256=False, force=False, quiet=False,
          timeout=(10, 60), retries=3, backoff=1.0, lock_timeout=600, verify='md5', user_agent=USER_AGENT,
          chunk_size=CHUNK_SIZE):
    """Make path hold the verified file from the first URL that delivers it; return path.

    urls: a URL or a sequence tried in order (primary, then mirrors).
    size, md5: what the file must be; None skips that check.
    validate: callable(part_path) that raises ValueError when the bytes are
        unusable; a failure discards the .part exactly like a checksum mismatch.
    record_sha256: write '<sha256>  <filename>' to path + '.sha256' afterwards.
    force: download again even if a valid file is present; the old file is
        only replaced once the new one verifies.
    timeout: (connect, read) seconds for requests. retries: retries per URL of
        failures that made no progress, waiting backoff * 2**k seconds between.
    lock_timeout: seconds to wait for another process downloading the same file.
    verify: how a file already at path is judged valid without any network:
        'md5' (default) checks size and md5, 'size' trusts a matching size.
        Hashing the 59 MB weights takes ~0.1 s, so 'md5' is the safe default;
        files that fetch itself wrote are verified before they get there anyway.
        With neither size nor md5 (the cadl graph) a present file counts as
        valid; compare it with read_sha256_record() to check it later.
    Raises DownloadError naming every attempt, and ValueError for bad arguments.
    """
    url_list = _url_list(urls)
    md5 = _normalized_md5(md5)
    if size is not None and (not isinstance(size, int) or size <= 0):
        raise ValueError(f'size must be a positive number of bytes or None, got {size!r}')
    if not isinstance(retries, int) or retries < 0:
        raise ValueError(f'retries must be a whole number >= 0, got {retries!r}')
    if backoff < 0:
        raise ValueError(f'backoff must be >= 0 seconds, got {backoff!r}')
    if verify not in ('md5', 'size'):
        raise ValueError(f"verify must be 'md5' or 'size', got {verify!r}")
    if validate is not None and not callable(validate):
        raise ValueError(f'validate must be a callable(part_path) or None, got {validate!r}')

    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise DownloadError(f'Could not create the folder {folder} for {os.path.basename(path)}: {error}. '
                            f'Choose another folder.') from error
    present_check = {'size': size, 'md5': md5 if verify == 'md5' else None}
    if not force and os.path.isfile(path) and not file_problems(path, **present_check):
        return path

    with _lock(path + '.lock', timeout=lock_timeout, quiet=quiet):
        # Another process may have finished the file while this one waited.
        if not force and os.path.isfile(path) and not file_problems(path, **present_check):
            return path
        present_problems = file_problems(path, **present_check) if os.path.exists(path) else []
        part_path = path + '.part'
        attempts = []
        with requests.Session() as session:
            session.headers['User-Agent'] = user_agent
            for url in url_list:
                if _fetch_from(session, url, part_path, attempts, size=size, md5=md5, validate=validate,
                               timeout=timeout, retries=retries, backoff=backoff, chunk_size=chunk_size,
                               quiet=quiet, label=os.path.basename(path)):
                    _install(part_path, path, record_sha256=record_sha256)
                    return path
        raise DownloadError(_failure_message(path, url_list, attempts, size=size, md5=md5,
                                             present_problems=present_problems), attempts)

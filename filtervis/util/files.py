"""
Files, all or nothing: the bottom of the house. Every module that writes a
file writes it through `write_atomic`, so a picture, an array, a graph or a
record is either complete at its path or absent; `md5sum` names what a file
holds; `exclusive_lock` keeps two processes from building the same file.

    from filtervis.util import files
    files.check_output('out/filters.png')                    # before an hour of work, not after
    files.write_atomic('out/filters.png', lambda f: fig.savefig(f, format='png'))
    files.md5sum('vgg16.tfmodel')                            # '3372a1ab...'
    with files.exclusive_lock('vgg16.tfmodel.lock', timeout=600):
        ...

No TensorFlow, no network; POSIX only (locks use fcntl).
"""
import contextlib
import errno
import fcntl
import hashlib
import os
import sys
import tempfile
import time

HASH_CHUNK_SIZE = 1024 * 1024
LOCK_POLL_SECONDS = 0.1


class LockError(OSError):
    """A lock could not be made or was held by another process for too long."""


class WriteError(OSError):
    """A file could not be written; the message names the file and the cause, and nothing was left at its path."""

    def __str__(self):
        # OSError would print '[Errno 27] ...'; the message already says it in words.
        return self.strerror


# What a failed write most often means, in words a user can act on.
_WRITE_CAUSES = {
    errno.EFBIG: 'the file-size limit of this process (ulimit -f) or of the file system',
    errno.ENOSPC: 'the disk is full',
    errno.EDQUOT: 'the disk quota is used up',
    errno.EROFS: 'the file system is read-only',
    errno.EACCES: 'no permission to write there',
    errno.EPERM: 'no permission to write there',
}


def md5sum(path):
    """Hex md5 of the file at path, read in chunks so memory stays small."""
    return file_digests(path, 'md5')['md5']


def file_digests(path, *algorithms):
    """{algorithm: hex digest} of the file, computing all of them in one read."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, 'rb') as file:
        while chunk := file.read(HASH_CHUNK_SIZE):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def remove(path):
    """Delete the file at path if it is there."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def check_output(path):
    """Raise OSError unless a file can be saved at `path`: its folder exists and path is not a folder.

    Every command line checks its output paths with this before the work,
    so a typo costs a second, not the run.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError('cannot save %s: it is a folder; give a file name' % path)
    if not os.path.exists(folder):
        raise FileNotFoundError('cannot save %s: folder %s does not exist' % (path, folder))
    if not os.path.isdir(folder):
        raise NotADirectoryError('cannot save %s: %s is a file, not a folder' % (path, folder))


def write_error(path, error):
    """A WriteError that names the file and, in words, the cause of an OSError met while writing it."""
    cause = _WRITE_CAUSES.get(error.errno)
    reason = error.strerror or str(error)
    return WriteError(error.errno, 'cannot write %s: %s%s' % (path, reason, ' (%s)' % cause if cause else ''))


def write_atomic(path, write):
    """Create the file at path through write(binary_file), all or nothing; returns path.

    The bytes go to a temporary file beside path, which is renamed into place
    only once write() returned; on any error it is deleted, so path never
    holds half a file. An OSError while writing (a full disk, `ulimit -f`)
    becomes a WriteError naming the file and the cause.
    """
    temporary = _complete_temporary(path, write)
    try:
        os.replace(temporary, path)
    except OSError as error:
        raise write_error(path, error) from None
    finally:
        remove(temporary)
    return path


def link_new(path, data):
    """Put `data` (bytes) at path only if nothing is there yet; True when this call made it.

    The bytes go to a temporary file first, which is then hard-linked to
    path: of several processes (on several machines) racing to create path,
    exactly one wins, and nobody ever sees half a file.
    """
    temporary = _complete_temporary(path, lambda file: file.write(data))
    try:
        os.link(temporary, path)
        return True
    except FileExistsError:
        return False
    except OSError as error:
        raise write_error(path, error) from None
    finally:
        remove(temporary)


def _complete_temporary(path, write):
    """A complete file beside path written by write(binary_file); the caller moves or removes it.

    Named by mkstemp, which no other writer can pick: processes on other
    machines or in other containers sharing the folder may have the same
    pid (often 1).
    """
    try:
        descriptor, temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                                 prefix=os.path.basename(path) + '.tmp')
    except OSError as error:
        raise write_error(path, error) from None
    try:
        with os.fdopen(descriptor, 'wb') as file:
            write(file)
        # mkstemp makes the file readable by its owner only; give it the usual mode.
        os.chmod(temporary, 0o666 & ~_UMASK)
    except BaseException as error:
        remove(temporary)
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            raise write_error(path, error) from None
        raise
    return temporary


def _read_umask():
    # os.umask can only be read by setting it; done once, at import, before any thread writes.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _say(message, quiet):
    if not quiet:
        print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def exclusive_lock(lock_path, *, timeout, quiet=False, say=None):
    """Hold an flock on lock_path; wait up to timeout seconds for another process.

    The lock file stays behind on purpose: deleting it would let a third
    process lock a fresh inode while a second still waits on the old one,
    and then two processes would write the same file. It is empty apart
    from the holder's pid, so nothing mistakes it for the model.
    say(message): how to tell the user that we wait (default: stderr).
    LockError when the lock cannot be made or is held past the timeout.
    """
    say = say or (lambda message: _say(message, quiet))
    try:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise LockError(f'Could not create the lock file {lock_path}: {error}. '
                        f'The folder must be writable; choose another one.') from error
    try:
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _lock_holder(lock_path)
                if time.monotonic() >= deadline:
                    raise LockError(
                        f'Another process ({holder}) has been working in {os.path.dirname(lock_path)} '
                        f'for over {timeout} s (it holds the lock {lock_path}). Wait for it to finish, '
                        f'stop it, or raise lock_timeout.') from None
                if not announced and not quiet:
                    say(f'Waiting for another download ({holder}) to finish; lock: {lock_path}')
                    announced = True
                time.sleep(LOCK_POLL_SECONDS)
        # The pid only makes a waiting process's message more useful.
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f'{os.getpid()}\n'.encode())
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _lock_holder(lock_path):
    try:
        with open(lock_path) as lock_file:
            pid = lock_file.read().strip()
    except OSError:
        pid = ''
    return f'pid {pid}' if pid.isdigit() else 'pid unknown'

"""
Import TensorFlow without the dozen lines it prints on the way in.

TensorFlow 2.21 writes its start-up notices (oneDNN, "Could not find cuda
drivers", the CPU feature list, a cuInit error on machines without a GPU, a
deprecation warning from disable_v2_behavior) straight to the process's
stderr, before its own logging is set up, so TF_CPP_MIN_LOG_LEVEL does not
reach them. Here file descriptor 2 is pointed at a temporary file while
TensorFlow is imported and its devices are listed; what was captured is
printed only when the import fails or when asked for (--verbose), so a real
error is never hidden. This module imports nothing heavy itself: every other
module stands on it.

    from filtervis.util import quiet
    tf = quiet.import_tensorflow()                 # tensorflow.compat.v1, graph mode

    if __name__ == '__main__':                     # at the top of a command-line script
        from filtervis.util import quiet
        quiet.import_tensorflow(verbose='--verbose' in sys.argv[1:])
"""

import contextlib
import os
import sys
import tempfile

# What the capture held, for `--verbose` after the fact and for tests.
captured = ''


@contextlib.contextmanager
def stderr_captured(show=False):
    """Send file descriptor 2 to a temporary file for the duration; yields nothing.

    On leaving, the capture is appended to the module's `captured` text and
    written to the real stderr when `show` is true or an exception is leaving
    the block (the exception's own traceback follows it).
    """
    global captured
    sys.stderr.flush()
    saved_fd = os.dup(2)
    failed = True
    with tempfile.TemporaryFile(mode='w+b') as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            capture.seek(0)
            text = capture.read().decode('utf8', 'replace')
            captured += text
            if text and (show or failed):
                sys.stderr.write(text)
                sys.stderr.flush()


def import_tensorflow(verbose=False):
    """tensorflow.compat.v1 with v2 behaviour off; TensorFlow's start-up lines shown only if verbose.

    The first call does the import; later calls return the module at once.
    Without verbose, C++ log lines below ERROR are filtered from then on
    (TF_CPP_MIN_LOG_LEVEL=2, unless the environment already sets it).
    """
    if 'tensorflow.compat.v1' in sys.modules and getattr(import_tensorflow, 'done', False):
        return sys.modules['tensorflow.compat.v1']
    if not verbose:
        os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    with stderr_captured(show=verbose):
        import tensorflow.compat.v1 as tf
        logger = tf.get_logger()
        level = logger.level
        if not verbose:
            # Its deprecation notice goes through Python's logging, to
            # sys.stderr, which in a notebook is not file descriptor 2.
            logger.setLevel('ERROR')
        try:
            tf.disable_v2_behavior()
        finally:
            logger.setLevel(level)
        # Listing the devices loads the GPU platform now, inside the capture:
        # otherwise its cuInit error would appear at the first Session.
        tf.config.list_physical_devices()
    import_tensorflow.done = True
    return tf


def one_line_warnings():
    """Show warnings as 'warning: message', one line, without the source line that Python adds.

    For command lines, where a warning (a dead filter, float32 instead of
    bfloat16) speaks to the user, not to a programmer.
    """
    import warnings
    warnings.formatwarning = lambda message, category, *rest: 'warning: %s\n' % message

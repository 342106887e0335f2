"""
Where work runs: in this process, on a LocalCluster of worker processes, or on
a running Dask cluster. atlas.py and examples.py map their tasks through it,
and each worker process loads the model once and keeps it.

    python atlas.py OUT                              # in this process, no cluster
    python atlas.py OUT --workers 2                  # a LocalCluster: 2 worker processes, 1 task each at a time
    python atlas.py OUT --scheduler tcp://HOST:8786  # a running cluster (`dask scheduler`, `dask worker ...`)

    import cluster
    cluster.add_arguments(parser)                    # --workers N, --scheduler ADDRESS, --threads T
    spec = cluster.ModelSpec.of('/shared/vgg16.tfmodel', threads=cluster.threads_from_args(args))
    with cluster.client_from_args(args) as client:   # None: run in this process
        if client is None:
            results = [task(item, spec) for item in items]
        else:
            results = client.gather(client.map(task, items, spec=spec, pure=False))

    def task(item, spec):                            # runs on a worker; a module-level function of an importable module
        model = cluster.worker_model(spec)           # loaded on the first task, kept for the next ones

Workers of a running cluster import the task's module, so start them with
this folder on their path: `PYTHONPATH=/path/to/project dask worker tcp://HOST:8786`.
"""

import contextlib
import logging
import os
from dataclasses import dataclass

import download
import vgg16

# Seconds to wait for a scheduler before saying it cannot be reached.
CONNECT_TIMEOUT = 5
START_A_SCHEDULER = ('start one with `dask scheduler` (it prints its tcp:// address) and `dask worker ADDRESS` '
                     'on each machine, or use --workers N for a cluster on this machine')


def machine_cores():
    """Cores this process may run on (the CPU affinity mask, which containers and Slurm narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity mask
        return os.cpu_count() or 1


def threads_per_worker(workers):
    """TensorFlow threads for each of `workers` processes on this machine, so they do not oversubscribe it.

    None (no local cluster) gives None: TensorFlow's default, every core.
    """
    if workers is None:
        return None
    return max(1, machine_cores() // workers)


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to load the model: small and picklable, sent with every task.

    path: absolute path of a vgg16.tfmodel file; every worker must see the file
      there (one machine, or a folder shared by all of them).
    md5: the file's md5, so that a worker that sees another file at that path
      says so instead of rendering with other weights.
    threads: TensorFlow's intra- and inter-op thread pools of the worker's
      session; None is TensorFlow's default (every core of the worker's machine).
    """
    path: str
    md5: str
    threads: int = None

    @classmethod
    def of(cls, path, threads=None):
        """A spec for the model file at `path` (made absolute; FileNotFoundError when it is missing)."""
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError('no model file at %s' % path)
        if threads is not None:
            threads = vgg16.check_int('threads', threads, 1)
        return cls(path, download.md5sum(path), threads)


# The models this process has loaded: {(path, md5, threads): model}.
_models = {}


def worker_model(spec):
    """The vgg16.VGG16 of `spec`, loaded on the first call in this process and kept.

    Runs on Dask workers and, without a cluster, in the calling process. The
    file's md5 is checked once, when the model is loaded.
    """
    key = (spec.path, spec.md5, spec.threads)
    if key in _models:
        return _models[key]
    if not os.path.isfile(spec.path):
        raise FileNotFoundError('this worker (pid %d) cannot see the model file %s: every worker must see it at '
                                'that path, e.g. in a folder shared by all machines' % (os.getpid(), spec.path))
    md5 = download.md5sum(spec.path)
    if md5 != spec.md5:
        raise ValueError('the model file %s on this worker (pid %d) has md5 %s, expected %s: every worker must see '
                         'the same file' % (spec.path, os.getpid(), md5, spec.md5))
    model = vgg16.VGG16(spec.path, threads=spec.threads)
    _models[key] = model
    return model


# ---------------------------------------------------------------------------
# Clients

def add_arguments(parser):
    """Add --workers N and --scheduler ADDRESS to an argparse parser."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--workers', type=int, default=None, metavar='N',
                       help='start a local Dask cluster of N worker processes (1 thread each; TensorFlow gets '
                            '%d cores // N threads per worker)' % machine_cores())
    group.add_argument('--scheduler', default=None, metavar='ADDRESS',
                       help='use a running Dask cluster, e.g. tcp://HOST:8786; every worker must see the '
                            'model file and the output folder at the same paths')
    parser.add_argument('--threads', type=int, default=None, metavar='T',
                        help="TensorFlow threads per worker process (default: cores // N with --workers N, "
                             "else TensorFlow's default, every core); with --scheduler and K workers per "
                             "machine, give cores // K")


def threads_from_args(args):
    """TensorFlow threads per worker for the parsed --threads and --workers (None: TensorFlow's default)."""
    if args.threads is not None:
        return vgg16.check_int('--threads', args.threads, 1)
    return threads_per_worker(args.workers)


@contextlib.contextmanager
def connect(workers=None, scheduler=None, timeout=CONNECT_TIMEOUT):
    """A dask.distributed Client for the duration of the block, or None for this process.

    workers: start a LocalCluster of that many worker processes, each running
      one task at a time (TensorFlow threads: see threads_per_worker).
    scheduler: the address of a running scheduler, e.g. 'tcp://10.0.0.1:8786';
      ConnectionError naming it when it cannot be reached within `timeout` s.
    """
    if workers is not None and scheduler is not None:
        raise ValueError('workers=%r and scheduler=%r exclude each other: give one' % (workers, scheduler))
    if workers is None and scheduler is None:
        yield None
        return
    # Imported here: a run in this process needs no Dask at all.
    from dask.distributed import Client, LocalCluster
    if workers is not None:
        workers = vgg16.check_int('workers', workers, 1)
        # Worker processes, not threads: TensorFlow sessions and the GIL would share one process.
        # No dashboard; the scheduler's HTTP server (health checks) on a free port, not 8787.
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          scheduler_kwargs={'dashboard_address': ':0'}, silence_logs=logging.ERROR) as local, \
                Client(local) as client:
            yield client
        return
    try:
        client = Client(scheduler, timeout=timeout)
    except (OSError, ValueError, TypeError) as error:
        raise ConnectionError('cannot reach a Dask scheduler at %s within %g s (%s); %s'
                              % (scheduler, timeout, str(error).splitlines()[0], START_A_SCHEDULER)) from None
    with client:
        yield client


def client_from_args(args, timeout=CONNECT_TIMEOUT):
    """connect() with the parsed --workers and --scheduler."""
    return connect(args.workers, args.scheduler, timeout)

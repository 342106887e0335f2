"""
Where work runs: in this process, on a LocalCluster of worker processes, or on
a running Dask cluster. atlas.py and examples.py map their tasks through it,
and each worker process loads the model once and keeps it.

    python atlas.py OUT                              # in this process, no cluster
    python atlas.py OUT --workers 2                  # a LocalCluster: 2 worker processes, 1 task each at a time
    python atlas.py OUT --scheduler tcp://HOST:8786  # a running cluster (`dask scheduler`, `dask worker ...`)

    import cluster
    cluster.add_arguments(parser)                    # --workers N, --scheduler ADDRESS, --threads T
    spec = cluster.ModelSpec.of(net, threads=net.threads)   # net: a network.Network loaded from its file
    with cluster.client_from_args(args) as client:   # None: run in this process
        if client is None:
            results = [task(item, spec) for item in items]
        else:
            results = client.gather(client.map(task, items, spec=spec, pure=False))

    def task(item, spec):                            # runs on a worker; a module-level function of an importable module
        model = cluster.worker_model(spec)           # loaded on the first task, kept for the next ones

Workers need only requirements.txt installed: on connecting, the client
uploads this project's modules to every worker (and to workers that join
later), and a worker loads a network from its frozen graph file and its spec
(network.Network.spec), whatever made it.
"""

import contextlib
import glob
import json
import logging
import os
import uuid
from dataclasses import dataclass, field

import files
import network

# The project's modules, uploaded to the workers of a cluster (ship_project).
PROJECT_DIR = os.path.dirname(os.path.abspath(__file__))
# Tells the process that imported this copy of the module (and its forks) from
# every other: a scheduler or worker running inside the client's own process
# (a LocalCluster started there) already has the project, and must keep it.
PROCESS_MARK = uuid.uuid4().hex
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
    """What a worker needs to load the network: small and picklable, sent with every task.

    path: absolute path of the network's frozen graph file; every worker must
      see the file there (one machine, or a folder shared by all of them).
    md5: the file's md5, so that a worker that sees another file at that path
      says so instead of rendering with other weights.
    network: the network's spec() (input, units, description, identity).
    threads: TensorFlow's intra- and inter-op thread pools of the worker's
      session; None is TensorFlow's default (every core of the worker's machine).
    """
    path: str
    md5: str
    network: dict = field(compare=False, hash=False, default=None)
    threads: int = None

    @classmethod
    def of(cls, net, threads=None):
        """A spec for a network.Network loaded from a file (FileNotFoundError when the file is missing)."""
        if net.path is None:
            raise ValueError('the workers load the network from its file, and this one was given in memory; '
                             'save its graph and load it from the file')
        if not os.path.isfile(net.path):
            raise FileNotFoundError('no model file at %s' % net.path)
        if threads is not None:
            threads = network.check_int('threads', threads, 1)
        spec = cls(net.path, files.md5sum(net.path), net.spec(), threads)
        if net.threads == threads:
            # This process holds the network already: worker_model(spec) here
            # (a run without a cluster) returns it instead of loading a second copy.
            _models.setdefault(spec.key, net)
        return spec

    @property
    def key(self):
        """What tells loaded networks apart in a process (_models)."""
        return self.path, self.md5, self.threads, json.dumps(self.network, sort_keys=True)


# The networks this process has loaded or was given: {ModelSpec.key: network.Network}.
_models = {}


def worker_model(spec):
    """The network.Network of `spec`, loaded on the first call in this process and kept.

    Runs on Dask workers and, without a cluster, in the calling process. The
    file's md5 is checked once, when the model is loaded.
    """
    key = spec.key
    if key in _models:
        return _models[key]
    if not os.path.isfile(spec.path):
        raise FileNotFoundError('this worker (pid %d) cannot see the model file %s: every worker must see it at '
                                'that path, e.g. in a folder shared by all machines' % (os.getpid(), spec.path))
    md5 = files.md5sum(spec.path)
    if md5 != spec.md5:
        raise ValueError('the model file %s on this worker (pid %d) has md5 %s, expected %s: every worker must see '
                         'the same file' % (spec.path, os.getpid(), md5, spec.md5))
    model = network.Network.from_spec(spec.path, spec.network, threads=spec.threads)
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
        return network.check_int('--threads', args.threads, 1)
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
        workers = network.check_int('workers', workers, 1)
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
        ship_project(client)
        yield client


def ship_project(client):
    """Put the project's modules (every top-level .py) on the client's scheduler and workers, now and later.

    Workers, and the scheduler, then need only requirements.txt installed.
    The scheduler needs them too: it unpickles each task graph, whose
    functions and arguments (atlas.run_task_on_worker, atlas.Task, ...) name
    the project's modules, and so imports them (TensorFlow included).
    Each file goes into each server's folder on its sys.path. Workers that
    join later get the files from one plugin per file, named after it, so
    that connecting again replaces the scheduler's copy instead of piling up
    one more per run; the files are not imported on arrival (a joining
    worker runs its plugins in no fixed order), but when a task needs them.
    A server that imported older copies in an earlier run forgets them, and
    imports the new files when it next needs them.
    """
    from distributed.diagnostics.plugin import UploadFile
    contents = {}
    for path in sorted(glob.glob(os.path.join(PROJECT_DIR, '*.py'))):
        name = os.path.basename(path)
        client.register_plugin(UploadFile(path, load=False), name='project-file:' + name)
        with open(path, 'rb') as f:
            contents[name] = f.read()
    install = _installer(contents, PROCESS_MARK)
    client.run(install)
    client.run_on_scheduler(install)


def _installer(contents, mark):
    """A function for client.run and client.run_on_scheduler that writes `contents` ({file name: bytes}) into
    the server's folder on its sys.path and drops the modules of those names it imported before.

    Built here, not at module level, so that it travels by value: a server
    may hold an older copy of this module, or none. A server inside the
    process whose PROCESS_MARK is `mark` (the client's) is left as it is.
    """
    def install(dask_worker=None, dask_scheduler=None):
        import importlib
        import importlib.util
        import os
        import sys
        import tempfile
        if getattr(sys.modules.get('cluster'), 'PROCESS_MARK', None) == mark:
            return
        folder = (dask_worker or dask_scheduler).local_directory
        for name, data in contents.items():
            path = os.path.join(folder, name)
            descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=name + '.tmp')
            try:
                with os.fdopen(descriptor, 'wb') as f:
                    f.write(data)
                os.replace(temporary, path)
            finally:
                if os.path.exists(temporary):
                    os.remove(temporary)
            # A file replaced within the same second by one of the same size would pass the .pyc's check.
            try:
                os.remove(importlib.util.cache_from_source(path))
            except OSError:
                pass
            sys.modules.pop(name[:-len('.py')], None)
        importlib.invalidate_caches()
    return install


def worker_address():
    """The address of the Dask worker running the calling task, e.g. 'tcp://10.0.0.2:40123', else 'this process'."""
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):   # no Dask, or not inside a task
        return 'this process (pid %d)' % os.getpid()


def client_from_args(args, timeout=CONNECT_TIMEOUT):
    """connect() with the parsed --workers and --scheduler."""
    return connect(args.workers, args.scheduler, timeout)

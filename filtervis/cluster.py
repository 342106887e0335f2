"""
Where work runs: in this process, on a LocalCluster of worker processes, or on
a running Dask cluster. atlas.py and examples.py map their tasks through it,
and each worker process loads the model once and keeps it.

    python atlas.py OUT                              # in this process, no cluster
    python atlas.py OUT --workers 2                  # a LocalCluster: 2 worker processes, 1 task each at a time
    python atlas.py OUT --scheduler tcp://HOST:8786  # a running cluster (`dask scheduler`, `dask worker ...`)

    from filtervis import cluster
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
uploads the package to every worker (and to workers that join later), and a worker loads a network from its frozen graph file and its spec
(network.Network.spec), whatever made it.
"""

import contextlib
import json
import logging
import os
import tempfile
import uuid
from dataclasses import dataclass, field

from filtervis.util import files
from filtervis.core import network
from filtervis.core import checks

# The package, uploaded to the workers of a cluster (ship_project).
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
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
            threads = checks.check_int('threads', threads, 1)
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
        return checks.check_int('--threads', args.threads, 1)
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
        workers = checks.check_int('workers', workers, 1)
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
    """Put the package (every file of filtervis/) on the client's scheduler and workers, now and later.

    Workers, and the scheduler, then need only requirements.txt installed.
    The scheduler needs the package too: it unpickles each task graph, whose
    functions and arguments (filtervis.atlas.tasks.run_task_on_worker, Task,
    ...) name its modules, and so imports them (TensorFlow included).
    The files travel inside one small Python module, written by
    package_bootstrap(), that unpacks them into the server's folder on its
    sys.path when it is imported: workers import it from one plugin, named
    after it (so that connecting again replaces it instead of piling up one
    more per run), which also runs on workers that join later; the scheduler
    runs the same source. A server that imported older copies of the
    package forgets them, and imports the new files when it next needs them.
    """
    from distributed.diagnostics.plugin import UploadFile
    source = package_bootstrap(PROCESS_MARK)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, BOOTSTRAP_NAME + '.py')
        with open(path, 'w') as f:
            f.write(source)
        client.register_plugin(UploadFile(path, load=True), name='project-package')
    client.run_on_scheduler(_source_runner(source))


# The files of the package a server needs: its modules, the atlas page's markup, and the natural spectra
# the maco method reads (optvis/spectra/*.npy).
PACKAGE_FILES = ('.py', '.html', '.npy')
# The module that carries the package to a server: unpacks it beside itself when imported.
BOOTSTRAP_NAME = 'filtervis_bootstrap'
_BOOTSTRAP = """# Written by filtervis.cluster.ship_project: unpacks the package beside this file when imported.
import importlib, os, sys, tempfile
FILES = %(files)r
MARK = %(mark)r


def unpack(folder):
    # A server inside the client's own process (a LocalCluster started there) already has the package.
    if getattr(sys.modules.get('filtervis.cluster'), 'PROCESS_MARK', None) == MARK:
        return
    for name, data in FILES.items():
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.tmp-')
        try:
            with os.fdopen(descriptor, 'wb') as f:
                f.write(data)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        # A file replaced within the same second by one of the same size would pass the .pyc's check.
        if path.endswith('.py'):
            try:
                os.remove(importlib.util.cache_from_source(path))
            except OSError:
                pass
    for module in [m for m in sys.modules if m == 'filtervis' or m.startswith('filtervis.')]:
        del sys.modules[module]
    importlib.invalidate_caches()


if __name__ != '__filtervis_scheduler__':
    unpack(os.path.dirname(os.path.abspath(__file__)))
"""


def package_bootstrap(mark):
    """The source of a module that, imported on a server, writes every file of the package (PACKAGE_FILES:
    its modules, the page's .html, the shipped spectra) into the folder it sits in and drops the package's
    modules imported before."""
    files_by_name = {}
    for folder, dirs, names in os.walk(PACKAGE_DIR):
        dirs[:] = sorted(d for d in dirs if d != '__pycache__')
        for name in sorted(names):
            if name.endswith(PACKAGE_FILES):
                path = os.path.join(folder, name)
                with open(path, 'rb') as f:
                    files_by_name[os.path.relpath(path, os.path.dirname(PACKAGE_DIR))] = f.read()
    return _BOOTSTRAP % {'files': files_by_name, 'mark': mark}


def _source_runner(source):
    """A function for client.run_on_scheduler that runs the bootstrap `source` in the scheduler's folder.

    Built here, not at module level, so that it travels by value: the
    scheduler has no copy of this module, or an older one.
    """
    def run(dask_scheduler=None):
        namespace = {'__name__': '__filtervis_scheduler__'}
        exec(compile(source, BOOTSTRAP_NAME, 'exec'), namespace)
        namespace['unpack'](dask_scheduler.local_directory)
        import sys
        if dask_scheduler.local_directory not in sys.path:
            sys.path.insert(0, dask_scheduler.local_directory)
    return run


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

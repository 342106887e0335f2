"""cluster.py, and atlas.py on a real Dask cluster: a `dask scheduler` and `dask worker` processes on loopback,
started in empty folders with a PYTHONPATH that does not hold the project, as on machines that have only
requirements.txt installed.

Known answers: such workers render the same float arrays, byte for byte, as one
process, in every view (tests/test_atlas.py's RUN); with a worker SIGKILLed mid-run the scheduler moves its task and
every filter is done exactly once; a task that fails on a worker, or whose worker dies, ends the run
with one line naming the task, the worker and the reason; connecting again
replaces the shipped modules instead of piling them up, and workers forget the
copies they imported before.
"""
import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from builders import ROOT
from test_atlas import RUN, assert_same_atlas
from filtervis import atlas
from filtervis import cluster
from filtervis.core import network
from filtervis.models import vgg16
from filtervis.cli import atlas as atlas_cli

# Every test here needs real Dask scheduler and worker processes: slow (python -m pytest --runslow).
pytestmark = pytest.mark.slow

# dask's own command, beside this Python (the venv's bin); `python -m` works where the script is missing.
DASK = os.path.join(os.path.dirname(sys.executable), 'dask')
START_TIMEOUT = 60


def dask_command(*words):
    if os.access(DASK, os.X_OK):
        return [DASK] + list(words)
    module = {'scheduler': 'distributed.cli.dask_scheduler', 'worker': 'distributed.cli.dask_worker'}[words[0]]
    return [sys.executable, '-m', module] + list(words[1:])


@contextlib.contextmanager
def real_cluster(root, workers=2):
    """(scheduler address, {worker address: Popen}) of a scheduler and `workers` worker processes on 127.0.0.1.

    Each process starts in its own empty folder under root, with no PYTHONPATH:
    nothing of the project is importable there. Every process is killed on leaving.
    """
    from distributed import Client
    env = {key: value for key, value in os.environ.items() if key != 'PYTHONPATH'}
    env['TF_CPP_MIN_LOG_LEVEL'] = '2'
    processes = []

    def start(name, command):
        folder = os.path.join(root, name)
        os.makedirs(folder)
        with open(os.path.join(root, name + '.log'), 'w') as log:
            processes.append(subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT))
        return folder

    try:
        scheduler_file = os.path.join(root, 'scheduler.json')
        start('scheduler', dask_command('scheduler', '--host', '127.0.0.1', '--port', '0', '--no-dashboard',
                                        '--scheduler-file', scheduler_file))
        deadline = time.monotonic() + START_TIMEOUT
        address = None
        while address is None:
            assert processes[0].poll() is None, 'the scheduler ended: see %s/scheduler.log' % root
            assert time.monotonic() < deadline, 'no whole scheduler file after %d s' % START_TIMEOUT
            time.sleep(0.05)
            try:
                with open(scheduler_file) as f:
                    address = json.load(f)['address']
            except (FileNotFoundError, ValueError, KeyError):
                pass     # not there yet, or written but not yet whole
        for number in range(workers):
            folder = os.path.join(root, 'worker%d' % number)
            start('worker%d' % number, dask_command('worker', '--no-nanny', '--nthreads', '1', '--no-dashboard',
                                                    '--local-directory', folder, address))
        with Client(address, timeout=START_TIMEOUT) as client:
            client.wait_for_workers(workers, timeout=START_TIMEOUT)
            pids = client.run(os.getpid)
        by_pid = {p.pid: p for p in processes[1:]}
        # --no-nanny: each worker is the process we started, so a kill reaches the worker itself.
        yield address, {worker: by_pid[pid] for worker, pid in pids.items()}
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        for process in processes:
            process.wait(timeout=30)


@pytest.fixture(scope='module')
def reference(model_file, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('reference') / 'atlas')
    assert atlas_cli.main([out, '--model', model_file] + RUN) == 0
    return out


@pytest.fixture(scope='module')
def scheduler(tmp_path_factory):
    """The address of a real cluster of two workers, shared by the tests that kill nothing."""
    with real_cluster(str(tmp_path_factory.mktemp('cluster'))) as (address, _):
        yield address


def records_of(out, layers):
    return [n for layer in layers if os.path.isdir(os.path.join(out, layer))
            for n in os.listdir(os.path.join(out, layer)) if n.startswith('task-')]


def wait_for_a_record(process, out, layers, timeout=120):
    deadline = time.monotonic() + timeout
    while not records_of(out, layers):
        assert process.poll() is None, 'the run ended first: %s' % process.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.02)


def start_atlas(out, model_file, address, flags):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, 'atlas.py'), out, '--model', model_file,
                             '--scheduler', address] + flags,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_workers_without_the_project_render_the_same_bytes_as_one_process(model_file, reference, scheduler,
                                                                           tmp_path):
    from distributed import Client
    with Client(scheduler) as client:
        # Nothing of the project is importable on the workers before a run ships it.
        assert set(client.run(lambda: importlib.util.find_spec('filtervis') is None).values()) == {True}
    out = str(tmp_path / 'out')
    assert atlas_cli.main([out, '--model', model_file, '--scheduler', scheduler] + RUN) == 0
    assert_same_atlas(out, reference)
    with Client(scheduler) as client:
        homes = client.run(lambda dask_worker: (os.path.dirname(os.path.dirname(sys.modules['filtervis'].__file__)),
                                                dask_worker.local_directory))
    assert all(home == local for home, local in homes.values()), homes


def test_connecting_again_replaces_the_shipped_modules_and_workers_forget_old_copies(scheduler):
    from distributed import Client
    with Client(scheduler) as client:
        cluster.ship_project(client)
        plugins = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.worker_plugins))
        client.run(lambda: setattr(importlib.import_module('filtervis.atlas'), 'old_copy', True))
        cluster.ship_project(client)
        assert client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.worker_plugins)) == plugins
        assert set(client.run(lambda: 'filtervis.atlas' in sys.modules).values()) == {False}
        assert set(client.run(lambda: hasattr(importlib.import_module('filtervis.atlas'), 'old_copy')).values()) == {False}


def test_a_task_that_fails_on_a_worker_is_one_line_naming_task_worker_and_reason(model_file, scheduler, tmp_path):
    from distributed import Client
    net = vgg16.VGG16(model_file)
    settings = atlas.Settings('blog', 2, 32, 0, None, 3, 'float32', views=('negative',)).checked()
    out = str(tmp_path / 'out')
    header = atlas.claim(out, atlas.make_header(net, settings, command=''))
    tasks = atlas.plan(net, settings, {0: [0, 1, 2]})
    # A worker that cannot see the model file at the path the run sends.
    hidden = dataclasses.replace(cluster.ModelSpec.of(net), path=str(tmp_path / 'elsewhere' / 'tiny.tfmodel'))
    with Client(scheduler) as client:
        cluster.ship_project(client)
        with pytest.raises(atlas.TaskError) as raised:
            atlas.render(out, hidden, settings, header, tasks, client, progress=False)
    message = str(raised.value)
    assert re.match(r'task conv1_1 filters 0-2 view negative failed on worker tcp://127\.0\.0\.1:\d+: this worker \(pid \d+\) '
                    r'cannot see the model file %s' % re.escape(hidden.path), message), message
    assert '\n' not in message and 'Traceback' not in message

    # The atlas.json changed under a run: the next task refuses, and the run ends with one line, exit 2.
    out = str(tmp_path / 'changed')
    flags = ['--layers', 'conv3_1', '--method', 'blog', '--size', '32', '--iters', '200', '--batch-size', '1',
             '--precision', 'float32', '--quiet']
    process = start_atlas(out, model_file, scheduler, flags)
    try:
        wait_for_a_record(process, out, ['conv3_1'])
        path = os.path.join(out, atlas.ATLAS_FILE)
        with open(path) as f:
            header = json.load(f)
        # Another atlas takes the path whole (a rename, as every writer here does), so that a worker reads
        # either the old file or the new one, never one half written (that case: test_atlas.py).
        with open(path + '.new', 'w') as f:
            json.dump(dict(header, atlas_id='0' * 32), f)
        os.replace(path + '.new', path)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert re.match(r"error: task conv3_1 filters \d failed on worker tcp://127\.0\.0\.1:\d+: this worker \(pid \d+\) "
                    r"finds another atlas at %s .*atlas_id: '0{32}' there" % re.escape(path), lines[0]), lines[0]


def test_a_worker_killed_mid_run_leaves_every_filter_exactly_once(model_file, tmp_path):
    from distributed import Client
    flags = ['--layers', 'conv5_2,conv5_3', '--method', 'blog', '--size', '32', '--iters', '150',
             '--batch-size', '2', '--precision', 'float32', '--quiet']
    layers = ('conv5_2', 'conv5_3')
    out = str(tmp_path / 'out')
    with real_cluster(str(tmp_path / 'cluster')) as (address, workers):
        process = start_atlas(out, model_file, address, flags)
        try:
            wait_for_a_record(process, out, layers)
            with Client(address) as client:
                busy = sorted(worker for worker, keys in client.processing().items() if keys)
            assert busy, 'no task running to kill'
            assert len(records_of(out, layers)) < 8, 'the run was over before the kill'
            workers[busy[0]].send_signal(signal.SIGKILL)
            _, stderr = process.communicate(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
        assert workers[busy[0]].wait(timeout=30) == -signal.SIGKILL
    assert process.returncode == 0, stderr
    with open(os.path.join(out, atlas.CATALOG_FILE)) as f:
        catalog = json.load(f)
    assert [(e['layer'], e['filter']) for e in catalog] == [(layer, f) for layer in layers for f in range(8)]
    filters = [(r['layer'], f) for r in atlas.read_records(out) for f in r['filters']]
    assert sorted(filters) == sorted(set(filters)) and len(filters) == 16
    alone = str(tmp_path / 'alone')
    assert atlas_cli.main([alone, '--model', model_file] + flags) == 0
    assert_same_atlas(out, alone)


def test_worker_model_is_loaded_once_and_checked(model_file, tmp_path):
    net = vgg16.VGG16(model_file, threads=1)
    spec = cluster.ModelSpec.of(net, threads=1)
    # The process that made the spec holds the network already: no second copy.
    assert cluster.worker_model(spec) is net
    other = cluster.ModelSpec.of(net, threads=2)
    loaded = cluster.worker_model(other)
    assert loaded is cluster.worker_model(other) and loaded is not net and loaded.threads == 2
    assert isinstance(loaded, network.Network) and loaded.short_names == net.short_names and loaded.md5 == net.md5
    with pytest.raises(FileNotFoundError, match='every worker must see it'):
        cluster.worker_model(dataclasses.replace(other, path=str(tmp_path / 'gone.tfmodel')))
    copy = str(tmp_path / 'copy.tfmodel')
    shutil.copy(model_file, copy)
    with pytest.raises(ValueError, match='has md5 .* every worker must see the same file'):
        cluster.worker_model(dataclasses.replace(other, path=copy, md5='0' * 32))
    with pytest.raises(ValueError, match='given in memory'):
        cluster.ModelSpec.of(vgg16.VGG16(graph_def=net.graph_def))
    moved = vgg16.VGG16(copy)
    os.remove(copy)
    with pytest.raises(FileNotFoundError, match='no model file'):
        cluster.ModelSpec.of(moved)
    assert cluster.threads_per_worker(None) is None
    assert cluster.threads_per_worker(2 * cluster.machine_cores()) == 1
    assert cluster.worker_address().startswith('this process')


def test_shipping_to_a_cluster_inside_this_process_keeps_its_modules():
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None,
                      scheduler_kwargs={'dashboard_address': ':0'}) as local, Client(local) as client:
        cluster.ship_project(client)
    assert (sys.modules['filtervis.atlas'] is atlas and sys.modules['filtervis.cluster'] is cluster
            and sys.modules['filtervis.core.network'] is network)


def test_a_task_whose_worker_dies_is_one_line_naming_task_and_worker(model_file, tmp_path):
    import dask
    from distributed import Client, LocalCluster
    net = vgg16.VGG16(model_file)
    settings = atlas.Settings('blog', 300, 32, 0, None, 2, 'float32').checked()
    out = str(tmp_path / 'out')
    header = atlas.claim(out, atlas.make_header(net, settings, command=''))
    tasks = atlas.plan(net, settings, {4: range(8)})
    errors = []

    def run():
        try:
            atlas.render(out, cluster.ModelSpec.of(net), settings, header, tasks, client, progress=False)
        except atlas.TaskError as error:
            errors.append(error)

    # No second try: the first worker that dies with a task makes it fail.
    with dask.config.set({'distributed.scheduler.allowed-failures': 0}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                         scheduler_kwargs={'dashboard_address': ':0'}) as local, Client(local) as client:
        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 60
        while not any(client.processing().values()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        worker = sorted(w for w, keys in client.processing().items() if keys)[0]
        os.kill(client.run(os.getpid, workers=[worker])[worker], signal.SIGKILL)
        thread.join(timeout=120)
    assert len(errors) == 1
    assert re.fullmatch(r'task conv3_1 filters \d-\d failed on worker %s: the worker died while running it \(tried '
                        r'on 1 worker\(s\); out of memory\? see the workers\' logs\)' % re.escape(worker),
                        str(errors[0])), str(errors[0])


def test_the_shipped_package_carries_the_spectra_and_the_page():
    # A worker with only requirements.txt must find every file the package reads: the maco method's natural
    # spectra (read on the worker that renders) as well as the modules and the atlas page's markup. The
    # bootstrap is only read here, not unpacked: unpacking drops this process's filtervis modules.
    source = cluster.package_bootstrap('a mark of no process')
    namespace = {'__name__': '__filtervis_scheduler__'}
    exec(compile(source, 'bootstrap', 'exec'), namespace)
    for name in ('optvis/spectra/natural-rgb.npy', 'optvis/spectra/natural-grey.npy', 'atlas/page.html',
                 'optvis/maco.py'):
        with open(os.path.join(cluster.PACKAGE_DIR, name), 'rb') as f:
            assert namespace['FILES'][os.path.join('filtervis', name)] == f.read(), name

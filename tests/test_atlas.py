"""atlas.py and cluster.py on a small 13-layer model saved as a file (workers load it from there), 32 px.

Known answers: one process, `--workers 2` and two shards give the same float
arrays byte for byte, in every view (channel, negative, neuron, diversityN); a
run killed by SIGINT or SIGKILL and run again equals an uninterrupted one and
does not render finished views again; views added to an atlas later equal
those made at once, and leave the finished ones alone; a format-2 atlas (channel
only) is read and upgraded; a worker killed mid-task still leaves every filter
exactly once; other settings, weights or preprocessing, and every bad input,
are refused with a message and leave nothing behind; a write that fails is one
line naming the file and the cause; a network whose unit names are any text
gets an atlas too.
(tests/test_cluster.py: the same on a real scheduler and workers without the project.)
"""
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from builders import ROOT, random_weights
from test_vgg16 import write_keras1_h5
from filtervis import atlas
from filtervis import cluster
from filtervis.analysis import measures
from filtervis.core import network
from filtervis.models import vgg16
import visualize
import dataclasses
from filtervis.atlas import tasks as atlas_tasks
from filtervis.atlas import store as atlas_store
from filtervis.cli import atlas as atlas_cli
from filtervis.optvis import ascent

# Two layers at two depths; batches of 3 cut conv1_1 (4 filters) and conv3_1 (8) into 2 + 3 batches, each one
# task per view: 20 tasks, 60 pictures (diversity2 has 2 per filter). Each (unit, form of objective) builds its
# ops once per process (negative is channel's form): 6 builds, most of the time.
# float32 by name: subprocesses do not see the fake CPU of conftest, and 'auto' could differ between them.
VIEWS = ['channel', 'negative', 'neuron', 'diversity2']
RUN = ['--layers', 'conv1_1,conv3_1', '--size', '32', '--iters', '20', '--batch-size', '3',
       '--precision', 'float32', '--views', ','.join(VIEWS), '--quiet']
# For the kill tests: tasks long enough (about half a second each) to be caught half-way; 2 batches x 2 views.
SLOW = ['--layers', 'conv3_1', '--filters', '0-3', '--views', 'negative,diversity2', '--method', 'blog',
        '--size', '32', '--iters', '300', '--batch-size', '2', '--precision', 'float32', '--quiet']
# For the tests that add views: small and quick.
QUICK = ['--layers', 'conv1_1,conv2_1', '--filters', '0-3', '--method', 'blog', '--size', '16', '--iters', '8',
         '--batch-size', '3', '--precision', 'float32', '--quiet']


@pytest.fixture(scope='module')
def net(model_file):
    return vgg16.VGG16(model_file)


@pytest.fixture(scope='module')
def reference(model_file, tmp_path_factory):
    """The atlas of RUN made by one process: the folder."""
    out = str(tmp_path_factory.mktemp('reference') / 'atlas')
    assert atlas_cli.main([out, '--model', model_file] + RUN) == 0
    return out


def arrays(out):
    """{relative .npz path: {name: array}} of an atlas folder."""
    found = {}
    for layer in sorted(os.listdir(out)):
        folder = os.path.join(out, layer)
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.endswith('.npz'):
                    with np.load(os.path.join(folder, name)) as npz:
                        found['%s/%s' % (layer, name)] = {k: npz[k] for k in npz.files}
    return found


def assert_same_atlas(out, expected):
    """Same files, float arrays equal byte for byte, same catalog and atlas.json."""
    got, want = arrays(out), arrays(expected)
    assert sorted(got) == sorted(want)
    for name in want:
        for key in ('image', 'objectives', 'dead'):
            assert got[name][key].tobytes() == want[name][key].tobytes(), (name, key)
    with open(os.path.join(out, atlas.CATALOG_FILE)) as f, open(os.path.join(expected, atlas.CATALOG_FILE)) as g:
        assert json.load(f) == json.load(g)
    # The same atlas.json but for the random id each new atlas gets.
    with open(os.path.join(out, atlas.ATLAS_FILE)) as f, open(os.path.join(expected, atlas.ATLAS_FILE)) as g:
        got, want = json.load(f), json.load(g)
    assert got.pop('atlas_id') != want.pop('atlas_id') and got == want


@pytest.mark.slow
def test_catalog_lists_every_filter_once_with_its_files(reference):
    with open(os.path.join(reference, atlas.CATALOG_FILE)) as f:
        catalog = json.load(f)
    assert [(e['layer'], e['filter']) for e in catalog] == (
        [('conv1_1', f) for f in range(4)] + [('conv3_1', f) for f in range(8)])
    for entry in catalog:
        assert [v['view'] for v in entry['views']] == VIEWS
        assert [len(v['pictures']) for v in entry['views']] == [1, 1, 1, 2]
        # The tile is the channel view's picture, at the layout of a channel-only atlas.
        folder, number = entry['layer'], '%04d' % entry['filter']
        assert entry['view'] == 'channel' and entry['npz'] == '%s/%s.npz' % (folder, number)
        assert [p['npz'] for v in entry['views'] for p in v['pictures']] == [
            '%s/%s%s.npz' % (folder, number, suffix)
            for suffix in ('', '-negative', '-neuron', '-diversity2-0', '-diversity2-1')]
        for view in entry['views']:
            for picture in view['pictures']:
                for key in ('png', 'thumb', 'curve', 'npz'):
                    assert os.path.isfile(os.path.join(reference, picture[key]))
                assert 0 <= picture['dead_fraction'] <= 1
                # A negative view is measured before the ReLU, where a blurred picture may turn the filter negative.
                assert picture['blur_robustness'] is None or picture['blur_robustness'] >= 0 or (
                    view['view'] == 'negative')
        channel, negative, neuron, diverse = entry['views']
        assert channel['pictures'][0]['activation'] >= 0 and neuron['pictures'][0]['activation'] >= 0
        assert 0 <= diverse['diversity'] <= 1 and 'diversity' not in channel
        # A neuron sees only its receptive field: its picture is dead only when it never had a gradient.
        channel, neuron = channel['pictures'][0], neuron['pictures'][0]
        assert channel['dead'] == (channel['no_gradient'] or channel['dead_fraction'] >= atlas.DEAD_PICTURE)
        assert neuron['dead'] == neuron['no_gradient']
    with np.load(os.path.join(reference, catalog[0]['npz'])) as npz:
        assert npz['image'].shape == (32, 32, 3) and npz['image'].dtype == np.float32
        assert npz['objectives'].shape == (20,)
    records = sorted(os.listdir(os.path.join(reference, 'conv1_1')))
    assert [n for n in records if n.startswith('task-')] == sorted(
        'task-%04d%s.json' % (f, s) for f in (0, 3) for s in ('', '-negative', '-neuron', '-diversity2'))
    with open(os.path.join(reference, atlas.ATLAS_FILE)) as f:
        header = json.load(f)
    assert header['settings'] == {'method': 'regularized', 'iters': 20, 'size': 32, 'seed': 0,
                                  'step_size': None, 'batch_size': 3, 'precision': 'float32', 'views': VIEWS,
                                  'diversity_weight': ascent.DEFAULT_DIVERSITY_WEIGHT['regularized']}


def test_the_negative_view_rises_and_turns_its_filter_down(net, reference):
    with open(os.path.join(reference, atlas.CATALOG_FILE)) as f:
        catalog = json.load(f)
    for entry in catalog:
        layer, number = entry['layer'], '%04d' % entry['filter']
        with np.load(os.path.join(reference, layer, number + '-negative.npz')) as npz:
            objectives, negative = npz['objectives'], npz['image']
        # Regularized steps see randomly moved pictures: compare the first and last few steps.
        assert objectives[-5:].mean() > objectives[:5].mean(), (layer, number, objectives)
        with np.load(os.path.join(reference, layer, number + '.npz')) as npz:
            channel = npz['image']
        # Before the ReLU (after it the filter is off): the negative picture turns its filter further down than
        # the channel's picture, and its measured activation is minus the filter's mean.
        means = measures.activation(net, layer, [entry['filter']] * 2, np.stack([negative, channel]), pre_relu=True)
        assert means[0] < means[1], (layer, number, means)
        assert entry['views'][1]['pictures'][0]['activation'] == pytest.approx(-means[0], rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_workers_and_shards_equal_one_process(model_file, reference, tmp_path):
    workers = str(tmp_path / 'workers')
    assert atlas_cli.main([workers, '--model', model_file, '--workers', '2'] + RUN) == 0
    assert_same_atlas(workers, reference)
    shards = str(tmp_path / 'shards')
    assert atlas_cli.main([shards, '--model', model_file, '--shard', '1/2'] + RUN) == 0
    # Every other task: some of every view, of 48 views of filters in all.
    half = atlas.done_views(shards)
    assert 0 < len(half) < 48 and {view for _, _, view in half} == set(VIEWS)
    assert atlas_cli.main([shards, '--model', model_file, '--shard', '0/2'] + RUN) == 0
    assert_same_atlas(shards, reference)


def test_shards_are_disjoint_and_cover_every_task(net):
    settings = atlas.Settings(batch_size=3, size=32, views=('diversity4', 'channel')).checked()
    tasks = atlas.plan(net, settings, {i: range(net.layer_channels[i]) for i in range(13)})
    parts = [atlas.shard_of(tasks, (i, 4)) for i in range(4)]
    assert sorted(sum(parts, []), key=tasks.index) == tasks
    # Each shard holds some of every view, even when N divides the number of views' tasks of a batch.
    assert all({t.view for t in part} == {'channel', 'diversity4'} for part in parts)
    # Narrowing the selection narrows the tasks; it never moves a filter to another batch. View by view, in
    # page order.
    narrow = atlas.plan(net, settings, {4: [1, 2, 3, 4]})
    assert [(t.filters, t.view) for t in narrow] == [((1, 2), 'channel'), ((3, 4), 'channel'),
                                                      ((1, 2), 'diversity4'), ((3, 4), 'diversity4')]
    assert [t.pictures for t in narrow] == [2, 2, 8, 8]
    assert str(narrow[2]) == 'task conv3_1 filters 1-2 view diversity4' and narrow[2].record_name == (
        'task-0001-diversity4.json')


@pytest.mark.slow
def test_visualize_command_of_the_page_renders_the_same_picture(model_file, reference, tmp_path, monkeypatch):
    header = atlas.read_header(reference)
    words = header['command'].split()
    # The model by its file name: the page travels to other machines; run the command where the file is.
    assert words[:4] == ['python', 'visualize.py', '--model', 'tiny.tfmodel']
    monkeypatch.chdir(os.path.dirname(model_file))
    # Each view: the page adds its flags to the atlas's command (atlas.view_text).
    for view, names in (('channel', ['0005']), ('negative', ['0005-negative']),
                        ('diversity2', ['0005-diversity2-0', '0005-diversity2-1'])):
        npz = str(tmp_path / ('%s.npz' % view))
        flags = atlas.view_text(view, header['settings'])['flags'].split()
        assert visualize.main(words[2:] + flags + ['--layer', 'conv3_1', '--filters', '5', '--out',
                                                   str(tmp_path / 'one.png'), '--npz', npz, '--quiet']) == 0
        with np.load(npz) as alone:
            assert len(alone['images']) == len(names)
            for image, name in zip(alone['images'], names):
                with np.load(os.path.join(reference, 'conv3_1', name + '.npz')) as in_atlas:
                    assert image.tobytes() == in_atlas['image'].tobytes(), name


def test_index_only_rebuilds_catalog_and_page(reference, tmp_path):
    out = str(tmp_path / 'copy')
    shutil.copytree(reference, out)
    for name in (atlas.CATALOG_FILE, atlas.PAGE_FILE):
        os.remove(os.path.join(out, name))
    assert atlas_cli.main([out, '--index-only', '--quiet']) == 0
    for name in (atlas.CATALOG_FILE, atlas.PAGE_FILE):
        with open(os.path.join(out, name), 'rb') as f, open(os.path.join(reference, name), 'rb') as g:
            assert f.read() == g.read()


def start(out, model_file, flags):
    # The run must hear Ctrl-C even when the tests run as a background job, whose shell starts children
    # with SIGINT ignored (Python then installs no KeyboardInterrupt handler).
    return subprocess.Popen([sys.executable, os.path.join(ROOT, 'atlas.py'), out, '--model', model_file] + flags,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def records(out):
    folder = os.path.join(out, 'conv3_1')
    if not os.path.isdir(folder):
        return {}
    return {n: os.stat(os.path.join(folder, n)).st_mtime_ns for n in os.listdir(folder) if n.startswith('task-')}


def wait_for_records(process, out, count, timeout=120):
    deadline = time.monotonic() + timeout
    while len(records(out)) < count:
        assert process.poll() is None, 'the run ended before it could be interrupted: %s' % process.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.slow
def test_killed_runs_resume_and_equal_an_uninterrupted_one(model_file, tmp_path):
    expected = str(tmp_path / 'expected')
    assert atlas_cli.main([expected, '--model', model_file] + SLOW) == 0
    out = str(tmp_path / 'out')

    # Ctrl-C after the first task: a clean stop, the page shows what is finished.
    process = start(out, model_file, SLOW)
    wait_for_records(process, out, 1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and 'run the same command again' in stderr
    # 8 views of filters in all (4 filters x 2 views); the page holds those finished.
    with open(os.path.join(out, atlas.CATALOG_FILE)) as f:
        assert 2 <= sum(len(e['views']) for e in json.load(f)) < 8

    # SIGKILL after one more task: no chance to clean up.
    before = records(out)
    process = start(out, model_file, SLOW)
    wait_for_records(process, out, len(before) + 1)
    process.kill()
    process.communicate(timeout=60)
    killed = records(out)
    assert len(killed) < 4
    for name in os.listdir(os.path.join(out, 'conv3_1')):
        if name.endswith('.npz') and '.tmp' not in name:
            np.load(os.path.join(out, 'conv3_1', name))['image']   # complete under its final name

    assert atlas_cli.main([out, '--model', model_file] + SLOW) == 0
    after = records(out)
    assert sorted(after) == ['task-0000-diversity2.json', 'task-0000-negative.json', 'task-0002-diversity2.json',
                             'task-0002-negative.json']
    # Finished views were not rendered again.
    assert {n: after[n] for n in killed} == killed
    assert_same_atlas(out, expected)


@pytest.mark.slow
def test_worker_killed_mid_task_every_filter_exactly_once(model_file, tmp_path):
    from dask.distributed import Client, LocalCluster
    out = str(tmp_path / 'out')
    flags = ['--layers', 'conv5_2,conv5_3', '--method', 'blog', '--size', '32', '--iters', '400',
             '--batch-size', '2', '--precision', 'float32', '--quiet']
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      scheduler_kwargs={'dashboard_address': ':0'}) as local, Client(local) as client:
        codes = []
        run = threading.Thread(target=lambda: codes.append(
            atlas_cli.main([out, '--model', model_file, '--scheduler', local.scheduler_address] + flags)))
        run.start()
        # Wait for a finished task, then kill a worker that is in the middle of another.
        deadline = time.monotonic() + 120
        while not any(n.startswith('task-') for d in ('conv5_2', 'conv5_3') if os.path.isdir(os.path.join(out, d))
                      for n in os.listdir(os.path.join(out, d))):
            assert time.monotonic() < deadline and run.is_alive()
            time.sleep(0.02)
        busy = {worker: keys for worker, keys in client.processing().items() if keys}
        assert busy, 'no task running to kill'
        worker = sorted(busy)[0]
        os.kill(client.run(os.getpid, workers=[worker])[worker], signal.SIGKILL)
        run.join(timeout=300)
        # Each worker process loaded the model once and kept it (the restarted one may have had no task).
        assert set(client.run(lambda: len(__import__('importlib').import_module('filtervis.cluster')._models)).values()) <= {0, 1}
    assert codes == [0]
    with open(os.path.join(out, atlas.CATALOG_FILE)) as f:
        catalog = json.load(f)
    assert [(e['layer'], e['filter']) for e in catalog] == [(l, f) for l in ('conv5_2', 'conv5_3') for f in range(8)]
    filters = [(r['layer'], f) for r in atlas.read_records(out) for f in r['filters']]
    assert sorted(filters) == sorted(set(filters)) and len(filters) == 16
    # The task that lost its worker gives the same pictures as one process.
    alone = str(tmp_path / 'alone')
    assert atlas_cli.main([alone, '--model', model_file] + flags) == 0
    assert_same_atlas(out, alone)


def listing(out):
    """{(folder, name, mtime, bytes)} of every file under out."""
    return {(d, n, os.stat(os.path.join(d, n)).st_mtime_ns, os.path.getsize(os.path.join(d, n)))
            for d, _, names in os.walk(out) for n in names}


def test_other_settings_or_weights_are_refused(model_file, reference, tmp_path, capsys):
    out = str(tmp_path / 'copy')
    shutil.copytree(reference, out)
    before = listing(out)
    assert atlas_cli.main([out, '--model', model_file] + RUN + ['--iters', '21']) == 2
    assert "iters: 20 there, 21 now" in capsys.readouterr().err
    other = str(tmp_path / 'other.tfmodel')
    with open(other, 'wb') as f:
        f.write(vgg16.build_graph_def(random_weights(seed=1), 'unit').SerializeToString())
    assert atlas_cli.main([out, '--model', other] + RUN) == 2
    assert 'weights md5' in capsys.readouterr().err
    assert listing(out) == before


def task_records(out):
    """{(folder, record name): mtime} of every task record under out."""
    return {(d, n): os.stat(os.path.join(d, n)).st_mtime_ns for d, _, names in os.walk(out) for n in names
            if n.startswith('task-')}


@pytest.mark.slow
def test_views_added_later_equal_views_made_at_once_and_keep_the_finished(model_file, tmp_path, capsys):
    at_once = str(tmp_path / 'at-once')
    assert atlas_cli.main([at_once, '--model', model_file, '--views', 'channel,negative,diversity2'] + QUICK) == 0
    out = str(tmp_path / 'out')
    assert atlas_cli.main([out, '--model', model_file, '--views', 'negative'] + QUICK) == 0
    first = atlas.read_header(out)
    finished = task_records(out)
    assert atlas_cli.main([out, '--model', model_file, '--views', 'diversity2,channel'] + QUICK) == 0
    # The finished view is not rendered again; atlas.json lists every view so far, in page order, same atlas.
    assert {k: v for k, v in task_records(out).items() if k in finished} == finished
    header = atlas.read_header(out)
    assert header['settings']['views'] == ['channel', 'negative', 'diversity2']
    assert atlas.without_views(header) == atlas.without_views(first)
    assert_same_atlas(out, at_once)
    # Fewer views: nothing to do, nothing dropped.
    finished = task_records(out)
    assert atlas_cli.main([out, '--model', model_file, '--views', 'negative'] + QUICK) == 0
    assert task_records(out) == finished and atlas.read_header(out) == header
    # A new view with another setting is refused like any other setting, and changes nothing.
    before = listing(out)
    capsys.readouterr()
    assert atlas_cli.main([out, '--model', model_file, '--views', 'neuron'] + QUICK + ['--iters', '9']) == 2
    assert 'iters: 8 there, 9 now' in capsys.readouterr().err
    assert atlas_cli.main([out, '--model', model_file, '--views', 'diversity4', '--diversity-weight', '0.3']
                      + QUICK) == 2
    error = capsys.readouterr().err
    assert 'diversity_weight: 1.0 there, 0.3 now' in error and len(error.strip().splitlines()) == 1
    assert listing(out) == before


def test_a_format_2_atlas_is_read_as_channel_views_and_upgraded_when_views_are_added(model_file, tmp_path):
    """An atlas made before views (format 2): one picture per filter in each record entry, no views."""
    made = str(tmp_path / 'made')
    assert atlas_cli.main([made, '--model', model_file, '--views', 'channel,negative'] + QUICK) == 0
    out = str(tmp_path / 'old')
    assert atlas_cli.main([out, '--model', model_file] + QUICK) == 0
    catalog = atlas.build_catalog(out)
    path = os.path.join(out, atlas.ATLAS_FILE)
    header = atlas.read_header(out)
    old_settings = {k: v for k, v in header['settings'].items() if k not in ('views', 'diversity_weight')}
    with open(path, 'w') as f:
        json.dump(dict(header, format=2, settings=old_settings), f)
    for folder, name in task_records(out):
        with open(os.path.join(folder, name)) as f:
            record = json.load(f)
        entries = [dict({k: e[k] for k in ('layer', 'layer_index', 'filter')}, **e['pictures'][0])
                   for e in record['entries']]
        with open(os.path.join(folder, name), 'w') as f:
            json.dump({'layer': record['layer'], 'filters': record['filters'], 'entries': entries,
                       'seconds': record['seconds']}, f)
    assert atlas.build_catalog(out) == catalog
    finished = task_records(out)
    assert atlas_cli.main([out, '--model', model_file, '--views', 'channel,negative'] + QUICK) == 0
    assert {k: v for k, v in task_records(out).items() if k in finished} == finished
    upgraded = atlas.read_header(out)
    assert upgraded['format'] == atlas.FORMAT and upgraded['atlas_id'] == header['atlas_id']
    assert upgraded['settings'] == dict(header['settings'], views=['channel', 'negative'])
    assert_same_atlas(out, made)


def test_a_worker_that_finds_another_atlas_refuses_and_writes_nothing(net, reference, tmp_path):
    out = str(tmp_path / 'copy')
    shutil.copytree(reference, out)
    before = listing(out)
    header = atlas.read_header(out)
    settings = atlas.Settings(**header['settings'])
    spec = cluster.ModelSpec.of(net)
    task = atlas.Task(1, 'conv1_2', (0, 1))
    # Another folder with the same settings (its own atlas id), and one with other settings.
    for sent, message in ((dict(header, atlas_id='0' * 32), "atlas_id: '%s' there" % header['atlas_id']),
                          (dict(header, settings=dict(header['settings'], iters=21)), 'iters: 20 there, 21 now')):
        with pytest.raises(ValueError, match='finds another atlas at .*%s' % message):
            atlas.run_task(task, spec, out, settings, sent)
    assert not os.path.exists(os.path.join(out, 'conv1_2'))
    assert listing(out) == before



@pytest.mark.slow
def test_a_damaged_atlas_json_is_named_and_nothing_is_written(net, reference, tmp_path):
    out = str(tmp_path / 'copy')
    shutil.copytree(reference, out)
    header = atlas.read_header(out)
    settings = atlas.Settings(**header['settings'])
    path = os.path.join(out, atlas.ATLAS_FILE)
    with open(path, 'w') as f:
        f.write('{"atlas_id": "0')
    before = listing(out)
    task = atlas.Task(1, 'conv1_2', (0, 1))
    with pytest.raises(ValueError, match=r'this worker \(pid \d+\) finds that %s is damaged: it is not a JSON '
                                         r'object \(Unterminated string .*, 15 bytes\); restore it' % re.escape(path)):
        atlas.run_task(task, cluster.ModelSpec.of(net), out, settings, header)
    with pytest.raises(ValueError, match=r'^%s is damaged: it is not a JSON object' % re.escape(path)):
        atlas.claim(out, header)
    with pytest.raises(ValueError, match=r'^%s is damaged' % re.escape(path)):
        atlas.read_header(out)
    assert listing(out) == before


def test_an_atlas_json_caught_while_it_is_rewritten_in_place_is_read_again(tmp_path, monkeypatch):
    # An editor or a script that rewrites the file in place leaves it empty, or cut short, for a moment.
    path = str(tmp_path / 'atlas.json')
    whole = json.dumps({'atlas_id': 'a' * 32, 'name': 'caf\u00e9'}, ensure_ascii=False).encode('utf8')
    for seen in (b'', whole[:-3], whole[:whole.index(b'\xc3') + 1], b'null'):   # empty, cut, cut inside a character
        with open(path, 'wb') as f:
            f.write(seen)
        waits = []

        def finish(seconds):
            # The reader waits after its first failed read: the writer finishes then.
            waits.append(seconds)
            with open(path, 'wb') as f:
                f.write(whole)
        monkeypatch.setattr(atlas_store.time, 'sleep', finish)
        assert atlas.read_json(path) == {'atlas_id': 'a' * 32, 'name': 'caf\u00e9'}
        assert waits == [0.1], seen
    # Never whole: five reads, 0.1 to 0.8 s apart, then one line naming the file.
    waits = []
    monkeypatch.setattr(atlas_store.time, 'sleep', waits.append)
    with open(path, 'wb') as f:
        f.write(b'[1, 2]')
    with pytest.raises(ValueError, match=r'^%s is damaged: it is not a JSON object \(a JSON array, not an object, '
                                         r'6 bytes\)' % re.escape(path)):
        atlas.read_json(path)
    assert waits == [0.1, 0.2, 0.4, 0.8]

def test_a_relative_out_reaches_the_workers_absolute(model_file, tmp_path, monkeypatch):
    sent = []
    monkeypatch.setattr(atlas_tasks, 'render', lambda out, *args, **kwargs: sent.append(out))
    monkeypatch.chdir(tmp_path)
    assert atlas_cli.main(['relative', '--model', model_file] + RUN) == 0
    assert sent == [str(tmp_path / 'relative')]


def closed_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize('flags, message', [
    (['--layers', 'conv9_9'], "unknown layer 'conv9_9'"),
    (['--layers', 'conv1_1', '--filters', '2-7'], 'filter 4 is out of range: conv1_1 has 4 filters, 0..3'),
    (['--shard', '2/2'], "--shard '2/2': expected I/N with 0 <= I < N"),
    (['--shard', 'one/two'], "--shard 'one/two'"),
    (['--shard', '1/0'], "--shard '1/0'"),
    (['--method', 'blog', '--step-size', '0'], 'step_size=0.0'),
    (['--iters', '0'], 'iters=0'),
    (['--size', '8', '--layers', 'conv5_3'], 'conv5_3 needs images of at least 16 pixels'),
    (['--examples', '/nonexistent/images'], 'image folder /nonexistent/images does not exist'),
    (['--views', 'channel,negtive'], "view 'negtive': expected channel, negative, neuron or diversityN (N >= 2"),
    (['--views', 'diversity1'], "view 'diversity1': a diversity view needs N >= 2 pictures per filter"),
    (['--views', 'diversity0'], "view 'diversity0': a diversity view needs N >= 2 pictures per filter"),
    (['--views', 'diversity'], "view 'diversity': expected channel"),
    (['--views', 'neuron,channel,neuron'], 'view neuron given twice'),
    (['--views', ''], "view '': expected channel"),
    (['--diversity-weight', '0.3'], '--diversity-weight 0.3 goes with a diversityN view'),
    (['--views', 'diversity2', '--diversity-weight', '-1'], 'diversity_weight=-1.0: expected a finite number >= 0'),
])
def test_bad_input_says_what_and_leaves_nothing(model_file, tmp_path, capsys, flags, message):
    out = str(tmp_path / 'out')
    assert atlas_cli.main([out, '--model', model_file, '--quiet'] + flags) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1, error
    assert not os.path.exists(out)


def test_help_says_a_view_costs_its_pictures():
    text = ' '.join(atlas_cli.build_parser().format_help().split())
    assert 'diversity4 is 4 pictures' in text and 'channel,negative,neuron,diversity4 is 7, about 7x the time' in text


@pytest.mark.slow
def test_unreachable_scheduler_names_it_and_how_to_start_one(model_file, tmp_path, capsys):
    out = str(tmp_path / 'out')
    address = 'tcp://127.0.0.1:%d' % closed_port()
    started = time.monotonic()
    assert atlas_cli.main([out, '--model', model_file, '--scheduler', address, '--quiet']) == 2
    assert time.monotonic() - started < 30
    error = capsys.readouterr().err
    assert 'cannot reach a Dask scheduler at %s' % address in error and '`dask scheduler`' in error
    assert len(error.strip().splitlines()) == 1
    assert not os.path.exists(out)


def test_unwritable_out_is_refused(model_file, tmp_path, capsys):
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a folder')
    assert atlas_cli.main([str(blocker / 'out'), '--model', model_file, '--quiet']) == 2
    assert 'is not a folder' in capsys.readouterr().err
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = tmp_path / 'locked'
        locked.mkdir(mode=0o500)
        assert atlas_cli.main([str(locked / 'out'), '--model', model_file, '--quiet']) == 2
        assert 'not writable' in capsys.readouterr().err
        assert os.listdir(locked) == []


def test_index_only_needs_an_atlas(tmp_path, capsys):
    assert atlas_cli.main([str(tmp_path), '--index-only']) == 2
    assert 'not an atlas folder' in capsys.readouterr().err


@pytest.mark.slow
def test_one_progress_bar_over_pictures_and_quiet_turns_it_off(model_file, tmp_path, capsys):
    # 10 filters, 3 pictures each (channel 1, diversity2 2).
    flags = ['--model', model_file, '--layers', 'conv1_1,conv2_1', '--size', '32', '--iters', '3', '--batch-size', '4',
             '--views', 'channel,diversity2']
    assert atlas_cli.main([str(tmp_path / 'loud')] + flags) == 0
    err = capsys.readouterr().err
    assert 'atlas: 100%' in err and '30/30 [' in err and 'picture/s' in err
    assert err.count(' 0/30 [') == 1          # one bar for the whole run, not one per task, layer or view
    assert atlas_cli.main([str(tmp_path / 'quiet')] + flags + ['--quiet']) == 0
    assert capsys.readouterr().err == ''


def test_same_weights_under_another_preprocess_are_refused_and_out_is_left_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('VGG16_DIR', str(tmp_path / 'models'))
    weights = tmp_path / 'weights' / 'tiny.h5'
    weights.parent.mkdir()
    write_keras1_h5(str(weights), random_weights())
    out = str(tmp_path / 'out')
    flags = ['--weights', str(weights), '--layers', 'conv1_1', '--size', '16', '--iters', '3', '--method', 'blog',
             '--precision', 'float32', '--quiet']
    assert atlas_cli.main([out] + flags + ['--preprocess', 'unit']) == 0
    header = atlas.read_header(out)
    assert header['preprocess'] == 'unit' and header['weights'] == 'tiny.h5' and header['model'] == 'vgg16.tfmodel'
    # Names, not paths: nothing of this machine's folders in the header, the command or the page.
    assert str(tmp_path) not in json.dumps(header)
    assert '--weights tiny.h5 --preprocess unit' in header['command']
    with open(os.path.join(out, atlas.PAGE_FILE)) as f:
        assert str(tmp_path) not in f.read()
    capsys.readouterr()
    before = listing(out)
    assert atlas_cli.main([out] + flags + ['--preprocess', 'caffe']) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1
    assert "preprocess: 'unit' there, 'caffe' now" in error and 'weights md5' not in error
    assert listing(out) == before


def test_no_model_flag_takes_the_model_folder_and_downloads_nothing(model_file, tmp_path, monkeypatch, capsys):
    models_dir = tmp_path / 'models'
    models_dir.mkdir()
    monkeypatch.setenv('VGG16_DIR', str(models_dir))
    out = str(tmp_path / 'out')
    assert atlas_cli.main([out, '--layers', 'conv1_1', '--size', '16', '--iters', '2', '--quiet']) == 2
    error = capsys.readouterr().err
    assert 'no model at %s' % (models_dir / 'vgg16.tfmodel') in error and 'python download.py' in error
    assert os.listdir(models_dir) == [] and not os.path.exists(out)
    shutil.copy(model_file, str(models_dir / 'vgg16.tfmodel'))
    assert atlas_cli.main([out, '--layers', 'conv1_1', '--size', '16', '--iters', '2', '--precision', 'float32',
                       '--quiet']) == 0
    header = atlas.read_header(out)
    # visualize.py with no model flag takes the same graph.
    assert header['model'] == 'vgg16.tfmodel' and '--model' not in header['command']


@pytest.mark.slow
def test_a_write_that_fails_is_one_line_naming_the_file_and_leaves_no_temporary(model_file, tmp_path):
    out = str(tmp_path / 'out')
    # 64 kB at most per file: the record and the page fit, the .npz of a 96 px picture (108 kB) does not.
    command = ' '.join(shlex.quote(w) for w in [sys.executable, os.path.join(ROOT, 'atlas.py'), out, '--model',
                                                model_file, '--layers', 'conv1_1', '--filters', '0-1', '--size', '96',
                                                '--iters', '2', '--method', 'blog', '--precision', 'float32',
                                                '--quiet'])
    done = subprocess.run(['bash', '-c', 'ulimit -f 64; exec ' + command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith('error: cannot write %s' % os.path.join(out, 'conv1_1', '0000.npz'))
    assert 'File too large' in lines[0] and 'ulimit -f' in lines[0]
    assert not [n for _, _, names in os.walk(out) for n in names if '.tmp' in n]
    assert not os.path.exists(os.path.join(out, 'conv1_1', '0000.npz'))


def test_claim_races_to_one_header_and_leaves_no_temporary(tmp_path):
    out = str(tmp_path / 'out')
    header = {'format': atlas.FORMAT, 'settings': dataclasses.asdict(atlas.Settings(size=32).checked()),
              'weights_md5': '0' * 32, 'preprocess': 'unit', 'description': 'test', 'weights': None,
              'model': 'tiny.tfmodel', 'command': ''}
    claimed = []
    threads = [threading.Thread(target=lambda: claimed.append(atlas.claim(out, header))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == 8 and all(c == claimed[0] for c in claimed)
    assert os.listdir(out) == [atlas.ATLAS_FILE]
    with pytest.raises(ValueError, match="preprocess: 'unit' there, 'caffe' now"):
        atlas.claim(out, dict(header, preprocess='caffe'))


def test_unit_folders_are_plain_file_names_and_apart():
    assert atlas.unit_folder(5, 'conv3_2') == 'conv3_2'
    assert atlas.unit_folder(0, 'block1_conv1') == 'block1_conv1'
    names = ['<img src=x onerror=alert(1)>', 'mixed_5b/a:b', 'mixed_5b/a.b', '..', 'atlas.json', '', '-x', 'a' * 80]
    folders = [atlas.unit_folder(i, name) for i, name in enumerate(names)]
    assert folders[1] == '001~mixed_5b_a_b' and folders[2] == '002~mixed_5b_a_b'
    assert len(set(folders)) == len(folders)
    for folder in folders:
        assert re.fullmatch(r'[A-Za-z0-9_~-]+', folder) and len(folder) < 64
    assert atlas.id_ranges([0, 1, 2, 3, 7, 9, 10]) == '0-3,7,9-10'


# Names that TensorFlow takes in op names (the methods build their ops under a name scope per unit); the
# page test (tests/test_atlas_page.py) shows names with any character.
ODD_NAMES = ('mixed_5b/branch.1', 'Conv.2-b', '7')


def odd_network(model_file):
    """The tiny VGG16's graph with three of its layers as units named like no VGG16 layer."""
    units = [network.Unit(name, '%s/%s:0' % (layer, layer), '%s/BiasAdd:0' % layer, 'Conv2D')
             for name, layer in zip(ODD_NAMES, ('conv1_1', 'conv2_1', 'conv3_1'))]
    return network.Network(network.load_graph_def(model_file), units, path=model_file,
                           description='tiny VGG16 with units named <b>like</b> anything')


@pytest.mark.slow
def test_a_network_whose_unit_names_are_any_text_gets_an_atlas(model_file, tmp_path):
    net = odd_network(model_file)
    settings = atlas.Settings('blog', 3, 32, 0, None, 3, 'float32').checked()
    # A name that reads as a number is that unit; a number that is no unit's name is an index.
    assert atlas.parse_layers(net, '7,1') == [1, 2]
    tasks = atlas.plan(net, settings, atlas.select(net, settings))
    out = str(tmp_path / 'out')
    header = atlas.make_header(net, settings, command='python elsewhere.py')
    catalog = atlas.make(out, net, settings, tasks, header, progress=False)
    assert [(e['layer'], e['layer_index']) for e in catalog] == (
        [(ODD_NAMES[0], 0)] * 4 + [(ODD_NAMES[1], 1)] * 6 + [(ODD_NAMES[2], 2)] * 8)
    assert sorted(os.listdir(out)) == ['000~mixed_5b_branch_1', '001~Conv_2-b', '7',
                                       atlas.ATLAS_FILE, atlas.CATALOG_FILE, atlas.PAGE_FILE]
    for entry in catalog:
        assert os.path.isfile(os.path.join(out, entry['npz']))
    # Resumed: nothing is rendered again.
    before = listing(out)
    assert atlas.render(out, cluster.ModelSpec.of(net), settings, atlas.read_header(out), tasks,
                        progress=False) == 0
    assert {entry for entry in listing(out) if entry[1].startswith('task-')} == {
        entry for entry in before if entry[1].startswith('task-')}


def test_atlas_code_and_page_name_no_vgg16_layer():
    folder = os.path.join(ROOT, 'filtervis', 'atlas')
    names = [os.path.join(folder, name) for name in sorted(os.listdir(folder)) if name.endswith(('.py', '.html'))]
    assert os.path.join(folder, 'page.html') in names
    for name in names + [os.path.join(ROOT, 'filtervis', 'cli', 'atlas.py'), os.path.join(ROOT, 'atlas.py')]:
        with open(name) as f:
            text = f.read()
        assert not re.search(r'conv\d_\d|POOL_AFTER|CONV_LAYERS', text), name


def test_a_greyscale_picture_is_written_grey(tmp_path):
    image = np.random.default_rng(0).uniform(0, 255, (32, 32, 1)).astype(np.float32)
    values = {'activation': 1.0, 'dead_fraction': 0.0, 'blur_robustness': float('nan')}
    (tmp_path / 'grey').mkdir()
    base = atlas.picture_base(0, 'grey', 3, 'channel')
    entry = atlas.write_picture(str(tmp_path), base, image, np.arange(4, dtype=np.float32), False, values)
    for key in ('png', 'thumb'):
        with Image.open(str(tmp_path / entry[key])) as picture:
            assert picture.mode == 'L' and picture.size == (32, 32)
    with np.load(str(tmp_path / entry['npz'])) as npz:
        assert npz['image'].shape == (32, 32, 1)
    assert entry['blur_robustness'] is None and entry['png'] == 'grey/0003.png'
    assert atlas.picture_base(0, 'grey', 3, 'neuron') == 'grey/0003-neuron'
    assert atlas.picture_base(0, 'grey', 3, 'diversity4', 2) == 'grey/0003-diversity4-2'

"""download.py -> vgg16.tfmodel end to end, against a real HTTP server on 127.0.0.1.

What `python download.py` does on a machine with internet, shown here with
the sources pointed at the loopback server: fetch, verify, build the graph,
and on a second run touch no network at all.
"""
import os

import numpy as np
import pytest

from filtervis.util import download
from filtervis.util import files
from filtervis.models import vgg16
from builders import random_weights
from httpserver import Behaviour, LocalServer
from test_vgg16 import numpy_vgg16, write_keras2_h5
from filtervis.cli import download as download_cli


@pytest.fixture
def server():
    with LocalServer() as local_server:
        yield local_server


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def test_default_source_end_to_end(server, tmp_path, monkeypatch, capsys):
    weights = random_weights(seed=8)
    h5_path = str(tmp_path / 'served.h5')
    write_keras2_h5(h5_path, weights)
    body = read(h5_path)
    # The primary is dead; the mirror drops the connection once, past the first 64 KiB chunk.
    server.serve('/primary.h5', Behaviour(status=404))
    server.serve('/mirror.h5', Behaviour(body=body, drop_after=len(body) - 1000))
    keras = download.SOURCES['keras']
    monkeypatch.setitem(download.SOURCES, 'keras', download.Source(
        name='keras', filename=keras.filename, urls=(server.url('/primary.h5'), server.url('/mirror.h5')),
        size=len(body), md5=files.md5sum(h5_path), preprocess='caffe', description='test'))
    folder = tmp_path / 'models'

    assert download_cli.main(['--dir', str(folder), '--quiet']) == 0
    ranges = [r['range'] for r in server.requests('/mirror.h5')]
    assert ranges[0] is None and ranges[1] == 'bytes=%d-' % download.CHUNK_SIZE and len(ranges) == 2
    assert sorted(os.listdir(folder)) == sorted([keras.filename, keras.filename + '.lock', 'vgg16.tfmodel.lock', 'vgg16.tfmodel',
                                                 'vgg16.tfmodel.json'])
    model = vgg16.VGG16(str(folder / 'vgg16.tfmodel'))
    image = np.random.default_rng(0).uniform(0, 255, (32, 32, 3))
    got = __import__('visualize').session(model).run(model.layer_tensors[2], model.create_feed_dict(image))
    np.testing.assert_allclose(got[0], numpy_vgg16(image, weights, 'caffe')['conv2_1'][1], rtol=1e-4, atol=1e-3)

    # A second run, and --check: no request at all.
    count = len(server.requests('/mirror.h5'))
    assert download_cli.main(['--dir', str(folder), '--quiet']) == 0
    assert download_cli.main(['--check', '--dir', str(folder)]) == 0
    assert len(server.requests('/mirror.h5')) == count


def test_cadl_source_is_checked_before_it_is_put_in_place(server, tmp_path, monkeypatch, capsys):
    graph = vgg16.build_graph_def(random_weights(seed=1), 'none').SerializeToString()
    truncated = vgg16.build_graph_def(random_weights(seed=1)[:2], 'none').SerializeToString()
    server.serve('/vgg16.tfmodel', Behaviour(body=b'\x08\x01junk' * 5000))
    monkeypatch.setitem(download.SOURCES, 'cadl', download.Source(
        name='cadl', filename='vgg16.tfmodel', urls=(server.url('/vgg16.tfmodel'),), size=None, md5=None,
        preprocess=None, description='test'))
    folder = tmp_path / 'models'
    assert download_cli.main(['--source', 'cadl', '--dir', str(folder), '--quiet']) == 1
    assert 'rejected by validate' in capsys.readouterr().err
    assert not (folder / 'vgg16.tfmodel').exists() and not (folder / 'vgg16.tfmodel.part').exists()

    # A graph that parses but lacks conv2_1 ... conv5_3 is refused too.
    server.serve('/vgg16.tfmodel', Behaviour(body=truncated))
    assert download_cli.main(['--source', 'cadl', '--dir', str(folder), '--quiet']) == 1
    err = capsys.readouterr().err
    assert 'lacks the tensors conv2_1/conv2_1:0' in err, err
    assert not (folder / 'vgg16.tfmodel').exists()

    # A graph built from h5 weights is there: asking for cadl replaces it.
    h5_path = str(tmp_path / 'w.h5')
    write_keras2_h5(h5_path, random_weights(seed=2))
    vgg16.maybe_download(weights=h5_path, preprocess='unit', dir=str(folder), quiet=True)
    server.serve('/vgg16.tfmodel', Behaviour(body=graph))
    assert download_cli.main(['--source', 'cadl', '--dir', str(folder), '--quiet']) == 0
    assert not (folder / 'vgg16.tfmodel.json').exists()
    assert read(folder / 'vgg16.tfmodel') == graph
    assert download.read_sha256_record(str(folder / 'vgg16.tfmodel')) == __import__('hashlib').sha256(graph).hexdigest()
    assert vgg16.VGG16(str(folder / 'vgg16.tfmodel')).description == 'VGG16 graph vgg16.tfmodel, loaded as is'
    # Present and recorded: no request; --check compares the sha256 record.
    count = len(server.requests('/vgg16.tfmodel'))
    assert download_cli.main(['--source', 'cadl', '--dir', str(folder), '--quiet']) == 0
    assert len(server.requests('/vgg16.tfmodel')) == count
    assert download_cli.main(['--check', '--dir', str(folder), '--quiet']) == 0
    # Flip a byte inside the bytes of a kernel, so the graph still parses: only the
    # sha256 can tell. (The serialized attribute order varies between runs, so a
    # fixed offset from the end may hit a protobuf tag instead.)
    kernel = random_weights(seed=1)[5][0].tobytes()
    offset = graph.index(kernel) + len(kernel) // 2
    with open(folder / 'vgg16.tfmodel', 'r+b') as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 1]))
    assert download_cli.main(['--check', '--dir', str(folder)]) == 1
    assert 'sha256' in capsys.readouterr().out


def test_nothing_reachable_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    import socket
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    keras = download.SOURCES['keras']
    monkeypatch.setitem(download.SOURCES, 'keras', download.Source(
        name='keras', filename=keras.filename, urls=('http://127.0.0.1:%d/w.h5' % port,),
        size=keras.size, md5=keras.md5, preprocess='caffe', description='test'))
    monkeypatch.setattr(download, 'fetch', _fast_fetch(download.fetch))
    folder = tmp_path / 'models'
    assert download_cli.main(['--dir', str(folder), '--quiet']) == 1
    err = capsys.readouterr().err
    assert 'Could not download %s' % keras.filename in err and 'save it as %s' % (folder / keras.filename) in err
    assert 'md5 %s' % keras.md5 in err
    assert [n for n in os.listdir(folder) if not n.endswith('.lock')] == []


def _fast_fetch(fetch):
    def quick(*args, **kwargs):
        return fetch(*args, **dict(kwargs, retries=1, backoff=0.01, timeout=(1, 1)))
    return quick


@pytest.mark.slow
def test_real_weight_file_over_loopback(server, tmp_path, mri_weights, capsys):
    """The real 59 MB MRI weights, Keras 2 layout: dropped once, resumed, verified, converted."""
    body = read(mri_weights)
    md5 = files.md5sum(mri_weights)
    server.serve('/vgg16-mri-notop.h5', Behaviour(body=body, drop_after=20_000_000))
    folder = tmp_path / 'models'
    url = server.url('/vgg16-mri-notop.h5')
    assert download_cli.main(['--url', url, '--md5', md5, '--preprocess', 'unit', '--dir', str(folder),
                          '--quiet']) == 0
    ranges = [r['range'] for r in server.requests('/vgg16-mri-notop.h5')]
    assert ranges[0] is None and ranges[1].startswith('bytes=') and len(ranges) == 2
    model = vgg16.VGG16(str(folder / 'vgg16.tfmodel'))
    assert 'brain MRI' in model.description and model.channels('conv5_3') == 512
    assert download_cli.main(['--url', url, '--md5', md5, '--preprocess', 'unit', '--dir', str(folder),
                          '--quiet']) == 0
    assert len(server.requests('/vgg16-mri-notop.h5')) == 2

"""build.py: a graph built once under a lock, its stamp beside it, reused while the stamp fits.

Behaviour on stand-in graphs (bytes), no TensorFlow: the second call reuses,
a changed stamp or a graph whose bytes left its stamp builds again, a crash
in build() writes nothing, force builds anyway.
"""
import json
import os

import pytest

from filtervis.models import build


class Graph:
    """Stands in for a tf.GraphDef: build.py only serializes it."""

    def __init__(self, data):
        self.data = data

    def SerializeToString(self):
        return self.data


def builder(data, stamp, calls):
    def make():
        calls.append(stamp)
        return Graph(data), stamp
    return make


def test_built_once_then_reused(tmp_path):
    path, calls = str(tmp_path / 'net.tfmodel'), []
    fits = lambda stamp: stamp['weights'] == 'a'   # noqa: E731
    first = build.build_once(path, fits, builder(b'graph a', {'weights': 'a'}, calls), quiet=True)
    again = build.build_once(path, fits, builder(b'graph b', {'weights': 'a'}, calls), quiet=True)
    assert first == again == {'weights': 'a'} and len(calls) == 1
    assert open(path, 'rb').read() == b'graph a'
    assert sorted(os.listdir(tmp_path)) == ['net.tfmodel', 'net.tfmodel.json', 'net.tfmodel.lock']
    # Other weights: built again, stamp and graph together.
    build.build_once(path, lambda stamp: stamp['weights'] == 'b', builder(b'graph b', {'weights': 'b'}, calls))
    assert build.read_stamp(path) == {'weights': 'b'} and open(path, 'rb').read() == b'graph b'
    build.build_once(path, lambda stamp: True, builder(b'graph c', {'weights': 'c'}, calls), force=True)
    assert len(calls) == 3 and build.read_stamp(path) == {'weights': 'c'}


def test_graph_md5_catches_a_graph_that_left_its_stamp(tmp_path):
    path, calls = str(tmp_path / 'net.tfmodel'), []
    stamp = build.build_once(path, lambda stamp: True, builder(b'graph', {'model': 'm'}, calls), graph_md5=True)
    assert stamp['graph_md5'] == json.load(open(path + '.json'))['graph_md5'] and stamp['model'] == 'm'
    assert build.reusable_stamp(path, lambda stamp: True, graph_md5=True) == stamp
    with open(path, 'ab') as f:
        f.write(b'\0')
    assert build.reusable_stamp(path, lambda stamp: True, graph_md5=True) is None
    build.build_once(path, lambda stamp: True, builder(b'graph', {'model': 'm'}, calls), graph_md5=True)
    assert len(calls) == 2 and open(path, 'rb').read() == b'graph'


def test_a_missing_graph_or_a_broken_stamp_is_not_reused(tmp_path):
    path = str(tmp_path / 'net.tfmodel')
    build.write_graph(path, Graph(b'graph'), {'weights': 'a'})
    os.remove(path)
    assert build.reusable_stamp(path, lambda stamp: True) is None
    for text in ('{not json', '[1, 2]'):
        with open(path + '.json', 'w') as f:
            f.write(text)
        assert build.read_stamp(path) is None


def test_a_failed_build_writes_no_graph_and_no_stamp(tmp_path):
    path = str(tmp_path / 'net.tfmodel')

    def broken():
        raise ValueError('bad weights')

    with pytest.raises(ValueError, match='bad weights'):
        build.build_once(path, lambda stamp: True, broken, quiet=True)
    assert os.listdir(tmp_path) == ['net.tfmodel.lock']

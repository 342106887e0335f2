"""Memory known before the first step: the estimate from the graph's tensor sizes, the one-line refusal with
what fits, the automatic batch size that uses the same estimate, and a real address-space limit."""
import os
import subprocess
import sys

import numpy as np
import pytest

from builders import ROOT, TINY_CHANNELS, random_weights
from filtervis.analysis import examples
from filtervis.cli import atlas as atlas_cli
from filtervis.cli import examples as examples_cli
from filtervis.core import memory
from filtervis.models import vgg16
from filtervis.optvis import ascent

MB = 1 << 20


def with_free(monkeypatch, free):
    monkeypatch.setattr(memory, 'available', lambda: (free, 'MemAvailable on this machine'))


def test_per_image_bytes_count_every_convolution_and_pool_on_the_path(tiny_model):
    # conv1_1, conv1_2 at 64 px (4 channels each), pool1 at 32 px, conv2_1 at 32 px (6 channels): the
    # maps the estimate reads, each MEMORY_FACTOR times, float32; the unit itself is a ReLU of conv2_1.
    side, channels = 64, TINY_CHANNELS
    maps = 2 * side * side * channels[0] + (side // 2) ** 2 * channels[1] + (side // 2) ** 2 * channels[2]
    unit = (side // 2) ** 2 * channels[2]
    assert memory.per_image_bytes(tiny_model, [2], side) == memory.MEMORY_FACTOR * 4 * (maps + unit)


def test_the_estimate_grows_with_size_batch_and_pictures(tiny_model):
    small = memory.estimate(tiny_model, [5], 64, 1, 1)
    assert memory.estimate(tiny_model, [5], 128, 1, 1).total > 3.5 * small.total
    assert memory.estimate(tiny_model, [5], 64, 4, 1).total == small.total + 3 * small.per_image
    assert memory.estimate(tiny_model, [5], 64, 1, 9).total == small.total + 8 * small.per_picture
    # A forward pass keeps less than an ascent; the regularized method more than the post's.
    assert memory.estimate(tiny_model, [5], 64, 1, 1, 'forward').per_image < small.per_image
    assert memory.estimate(tiny_model, [5], 64, 1, 1, 'regularized').per_image > small.per_image


def test_a_run_that_cannot_fit_is_refused_with_the_estimate_what_is_free_and_what_fits(tiny_model, monkeypatch):
    free = 40 * MB
    with_free(monkeypatch, free)
    with pytest.raises(ValueError) as raised:
        memory.check(tiny_model, [5], 4096, 1, 6)
    message = str(raised.value)
    assert '\n' not in message
    need = memory.estimate(tiny_model, [5], 4096, 1, 6).total
    assert 'needs about %.1f GB' % (need / (1 << 30)) in message and 'only 40 MB is free (MemAvailable' in message
    best = int(message.split('--size ')[1].split()[0])
    budget = int(free * memory.HEADROOM)
    # The size it offers is the largest that fits: one more pixel does not.
    assert memory.estimate(tiny_model, [5], best, 1, 6).total <= budget
    assert memory.estimate(tiny_model, [5], best + 1, 1, 6).total > budget
    memory.check(tiny_model, [5], best, 1, 6)


def test_a_batch_too_big_is_told_the_largest_batch_that_fits(tiny_model, monkeypatch):
    need = memory.estimate(tiny_model, [5], 224, 16, 16)
    with_free(monkeypatch, int((need.total - 5 * need.per_image) / memory.HEADROOM) + 1)
    with pytest.raises(ValueError, match=r'use a batch of at most 11 \(--batch-size 11\)'):
        memory.check(tiny_model, [5], 224, 16, 16)


def test_ascend_refuses_before_it_allocates_the_pictures(tiny_model, monkeypatch):
    with_free(monkeypatch, 8 * MB)

    def no_allocation(*args, **kwargs):
        raise AssertionError('start images were allocated before the memory check')
    monkeypatch.setattr(ascent, 'start_images', no_allocation)
    with pytest.raises(ValueError, match='needs about .* but only 8 MB is free'):
        ascent.ascend(tiny_model, 'conv3_2', [0, 1], 2, size=2048, batch_size=2)
    with pytest.raises(ValueError, match='needs about'):
        ascent.ascend(tiny_model, 'conv3_2', [0, 1], 2, size=2048, batch_size=2, method='regularized')


def test_the_automatic_batch_size_shrinks_with_what_is_free(tiny_model, monkeypatch):
    per_image = memory.estimate(tiny_model, [12], 224, 1, 0).per_image
    with_free(monkeypatch, 1 << 40)
    assert ascent.auto_batch_size(tiny_model, 12, 224) == 4        # few channels: the smallest fast batch
    with_free(monkeypatch, int(2.5 * per_image / memory.HEADROOM))
    assert ascent.auto_batch_size(tiny_model, 12, 224) == 2


def test_examples_and_the_atlas_refuse_in_one_line_before_any_work(model_file, tmp_path, monkeypatch, capsys):
    folder = tmp_path / 'images'
    folder.mkdir()
    from PIL import Image
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(str(folder / 'a.png'))
    with_free(monkeypatch, 1 * MB)
    out = tmp_path / 'examples.png'
    assert examples_cli.main([str(folder), '--model', model_file, '--size', '1024', '--out', str(out),
                              '--quiet']) == 2
    assert 'finding examples needs about' in capsys.readouterr().err and not out.exists()
    atlas_out = tmp_path / 'atlas'
    assert atlas_cli.main([str(atlas_out), '--model', model_file, '--layers', 'conv3_2', '--size', '1024',
                           '--quiet']) == 2
    assert 'a task of conv3_2 needs about' in capsys.readouterr().err
    assert not (atlas_out / 'atlas.json').exists()
    assert examples.list_images(str(folder)) == ['a.png']


@pytest.mark.slow
def test_a_typo_in_size_under_an_address_space_limit_ends_in_one_line_not_in_the_oom_killer(tmp_path):
    # A full-width VGG16 (random weights) and --size 30000: 10.8 GB for the start picture alone.
    model = tmp_path / 'vgg16.tfmodel'
    channels = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
    model.write_bytes(vgg16.build_graph_def(random_weights(channels), 'unit').SerializeToString())
    limit = 6 << 30

    # A fresh parent, whose only child is the run, reports the run's own peak resident memory.
    code = ('import resource, subprocess, sys\n'
            'resource.setrlimit(resource.RLIMIT_AS, (%d, %d))\n'
            'run = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n'
            'sys.stderr.write(run.stderr)\n'
            'print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n'
            'sys.exit(run.returncode)\n' % (limit, limit))
    result = subprocess.run([sys.executable, '-c', code, sys.executable, os.path.join(ROOT, 'visualize.py'),
                             '--model', str(model), '--size', '30000', '--out', str(tmp_path / 'x.png'), '--quiet'],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().split('\n')
    assert len(lines) == 1 and lines[0].startswith('error: this run needs about ')
    assert 'address-space limit, ulimit -v' in lines[0] and '--size ' in lines[0]
    assert not (tmp_path / 'x.png').exists()
    # The run never came near the picture's 10.8 GB: refused before the allocation.
    assert int(result.stdout.strip()) < 2 << 20    # KB

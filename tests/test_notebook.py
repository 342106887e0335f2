"""main.ipynb runs top to bottom (papermill) on a small test model with few steps."""
import json
import re
import os
import shutil

import pytest

from filtervis.models import vgg16
from builders import ROOT, random_weights

# Every test here needs the whole notebook through papermill: slow (python -m pytest --runslow).
pytestmark = pytest.mark.slow

papermill = pytest.importorskip('papermill')


def test_notebook_runs_top_to_bottom(tmp_path):
    model_path = tmp_path / 'vgg16.tfmodel'
    model_path.write_bytes(vgg16.build_graph_def(random_weights(seed=6), 'unit').SerializeToString())
    out = tmp_path / 'out.ipynb'
    # Section 8 loads a Keras model; a copy of the shared one keeps its cache out of ../shared.
    own_model = tmp_path / 'fer-emotion-minixception.hdf5'
    shared = os.path.join(ROOT, '..', 'shared', 'models', own_model.name)
    if os.path.exists(shared):
        shutil.copyfile(shared, str(own_model))
    papermill.execute_notebook(
        os.path.join(ROOT, 'main.ipynb'), str(out), cwd=ROOT, kernel_name='python3', progress_bar=False,
        parameters=dict(model_path=str(model_path), weights=None, preprocess=None, iters=4, size=32,
                        regularized_steps=4, feature_ids=[0, 1, 2, 3], own_model=str(own_model)))
    notebook = json.loads(out.read_text())
    code = [cell for cell in notebook['cells'] if cell['cell_type'] == 'code']
    assert all(cell.get('execution_count') for cell in code)
    text = '\n'.join(''.join(o.get('text', '')) for cell in code for o in cell.get('outputs', []))
    assert 'VGG16 graph vgg16.tfmodel, loaded as is' in text
    # The post's loop and the batched call agree (0 or a float-rounding difference like 3e-05).
    assert re.search(r'largest difference between the loop and the batch: (0|\d(\.\d+)?e-0[5-9]) ', text)
    # Clean outputs: none of TensorFlow's start-up lines or deprecation notices reach the notebook.
    streams = '\n'.join(''.join(o.get('text', '')) for cell in code for o in cell.get('outputs', [])
                        if o.get('output_type') == 'stream')
    for noise in ('oneDNN', 'absl', 'cuda', 'cpu_feature_guard', 'deprecat'):
        assert noise not in streams
    images = sum(1 for cell in code for o in cell.get('outputs', []) if 'image/png' in o.get('data', {}))
    assert images >= 4

"""
Attribution: which pixels of a user's own image make an objective of a
network fire, by six methods (methods.py, over the ops of ops.py), and how
far a map can be trusted (evaluation.py: deletion curves, the rank
correlation of a sanity check); the maps of a filter's dataset examples,
cropped to their patches (patches.py).

    python attribute.py IMAGES... --objective "conv4_3:5" --method gradcam,smoothgrad --out DIR

    from filtervis.analysis import attribution
    found = attribution.attribute(net, images, 'conv4_3:5', ['gradient', 'gradcam'])   # an Attribution
    curves = attribution.deletion_curves(net, images, 'conv4_3:5', found.maps)
    maps = attribution.example_maps(net, 'DIR', found_examples.records, 'gradcam')  # [p, p] per record
"""

from filtervis.analysis.attribution.evaluation import (area_under, deletion_curves, random_maps,  # noqa: F401
                                                       spearman)
from filtervis.analysis.attribution.methods import (BASELINES, CAM_METHODS, METHODS, Attribution,  # noqa: F401
                                                    Config, attribute, gradient_x_input,
                                                    parse_methods)
from filtervis.analysis.attribution.ops import DEFAULT_BATCH_SIZE, bind_objective, cam_layer  # noqa: F401
from filtervis.analysis.attribution.patches import EXAMPLE_METHODS, check_example_method, example_maps  # noqa: F401

__all__ = ['BASELINES', 'CAM_METHODS', 'DEFAULT_BATCH_SIZE', 'EXAMPLE_METHODS', 'METHODS', 'Attribution', 'Config',
           'area_under', 'attribute', 'bind_objective', 'cam_layer', 'check_example_method', 'deletion_curves',
           'example_maps', 'gradient_x_input', 'parse_methods', 'random_maps', 'spearman']

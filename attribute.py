"""
Why an image fires a filter, a neuron or any objective of a CNN: attribution
maps (gradient, SmoothGrad, Integrated Gradients, Grad-CAM, Grad-CAM++,
Score-CAM) of your own images. The library is
filtervis/analysis/attribution/; this is its command line
(`filtervis-attribute` once the package is installed).

    python attribute.py IMAGES... --objective "conv4_3:5" --method gradcam,smoothgrad --out DIR
    python attribute.py ../shared/data/mri-slices --weights ../shared/models/vgg16-mri-notop.h5 \\
        --preprocess unit --objective conv5_3 --filters 0-3 --method all --out mri-maps --npz mri-maps.npz
"""
import sys

if __name__ == '__main__':
    from filtervis.cli import console
    sys.exit(console.attribute())

"""
An atlas of every filter: each filter of each unit rendered, measured and
laid out on one static page, OUT/index.html; resumable, sharded, on Dask.
The library is the package filtervis/atlas/; this is its command line
(`filtervis-atlas` once the package is installed).

    python atlas.py OUT                                   # every filter of every unit, regularized, 224 px, 200 steps
    python atlas.py OUT --layers 0,5 --filters 0-15 --method blog --iters 150 --size 128 --seed 0
    python atlas.py OUT --views channel,negative,neuron,diversity4
    python atlas.py OUT --workers 2                       # a local Dask cluster of 2 worker processes
    python atlas.py OUT --scheduler tcp://HOST:8786       # a running Dask cluster
    python atlas.py OUT --shard 3/16                      # the 4th of 16 disjoint parts, for array jobs
    python atlas.py OUT --index-only                      # rebuild catalog.json and index.html
"""
import sys

if __name__ == '__main__':
    from filtervis.cli import console
    sys.exit(console.atlas())

"""
The command lines, one module each: visualize, examples, atlas and download
(each with build_parser() and main(argv)), the model flags they share
(model_flags), and the console scripts' entry points (console).

From a clone: `python visualize.py`, `python examples.py`, `python atlas.py`,
`python download.py`. After `pip install`: `filtervis-visualize`,
`filtervis-examples`, `filtervis-atlas`, `filtervis-download`.
"""

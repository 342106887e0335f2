"""The modules' imports read bottom-up: no circle, not even through a function body.

Each top-level module's imports of other top-level modules are read with
`ast`, wherever they sit (module level, `if` blocks, function bodies). Only a
function named `main` may import upward: a command line that must call a
module above (download.py building the graph after fetching) does it there.
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Bottom first. A module may import only modules before it in this list.
LAYERS = ('quiet', 'files', 'pictures', 'download', 'geometry', 'precision', 'network', 'objectives', 'render', 'vgg16',
          'keras_model', 'models', 'cluster', 'regularized', 'measures', 'examples', 'visualize', 'atlas')


def top_level_modules(root=ROOT):
    return sorted(name[:-3] for name in os.listdir(root) if name.endswith('.py'))


def imports_of(path, modules):
    """{imported module: [line, ...]} for imports of `modules` outside any function named main."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = {}

    def visit(node, in_main):
        for child in ast.iter_child_nodes(node):
            inside = in_main or (isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and child.name == 'main')
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name.split('.')[0] for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module.split('.')[0]]
            if not inside:
                for name in names:
                    if name in modules:
                        found.setdefault(name, []).append(child.lineno)
            visit(child, inside)

    visit(tree, False)
    return found


def import_graph(root=ROOT):
    modules = set(top_level_modules(root))
    return {m: imports_of(os.path.join(root, m + '.py'), modules) for m in sorted(modules)}


def find_cycle(graph):
    """A list of modules [a, b, ..., a] forming an import circle, or None."""
    state = {}

    def walk(module, path):
        state[module] = 'open'
        for target in sorted(graph.get(module, {})):
            if target == module:
                continue
            if state.get(target) == 'open':
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = walk(target, path + [target])
                if cycle:
                    return cycle
        state[module] = 'done'
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = walk(module, [module])
            if cycle:
                return cycle
    return None


def test_no_import_circle_among_the_top_level_modules():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, 'import circle: %s' % ' -> '.join(cycle)


def test_every_module_has_a_place_in_the_layers_and_imports_only_below_it():
    graph = import_graph()
    unplaced = sorted(set(graph) - set(LAYERS))
    assert not unplaced, 'add %s to LAYERS (bottom first) in tests/test_imports.py' % unplaced
    for module, targets in graph.items():
        for target, lines in targets.items():
            if target == module:
                continue    # a script importing itself to run main() of the one imported copy
            assert LAYERS.index(target) < LAYERS.index(module), \
                '%s.py line %s imports %s, which sits above it' % (module, lines[0], target)


def test_the_foundation_imports_none_of_the_modules_above_it():
    graph = import_graph()
    assert set(graph['quiet']) == set() and set(graph['files']) == set() and set(graph['pictures']) == set()
    assert set(graph['download']) <= {'download', 'files'}   # bytes only; vgg16 only from main()
    assert set(graph['geometry']) <= {'quiet'} and set(graph['precision']) <= {'quiet'}
    assert set(graph['network']) <= {'quiet', 'geometry', 'precision'}
    # VGG16 is one adapter over the core, and no module below the command lines knows it.
    assert set(graph['vgg16']) <= {'quiet', 'files', 'download', 'network'}
    for module in ('render', 'cluster', 'regularized', 'measures', 'examples'):
        assert 'vgg16' not in graph[module] and 'visualize' not in graph[module]


def test_the_checker_finds_a_circle_hidden_in_a_function_body(tmp_path):
    # The known answer: the shape visualize.py and regularized.py once had.
    (tmp_path / 'low.py').write_text('import high\n\ndef render():\n    return high.x\n')
    (tmp_path / 'high.py').write_text('x = 1\n\ndef ascend():\n    import low\n    return low\n')
    (tmp_path / 'tool.py').write_text('def main():\n    import high\n')   # upward from main(): allowed
    graph = import_graph(str(tmp_path))
    assert graph['tool'] == {}
    assert find_cycle(graph) in (['high', 'low', 'high'], ['low', 'high', 'low'])


@pytest.mark.parametrize('module', ['download', 'quiet', 'files', 'pictures'])
def test_the_bottom_modules_load_without_tensorflow(module):
    import subprocess
    import sys
    code = 'import sys; import %s; print("tensorflow" in sys.modules)' % module
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'False'

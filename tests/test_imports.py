"""The package's imports read bottom-up: no circle, not even through a function body, and nothing in
the package imports a top-level script.

Each module's imports of the package's modules are read with `ast`, wherever
they sit (module level, `if` blocks, function bodies). `from filtervis.core
import network` counts as an import of filtervis.core.network.
"""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = 'filtervis'
# Bottom first. A module may import only modules of its own layer or of layers
# before it. An entry that is a package (filtervis.models, filtervis.atlas,
# filtervis.cli) is one layer for all of its modules; within it the circle
# check alone holds.
LAYERS = ('filtervis.util.quiet', 'filtervis.util.files', 'filtervis.util.pictures', 'filtervis.util.images',
          'filtervis.util.download',
          'filtervis.core.geometry', 'filtervis.core.precision', 'filtervis.core.checks', 'filtervis.core.network',
          'filtervis.core.units', 'filtervis.core.memory', 'filtervis.optvis.objectives', 'filtervis.optvis.render', 'filtervis.models',
          'filtervis.cluster', 'filtervis.optvis.blog', 'filtervis.optvis.regularized', 'filtervis.optvis.spectrum',
          'filtervis.optvis.maco', 'filtervis.optvis.ascent',
          'filtervis.optvis.dream',
          'filtervis.analysis.measures', 'filtervis.analysis.verdict', 'filtervis.analysis.examples',
          'filtervis.analysis.attribution', 'filtervis.plots', 'filtervis.atlas',
          'filtervis.cli', 'filtervis')
# The files at the top: the post's modules and the command lines' thin entry points.
TOP_LEVEL_SCRIPTS = ('vgg16', 'download', 'visualize', 'examples', 'atlas')


def package_modules(root=ROOT, package=PACKAGE):
    """{dotted name: path} of every module of the package (a package's __init__.py is the package's name)."""
    found = {}
    for folder, dirs, names in os.walk(os.path.join(root, package)):
        dirs[:] = [d for d in dirs if d != '__pycache__']
        for name in names:
            if name.endswith('.py'):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, root)[:-3].split(os.sep)
                if parts[-1] == '__init__':
                    parts = parts[:-1]
                found['.'.join(parts)] = path
    return found


def imported_names(path):
    """[(dotted name, line)] of every absolute import in the file, wherever it sits.

    `from a.b import c` gives a.b.c when a.b.c is a module, else a.b; the
    caller resolves which (see resolve).
    """
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [(node.module + '.' + alias.name, node.lineno) for alias in node.names]
            names.append((node.module, node.lineno))
    return names


def resolve(name, modules):
    """The package module `name` means (the longest module that is it or holds it), or None."""
    while name:
        if name in modules:
            return name
        name = name.rpartition('.')[0]
    return None


def import_graph(root=ROOT, package=PACKAGE):
    modules = package_modules(root, package)
    graph = {}
    for module, path in modules.items():
        targets = {}
        for name, line in imported_names(path):
            target = resolve(name, modules)
            # `from filtervis.core import network` also names the package filtervis.core itself: only the module counts.
            if target and target != module and not (target == name.rpartition('.')[0] and name in modules):
                targets.setdefault(target, []).append(line)
        graph[module] = targets
    # Drop the package entries that only stand for `from PACKAGE import module`.
    for module, targets in graph.items():
        for target in list(targets):
            if any(other.startswith(target + '.') for other in targets) and target in modules \
                    and os.path.basename(modules[target]) == '__init__.py':
                del targets[target]
    return graph


def layer_of(module):
    """Index into LAYERS of the entry that is the module or the package holding it (the longest)."""
    best = None
    for index, entry in enumerate(LAYERS):
        # The package's own __init__ (the top) holds no modules: every one needs its own entry.
        if module == entry or (entry != PACKAGE and module.startswith(entry + '.')):
            if best is None or len(entry) > len(LAYERS[best]):
                best = index
    return best


def find_cycle(graph):
    """A list of modules [a, b, ..., a] forming an import circle, or None."""
    state = {}

    def walk(module, path):
        state[module] = 'open'
        for target in sorted(graph.get(module, {})):
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


def test_no_import_circle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, 'import circle: %s' % ' -> '.join(cycle)


def test_every_module_has_a_place_in_the_layers_and_imports_only_its_own_layer_or_below():
    graph = import_graph()
    # A folder's empty __init__.py (filtervis.core, ...) imports nothing and needs no place.
    unplaced = sorted(m for m in graph if layer_of(m) is None and graph[m])
    assert not unplaced, 'add %s to LAYERS (bottom first) in tests/test_imports.py' % unplaced
    for module, targets in graph.items():
        for target, lines in targets.items():
            assert layer_of(target) is not None and layer_of(target) <= layer_of(module), \
                '%s line %s imports %s, which sits above it' % (module, lines[0], target)


def test_nothing_in_the_package_imports_a_top_level_script():
    for module, path in package_modules().items():
        for name, line in imported_names(path):
            assert name.split('.')[0] not in TOP_LEVEL_SCRIPTS, \
                '%s line %d imports the top-level script %s' % (module, line, name)


def test_the_foundation_imports_none_of_the_modules_above_it():
    graph = import_graph()
    for module in ('filtervis.util.quiet', 'filtervis.util.files', 'filtervis.util.pictures', 'filtervis.util.images'):
        assert set(graph[module]) == set(), module
    assert set(graph['filtervis.util.download']) <= {'filtervis.util.files'}
    assert set(graph['filtervis.core.geometry']) <= {'filtervis.util.quiet'}
    # VGG16 is one adapter over the core, and nothing below the command lines knows it.
    for module in graph:
        if module.startswith(('filtervis.optvis', 'filtervis.analysis', 'filtervis.atlas', 'filtervis.cluster')):
            assert 'filtervis.models.vgg16' not in graph[module], module


def test_the_checker_sees_imports_in_function_bodies_and_finds_a_circle(tmp_path):
    # The known answer: a module that imports upward from inside a function.
    package = tmp_path / 'pkg'
    package.mkdir()
    (package / '__init__.py').write_text('')
    (package / 'low.py').write_text('def render():\n    from pkg import high\n    return high.x\n')
    (package / 'high.py').write_text('from pkg import low\nx = 1\n')
    graph = import_graph(str(tmp_path), 'pkg')
    assert graph['pkg.low'] == {'pkg.high': [2]} and graph['pkg.high'] == {'pkg.low': [1]}
    assert find_cycle(graph) in (['pkg.high', 'pkg.low', 'pkg.high'], ['pkg.low', 'pkg.high', 'pkg.low'])


@pytest.mark.parametrize('module', ['filtervis', 'filtervis.cli', 'filtervis.cli.console', 'filtervis.util.download', 'filtervis.util.quiet',
                                    'filtervis.util.files', 'filtervis.util.pictures', 'download'])
def test_the_bottom_modules_load_without_tensorflow(module):
    code = 'import sys; import %s; print("tensorflow" in sys.modules)' % module
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'False'

"""The structure docs/design.md describes, kept: no import cycle among our modules, each place
imports only the places below it, no test hook in the product, and streaming's private
internals are touched only by the modules written for them."""
import ast
from pathlib import Path

from tests.helpers import ROOT

PACKAGES = ('data_prep', 'callbacks', 'training', 'local_services')


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def _sources() -> dict[str, ast.Module]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob('*.py')]
    files += [ROOT / 'train.py']
    return {_module_name(p): ast.parse(p.read_text(), str(p)) for p in files}


def _imports(tree: ast.Module) -> set[str]:
    """Every module imported anywhere in the file (top level or inside functions)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f'{node.module}.{a.name}' for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    sources = _sources()
    return {name: {m for m in _imports(tree) if m in sources and m != name}
            for name, tree in sources.items()}


def test_no_import_cycle():
    graph, state, cycles = _graph(), {}, []

    def visit(node, path):
        state[node] = 'open'
        for nxt in sorted(graph[node]):
            # a package's __init__ re-exporting its own submodules is not a cycle
            if node.startswith(nxt + '.') or nxt.startswith(node + '.'):
                continue
            if state.get(nxt) == 'open':
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 'done'

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


# Each place: a package (or a top-level module) and what it may import of ours, besides itself
# and SHARED. Read bottom-up: storage knows nothing of ours; the conversion (data_prep) and
# training stand on it; callbacks on training's extensions; train.py and the training run on
# everything.
SHARED = ('data_prep.env', 'data_prep.errors', 'data_prep.versions')  # leaf modules
BELOW = {
    'data_prep.storage': set(),
    'data_prep.streaming_ext': {'data_prep.storage'},
    'data_prep.pipeline': {'data_prep.storage', 'data_prep.streaming_ext'},
    'data_prep': {'data_prep.pipeline', 'data_prep.storage', 'data_prep.streaming_ext'},
    'local_services': {'data_prep.storage'},  # the OCI endpoint variable's name only
    'training.checkpoints': {'data_prep.storage'},
    'training.shards': {'data_prep.storage', 'data_prep.streaming_ext'},
    'callbacks': {'training.shards', 'training.checkpoints'},
    'training': {'data_prep.storage', 'data_prep.streaming_ext', 'data_prep.pipeline',
                 'training.checkpoints', 'training.shards', 'callbacks'},
    'train': {'training', 'training.checkpoints'},
}


def _place(module: str) -> str:
    """The longest place in BELOW that `module` is, or is inside of."""
    parts = module.split('.')
    for n in range(len(parts), 0, -1):
        if '.'.join(parts[:n]) in BELOW:
            return '.'.join(parts[:n])
    return module


def test_places_import_only_what_is_below_them():
    bad = []
    for module, deps in _graph().items():
        # `from data_prep import versions` names the package too: the module is what counts
        deps = {d for d in deps if not any(o.startswith(d + '.') for o in deps)}
        place = _place(module)
        assert place in BELOW, f'{module}: in no place of the layout'
        for dep in deps:
            other = _place(dep)
            if other != place and dep not in SHARED and other not in BELOW[place]:
                bad.append(f'{module} imports {dep}')
    assert not bad, bad
    assert not [m for m in _graph()['data_prep.storage.base'] if m not in SHARED], \
        'base.py must import no backend'


def test_no_test_hook_in_the_product():
    """Faults are injected by the tests (tests/programs/), not read from the environment by
    the code they test."""
    offenders = [f'{name}: {node.value!r}' for name, tree in _sources().items()
                 for node in ast.walk(tree)
                 if isinstance(node, ast.Constant) and isinstance(node.value, str)
                 and node.value.startswith('C4_') and node.value.endswith('_FAIL')]
    assert not offenders, offenders


# streaming 0.12.0's private names, and the modules written against them (each checks the
# version: tests/test_versions.py)
STREAMING_PRIVATE = ('_ShardState', '_shard_states', '_shard_access_times', '_downloader',
                     'NEVER', '_ready_thread', '_event', '_unpack_locals',
                     '_check_and_find_retrying')
STREAMING_HOOKS = ('training.shards.shard_errors', 'training.shards.cache',
                   'training.shards.shared_memory')


def test_streamings_private_names_only_in_its_hook_modules():
    offenders = []
    for name, tree in _sources().items():
        if name in STREAMING_HOOKS:
            continue
        for node in ast.walk(tree):
            word = (node.attr if isinstance(node, ast.Attribute) else
                    node.id if isinstance(node, ast.Name) else None)
            if word in STREAMING_PRIVATE:
                offenders.append(f'{name}: {word}')
            if isinstance(node, ast.ImportFrom) and node.module == 'streaming.base.dataset':
                offenders.append(f'{name}: from streaming.base.dataset import ...')
    assert not offenders, offenders

"""The structure docs/design.md describes, kept: no import cycle among our modules, each layer
imports only the layers below it, and streaming's private internals are touched in one place."""
import ast
from pathlib import Path

from tests.helpers import ROOT

PACKAGES = ('data_prep', 'callbacks', 'training')


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


PLACES = ('pipeline', 'storage', 'streaming_ext', 'composer_ext', 'llmfoundry_ext', 'servers')
SHARED = ('data_prep.env', 'data_prep.errors')  # leaf modules every layer may use


def _layer(module: str) -> str:
    """'pipeline', 'storage', ... for data_prep's places, 'commands' for its command
    modules (data_prep.convert, ...), else the top-level name (callbacks, train)."""
    parts = module.split('.')
    if parts[0] != 'data_prep' or len(parts) == 1:
        return parts[0]
    return parts[1] if parts[1] in PLACES else 'commands'


def test_layers_import_only_what_is_below_them():
    below = {  # what each place may import of ours (besides itself and SHARED)
        'storage': set(),
        'streaming_ext': {'storage'},
        'composer_ext': {'storage'},
        'pipeline': {'storage', 'streaming_ext'},
        'servers': {'storage'},  # the OCI endpoint variable's name only
        'callbacks': {'streaming_ext'},
        'llmfoundry_ext': set(),
    }
    bad = []
    for module, deps in _graph().items():
        layer = _layer(module)
        if layer not in below:
            continue
        for dep in deps:
            other = _layer(dep)
            if other != layer and dep not in SHARED and other not in below[layer]:
                bad.append(f'{module} imports {dep}')
    assert not bad, bad
    assert not [m for m in _graph()['data_prep.storage.base'] if m not in SHARED], \
        'base.py must import no backend'


def test_streaming_private_names_only_in_compat():
    private = ('_ShardState', '_shard_states', '_shard_access_times', '_downloader', 'NEVER',
               '_ready_thread', '_event', '_unpack_locals')
    offenders = []
    for name, tree in _sources().items():
        if name == 'data_prep.streaming_ext.compat':
            continue
        for node in ast.walk(tree):
            word = (node.attr if isinstance(node, ast.Attribute) else
                    node.id if isinstance(node, ast.Name) else None)
            if word in private:
                offenders.append(f'{name}: {word}')
            if isinstance(node, ast.ImportFrom) and node.module == 'streaming.base.dataset':
                offenders.append(f'{name}: from streaming.base.dataset import ...')
    assert not offenders, offenders

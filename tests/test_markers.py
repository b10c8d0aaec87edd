"""`make test-fast` (-m "not slow and not e2e") runs no training and no end-to-end bench: every
test that launches one, itself or through a fixture or function of its module, carries `slow`
or `e2e` (as a decorator or the module's `pytestmark`).

What counts as launching one, read from the test's source and its fixtures': Composer's
launcher (`COMPOSER`), `[PY, 'train.py', ...]`, `[PY, '-m', 'training.launch', ...]`, a
`scripts/bench*` command, the Slurm batch script, or bench_start's in-process measurements.
`train.main(...)` in this process is not: there it runs train.py's checks, which stop before
any model is built.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAUNCHES = re.compile(r"\bCOMPOSER\b|\[\s*PY,\s*'(?:train\.py|scripts/bench"
                      r"|-m',\s*'training\.launch)|bench_start\.(?:node_work|first_batch)"
                      r"|scripts/slurm/train\.sbatch")
LEAVE_OUT = {'slow', 'e2e'}


def marks(decorators: list[ast.expr]) -> set[str]:
    """Names of pytest.mark.X among decorators (or a pytestmark value's elements)."""
    out = set()
    for d in decorators:
        d = d.func if isinstance(d, ast.Call) else d
        if isinstance(d, ast.Attribute) and ast.unparse(d.value) == 'pytest.mark':
            out.add(d.attr)
    return out


def module_marks(tree: ast.Module) -> set[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == 'pytestmark' for t in node.targets):
            value = node.value
            return marks(value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value])
    return set()


def unmarked_launchers(path: Path, base: Path = ROOT) -> list[str]:
    source = path.read_text()
    tree = ast.parse(source)
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    fixtures = {name for name, f in funcs.items() if any(
        'fixture' in ast.unparse(d) for d in f.decorator_list)}
    at_module = module_marks(tree)

    def launches(name: str, seen: set[str]) -> bool:
        f = funcs[name]
        if LAUNCHES.search(ast.get_source_segment(source, f) or ''):
            return True
        # the module's fixtures it requests (its arguments) and the module's functions it uses
        used = {a.arg for a in f.args.args} & fixtures
        used |= {n.id for n in ast.walk(f) if isinstance(n, ast.Name)} & funcs.keys()
        return any(launches(u, seen | {name}) for u in used - seen - {name})

    return [f'{path.relative_to(base)}::{name}' for name, f in funcs.items()
            if name.startswith('test_') and launches(name, set())
            and not (marks(f.decorator_list) | at_module) & LEAVE_OUT]


def test_every_training_or_bench_test_is_left_out_of_test_fast():
    files = [f for f in sorted((ROOT / 'tests').rglob('test_*.py'))
             if f != Path(__file__).resolve()]  # this file's probe launches on purpose
    unmarked = [t for f in files for t in unmarked_launchers(f)]
    assert not unmarked, ('these tests train or run a bench but are not marked slow or e2e, '
                          'so make test-fast would run them:\n' + '\n'.join(unmarked))


def test_the_check_sees_launches_through_fixtures_and_module_marks(tmp_path):
    probe = tmp_path / 'test_probe.py'
    probe.write_text(
        'import pytest\n'
        '@pytest.fixture\n'
        'def trained():\n'
        "    launch()\n"
        'def launch():\n'
        "    run([COMPOSER, 'train.py'])\n"
        'def test_through_fixture(trained):\n'
        '    pass\n'
        '@pytest.mark.slow\n'
        'def test_marked(trained):\n'
        '    pass\n'
        'def test_checks_only():\n'
        '    train.main([])\n')
    assert unmarked_launchers(probe, tmp_path) == ['test_probe.py::test_through_fixture']
    probe.write_text(probe.read_text() + 'pytestmark = [pytest.mark.e2e]\n')
    assert unmarked_launchers(probe, tmp_path) == []

"""The docs point at what exists: every relative link in README.md and docs/*.md resolves (file
and heading), and every repository path that the docs or the code's comments name exists.

A path counts when it starts with one of the repository's own top-level folders (PATH_ROOTS)
and is not a pattern (`yamls/c4_*.yaml`, `yamls/<recipe>.yaml`, `{a,b}`, `$VAR`): so
`data_prep/pipeline/pool.py` is checked, `llmfoundry/data/text_data.py` (another package's) is
not. Comments are read with the tokenizer (Python) or after `#` (Makefile, yaml, shell).
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
PATH_ROOTS = ('callbacks', 'data_prep', 'docs', 'scripts', 'tests', 'yamls')
CODE_DIRS = ('callbacks', 'data_prep', 'scripts', 'tests', 'yamls')
NOT_A_PATH = set('*<{$[')  # the character after a match that makes it a pattern

LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')
PATH = re.compile(r'(?<![\w./-])((?:%s)/[\w./-]*)' % '|'.join(PATH_ROOTS))
TOP_DOC = re.compile(r'(?<![\w./-])([A-Z]+\.md)\b')  # README.md and the like, at the top


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
    return text.replace(' ', '-')


def anchors(md: Path) -> set[str]:
    text = re.sub(r'```.*?```', '', md.read_text(), flags=re.S)  # no headings in code blocks
    return {slug(m.group(1)) for m in re.finditer(r'^#{1,6}\s+(.+?)\s*#*$', text, flags=re.M)}


def named_paths(text: str) -> set[str]:
    found = set()
    for m in PATH.finditer(text):
        path, after = m.group(1).rstrip('.'), text[m.end():m.end() + 1]
        if after in NOT_A_PATH or '...' in path:
            continue
        found.add(path)
    return found | set(TOP_DOC.findall(text))


def exists(path: str) -> bool:
    """A file or folder, or `scripts/bench/convert.side_naive`: a name in a module."""
    module = path.rsplit('.', 1)[0] + '.py'
    return (ROOT / path).exists() or ('.' in path.rsplit('/', 1)[-1] and (ROOT / module).is_file())


def python_comments(path: Path) -> str:
    """Comments and docstrings of a Python file (string literals in code are data, not docs)."""
    source = path.read_text()
    parts = [tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
             if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            parts.append(ast.get_docstring(node) or '')
    return '\n'.join(parts)


def hash_comments(path: Path) -> str:
    return '\n'.join(line.split('#', 1)[1] for line in path.read_text().splitlines()
                     if '#' in line)


def code_files() -> list[Path]:
    files = [ROOT / 'train.py', ROOT / 'setup.py', ROOT / 'Makefile']
    for folder in CODE_DIRS:
        files += [p for p in (ROOT / folder).rglob('*')
                  if p.suffix in ('.py', '.yaml', '.sh') and '__pycache__' not in p.parts]
    return sorted(files)


def test_every_relative_link_resolves_to_a_file_and_heading():
    broken = []
    for md in DOCS:
        for target in LINK.findall(md.read_text()):
            if re.match(r'[a-z]+:', target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition('#')
            dest = (md.parent / file_part).resolve() if file_part else md
            where = f'{md.relative_to(ROOT)}: ({target})'
            if not dest.exists():
                broken.append(f'{where}: no such file')
            elif anchor and dest.suffix == '.md' and anchor not in anchors(dest):
                broken.append(f'{where}: no heading #{anchor} in {dest.relative_to(ROOT)}')
    assert not broken, '\n'.join(broken)


def test_every_path_the_docs_and_comments_name_exists():
    named: dict[str, set[str]] = {}
    for md in DOCS:
        for p in named_paths(md.read_text()):
            named.setdefault(p, set()).add(str(md.relative_to(ROOT)))
    for f in code_files():
        text = python_comments(f) if f.suffix == '.py' else hash_comments(f)
        for p in named_paths(text):
            named.setdefault(p, set()).add(str(f.relative_to(ROOT)))
    assert len(named) > 50  # the pattern still finds the paths the docs are full of
    missing = [f'{p} (named in {", ".join(sorted(w))})' for p, w in sorted(named.items())
               if not exists(p)]
    assert not missing, 'named but not in the repository:\n' + '\n'.join(missing)


def test_the_pattern_finds_paths_and_leaves_patterns_and_other_packages_alone():
    text = ('see data_prep/pipeline/pool.py, `yamls/c4_*.yaml`, yamls/<recipe>.yaml, '
            'llmfoundry/data/text_data.py and tests/.')
    assert named_paths(text) == {'data_prep/pipeline/pool.py', 'tests/'}
    assert named_paths('(see DESIGN.md) docs/design.md') == {'DESIGN.md', 'docs/design.md'}
    assert slug("`make bench`: the loader's headroom") == 'make-bench-the-loaders-headroom'

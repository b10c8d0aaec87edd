"""Offline C4-format sample: deterministic json.gz files shaped like allenai/c4 `en`.

The hub is out of reach on the machines we develop and test on, so we make files with the
same names (`c4-train.00000-of-00008.json.gz`) and the same records
(`{"text", "timestamp", "url"}`, one JSON object per line) and read them through the same
`datasets.load_dataset(..., streaming=True)` API as the hub.

The text is real English: sentences from the docstrings and reference topics shipped with
Python itself (no import side effects, identical on every machine with the same Python).
Documents are random recombinations of those sentences with a share of their words swapped
for others, so no document repeats and zstd finds about as much redundancy as in web text
(level-3 ratio 2.3x-3.8x, checked by a test).
"""
from __future__ import annotations

import ast
import datetime as dt
import gzip
import io
import json
import os
import re
import sysconfig
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

DEFAULT_OUT = 'build/c4_sample'
_SENTENCE_END = re.compile(r'(?<=[.!?])\s+(?=[A-Z])')
_WORD = re.compile(r"^[A-Za-z][A-Za-z'-]*[,;:]?$")
_SWAP_FRACTION = 0.2  # share of words replaced: breaks verbatim repeats across documents
_TOPICS = ('science', 'software', 'travel', 'health', 'cooking', 'sports', 'finance', 'music')


def _docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding='utf-8'))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    nodes = [tree] + [n for n in ast.walk(tree)
                      if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
    return [d for d in (ast.get_docstring(n) for n in nodes) if d]


def _sentences(text: str) -> list[str]:
    out = []
    for para in re.split(r'\n\s*\n', text):
        if '>>>' in para or '::' in para or para.lstrip().startswith(('-', '*', ':')):
            continue
        flat = ' '.join(para.split())
        for sent in _SENTENCE_END.split(flat):
            words = sent.split()
            if (6 <= len(words) <= 60 and sent[0].isupper() and sent[-1] in '.!?'
                    and sum(bool(_WORD.match(w)) for w in words[:-1]) >= 0.85 * (len(words) - 1)):
                out.append(sent)
    return out


@lru_cache(maxsize=1)
def sentence_pool() -> tuple[str, ...]:
    """Unique English sentences from the Python standard library's docs, in a fixed order."""
    from pydoc_data.topics import topics
    texts = [topics[k] for k in sorted(topics)]
    stdlib = Path(sysconfig.get_paths()['stdlib'])
    for path in sorted(stdlib.rglob('*.py')):
        if 'test' not in path.parts and 'site-packages' not in path.parts:
            texts.extend(_docstrings(path))
    seen, pool = set(), []
    for text in texts:
        for sent in _sentences(text):
            if sent not in seen:
                seen.add(sent)
                pool.append(sent)
    if len(pool) < 1000:
        raise RuntimeError(f'only {len(pool)} sentences found under {stdlib}; cannot build a sample')
    return tuple(pool)


def _document(rng: np.random.Generator, pool: tuple[str, ...], vocab: list[str]) -> str:
    """One web-page-like document: a few paragraphs of recombined, lightly mutated sentences."""
    paragraphs = []
    for _ in range(1 + rng.geometric(0.35)):
        sents = []
        for idx in rng.integers(0, len(pool), size=1 + rng.geometric(0.3)):
            words = pool[idx].split()
            for pos in np.flatnonzero(rng.random(len(words) - 1) < _SWAP_FRACTION):
                words[pos] = vocab[rng.integers(len(vocab))]
            sents.append(' '.join(words))
        paragraphs.append(' '.join(sents))
    return '\n'.join(paragraphs)


def _vocab(pool: tuple[str, ...]) -> list[str]:
    # Word swaps draw from the pool's own words, frequent words as often as they occur.
    return [w for s in pool[::7] for w in s.split()[:-1] if _WORD.match(w)]


def file_name(split: str, index: int, total: int) -> str:
    return f'c4-{split}.{index:05d}-of-{total:05d}.json.gz'


def write_file(path: str, seed: int, target_bytes: int) -> tuple[int, int]:
    """Writes one json.gz file of about `target_bytes` of text; returns (documents, text bytes)."""
    pool = sentence_pool()
    vocab = _vocab(pool)
    rng = np.random.default_rng(seed)
    base = dt.datetime(2019, 4, 18, tzinfo=dt.timezone.utc)
    docs = nbytes = 0
    tmp = f'{path}.tmp'
    # mtime=0 keeps the gzip header, and so the file, byte-identical across runs.
    with open(tmp, 'wb') as raw, gzip.GzipFile(fileobj=raw, mode='wb', compresslevel=6, mtime=0) as gz, \
            io.TextIOWrapper(gz, encoding='utf-8') as f:
        while nbytes < target_bytes:
            text = _document(rng, pool, vocab)
            stamp = base + dt.timedelta(seconds=int(rng.integers(0, 86400 * 400)))
            url = (f'https://{_TOPICS[docs % len(_TOPICS)]}-{seed % 997}.example.org/'
                   f'{seed}/{docs}/{int(rng.integers(1 << 30)):x}')
            f.write(json.dumps({'text': text, 'timestamp': stamp.strftime('%Y-%m-%dT%H:%M:%SZ'),
                                'url': url}) + '\n')
            docs += 1
            nbytes += len(text.encode('utf-8'))
    os.replace(tmp, path)  # a killed run never leaves a file that looks finished
    return docs, nbytes


def generate(out_dir: str = DEFAULT_OUT, size_mb: float = 8, train_files: int = 8,
             val_files: int = 1, seed: int = 17, workers: int | None = None) -> list[str]:
    """Writes `train_files` + `val_files` files holding about `size_mb` MB of text in all.

    Files already present are kept, so a re-run only fills in what is missing.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_file = int(size_mb * 1e6 / (train_files + val_files))
    jobs = [(str(out / file_name('train', i, train_files)), seed * 100_003 + i)
            for i in range(train_files)]
    jobs += [(str(out / file_name('validation', i, val_files)), seed * 100_003 + 50_000 + i)
             for i in range(val_files)]
    todo = [(p, s) for p, s in jobs if not os.path.exists(p)]
    if todo:
        sentence_pool()  # build once here; forked workers inherit the cache
        with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
            futures = [pool.submit(write_file, p, s, per_file) for p, s in todo]
            for fut in tqdm(futures, desc=f'sample -> {out_dir}', unit='file'):
                fut.result()
    return [p for p, _ in jobs]

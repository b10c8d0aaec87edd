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

Their lengths are C4's: C4 `en` holds 828.6 GB of text in 364,868,892 documents, a mean of
2,271 bytes, with a long tail. Each document's length is drawn from a lognormal (median
1,375 bytes, sigma 0.98, at least 150 bytes) and filled with whole sentences up to it.
Measured on 200,000 documents (seed 5): mean 2,273 bytes, median 1,425, p10 447, p90 4,889,
p99 13,521, longest 99,891 (tests/pipeline/test_sample.py keeps it so). C4 publishes only
its totals, so the mean is C4's and the shape (median, tail) is our assumption: about 230
words for the median page. Per-document costs (JSON parsing, one sample per document) and
per-byte costs (gunzip, zstd) then weigh in a conversion as they do on C4. Generation runs at
~2.5 MB of text per CPU-second, gzip included (~7 MB/s for the text alone).
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
from typing import Iterator

import numpy as np
from tqdm import tqdm

DEFAULT_OUT = 'build/c4_sample'
_SENTENCE_END = re.compile(r'(?<=[.!?])\s+(?=[A-Z])')
_WORD = re.compile(r"^[A-Za-z][A-Za-z'-]*[,;:]?$")
_SWAP_FRACTION = 0.2  # share of words replaced: breaks verbatim repeats across documents
_PARAGRAPH_END = 0.23  # a paragraph ends after a sentence: 1 / 0.23 = 4.3 sentences each
# Document length in bytes of text (see the module docstring): lognormal, mean C4's 2,271
# (median * exp(sigma^2 / 2) = 2,226, plus ~45 for filling up to a whole sentence).
MEDIAN_BYTES = 1375
SIGMA = 0.98
MIN_BYTES = 150  # C4 keeps pages of at least 5 sentences (T5 paper): no one-liners
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
        raise RuntimeError(f'only {len(pool)} sentences found under {stdlib}; '
                           f'cannot build a sample')
    return tuple(pool)


class _Sentences:
    """The pool as one array of words, each sentence a slice of it, with its bytes (+1 for the
    space after it): documents are assembled with a few numpy calls, not word by word."""

    def __init__(self, pool: tuple[str, ...]):
        split = [s.split() for s in pool]
        self.nwords = np.array([len(w) for w in split])
        self.starts = np.cumsum(self.nwords) - self.nwords
        self.words = np.array([w for ws in split for w in ws], dtype=object)
        self.nbytes = np.array([len(s.encode('utf-8')) + 1 for s in pool])
        self.vocab = np.array(_vocab(pool), dtype=object)


def _document(rng: np.random.Generator, sents: _Sentences, target: float) -> str:
    """One web-page-like document of about `target` bytes of text (within one sentence):
    recombined sentences with a share of their words swapped (never a sentence's last word,
    which holds its full stop), a paragraph ending after each sentence with probability 0.23
    (4.3 sentences on average).
    """
    idx = rng.integers(0, len(sents.nwords), size=int(target / 60) + 8)
    while (ends := np.cumsum(sents.nbytes[idx]))[-1] < target:  # rare: many short sentences
        idx = np.concatenate([idx, rng.integers(0, len(sents.nwords), size=len(idx))])
    idx = idx[:1 + int(np.searchsorted(ends, target))]
    counts = sents.nwords[idx]
    last = np.cumsum(counts) - 1  # each sentence's last word, in the document
    words = sents.words[np.repeat(sents.starts[idx] - (last + 1 - counts), counts)
                        + np.arange(last[-1] + 1)]
    swap = rng.random(len(words)) < _SWAP_FRACTION
    swap[last] = False
    words[swap] = sents.vocab[rng.integers(len(sents.vocab), size=int(swap.sum()))]
    seps = np.full(len(words), ' ', dtype=object)
    seps[last[rng.random(len(last)) < _PARAGRAPH_END]] = '\n'
    seps[-1] = ''
    out = np.empty(2 * len(words), dtype=object)
    out[0::2], out[1::2] = words, seps
    return ''.join(out.tolist())


def doc_length(rng: np.random.Generator) -> float:
    """A document's target text bytes: lognormal like C4's long tail, at least MIN_BYTES."""
    return max(MIN_BYTES, rng.lognormal(np.log(MEDIAN_BYTES), SIGMA))


def documents(count: int, seed: int = 0) -> Iterator[str]:
    """`count` document texts made as write_file makes them (to check their shape)."""
    sents = _Sentences(sentence_pool())
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield _document(rng, sents, doc_length(rng))


def _vocab(pool: tuple[str, ...]) -> list[str]:
    # Word swaps draw from the pool's own words, frequent words as often as they occur.
    return [w for s in pool[::7] for w in s.split()[:-1] if _WORD.match(w)]


def file_name(split: str, index: int, total: int) -> str:
    return f'c4-{split}.{index:05d}-of-{total:05d}.json.gz'


def write_file(path: str, seed: int, target_bytes: int) -> tuple[int, int]:
    """Writes one json.gz file of about `target_bytes` of text; returns (documents, text bytes)."""
    sents = _Sentences(sentence_pool())
    rng = np.random.default_rng(seed)
    base = dt.datetime(2019, 4, 18, tzinfo=dt.timezone.utc)
    docs = nbytes = 0
    tmp = f'{path}.tmp'
    # mtime=0 keeps the gzip header, and so the file, byte-identical across runs.
    with open(tmp, 'wb') as raw, \
            gzip.GzipFile(fileobj=raw, mode='wb', compresslevel=6, mtime=0) as gz, \
            io.TextIOWrapper(gz, encoding='utf-8') as f:
        while nbytes < target_bytes:
            text = _document(rng, sents, doc_length(rng))
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

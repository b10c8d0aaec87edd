"""What a published split is, recorded beside its root index: REMOTE/SPLIT/dataset.json.

streaming reads only index.json and the shards it names; this file is ours. The converter
writes it when it publishes (convert.publish, before the root index, which stays the commit
point: no index is published without its record); `python -m data_prep.verify` checks it
against the shards, `python -m data_prep.stats` prints it, and train.py checks a recipe
against it (training/checks/datasets.py). A dataset published before records has none.

    {"record": 1, "split": "train",
     "format": "tokens",                   # or "text"
     "columns": {"tokens": "ndarray:int32"},
     "tokenizer": {"name": "Qwen/Qwen2.5-7B", "class": "Qwen2TokenizerFast",
                   "vocab_size": 151665, "max_id": 151664, "eos_id": 151643, ...,
                   "fingerprint": "...",   # sha256 of the whole vocabulary + special tokens
                   "ids_fingerprint": "..."},   # sha256 of id -> token for every id
     "concat": {"tokens": 2048, "bos_text": "", "eos_text": "<|endoftext|>",
                "bos_ids": [], "eos_ids": [151643]},            # null for text
     "compression": "zstd",                # null: none
     "source": {"dataset": "allenai/c4", "subset": "en", "split": "train", "max_docs": null},
     "counts": {"samples", "tokens", "documents", "input_bytes", "skipped", "parts", "shards",
                "shard_bytes", "raw_bytes"},
     "converter": {"name": "data_prep.convert", "version": "0.1.0", "commit": "...",
                   "dirty": false},
     "written_at": "2026-12-06T10:00:00Z"}

Fingerprints are over content, not paths: two copies of one tokenizer in different folders
share them. `ids_fingerprint` covers what the ids mean (id -> token, every id), so a tokenizer
that adds tokens after the data's last id (a pad token through tokenizer kwargs) still reads
the data's ids the same: `ids_fingerprint(vocab, upto=record max_id)` over the recipe's
tokenizer equals the record's.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from typing import Any, Optional

RECORD = 'dataset.json'
RECORD_VERSION = 1
COLUMNS = {'tokens': {'tokens': 'ndarray:int32'}, 'text': {'text': 'str'}}
# What may differ between two records of one dataset: a re-publish keeps the first.
WHEN = ('converter', 'written_at')
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class RecordError(ValueError):
    """A record that cannot be read or is not one; the message names it."""


# ----------------------------------------------------------------------------- tokenizers

def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, ensure_ascii=False, separators=(',', ':'))
                          .encode('utf-8')).hexdigest()


def ids_fingerprint(vocab: dict[str, int], upto: Optional[int] = None) -> str:
    """sha256 of [id, token] for every id (up to and including `upto`), in id order."""
    return _sha(sorted([i, t] for t, i in vocab.items() if upto is None or i <= upto))


def tokenizer_facts(tok, name: str) -> dict:
    """What the record says of a tokenizer (a transformers tokenizer, or llm-foundry's
    tiktoken wrapper): `name` as given, its class, sizes, special ids and fingerprints."""
    vocab = tok.get_vocab()  # token -> id, added tokens included
    special = {k: v for k, v in sorted(tok.special_tokens_map.items())}
    facts = {'name': name, 'class': type(tok).__name__, 'vocab_size': len(tok),
             'max_id': max(vocab.values())}
    for role in ('eos', 'bos', 'pad'):
        facts[f'{role}_token'] = getattr(tok, f'{role}_token', None)
        facts[f'{role}_id'] = getattr(tok, f'{role}_token_id', None)
    facts['fingerprint'] = _sha({'vocab': sorted([i, t] for t, i in vocab.items()),
                                 'special_tokens': special})
    facts['ids_fingerprint'] = ids_fingerprint(vocab)
    return facts


def concat_facts(tok, concat_tokens: int, bos_text: str, eos_text: Optional[str]) -> dict:
    """The concatenation, as part.py's token writer takes it from here: each document's ids
    between the ids of bos_text and eos_text (eos_text None: the tokenizer's eos), cut into
    samples of exactly `concat_tokens`."""
    eos_text = eos_text if eos_text is not None else (tok.eos_token or '')

    def ids(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False)['input_ids']) if text else []

    return {'tokens': concat_tokens, 'bos_text': bos_text, 'eos_text': eos_text,
            'bos_ids': ids(bos_text), 'eos_ids': ids(eos_text)}


# ----------------------------------------------------------------------------- writing

def converter() -> dict:
    """This code's version: setup.py's, and the git commit when run from a checkout."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        ours = version('oci-c4-recipes')
    except PackageNotFoundError:
        ours = None
    out = {'name': 'data_prep.convert', 'version': ours, 'commit': None, 'dirty': None}
    try:
        def git(*args: str) -> str:
            return subprocess.run(['git', '-C', ROOT, *args], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        out['commit'] = git('rev-parse', 'HEAD') or None
        out['dirty'] = bool(git('status', '--porcelain', '--untracked-files=no'))
    except (OSError, subprocess.SubprocessError):
        pass  # no git, or not a checkout (an OCI Data Flow archive): the version alone
    return out


def new_record(cfg, split: str, tokenizer: Optional[dict], concat: Optional[dict]) -> dict:
    """The record of a conversion with settings `cfg` (a ConvertConfig), before its counts."""
    if cfg.dataset:
        source = {'dataset': cfg.dataset, 'subset': cfg.subset, 'split': cfg.split}
    else:
        files = cfg.data_files
        source = {'data_files': [files] if isinstance(files, str) else list(files)}
    source['max_docs'] = cfg.max_docs
    return {'record': RECORD_VERSION, 'split': split, 'format': cfg.format,
            'columns': COLUMNS[cfg.format], 'tokenizer': tokenizer, 'concat': concat,
            'compression': cfg.compression, 'source': source, 'counts': None,
            'converter': converter(), 'written_at': None}


def with_counts(record: dict, manifests: dict[str, dict], index: dict) -> dict:
    """The record with the counts of the dataset being published (its parts' manifests and
    its merged root index), stamped with the time."""
    from data_prep.pipeline.layout import shard_file_infos
    samples = sum(m['samples'] for m in manifests.values())
    skipped: dict[str, int] = {}
    for m in manifests.values():
        for reason, n in m.get('skipped', {}).items():
            if n:
                skipped[reason] = skipped.get(reason, 0) + n
    shards = index['shards']
    counts = {
        'samples': samples,
        'tokens': samples * record['concat']['tokens'] if record.get('concat') else None,
        'documents': sum(m['documents'] for m in manifests.values()),
        'input_bytes': sum(m['input_bytes'] for m in manifests.values()),
        'skipped': dict(sorted(skipped.items())),
        'parts': len(manifests), 'shards': len(shards),
        'shard_bytes': sum(info['bytes'] for s in shards for info, _ in shard_file_infos(s)),
        'raw_bytes': sum(s['raw_data']['bytes'] for s in shards),
    }
    return {**record, 'counts': counts,
            'written_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}


def same_dataset(a: Optional[dict], b: Optional[dict]) -> bool:
    """Whether two records describe one dataset (they may differ in when and by what)."""
    if a is None or b is None:
        return False
    return ({k: v for k, v in a.items() if k not in WHEN} ==
            {k: v for k, v in b.items() if k not in WHEN})


def write_record(remote, split: str, record: dict) -> bool:
    """Writes SPLIT/dataset.json unless it already describes this dataset (a re-publish keeps
    the first record, time included). True if written."""
    name = f'{split}/{RECORD}' if split else RECORD
    try:
        old = read_record(remote, split)
    except RecordError:
        old = None  # unreadable: replaced
    if same_dataset(old, record):
        return False
    remote.write(name, json.dumps(record, indent=1, ensure_ascii=False).encode('utf-8'))
    return True


# ----------------------------------------------------------------------------- reading

def read_record(remote, split: str = '') -> Optional[dict]:
    """SPLIT/dataset.json of a Remote, or None when there is none; RecordError (one line,
    naming the file) when it is not a record."""
    name = f'{split.strip("/")}/{RECORD}' if split and split.strip('/') else RECORD
    try:
        data = remote.read(name)
    except FileNotFoundError:
        return None
    try:
        record = json.loads(data)
    except ValueError as exc:
        raise RecordError(f'{remote.join(name)}: not valid JSON ({exc})') from None
    if not isinstance(record, dict) or record.get('format') not in COLUMNS:
        raise RecordError(f'{remote.join(name)}: not a dataset record (no format text or '
                          f'tokens)')
    return record


NO_RECORD = (f'no {RECORD} (published before datasets recorded how they were made, or by '
             f'another tool)')


def describe(record: dict) -> list[str]:
    """The record for a person, a few lines (data_prep.stats)."""
    counts = record.get('counts') or {}
    lines = []
    if record['format'] == 'tokens':
        cat = record.get('concat') or {}
        sep = [f'{k} {cat.get(f"{k}_text")!r} {cat.get(f"{k}_ids")}' for k in ('bos', 'eos')
               if cat.get(f'{k}_text')]
        lines.append(f'format     tokens, {cat.get("tokens", 0):,} per sample (documents '
                     f'concatenated{", with " + " and ".join(sep) if sep else ""}); '
                     f'compression {record.get("compression") or "none"}')
        tok = record.get('tokenizer') or {}
        ids = ', '.join(f'{r} {tok.get(f"{r}_id")}' for r in ('eos', 'bos', 'pad'))
        lines.append(f'tokenizer  {tok.get("name")} ({tok.get("class")}, '
                     f'{tok.get("vocab_size", 0):,} ids; {ids}; fingerprint '
                     f'{str(tok.get("fingerprint"))[:16]})')
    else:
        lines.append(f'format     text, one document per sample; compression '
                     f'{record.get("compression") or "none"}')
    src = record.get('source') or {}
    if src.get('dataset'):
        where = f'{src["dataset"]} {src.get("subset") or ""} split {src.get("split")}'
    else:
        where = ' '.join(src.get('data_files') or [])
    if src.get('max_docs') is not None:
        where += f' (at most {src["max_docs"]:,} documents)'
    lines.append(f'source     {" ".join(where.split())}')
    tokens = f', {counts["tokens"]:,} tokens' if counts.get('tokens') is not None else ''
    skipped = sum((counts.get('skipped') or {}).values())
    lines.append(f'counts     {counts.get("samples", 0):,} samples{tokens} from '
                 f'{counts.get("documents", 0):,} documents ({skipped:,} skipped); '
                 f'{counts.get("parts", 0):,} parts, {counts.get("shards", 0):,} shards, '
                 f'{counts.get("shard_bytes", 0):,} bytes')
    conv = record.get('converter') or {}
    commit = f', commit {conv["commit"][:12]}' if conv.get('commit') else ''
    commit += ' (with uncommitted changes)' if conv.get('dirty') else ''
    lines.append(f'made by    {conv.get("name")} {conv.get("version")}{commit}, '
                 f'{record.get("written_at")}')
    return lines


# ----------------------------------------------------------------------------- checking

def index_problems(record: dict, index: dict, parts: Optional[int],
                   documents: Optional[int]) -> list[str]:
    """How a record disagrees with its root index (and its parts' manifests, where known):
    format and columns, compression, every count. Strings without the file's name."""
    from data_prep.pipeline.layout import shard_file_infos
    problems = []
    shards = index.get('shards', [])
    want_cols = record.get('columns') or COLUMNS.get(record.get('format'), {})
    for shard in shards:
        cols = dict(zip(shard.get('column_names', []), shard.get('column_encodings', [])))
        if cols != want_cols:
            problems.append(f'says {record.get("format")} ({want_cols}), and shard '
                            f'{shard["raw_data"]["basename"]} has columns {cols}')
            break
    for shard in shards:
        if shard.get('compression') != record.get('compression'):
            problems.append(f'says compression {record.get("compression") or "none"}, and '
                            f'shard {shard["raw_data"]["basename"]} is '
                            f'{shard.get("compression") or "not compressed"}')
            break
    counts = record.get('counts') or {}
    samples = sum(s['samples'] for s in shards)
    have = {'samples': samples, 'shards': len(shards),
            'shard_bytes': sum(i['bytes'] for s in shards for i, _ in shard_file_infos(s)),
            'raw_bytes': sum(s['raw_data']['bytes'] for s in shards),
            'parts': parts, 'documents': documents}
    for key, value in have.items():
        if value is not None and counts.get(key) != value:
            said = counts.get(key)
            said = f'{said:,}' if isinstance(said, int) else repr(said)
            problems.append(f'records {said} {key.replace("_", " ")}, the dataset has '
                            f'{value:,}')
    return problems


def token_stats(shard: dict, data: bytes) -> Optional[tuple[int, int, int, int, int]]:
    """(samples, shortest, longest, largest id, tokens) of an uncompressed MDS shard of
    `tokens`, None for other columns."""
    import numpy as np
    from streaming.base.format.mds.encodings import mds_decode
    if shard.get('column_names') != ['tokens']:
        return None
    encoding = shard['column_encodings'][0]
    n = int(np.frombuffer(data[:4], np.uint32)[0])
    if not n:
        return 0, 0, 0, -1, 0
    offsets = np.frombuffer(data[4:4 + 4 * (n + 1)], np.uint32).astype(np.int64)
    sizes = np.diff(offsets)
    size_prefix = 0 if shard['column_sizes'][0] else 4  # a variable-size column's own size
    first = mds_decode(encoding, data[offsets[0] + size_prefix:offsets[1]])
    if (sizes == sizes[0]).all() and first.ndim == 1:
        # One length (concatenated samples): the values sit at one offset in every sample.
        skip = int(sizes[0]) - first.nbytes
        rows = np.frombuffer(data, np.uint8, count=int(offsets[-1] - offsets[0]),
                             offset=int(offsets[0])).reshape(n, int(sizes[0]))
        values = np.ascontiguousarray(rows[:, skip:]).view(first.dtype)
        top = int(values.max()) if values.size else -1
        return n, first.size, first.size, top, n * first.size
    lengths, top = [], -1
    for i in range(n):
        arr = mds_decode(encoding, data[offsets[i] + size_prefix:offsets[i + 1]])
        lengths.append(arr.size)
        if arr.size:
            top = max(top, int(arr.max()))
    return n, min(lengths), max(lengths), top, sum(lengths)


def token_problems(record: dict, stats: list[tuple[int, int, int, int, int]]) -> list[str]:
    """How the tokens in the shards (token_stats of each) disagree with the record: sample
    lengths, the tokens count, ids beyond the tokenizer's."""
    if record.get('format') != 'tokens' or not stats:
        return []
    problems = []
    length = (record.get('concat') or {}).get('tokens')
    short = min(s[1] for s in stats if s[0])
    long = max(s[2] for s in stats if s[0])
    if length is not None and (short != length or long != length):
        got = f'{short:,}' if short == long else f'{short:,} to {long:,}'
        problems.append(f'says {length:,} tokens per sample, and the samples hold {got}')
    total = sum(s[4] for s in stats)
    said = (record.get('counts') or {}).get('tokens')
    if said != total:
        said = f'{said:,}' if isinstance(said, int) else repr(said)
        problems.append(f'records {said} tokens, the samples hold {total:,}')
    top = max(s[3] for s in stats)
    tok = record.get('tokenizer') or {}
    limit = tok.get('max_id')
    if limit is not None and top > limit:
        problems.append(f'says tokenizer {tok.get("name")} ({tok.get("vocab_size"):,} ids, '
                        f'largest {limit:,}), and the samples hold id {top:,}')
    return problems

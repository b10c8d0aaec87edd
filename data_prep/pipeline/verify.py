"""Check an MDS dataset in any remote: every shard there, sizes and hashes right, sample counts.

    python -m data_prep.verify REMOTE [--split train] [--sizes-only]

REMOTE is a dataset root holding index.json, or a folder whose splits hold one
(REMOTE/train/index.json, as `data_prep.convert` writes). Every shard file present must be
one the index names. For every shard the index names:
the object is there with the recorded size; with hashes on (the default), it is downloaded
and every hash the index records is recomputed, the compressed file is decompressed and its
raw size and hashes checked too, and the sample count in the shard's own header must equal
the index's. Where the parts carry our manifests, their sample counts must add up as well. An
index that names no sample at all is a problem too (nothing to train on).
Where the split has its record (dataset.json, record.py), it must agree with the shards: format
and columns, compression, every count; with hashes on, also every sample's length and every
token id (below the tokenizer's vocabulary). A split without a record is reported as such, not
as a problem (datasets published before records have none).
Exit status 0 when all is well; 1 with one line per problem otherwise; 2 if it cannot look.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np

from data_prep.pipeline.layout import INDEX, MANIFEST, shard_file_infos
from data_prep.pipeline.record import (
    RECORD,
    RecordError,
    index_problems,
    read_record,
    token_problems,
    token_stats,
)
from data_prep.storage import Remote, open_remote


def iter_samples(url: str, split: str = '') -> Iterator[bytes]:
    """The encoded bytes of every sample of an MDS dataset, in index order, read by hand from
    the format (sample count, offsets, samples) with nothing of streaming's reader in between
    but its decompression: what the converter wrote, byte for byte."""
    from streaming.base.compression import decompress
    remote = open_remote(url)
    prefix = f'{split.strip("/")}/' if split else ''
    index = json.loads(remote.read(prefix + INDEX))
    for shard in index['shards']:
        stored, _raw = shard_file_infos(shard)[0]
        data = remote.read(prefix + stored['basename'])
        if shard.get('zip_data'):
            data = decompress(shard['compression'], data)
        n = int(np.frombuffer(data[:4], np.uint32)[0])
        offsets = np.frombuffer(data[4:4 + 4 * (n + 1)], np.uint32)
        for i in range(n):
            yield data[offsets[i]:offsets[i + 1]]


def find_splits(listing: dict[str, int]) -> list[str]:
    """'' if the root holds index.json, else every first-level folder that holds one."""
    if INDEX in listing:
        return ['']
    return sorted(name[:-len(INDEX) - 1] for name in listing
                  if name.endswith('/' + INDEX) and name.count('/') == 1)


def _hash_problems(data: bytes, info: dict, where: str) -> list[str]:
    from streaming.base.hashing import get_hash
    problems = []
    if len(data) != info['bytes']:
        problems.append(f'{where}: {len(data)} bytes, index says {info["bytes"]}')
    for algo, want in (info.get('hashes') or {}).items():
        got = get_hash(algo, data)
        if got != want:
            problems.append(f'{where}: {algo} is {got}, index says {want}')
    return problems


def _check_shard(remote: Remote, prefix: str, shard: dict,
                 tokens: bool = False) -> tuple[list[str], tuple | None]:
    """(problems, token_stats of the shard when `tokens` and it reads whole)."""
    from streaming.base.compression import decompress
    problems, stats = [], None
    for stored, raw in shard_file_infos(shard):
        name = f'{prefix}{stored["basename"]}'
        where = remote.join(name)
        try:
            data = remote.read(name)
        except Exception as exc:
            return [f'{where}: cannot read: {type(exc).__name__}: {exc}'], None
        problems += _hash_problems(data, stored, where)
        if problems:
            return problems, None
        if raw is not None:
            try:
                data = decompress(shard['compression'], data)
            except Exception as exc:
                return [f'{where}: does not decompress with {shard["compression"]}: {exc}'], None
            problems += _hash_problems(data, raw, f'{where} (decompressed)')
        is_data = stored is shard_file_infos(shard)[0][0]
        if is_data and shard.get('format') == 'mds' and len(data) >= 4:
            n = int(np.frombuffer(data[:4], np.uint32)[0])
            if n != shard['samples']:
                problems.append(f'{where}: holds {n} samples, index says {shard["samples"]}')
            elif tokens and not problems:
                stats = token_stats(shard, data)
    return problems, stats


def verify(url: str, split: str | None = None, hashes: bool = True, workers: int = 8) -> dict:
    """Checks the dataset(s) at `url`; returns {'ok', 'problems': [str], 'splits': {...}}."""
    remote = open_remote(url)
    listing = remote.list(split.strip('/') + '/' if split else '')
    splits = [split.strip('/')] if split else find_splits(listing)
    report: dict = {'remote': url, 'ok': False, 'problems': [], 'splits': {}}
    problems = report['problems']
    if not splits or (split and f'{split.strip("/")}/{INDEX}' not in listing):
        where = remote.join(split or '')
        problems.append(f'{where}: no {INDEX} (not a dataset root, nor a folder of splits)')
        return report
    for sp in splits:
        prefix = f'{sp}/' if sp else ''
        try:
            index = json.loads(remote.read(prefix + INDEX))
            shards = index['shards']
        except Exception as exc:
            problems.append(f'{remote.join(prefix + INDEX)}: unreadable: {exc}')
            continue
        try:
            record = read_record(remote, sp)
        except RecordError as exc:
            problems.append(str(exc))
            record = None
        samples = stored_bytes = 0
        per_part: dict[str, int] = {}
        documents: int | None = 0
        missing_before = len(problems)
        for shard in shards:
            samples += shard['samples']
            base = shard['raw_data']['basename']
            part = base.split('/', 1)[0] if '/' in base else ''  # (part-N/attempt/shard)
            per_part[part] = per_part.get(part, 0) + shard['samples']
            for stored, _raw in shard_file_infos(shard):
                name = prefix + stored['basename']
                have = listing.get(name)
                stored_bytes += stored['bytes']
                if have is None:
                    problems.append(f'{remote.join(name)}: missing')
                elif have != stored['bytes']:
                    problems.append(f'{remote.join(name)}: {have} bytes, index says '
                                    f'{stored["bytes"]}')
        if not samples:  # nothing to train on: a conversion never publishes this
            problems.append(f'{remote.join(prefix + INDEX)}: names no samples (an empty '
                            f'dataset)')
        # Every shard present must be one the index names: a shard the index does not cover is
        # data the readers never see (left by an interrupted or foreign writer).
        named = {prefix + shard[key]['basename'] for shard in shards
                 for key in ('raw_data', 'zip_data', 'raw_meta', 'zip_meta') if shard.get(key)}
        for name in sorted(listing):
            base = name.rsplit('/', 1)[-1]
            if (name.startswith(prefix) and base.startswith('shard.') and '.mds' in base
                    and name not in named):
                problems.append(f'{remote.join(name)}: a shard the index does not name')
        for part, n in sorted(per_part.items()):
            mname = f'{prefix}{part}/{MANIFEST}' if part else f'{prefix}{MANIFEST}'
            if mname not in listing:
                documents = None  # not our conversion's parts: no document count to compare
                continue
            try:
                manifest = json.loads(remote.read(mname))
                want = manifest['samples']
            except Exception as exc:
                problems.append(f'{remote.join(mname)}: unreadable: {exc}')
                documents = None
                continue
            if documents is not None:
                documents = (documents + manifest['documents']
                             if 'documents' in manifest else None)
            if want != n:
                problems.append(f'{remote.join(prefix + part)}: index counts {n} samples, '
                                f'its manifest {want}')
        # A part whose input gave no sample (an empty or a skipped file) has a manifest and no
        # shard: it counts as a part of the dataset, with its documents (none kept).
        empty = sorted({n[len(prefix):].split('/')[0] for n in listing
                        if n.startswith(prefix + 'part-') and n.endswith('/' + MANIFEST)}
                       - set(per_part))
        for part in empty if documents is not None else ():
            try:
                documents += json.loads(remote.read(f'{prefix}{part}/{MANIFEST}'))['documents']
            except Exception:
                documents = None
                break
        deep = hashes and len(problems) == missing_before  # no downloads if sizes already fail
        where = remote.join(prefix + RECORD)
        if record is not None:
            parts = len(per_part) + len(empty) if documents is not None else None
            problems += [f'{where}: {p}' for p in index_problems(record, index, parts, documents)]
        tokens = record is not None and record.get('format') == 'tokens'
        stats = []
        if deep:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                for found, shard_stats in pool.map(
                        lambda s: _check_shard(remote, prefix, s, tokens), shards):
                    problems += found
                    if shard_stats is not None:
                        stats.append(shard_stats)
            if tokens and len(stats) == len(shards):
                problems += [f'{where}: {p}' for p in token_problems(record, stats)]
        report['splits'][sp or '.'] = {'shards': len(shards), 'samples': samples,
                                       'bytes': stored_bytes, 'hashes_checked': deep,
                                       'record': record is not None,
                                       'tokens_checked': bool(deep and tokens)}
    report['ok'] = not problems
    return report

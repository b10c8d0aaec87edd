"""What a converted dataset looks like in a remote (see data_prep.pipeline.convert):

    REMOTE/SPLIT/index.json                  root index; written last, only after verification
    REMOTE/SPLIT/part-00000/index.json       one part per input file, written by one MDSWriter
    REMOTE/SPLIT/part-00000/shard.00000.mds[.zstd]
    REMOTE/SPLIT/part-00000/manifest.json    written only after the part's shards are confirmed

and the one reading of which files an index entry names, shared by conversion and verify.
"""
from __future__ import annotations

import hashlib

INDEX = 'index.json'
MANIFEST = 'manifest.json'


def part_name(index: int) -> str:
    return f'part-{index:05d}'


def shard_file_infos(shard: dict) -> list[tuple[dict, dict | None]]:
    """(stored file info, raw info if the stored one is compressed) for data and meta: the
    files one index entry names, as they are in the bucket (the zip when there is one)."""
    out = []
    for kind in ('data', 'meta'):
        raw, zipped = shard.get(f'raw_{kind}'), shard.get(f'zip_{kind}')
        if zipped:
            out.append((zipped, raw))
        elif raw:
            out.append((raw, None))
    return out


def shard_files(index: dict) -> dict[str, int]:
    """basename -> bytes of every file a (part or root) index names, as stored."""
    return {info['basename']: info['bytes']
            for shard in index.get('shards', []) for info, _raw in shard_file_infos(shard)}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

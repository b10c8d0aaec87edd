"""What a converted dataset looks like in a remote (see data_prep.pipeline.convert):

    REMOTE/SPLIT/index.json                       root index; written last, after verification
    REMOTE/SPLIT/part-00000/manifest.json         the part's commit: names its attempt folder
    REMOTE/SPLIT/part-00000/a0-1f2e3d4c/index.json             one part per input file, written
    REMOTE/SPLIT/part-00000/a0-1f2e3d4c/shard.00000.mds[.zstd]  by one MDSWriter per attempt

Every attempt at a part (a pool worker's, or each Spark task attempt: a retry, a speculative
copy) writes into an attempt folder of its own, `a<attempt number>-<random>`, so two attempts
never write or delete the same object. An attempt commits by creating the part's manifest with
the remote's atomic create-if-absent (`Remote.create`): the first attempt to commit wins, and
the manifest names its folder. Anything else under a part (the folders of attempts that lost,
failed or were lost with their machine) is not part of the dataset; the driver deletes it before
publishing (`strays`). Manifests written before attempt folders (no `attempt` key) name shards
in the part folder itself, and stay valid.

This module is also the one reading of which files an index entry names, shared by conversion
and verify.
"""
from __future__ import annotations

import hashlib
import uuid

INDEX = 'index.json'
MANIFEST = 'manifest.json'


def part_name(index: int) -> str:
    return f'part-{index:05d}'


def new_attempt(number: int = 0) -> str:
    """A fresh attempt folder name: the attempt number (Spark's, 0 for the pool) and 8 random
    hex digits, unique across attempts, runs and machines."""
    return f'a{number}-{uuid.uuid4().hex[:8]}'


def part_folder(part: str, manifest: dict) -> str:
    """The folder, under SPLIT/, that holds the committed part's index and shards."""
    attempt = manifest.get('attempt') or ''
    return f'{part}/{attempt}' if attempt else part


def part_objects(split: str, part: str, manifest: dict) -> set[str]:
    """Every object name (under the remote) that a committed part consists of."""
    folder = f'{split}/{part_folder(part, manifest)}'
    return ({f'{split}/{part}/{MANIFEST}', f'{folder}/{INDEX}'} |
            {f'{folder}/{name}' for name in manifest['shards']})


def strays(listing: dict[str, int], split: str, part: str, manifest: dict) -> list[str]:
    """Objects under SPLIT/PART/ in `listing` that the committed manifest does not name."""
    keep = part_objects(split, part, manifest)
    base = f'{split}/{part}/'
    return sorted(n for n in listing if n.startswith(base) and n not in keep)


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


def prefixed_index(index: dict, folder: str) -> list[dict]:
    """The shard entries of a part index, with basenames relative to the split: `folder/`
    in front, as streaming's merge_index does for one level (our parts nest two)."""
    for shard in index['shards']:
        for key in ('raw_data', 'zip_data', 'raw_meta', 'zip_meta'):
            if shard.get(key):
                shard[key]['basename'] = f'{folder}/{shard[key]["basename"]}'
    return index['shards']


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

"""The local shard cache's root index, checked against the remote's when a run starts.

streaming downloads `<remote>/<split>/index.json` into `<local>/<split>/` only when that file
is missing, and trusts the shard files it finds beside it. A cache that outlives its dataset
therefore keeps serving it: a damaged index repaired in the remote still fails every run with
the cached copy, and a dataset converted again is read through its predecessor's index and
shards. `sync_index()` reads the remote's index (one small GET; the cached copy is compared
byte for byte, so no ETag or timestamp has to be trusted) and, when they differ, puts the
remote's in place and drops the cached shard files whose entry changed. It only uses the
cache's documented layout (local/split/index.json and the shard basenames the index names),
no private internals; the accessors at the end read the node's shard states for
callbacks/cache_stats.py.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Optional

import numpy as np

from data_prep.storage import RemoteError, open_remote

INDEX = 'index.json'


def _entries(index: dict) -> dict[str, str]:
    """Shard file basename -> its shard's whole entry (canonical JSON), for raw and zip files."""
    out = {}
    for shard in index['shards']:
        entry = json.dumps(shard, sort_keys=True)
        for key in ('raw_data', 'zip_data'):
            info = shard.get(key)
            if info:
                out[info['basename']] = entry
    return out


def _parse(data: bytes) -> Optional[dict]:
    try:
        index = json.loads(data)
    except ValueError:
        return None
    if not isinstance(index, dict) or not isinstance(index.get('shards'), list):
        return None
    return index


def sync_index(remote: str, local: str, split: Optional[str]) -> Optional[str]:
    """Make `<local>/<split>/index.json` the remote's. Returns a line saying what it changed,
    or None when the cache was already current. Raises RemoteError (one line) when the remote
    has no index or a damaged one."""
    name = '/'.join(p.strip('/') for p in (split or '', INDEX) if p)
    where = f'{remote.rstrip("/")}/{name}'
    try:
        new = open_remote(remote).read(name)
    except FileNotFoundError:
        raise RemoteError(f'{where} not found: not a converted dataset, or another split '
                          f'(python -m data_prep.verify {remote})') from None
    new_index = _parse(new)
    if new_index is None:
        raise RemoteError(f'{where} is not a valid MDS index (damaged?): '
                          f'python -m data_prep.verify {remote} checks the dataset')
    folder = os.path.join(local, split or '')
    path = os.path.join(folder, INDEX)
    try:
        with open(path, 'rb') as f:
            old = f.read()
    except FileNotFoundError:
        old = None
    if old == new:
        return None
    dropped = 0
    if old is not None:
        old_index = _parse(old)
        new_entries = _entries(new_index)
        if old_index is None:  # unreadable: none of its shard files can be vouched for
            stale = set(new_entries)
        else:
            old_entries = _entries(old_index)
            stale = {b for b in old_entries.keys() | new_entries.keys()
                     if old_entries.get(b) != new_entries.get(b)}
        for basename in stale:
            try:
                os.unlink(os.path.join(folder, basename))
                dropped += 1
            except FileNotFoundError:  # never cached, or another rank of this node was first
                pass
    os.makedirs(folder, exist_ok=True)
    tmp = f'{path}.sync.{os.getpid()}'
    with open(tmp, 'wb') as f:
        f.write(new)
    os.replace(tmp, path)  # a reader sees the old index or the new one, whole
    if old is None:
        return None  # a cold cache: streaming would have fetched the same file
    return (f'{path} differed from {where} (damaged, or an earlier dataset): replaced it, '
            f'dropped {dropped} cached shard file(s) whose entry changed')


# ----------------------------------------------------------------------------- the node's cache
# What callbacks/cache_stats.py reads of streaming's node-wide state (private names of
# streaming 0.12.0; installed through training.shards.install(), which checks the version).

def local_shards(ds) -> np.ndarray:
    """Bool per shard: in this node's cache now (streaming's node-wide shared states)."""
    from streaming.base.dataset import _ShardState
    return ds._shard_states.numpy() == _ShardState.LOCAL


def accessed_since(ds, t0_ns: int) -> np.ndarray:
    """Bool per shard: read or prepared on this node after `t0_ns` (time.time_ns())."""
    from streaming.base.dataset import NEVER
    times = ds._shard_access_times.numpy()
    return (times > t0_ns) & (times != NEVER)


def cache_bytes(ds) -> int:
    return int(ds.cache_usage)


def wrap_downloaders(ds, wrap: Callable) -> None:
    """stream._downloader = wrap(stream._downloader) for every stream of `ds`: the object
    each Stream downloads its shard files through (made from DOWNLOADER_MAPPINGS)."""
    for stream in ds.streams:
        stream._downloader = wrap(stream._downloader)

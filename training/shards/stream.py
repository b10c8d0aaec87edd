"""`CheckedStream`: a streaming `Stream` whose shards are checked before anyone reads them.

Registered in streaming's own `streams_registry` as ``checked`` (entry point group
``streaming_streams_registry`` in setup.py, and by `training.shards.install()`), and
chosen in a recipe with::

    train_loader:
      dataset:
        stream_name: checked

What it adds to `Stream.prepare_shard` (the download and decompression of one shard, run while
the shard is PREPARING, before anyone may read it):

- a file in the cache whose size is not the index's is refused (a truncated shard from a
  transport with no checksum: streaming alone would read garbage or fail later);
- any failure becomes `ShardUnavailable`, naming the shard, its remote and why, and the
  shard's files are removed from the cache, so a retry (the store back) downloads it again.

A shard whose bytes changed in place (same size) is caught by our oci:// downloader's MD5
check, and for any remote by streaming's ``validate_hash: xxh64`` (our conversions record
xxh64), which ends up here as well. What a failure does to the rest of the pass (streaming
0.12 would end the epoch early in silence) is fixed in shard_errors.py: it needs the
dataset's private internals.
"""
from __future__ import annotations

import os
from typing import Iterator

from streaming.base.stream import Stream

STREAM_NAME = 'checked'


class ShardUnavailable(RuntimeError):
    """A shard could not be downloaded or prepared; names the shard, its remote and why."""


def describe(stream: Stream, shard) -> str:
    """'shard <name> of <remote/split>' for messages."""
    raw, zipped = shard.file_pairs[0]
    name = (zipped or raw).basename
    base = (stream.remote or stream.local).rstrip('/')  # an absolute path keeps its root
    where = '/'.join(p for p in (base, (stream.split or '').strip('/')) if p)
    return f'shard {name} of {where}'


def unavailable(stream: Stream, shard, exc: BaseException) -> ShardUnavailable:
    if isinstance(exc, ShardUnavailable):
        return exc
    return ShardUnavailable(f'{describe(stream, shard)} could not be prepared: '
                            f'{type(exc).__name__}: {exc}')


def _cache_files(stream: Stream, shard) -> Iterator[tuple[object, str]]:
    for raw, zipped in shard.file_pairs:
        for info in (raw, zipped):
            if info is not None:
                yield info, os.path.join(stream.local, stream.split or '', info.basename)


class CheckedStream(Stream):
    """A Stream whose prepared shards match the index, and whose failures name the shard."""

    def prepare_shard(self, shard) -> int:
        try:
            delta = super().prepare_shard(shard)
            for info, path in _cache_files(self, shard):
                try:
                    size = os.path.getsize(path)
                except FileNotFoundError:
                    continue  # the zip is dropped after decompression
                if size != info.bytes:
                    raise IOError(f'{info.basename} is {size} bytes in the cache, the index '
                                  f'says {info.bytes} (truncated or changed in the remote)')
            return delta
        except Exception as exc:
            for _info, path in _cache_files(self, shard):
                try:
                    os.unlink(path)
                except OSError:
                    pass
            raise unavailable(self, shard, exc) from exc

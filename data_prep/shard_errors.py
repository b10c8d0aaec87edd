"""A shard that cannot be prepared fails the pass loudly, naming the shard (any transport).

streaming 0.12 ends an epoch early, in silence, when a shard download fails in a worker's
background thread; see `loud_shard_errors` for why the fix sits at the dataset's error
surface and not in a downloader. Installed by data_prep.oci_transport.register(), which
train.py and the conversion call.
"""
from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


class ShardUnavailable(RuntimeError):
    """A shard could not be downloaded or prepared; names the shard, its remote and why."""


def loud_shard_errors() -> None:
    """Make a shard that cannot be prepared end the pass with ShardUnavailable (idempotent).

    Why here, at the dataset's error surface, and not in our downloader: StreamingDataset
    downloads in a background "prepare" thread of each DataLoader worker. When that thread
    raises, streaming sets an event, its yield loop sees the event and simply stops: the epoch
    ends early as if the data were exhausted, the exception is only logged by a future's done
    callback, and only the *next* pass raises "Background thread failed". A training run
    would silently skip the rest of the epoch (or loop on empty epochs). That is the dataset's
    behaviour for every transport (a local path, s3://, our oci://), so no downloader can fix
    it: a downloader can only raise, which is what starts the silent ending. Three small
    wrappers around streaming 0.12's own methods fix it where it happens:

    - Stream.prepare_shard (download + decompress of one shard, called while the shard is
      PREPARING, before anyone may read it): any failure, and a file in the cache whose size
      is not the index's (a truncated shard from a transport with no checksum), becomes
      ShardUnavailable naming the shard and the remote; the shard's files are removed from the
      cache so that a retry (e.g. after the store is back) downloads it again.
    - StreamingDataset.prepare_shard: puts the shard back to REMOTE (streaming leaves it
      PREPARING forever, so anyone waiting on it would wait forever) and remembers the error.
    - StreamingDataset.__iter__: when the pass ended because of such an error, raises it
      instead of returning; the next pass raises it too (not streaming's vague message).
    - StreamingDataset._ready_thread: a worker waiting for a shard that another worker (or
      rank) failed to prepare would wait forever for it to become LOCAL, and the DataLoader,
      which hands out batches in order, with it: the run hung. It now prepares such a shard
      itself, and so fails loudly as well (or succeeds, if the store is back).

    A shard whose bytes were changed in place (same size) is caught by our downloader's MD5
    check for oci://, and for any remote by streaming's `validate_hash: xxh64` (the index
    holds xxh64 hashes, see data_prep.convert), which ends up here as well.
    """
    from streaming.base.dataset import StreamingDataset, _ShardState
    from streaming.base.stream import Stream
    if getattr(StreamingDataset, '_loud_shard_errors', False):
        return
    stream_prepare = Stream.prepare_shard
    dataset_prepare = StreamingDataset.prepare_shard
    dataset_iter = StreamingDataset.__iter__

    def _describe(stream, shard) -> tuple[str, str]:
        name = shard.file_pairs[0][1].basename if shard.file_pairs[0][1] else \
            shard.file_pairs[0][0].basename
        where = '/'.join(p.strip('/') for p in (stream.remote or stream.local, stream.split or '')
                         if p)
        return name, where

    def _local_files(stream, shard):
        for raw, zipped in shard.file_pairs:
            for info in (raw, zipped):
                if info is not None:
                    yield info, os.path.join(stream.local, stream.split or '', info.basename)

    def prepare_one(self, shard):
        try:
            delta = stream_prepare(self, shard)
            for info, path in _local_files(self, shard):
                try:
                    size = os.path.getsize(path)
                except FileNotFoundError:
                    continue  # the zip is dropped after decompression
                if size != info.bytes:
                    raise IOError(f'{info.basename} is {size} bytes in the cache, the index '
                                  f'says {info.bytes} (truncated or changed in the remote)')
            return delta
        except Exception as e:
            for _info, path in _local_files(self, shard):
                try:
                    os.unlink(path)
                except OSError:
                    pass
            name, where = _describe(self, shard)
            raise ShardUnavailable(f'shard {name} of {where} could not be prepared: '
                                   f'{type(e).__name__}: {e}') from e

    def prepare(self, shard_id, blocking=True):
        try:
            return dataset_prepare(self, shard_id, blocking)
        except Exception as e:
            if not isinstance(e, ShardUnavailable):
                stream = self.streams[self.stream_per_shard[shard_id]]
                name, where = _describe(stream, self.shards[shard_id])
                e = ShardUnavailable(f'shard {name} of {where} could not be prepared: '
                                     f'{type(e).__name__}: {e}')
            # Only this thread moves a PREPARING shard on; nobody else may touch it.
            if self._shard_states[shard_id] == _ShardState.PREPARING:
                self._shard_states[shard_id] = _ShardState.REMOTE
            self._shard_error = e
            raise e

    def iterate(self):
        try:
            yield from dataset_iter(self)
        except RuntimeError as e:  # a later pass: 'Background thread failed'
            if getattr(self, '_shard_error', None) is None or isinstance(e, ShardUnavailable):
                raise
            raise ShardUnavailable(str(self._shard_error)) from e
        err = getattr(self, '_shard_error', None)
        event = getattr(self, '_event', None)
        if err is not None and event is not None and event.is_set():
            raise ShardUnavailable(f'{err}; the pass stopped there')

    def ready_thread(self, it) -> None:
        # streaming 0.12.0's _ready_thread, with one change in the wait loop: a shard that went
        # back to REMOTE while we wait for it (another worker or rank failed to prepare it, or
        # it was evicted) is prepared here, instead of being waited for forever. So a peer of
        # the worker that failed fails too (loudly), or succeeds if the store is back.
        from time import sleep

        from streaming.base.dataset import TICK
        while True:
            if it.should_exit() or it.ready_index == it.total or self._event.is_set():
                break
            if self.predownload is not None and self.predownload < it.ready_index - it.yield_index:
                sleep(TICK)
                continue
            sample_id = it.sample_ids[it.ready_index]
            if sample_id == -1:
                it.ready_index += 1
                continue
            shard_id, _ = self.spanner[sample_id]
            while self._shard_states[shard_id] != _ShardState.LOCAL:
                if self._event.is_set():
                    break
                if self._shard_states[shard_id] == _ShardState.REMOTE:
                    self.prepare_shard(shard_id, False)
                    continue
                sleep(TICK)
            it.ready_index += 1
        it.on_exit()

    import streaming
    Stream.prepare_shard = prepare_one
    StreamingDataset.prepare_shard = prepare
    StreamingDataset.__iter__ = iterate
    if streaming.__version__ == '0.12.0':  # the copy above is of this version's method
        StreamingDataset._ready_thread = ready_thread
    else:
        logger.warning('streaming %s: not replacing StreamingDataset._ready_thread (written '
                       'for 0.12.0); a worker waiting on a shard another one failed may wait',
                       streaming.__version__)
    StreamingDataset._loud_shard_errors = True

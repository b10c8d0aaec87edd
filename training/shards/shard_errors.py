"""A shard that cannot be prepared fails the pass loudly, naming the shard.

streaming 0.12 downloads in background threads of each DataLoader worker; when one raises, it
sets an event, its yield loop sees the event and simply stops: the epoch ends early as if the
data were exhausted, the error is only logged, and only the *next* pass raises "Background
thread failed". The shard also stays PREPARING, so a worker of another process waiting for it
waits forever. None of that is reachable from a Stream or a downloader (they can only raise,
which is what starts the silent ending), and llm-foundry 0.22 builds its StreamingTextDataset
itself (no registry for the dataset class), so three methods of StreamingDataset are wrapped,
process-wide:

- `prepare_shard`: a failure puts the shard back to REMOTE (so nobody waits on it forever) and
  is remembered as a ShardUnavailable naming the shard;
- `__iter__`: a pass that ended because of such a failure raises it instead of returning; the
  next pass raises it too (not streaming's vague message);
- `_ready_thread` (a copy of streaming 0.12.0's, two changes marked): a worker waiting for a
  shard that went back to REMOTE (another worker or rank failed to prepare it, or it was
  evicted) prepares it itself, and so fails loudly as well, or succeeds if the store is back.
"""
from __future__ import annotations

from time import sleep

from data_prep import versions


def patch_dataset() -> None:
    """Make a shard that cannot be prepared end the pass with ShardUnavailable (idempotent)."""
    versions.require(versions.STREAMING, 'training/shards/shard_errors.py')
    from streaming.base.dataset import TICK, StreamingDataset, _ShardState

    from training.shards.stream import ShardUnavailable, unavailable
    if getattr(StreamingDataset, '_loud_shard_errors', False):
        return
    dataset_prepare = StreamingDataset.prepare_shard
    dataset_iter = StreamingDataset.__iter__

    def prepare_shard(self, shard_id, blocking=True):
        try:
            return dataset_prepare(self, shard_id, blocking)
        except Exception as exc:
            stream = self.streams[self.stream_per_shard[shard_id]]
            err = unavailable(stream, self.shards[shard_id], exc)
            # Only this thread moves a PREPARING shard on; nobody else may touch it.
            if self._shard_states[shard_id] == _ShardState.PREPARING:
                self._shard_states[shard_id] = _ShardState.REMOTE
            self._shard_error = err
            raise err from exc

    def iterate(self):
        try:
            yield from dataset_iter(self)
        except RuntimeError as exc:  # a later pass: 'Background thread failed'
            err = getattr(self, '_shard_error', None)
            if err is None or isinstance(exc, ShardUnavailable):
                raise
            raise ShardUnavailable(str(err)) from exc
        err = getattr(self, '_shard_error', None)
        event = getattr(self, '_event', None)
        if err is not None and event is not None and event.is_set():
            raise ShardUnavailable(f'{err}; the pass stopped there')

    def ready_thread(self, it) -> None:
        # streaming 0.12.0's _ready_thread, with two changes: a shard that went back to REMOTE
        # while we wait for it is prepared here, not waited for forever; and the thread counts
        # as exited however it ends. __iter__ ends by waiting for two of its three loops to
        # say so; the prepare thread does not when its download fails, and when this one
        # failed too (the same shard, both trying) the pass waited forever instead of raising.
        try:
            while True:
                if it.should_exit() or it.ready_index == it.total or self._event.is_set():
                    break
                if (self.predownload is not None
                        and self.predownload < it.ready_index - it.yield_index):
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
        finally:
            it.on_exit()

    StreamingDataset.prepare_shard = prepare_shard
    StreamingDataset.__iter__ = iterate
    StreamingDataset._ready_thread = ready_thread
    StreamingDataset._loud_shard_errors = True

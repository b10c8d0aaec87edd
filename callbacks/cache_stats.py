"""`cache_stats`: how much of a run's data came from the local shard cache, and what it downloaded.

A *shard access* is one shard the run needed in its node's cache (streaming's cache is one per
node, shared by the node's ranks and their dataloader workers). It is a **hit** when the shard
was already in the cache when fit started and the run used it; it is a **miss** when the run had
to download it (again, if it was evicted and needed later). hit rate = hits / (hits + misses):
0.0 for an empty cache, 1.0 for a second run over a cache that holds everything it reads.

Where the numbers come from:

- misses and bytes: streaming downloads shards inside dataloader worker processes, through the
  downloader object each ``Stream`` keeps (``stream._downloader``, made from
  ``streaming.base.storage.download.DOWNLOADER_MAPPINGS``). The one wrap: at FIT_START, before
  the workers start, each stream's downloader is wrapped in ``_CountingDownloader``, which
  passes every call through and counts the files it actually brought in, and their bytes, in a
  ``multiprocessing.Array`` that the workers inherit. Wrapping the instance (not the mapping)
  works whatever order train.py registers transports and callbacks in, and works for any
  transport (local path, s3://, our oci://). Index files are fetched when the dataset is built,
  before fit, and are not counted. (MDS keeps one file per shard, so files = shards.)
- hits, evictions, cache bytes: read-only looks at streaming's own node-wide shared memory
  (shard states, last access times, cache usage: private names of mosaicml-streaming, read
  through training.shards.cache, installed behind a version check):
  the states at FIT_START say which shards were cached; an access time after FIT_START says the
  run used the shard (sampled at every BATCH_END and at the end, so a cached shard used and
  evicted within one step would be missed); evictions = cached at start + downloaded - cached
  at end.
- several ranks and nodes: at FIT_END every rank contributes its downloads and each node's
  local rank 0 its node's cache numbers to one SUM all_reduce; rank 0 has the run's totals.

Per step it logs ``cache/downloads`` and ``cache/bytes_downloaded`` (this rank, cumulative).

yaml::

    callbacks:
      cache_stats: {}
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import time
from typing import Any, Optional

import numpy as np
import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from training.shards import cache

log = logging.getLogger(__name__)

_DOWNLOADS, _BYTES = 0, 1


class _CountingDownloader:
    """Passes everything to streaming's downloader; counts files it really downloaded."""

    def __init__(self, inner, counters):
        self.inner = inner
        self.counters = counters

    def download(self, remote, local, timeout=60.0):
        existed = os.path.exists(local)
        self.inner.download(remote, local, timeout)
        if not existed and os.path.exists(local):
            size = os.path.getsize(local)
            with self.counters.get_lock():
                self.counters[_DOWNLOADS] += 1
                self.counters[_BYTES] += size

    def clean_up(self):
        self.inner.clean_up()

    def __getattr__(self, name):
        if name.startswith('__') or name in ('inner', 'counters'):  # unpickling, copy
            raise AttributeError(name)
        return getattr(self.inner, name)


def streaming_dataset(state: State):
    """The train loader's StreamingDataset, or None."""
    from streaming import StreamingDataset
    loader = state.train_dataloader
    ds = getattr(loader, 'dataset', None)
    return ds if isinstance(ds, StreamingDataset) else None


def dataset_info(ds) -> dict[str, Any]:
    """remote / local / split / compression of a StreamingDataset, for the run report."""
    if ds is None:
        return {'remote': None, 'local': None, 'split': None, 'compression': None}
    remotes = [s.remote for s in ds.streams]
    locals_ = [s.local for s in ds.streams]
    comps = sorted({str(sh.compression) if sh.compression else 'none' for sh in ds.shards})
    one = lambda xs: xs[0] if len(set(xs)) == 1 else xs  # noqa: E731
    return {
        'remote': one(remotes),
        'local': one(locals_),
        'split': one([s.split for s in ds.streams]),
        'compression': one(comps) if comps else None,
        'num_shards': int(ds.num_shards),
    }


class CacheStats(Callback):
    """Shard cache hits and misses, bytes downloaded and evictions of a run (see the module doc).

    +--------------------------------+---------------------------------------------------------+
    | Key                            | Logged data                                             |
    +================================+=========================================================+
    | ``cache/downloads``            | BATCH_END: shard files this rank downloaded so far      |
    +--------------------------------+---------------------------------------------------------+
    | ``cache/bytes_downloaded``     | BATCH_END: their bytes so far                           |
    +--------------------------------+---------------------------------------------------------+
    | ``cache/run/<key>``            | FIT_END, by ``run_report``, all ranks summed:           |
    |                                | cache_hits, cache_misses, cache_hit_rate,               |
    |                                | bytes_downloaded, cache_evictions,                      |
    |                                | cache_shards_at_start/_at_end, cache_bytes_at_end       |
    +--------------------------------+---------------------------------------------------------+
    """

    def __init__(self) -> None:
        self.counters = multiprocessing.Array('q', 2)
        self._ds = None
        self._t0_ns = 0
        self._start_local: Optional[np.ndarray] = None
        self._touched: Optional[np.ndarray] = None
        self._summary: Optional[dict] = None

    # ------------------------------------------------------------------ events
    def fit_start(self, state: State, logger: Logger) -> None:
        self._summary = None
        with self.counters.get_lock():
            self.counters[_DOWNLOADS] = self.counters[_BYTES] = 0
        self._ds = ds = streaming_dataset(state)
        if ds is None:
            log.info('cache_stats: the train dataset is not a StreamingDataset; nothing to count')
            return
        cache.wrap_downloaders(ds, self._counting)
        if self._node_leader():
            self._t0_ns = time.time_ns()
            self._start_local = cache.local_shards(ds)
            self._touched = np.zeros(ds.num_shards, dtype=bool)

    def batch_end(self, state: State, logger: Logger) -> None:
        self._sample_touched()
        logger.log_metrics({'cache/downloads': int(self.counters[_DOWNLOADS]),
                            'cache/bytes_downloaded': int(self.counters[_BYTES])})

    def _counting(self, downloader):
        if isinstance(downloader, _CountingDownloader):
            downloader.counters = self.counters  # a second fit on the same dataset
            return downloader
        return _CountingDownloader(downloader, self.counters)

    # ------------------------------------------------------------------ results
    @staticmethod
    def _node_leader() -> bool:
        return dist.get_local_rank() == 0

    def _sample_touched(self) -> None:
        if self._touched is None or self._ds is None:
            return
        self._touched |= cache.accessed_since(self._ds, self._t0_ns)

    def _local_vector(self) -> list[int]:
        """[downloads, bytes, hits, cached_at_start, cached_at_end, cache_bytes]; node numbers
        only on a node's local rank 0 (0 elsewhere) so that a SUM over ranks counts each node
        once."""
        downloads, nbytes = int(self.counters[_DOWNLOADS]), int(self.counters[_BYTES])
        if self._ds is None or self._touched is None:
            return [downloads, nbytes, 0, 0, 0, 0]
        self._sample_touched()
        hits = int((self._start_local & self._touched).sum())
        end_local = int(cache.local_shards(self._ds).sum())
        return [downloads, nbytes, hits, int(self._start_local.sum()), end_local,
                cache.cache_bytes(self._ds)]

    @staticmethod
    def _from_vector(v: list[int], complete: bool) -> dict[str, Any]:
        downloads, nbytes, hits, start, end, cache_bytes = (int(x) for x in v)
        return {'cache_hits': hits, 'cache_misses': downloads,
                'cache_hit_rate': round(hits / (hits + downloads), 6) if hits + downloads else None,
                'bytes_downloaded': nbytes,
                'cache_evictions': max(0, start + downloads - end),
                'cache_shards_at_start': start, 'cache_shards_at_end': end,
                'cache_bytes_at_end': cache_bytes,
                'cache_stats_all_ranks': complete}

    def summary(self, state: State) -> dict[str, Any]:
        """Run totals over all ranks. Collective: every rank must call it (done at FIT_END)."""
        if self._summary is None:
            t = torch.tensor(self._local_vector(), dtype=torch.int64)
            if dist.get_world_size() > 1:
                t = state.device.tensor_to_device(t)  # NCCL reduces device tensors only
                dist.all_reduce(t, reduce_operation='SUM')
            self._summary = self._from_vector(t.cpu().tolist(), complete=True)
            self._summary.update(dataset_info(self._ds))
        return self._summary

    def failed_summary(self, state: Optional[State] = None) -> dict[str, Any]:
        """A failing run: this rank's downloads and this node's cache, no collective."""
        out = self._from_vector(self._local_vector(), complete=dist.get_world_size() == 1)
        out.update(dataset_info(self._ds))
        return out

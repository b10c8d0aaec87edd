"""`data_wait`: how long each rank waits on its dataloader for each batch.

Composer fires BEFORE_DATALOADER, calls ``next()`` on the loader, then runs a cross-rank
``all_reduce`` (have all ranks still got data?) and only then AFTER_DATALOADER. The span between
the two events therefore includes waiting for the slowest rank, which is not data wait. So this
callback times ``next()`` itself.

The one wrap (and why): at FIT_START the active train dataloader is replaced, through
Composer's public ``State.set_dataloader``, by ``_TimedLoader``, a thin iterable that forwards
everything to the real loader and records how long each ``next()`` took. It is put back at
FIT_END. ``state.train_dataloader`` (checkpoint state, worker shutdown) is left untouched.
Because the trainer only calls ``set_epoch`` on a DistributedSampler when the active loader
*is* a DataLoader, EPOCH_START does that call for the wrapped loader.

Per step (BATCH_END) it logs ``data_wait/ms`` and ``data_wait/fraction`` (of the step, from
BEFORE_DATALOADER to BATCH_END). Per run (``summary()``, gathered from every rank at FIT_END)
it reports total seconds, fraction of wall time, p50/p95/max and the time to the first batch.

yaml::

    callbacks:
      data_wait: {}
"""
from __future__ import annotations

import logging
from typing import Any, Optional

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist
from torch.utils.data import DataLoader, DistributedSampler

from callbacks._common import now, percentile, r

log = logging.getLogger(__name__)


class _TimedLoader:
    """Iterates the wrapped loader and records the duration of every ``next()``."""

    def __init__(self, loader):
        self.loader = loader
        self.last_wait: Optional[float] = None   # seconds, the most recent next()
        self.first_batch_at: Optional[float] = None

    def __iter__(self):
        it = iter(self.loader)
        while True:
            t0 = now()
            try:
                batch = next(it)
            except StopIteration:
                return
            t1 = now()
            self.last_wait = t1 - t0
            if self.first_batch_at is None:
                self.first_batch_at = t1
            yield batch

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):  # batch_size, dataset, sampler, ... of the real loader
        return getattr(self.loader, name)


class DataWait(Callback):
    """Time each rank spends in its dataloader's ``next()``, per step and per run.

    +--------------------------------+---------------------------------------------------------+
    | Key                            | Logged data                                             |
    +================================+=========================================================+
    | ``data_wait/ms``               | BATCH_END: this rank's time in ``next()`` for the step  |
    +--------------------------------+---------------------------------------------------------+
    | ``data_wait/fraction``         | BATCH_END: that time / the step's wall time             |
    |                                | (BEFORE_DATALOADER to BATCH_END)                        |
    +--------------------------------+---------------------------------------------------------+
    | ``data_wait/run/<key>``        | FIT_END, by ``run_report``: the numbers of ``summary()``|
    |                                | (data_wait_s, fraction, p50/p95/max ms, first batch)    |
    +--------------------------------+---------------------------------------------------------+
    """

    def __init__(self) -> None:
        self.steps: list[dict] = []     # this rank: {'step', 'wait_ms', 'step_ms', 'fraction'}
        self._timed: Optional[_TimedLoader] = None
        self._fit_start: Optional[float] = None
        self._fit_end: Optional[float] = None
        self._step_start: Optional[float] = None
        self._wait: Optional[float] = None
        self._summary: Optional[dict] = None

    # ------------------------------------------------------------------ events
    def fit_start(self, state: State, logger: Logger) -> None:
        self._fit_start, self._fit_end, self._summary = now(), None, None
        self.steps = []
        if isinstance(state.dataloader, _TimedLoader):
            self._timed = state.dataloader
        else:
            self._timed = _TimedLoader(state.dataloader)
            state.set_dataloader(self._timed, state.dataloader_label or 'train',
                                 state.dataloader_len if state.dataloader_len is not None else -1)

    def epoch_start(self, state: State, logger: Logger) -> None:
        # The trainer skips set_epoch when the active loader is not a DataLoader (see module doc).
        if self._timed is not None and isinstance(self._timed.loader, DataLoader):
            sampler = self._timed.loader.sampler
            if isinstance(sampler, DistributedSampler):
                sampler.set_epoch(int(state.timestamp.epoch))

    def before_dataloader(self, state: State, logger: Logger) -> None:
        self._step_start = now()
        if self._timed is not None:
            self._timed.last_wait = None

    def after_dataloader(self, state: State, logger: Logger) -> None:
        self._wait = self._timed.last_wait if self._timed is not None else None

    def batch_end(self, state: State, logger: Logger) -> None:
        if self._step_start is None or self._wait is None:
            return
        step_s = max(now() - self._step_start, 1e-9)
        rec = {'step': int(state.timestamp.batch), 'wait_ms': self._wait * 1000.0,
               'step_ms': step_s * 1000.0, 'fraction': self._wait / step_s}
        self.steps.append(rec)
        logger.log_metrics({'data_wait/ms': rec['wait_ms'], 'data_wait/fraction': rec['fraction']})
        self._wait = None

    def fit_end(self, state: State, logger: Logger) -> None:
        self._fit_end = now()
        if self._timed is not None and state.dataloader is self._timed:
            state.set_dataloader(self._timed.loader, state.dataloader_label or 'train',
                                 state.dataloader_len if state.dataloader_len is not None else -1)

    # ------------------------------------------------------------------ results
    def local_summary(self) -> dict[str, Any]:
        """This rank only; no collective (safe on a failing run)."""
        end = self._fit_end if self._fit_end is not None else now()
        wall = (end - self._fit_start) if self._fit_start is not None else None
        waits = [s['wait_ms'] for s in self.steps]
        total = sum(waits) / 1000.0
        first = None
        if self._timed is not None and self._timed.first_batch_at is not None and self._fit_start:
            first = self._timed.first_batch_at - self._fit_start
        # Steady state: after the first batch (start-up is time_to_first_batch_s on its own).
        steady = sum(waits[1:]) / 1000.0
        steady_wall = wall - first if wall is not None and first is not None else None
        return {
            'rank': dist.get_global_rank(),
            'steps': len(waits),
            'wall_s': wall,
            'data_wait_s': total,
            'data_wait_fraction': total / wall if wall else None,
            'data_wait_steady_s': steady,
            'data_wait_steady_fraction': steady / steady_wall if steady_wall else None,
            'data_wait_p50_ms': percentile(waits, 50),
            'data_wait_p95_ms': percentile(waits, 95),
            'data_wait_max_ms': max(waits) if waits else None,
            'time_to_first_batch_s': first,
            'wait_ms': waits,
        }

    def summary(self, state: State) -> dict[str, Any]:
        """Run summary over all ranks. Collective: every rank must call it (done at FIT_END)."""
        if self._summary is None:
            ranks = dist.all_gather_object(self.local_summary())
            self._summary = self._combine(ranks, state)
        return self._summary

    def failed_summary(self) -> dict[str, Any]:
        """What a failing run can say: this rank's numbers only."""
        return self._combine([self.local_summary()], None)

    @staticmethod
    def _combine(ranks: list[dict], state) -> dict[str, Any]:
        pooled = [w for rk in ranks for w in rk['wait_ms']]
        totals = [rk['data_wait_s'] for rk in ranks]
        walls = [rk['wall_s'] for rk in ranks if rk['wall_s']]
        firsts = [
            rk['time_to_first_batch_s'] for rk in ranks if rk['time_to_first_batch_s'] is not None
        ]
        mean_total = sum(totals) / len(totals) if totals else None
        steadies = [rk['data_wait_steady_fraction'] for rk in ranks
                    if rk.get('data_wait_steady_fraction') is not None]
        wall = ranks[0]['wall_s']
        return {
            # mean over ranks: every rank has its own loader; per_rank has each one
            'data_wait_s': r(mean_total),
            'data_wait_fraction': r(mean_total / wall) if wall and mean_total is not None else None,
            'data_wait_steady_fraction': r(sum(steadies) / len(steadies)) if steadies else None,
            'data_wait_p50_ms': r(percentile(pooled, 50), 3),
            'data_wait_p95_ms': r(percentile(pooled, 95), 3),
            'data_wait_max_ms': r(max(pooled), 3) if pooled else None,
            # the first step cannot start before every rank has its first batch
            'time_to_first_batch_s': r(max(firsts)) if firsts else None,
            'data_wait_per_rank': [
                {
                    k: (r(v, 3) if isinstance(v, float) else v)
                    for k, v in rk.items()
                    if k != 'wait_ms'
                }
                for rk in ranks
            ],
            '_wait_ms_per_rank': [rk['wait_ms'] for rk in ranks],  # for the per-step file
            '_walls': walls,
        }

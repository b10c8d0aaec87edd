"""`run_report`: rank 0 writes ``run_metrics.json`` and ``steps.jsonl`` in the run's folder.

The folder defaults to ``results/runs/{run_name}`` (relative to the working directory;
``{run_name}`` is replaced by the trainer's run name). The report gathers what the other
callbacks of this package measured (``data_wait``, ``throughput``, ``cache_stats``: whichever
the yaml names; missing ones give nulls) and adds the run's identity.

When it is written:

- FIT_START: a first report with ``"status": "running"`` (a run killed hard leaves this);
- FIT_END: the full report, ``"status": "completed"``, or ``"stopped_early"`` when fit ended
  before the max_duration it started with (e.g. an early-stopping callback);
- close() without FIT_END (an exception, SIGTERM, Ctrl-C): ``"status": "failed"`` with the
  error when Python has one, else ``"interrupted"``. No collective is attempted then, so the
  numbers are rank 0's own (``"partial": true``).
- after every callback's close(): with checkpoints in oci://, the ``checkpoints`` rows of
  ``bucket_keep`` (per checkpoint, how long it took to become resumable) complete for the
  last checkpoint too, in the file and in the bucket;
- a failure before FIT_START (building the tokenizer, model or dataset: the callback never
  ran): train.py writes ``"status": "failed"``, ``"stage": "before_fit"`` and the error
  through ``write_failed_before_fit``, in the same folder.

``steps.jsonl``: one JSON object per training step, appended as the run goes and rewritten at
FIT_END with every rank's data wait::

    {"step": 1, "t_s": 3.21, "step_s": 3.21, "samples": 16, "tokens": 2011,
     "samples_per_s": 4.98, "tokens_per_s": 626.5, "mfu": null,
     "data_wait_ms": 2950.1, "data_wait_ms_max": 2950.1, "data_wait_ms_per_rank": [2950.1],
     "data_wait_fraction": 0.919}

``t_s`` is training seconds since FIT_START at the step's end (evaluations left out),
``step_s`` the step's wall time (rank 0), ``loss`` the step's training loss (Composer's
``loss/train/total``, the mean over ranks, unrounded: runs over the same samples in the same order
give the same losses), ``data_wait_ms`` the mean over ranks and ``data_wait_fraction`` =
data_wait_ms / step_s.

Evaluations (an ``eval_loader`` in the yaml): every EVAL_END adds ``{"step", "label", "s",
"loss", "perplexity"}`` to ``evals`` in run_metrics.json (loss = the evaluator's
``LanguageCrossEntropy``, perplexity its ``LanguagePerplexity``); ``eval_loss`` and
``eval_perplexity`` are the last evaluation's, ``eval_s`` the time spent evaluating and
``eval_fraction`` its share of the wall time. Composer runs the last evaluation of a run whose
length is not a multiple of ``eval_interval`` after FIT_END: the report (file, loggers, the
copy in save_folder) is then updated with it.

Where else the figures go, at FIT_END (rank 0):

- every logger the yaml configures (MLflow, W&B, TensorBoard, the console): each number of
  run_metrics.json as ``<group>/run/<key>`` through Composer's ``logger.log_metrics`` (groups:
  throughput, data_wait, cache, eval, loss, time, memory). Composer's console logger prints what
  was logged at FIT_END only when the run's length is not a multiple of its interval, so this
  callback prints them on the console itself (``Run <name>: <value>``);
- next to the checkpoints: run_metrics.json and steps.jsonl are copied into the trainer's
  ``save_folder`` (a local folder), or uploaded by Composer's checkpoint uploader (``oci://``,
  ``s3://``: the object store it saves the checkpoints through), so they outlive the node.

yaml::

    callbacks:
      run_report:
        folder: results/runs/{run_name}   # where run_metrics.json and steps.jsonl go
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import pathlib
import shutil
import sys
from typing import Any, Optional

from composer.callbacks import CheckpointSaver
from composer.core import Callback, State
from composer.loggers import ConsoleLogger, Logger
from composer.utils import dist, format_name_with_dist

from callbacks._common import (
    DEFAULT_FOLDER,
    find_callback,
    is_rank_zero,
    now,
    r,
    run_folder,
    write_json,
    write_jsonl,
)
from callbacks.bucket_keep import BucketKeep
from callbacks.cache_stats import CacheStats, dataset_info, streaming_dataset
from callbacks.data_wait import DataWait
from callbacks.throughput import Throughput

log = logging.getLogger(__name__)

METRICS_FILE = 'run_metrics.json'
STEPS_FILE = 'steps.jsonl'
# llm-foundry's causal LM eval metrics (MPT, hf_causal_lm), as run_metrics.json names them
EVAL_METRICS = {'LanguageCrossEntropy': 'loss', 'LanguagePerplexity': 'perplexity'}
# Logger name groups of run_metrics.json's numbers: `<group>/run/<key>`, first prefix that fits
GROUPS = (('throughput_', 'throughput'), ('mfu', 'throughput'), ('data_wait_', 'data_wait'),
          ('time_to_first_batch_s', 'data_wait'), ('cache_', 'cache'),
          ('bytes_downloaded', 'cache'), ('eval_', 'eval'), ('train_loss', 'loss'),
          ('wall_s', 'time'), ('peak_gpu_memory_gib', 'memory'))


_fit_started = False  # set by any RunReport of this process at FIT_START


def fit_started() -> bool:
    """Whether a RunReport of this process reached FIT_START (its own reports take over)."""
    return _fit_started


def forget_fit_started() -> None:
    """A new run starts in this process (train.main called again, as tests do)."""
    global _fit_started
    _fit_started = False


def write_failed_before_fit(folder: str, run_name: Optional[str], err: BaseException,
                            info: dict[str, Any]) -> str:
    """run_metrics.json for a run that failed before FIT_START; returns its path. `info`:
    what the config says (remote, local, split, max_duration, world_size)."""
    interrupted = isinstance(err, (KeyboardInterrupt, SystemExit))
    report = {'run_name': run_name, 'status': 'interrupted' if interrupted else 'failed',
              'stage': 'before_fit', 'partial': True,
              **{k: info.get(k) for k in ('remote', 'local', 'split', 'world_size')},
              'steps': 0, 'samples': 0, 'tokens': 0,
              'max_duration': None if info.get('max_duration') is None
              else str(info['max_duration']),
              'ended_at': _iso(),
              'error': f'{type(err).__name__}: {err}'[:2000]}
    path = os.path.join(folder, METRICS_FILE)
    write_json(path, report)
    return path


def run_level_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The numbers of a report as logger metrics, ``<group>/run/<key>`` (see GROUPS)."""
    out = {}
    for key, value in report.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        group = next((g for prefix, g in GROUPS if key.startswith(prefix)), None)
        if group:
            out[f'{group}/run/{key}'] = value
    return out


def _iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def _device() -> dict[str, Any]:
    """This rank's accelerator and its peak allocated memory so far (None on a CPU)."""
    import torch
    if not torch.cuda.is_available():
        return {'device': 'cpu', 'peak_gpu_memory_gib': None}
    return {'device': torch.cuda.get_device_name(),
            'peak_gpu_memory_gib': r(torch.cuda.max_memory_allocated() / 2**30, 2)}


class RunReport(Callback):
    """Writes run_metrics.json and steps.jsonl (rank 0); logs nothing itself.

    Args:
        folder (str): where the two files go; ``{run_name}`` is replaced by the run's name
            (default ``results/runs/{run_name}``).
    """

    def __init__(self, folder: str = DEFAULT_FOLDER) -> None:
        self.folder_template = folder
        self.folder: Optional[str] = None
        self._fit_start: Optional[float] = None
        self._started_at: Optional[str] = None
        self._max_duration = None
        self._written_steps = 0
        self._finished = False
        self._losses: list[Optional[float]] = []
        self.evals: list[dict[str, Any]] = []
        self._eval_start: Optional[float] = None
        self._final: Optional[dict[str, Any]] = None  # rank 0's report written at FIT_END
        self._keep: Optional[BucketKeep] = None
        self._post_fit_s = 0.0

    # ------------------------------------------------------------------ paths
    @property
    def metrics_path(self) -> str:
        return os.path.join(self.folder, METRICS_FILE)

    @property
    def steps_path(self) -> str:
        return os.path.join(self.folder, STEPS_FILE)

    # ------------------------------------------------------------------ events
    def fit_start(self, state: State, logger: Logger) -> None:
        global _fit_started
        _fit_started = True
        self.folder = run_folder(self.folder_template, state.run_name)
        self._fit_start, self._started_at = now(), _iso()
        self._max_duration = state.max_duration
        self._written_steps, self._finished = 0, False
        self._losses, self.evals, self._final, self._post_fit_s = [], [], None, 0.0
        if is_rank_zero():
            os.makedirs(self.folder, exist_ok=True)
            write_jsonl(self.steps_path, [])
            write_json(self.metrics_path, self._report(state, 'running', {}, partial=True))

    def batch_end(self, state: State, logger: Logger) -> None:
        self._losses.append((state.total_loss_dict or {}).get('loss/train/total'))
        if is_rank_zero():
            self._append_steps(state)

    def eval_start(self, state: State, logger: Logger) -> None:
        self._eval_start = now()

    def eval_end(self, state: State, logger: Logger) -> None:
        spent = now() - self._eval_start if self._eval_start is not None else None
        self._eval_start = None
        label = state.dataloader_label
        row: dict[str, Any] = {'step': int(state.timestamp.batch), 'label': label, 's': r(spent)}
        metrics = state.eval_metrics.get(label, {}) if label else {}
        for name, key in EVAL_METRICS.items():
            if name in metrics:  # computed by the trainer before EVAL_END: cached, no collective
                row[key] = float(metrics[name].compute())
        self.evals.append(row)
        if self._finished and self._final is not None and is_rank_zero():
            # Composer runs a run's last evaluation after the callbacks' FIT_END when the run's
            # length is not a multiple of eval_interval: add it to the report written then.
            self._post_fit_s += row['s'] or 0.0
            wall = (self._final['wall_s'] or 0.0) + self._post_fit_s
            report = {**self._final, **self._eval_fields(wall)}
            self._final = report
            write_json(self.metrics_path, report)
            logger.log_metrics({k: v for k, v in run_level_metrics(report).items()
                                if k.startswith('eval/')})
            self._copy_to_save_folder(state)

    def fit_end(self, state: State, logger: Logger) -> None:
        # Collectives first, on every rank and in the same order, then rank 0 writes.
        dw, tp, cs = self._sources(state)
        parts: dict[str, Any] = {}
        if dw:
            parts.update(dw.summary(state))
        if tp:
            parts.update(tp.summary(state))
        if cs:
            parts.update(cs.summary(state))
        self._finished = True
        if not is_rank_zero():
            return
        status = 'completed'
        md = self._max_duration
        if md is not None and state.timestamp.get(md.unit) < md:
            status = 'stopped_early'
        rows = self._step_rows(state, parts.get('_wait_ms_per_rank'))
        write_jsonl(self.steps_path, rows)
        self._written_steps = len(rows)
        report = self._report(state, status, parts, partial=False)
        write_json(self.metrics_path, report)
        self._final = report
        self._keep = find_callback(state, BucketKeep)
        self._log_run_level(state, logger, report)
        self._copy_to_save_folder(state)
        log.info('run_report: %s %s', self.metrics_path, json.dumps(
            {k: report.get(k) for k in ('status', 'steps', 'wall_s', 'throughput_samples_per_s',
                                        'data_wait_fraction', 'cache_hit_rate', 'eval_loss')}))

    @staticmethod
    def _log_run_level(state: State, logger: Logger, report: dict[str, Any]) -> None:
        metrics = run_level_metrics(report)
        logger.log_metrics(metrics)
        # Composer runs loggers after callbacks; its console logger then prints what was logged
        # at FIT_END only if the last step was not just printed. Print them here, once.
        for dest in logger.destinations:
            if isinstance(dest, ConsoleLogger):
                for key in metrics:
                    dest.logged_metrics.pop(key, None)
                dest.log_to_console(metrics, state, prefix='Run ')

    def _copy_to_save_folder(self, state: State) -> None:
        """The two files beside the checkpoints: copied into a local save_folder; for a URI,
        uploaded by the checkpoint saver's own uploader (the object store Composer saves the
        checkpoints through; its FIT_END, after this one, waits for the uploads)."""
        saver = find_callback(state, CheckpointSaver)
        if saver is None or not saver.folder:
            return
        # For a URI save_folder, saver.folder is a local temporary folder; the uploader holds
        # the save_folder's path in its bucket (checkpoint names are bucket-relative too).
        uploader = saver.remote_uploader
        folder = format_name_with_dist(uploader.path if uploader else saver.folder,
                                       state.run_name)
        for name in (METRICS_FILE, STEPS_FILE):
            src = os.path.join(self.folder, name)
            if uploader is not None:
                uploader.upload_file_async(remote_file_name=os.path.join(folder, name),
                                           file_path=pathlib.Path(src), overwrite=True)
            else:
                os.makedirs(folder, exist_ok=True)
                shutil.copyfile(src, os.path.join(folder, name))

    def post_close(self) -> None:
        # After every callback's close(): bucket_keep has seen the pointer name the run's last
        # checkpoint (CheckpointSaver's FIT_END waits for it, after this callback's FIT_END).
        keep = self._keep
        if self._final is None or keep is None or not is_rank_zero():
            return
        rows = keep.checkpoints()
        if rows == self._final.get('checkpoints'):
            return
        self._final = {**self._final, 'checkpoints': rows}
        write_json(self.metrics_path, self._final)
        try:
            keep.upload_beside(self.metrics_path)
        except Exception as e:  # the local report is complete; the bucket's copy is older
            log.warning('run_report: could not upload %s: %s', self.metrics_path, e)

    def close(self, state: State, logger: Logger) -> None:
        if self._finished or self.folder is None or not is_rank_zero():
            return
        err = getattr(sys, 'last_value', None)  # set for an uncaught exception, before atexit
        failed = err is not None and not isinstance(err, (SystemExit, KeyboardInterrupt))
        status = 'failed' if failed else 'interrupted'
        dw, tp, cs = self._sources(state)
        parts: dict[str, Any] = {}
        try:
            if dw:
                parts.update(dw.failed_summary())
            if tp:
                parts.update(tp.summary(state))
            if cs:
                parts.update(cs.failed_summary(state))
        except Exception as e:  # the report must still be written
            log.warning('run_report: could not collect every metric of a failed run: %r', e)
        self._append_steps(state)
        report = self._report(state, status, parts, partial=True)
        if err is not None:
            report['error'] = f'{type(err).__name__}: {err}'[:2000]
        write_json(self.metrics_path, report)
        self._finished = True

    # ------------------------------------------------------------------ building
    @staticmethod
    def _sources(state: State):
        return (find_callback(state, DataWait), find_callback(state, Throughput),
                find_callback(state, CacheStats))

    def _report(self, state: State, status: str, parts: dict, partial: bool) -> dict[str, Any]:
        info = dataset_info(streaming_dataset(state))
        wall = now() - self._fit_start if self._fit_start is not None else None
        report: dict[str, Any] = {
            'run_name': state.run_name,
            'status': status,
            'partial': partial,
            'remote': info['remote'],
            'compression': info['compression'],
            'local': info['local'],
            'split': info['split'],
            'world_size': dist.get_world_size(),
            'steps': int(state.timestamp.batch),
            'samples': int(state.timestamp.sample),
            'tokens': int(state.timestamp.token),
            'max_duration': str(self._max_duration) if self._max_duration is not None else None,
            'started_at': self._started_at,
            'ended_at': None if status == 'running' else _iso(),
            'wall_s': r(wall),
            **_device(),
        }
        eval_s = sum(e['s'] or 0.0 for e in self.evals)
        report['train_loss'] = next((x for x in reversed(self._losses) if x is not None), None)
        report.update(self._eval_fields(wall))
        keys = ['time_to_first_batch_s',
                'throughput_samples_per_s', 'throughput_tokens_per_s',
                'throughput_samples_per_s_per_device', 'throughput_tokens_per_s_per_device',
                'throughput_overall_samples_per_s', 'throughput_overall_tokens_per_s',
                'throughput_is_steady_state', 'throughput_warmup_batches',
                'mfu', 'mfu_overall', 'peak_flops_per_device',
                'data_wait_s', 'data_wait_fraction', 'data_wait_steady_fraction',
                'data_wait_p50_ms', 'data_wait_p95_ms',
                'data_wait_max_ms',
                'cache_hits', 'cache_misses', 'cache_hit_rate', 'bytes_downloaded',
                'cache_evictions', 'cache_shards_at_start', 'cache_shards_at_end',
                'cache_bytes_at_end', 'num_shards', 'cache_stats_all_ranks',
                'data_wait_per_rank']
        for k in keys:
            report[k] = parts.get(k)
        keep = find_callback(state, BucketKeep)
        report['checkpoints'] = keep.checkpoints() if keep else None
        # The run's wall time is rank 0's FIT_START..now less its evaluations (between steps,
        # no loader wait in them); data_wait's own wall matches FIT_START..now.
        train_wall = wall - eval_s if wall else None
        if report['data_wait_s'] is not None and train_wall:
            report['data_wait_fraction'] = r(report['data_wait_s'] / train_wall)
        return report

    def _eval_fields(self, wall: Optional[float]) -> dict[str, Any]:
        eval_s = sum(e['s'] or 0.0 for e in self.evals)
        last = self.evals[-1] if self.evals else {}
        return {'eval_loss': last.get('loss'), 'eval_perplexity': last.get('perplexity'),
                'eval_step': last.get('step'), 'eval_s': r(eval_s) if self.evals else None,
                'eval_fraction': r(eval_s / wall) if self.evals and wall else None,
                'evals': list(self.evals)}

    def _step_rows(self, state: State, wait_per_rank: Optional[list[list[float]]] = None,
                   start: int = 0) -> list[dict]:
        """Rows ``start``.. of the per-step file: throughput and data wait, joined by position
        (both callbacks append one record at every BATCH_END)."""
        dw, tp, _ = self._sources(state)
        tsteps = tp.steps if tp else []
        dsteps = dw.steps if dw else []
        if wait_per_rank is None:
            wait_per_rank = [[s['wait_ms'] for s in dsteps[start:]]]
            offset = start
        else:
            offset = 0
        n = min(len(tsteps), len(dsteps)) if tp and dw else max(len(tsteps), len(dsteps))
        rows = []
        for i in range(start, n):
            t = tsteps[i] if i < len(tsteps) else None
            d = dsteps[i] if i < len(dsteps) else None
            row: dict[str, Any] = {'step': (t or d)['step']}
            if i < len(self._losses):
                row['loss'] = self._losses[i]
            if t:
                row.update({'t_s': r(t['t']), 'step_s': r(t['step_s']), 'samples': t['samples'],
                            'tokens': t['tokens'], 'samples_per_s': r(t['samples_per_s'], 3),
                            'tokens_per_s': r(t['tokens_per_s'], 2), 'mfu': r(t['mfu'], 5)})
            if d:
                per_rank = [w[i - offset] for w in wait_per_rank if i - offset < len(w)]
                mean = sum(per_rank) / len(per_rank) if per_rank else None
                step_ms = t['step_s'] * 1000.0 if t else d['step_ms']
                row.update({'data_wait_ms': r(mean, 3),
                            'data_wait_ms_max': r(max(per_rank), 3) if per_rank else None,
                            'data_wait_ms_per_rank': [r(w, 3) for w in per_rank],
                            'data_wait_fraction': r(mean / step_ms) if mean is not None else None})
            rows.append(row)
        return rows

    def _append_steps(self, state: State) -> None:
        new = self._step_rows(state, start=self._written_steps)
        if not new or self.folder is None:
            return
        with open(self.steps_path, 'a') as f:
            for row in new:
                f.write(json.dumps(row) + '\n')
        self._written_steps += len(new)

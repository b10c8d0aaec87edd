"""`save_num_checkpoints_to_keep` for the bucket: Composer's CheckpointSaver prunes local copies
only, so a 1000-step run saving every 250 leaves four checkpoints (~90 GB each for a 7B model)
in Object Storage. train.py adds this callback (`bucket_keep`) to every run that saves to
oci://; it needs no settings: it reads N, the folder and the names from the CheckpointSaver.

What is complete: Composer uploads each file of a checkpoint whole (our store: one PUT, or a
multipart upload that appears only at its commit) and moves the `latest` pointer
(<folder>/latest-rank0.pt.symlink) to a checkpoint only after it has seen all its files in the
bucket; autoresume loads what the pointer names. So, on rank 0:

- after each save, once the pointer has moved on, and at the end of the run: the N newest
  checkpoints at or before the pointer's stay, older ones are deleted; nothing newer than the
  pointer is touched (it may still be uploading). A crash between deletions leaves only
  unreferenced old files, removed next time.
- at the start of a run that resumed from the pointer (or found none): checkpoints newer than
  the pointer's are deleted. They are a killed run's, uploaded before the pointer moved; this
  run saves them again and Composer refuses to overwrite an object (save_overwrite: false).

Checkpoints are recognised by Composer's default names (`ep{epoch}-ba{batch}-rank{rank}.pt`,
sharded: folder `ep{epoch}-ba{batch}/`) directly under the folder; with other names it warns
and deletes nothing.

How long until a checkpoint is resumable: a crash loses the work since the checkpoint the
pointer names, not since the last save. Rank 0 records, per checkpoint, when its local save
ended and when the pointer in the bucket first named it; run_report puts the rows in
run_metrics.json under ``checkpoints``::

    {"batch": 8, "saved_at_s": 61.2, "resumable_after_s": 3.4, "objects": 3,
     "bytes": 9830412, "bytes_per_rank": [4915066, 4915066]}

(``saved_at_s``: seconds since FIT_START; ``resumable_after_s``: from the end of the local save
to the pointer naming it, as seen by polling every ``pointer_poll_s``; bytes from the bucket's
listing, per rank for a sharded checkpoint's ``__<rank>_0.distcp``). Composer spawns its
uploader processes at the first save, and each imports the whole stack before it uploads (tens
of seconds on a busy machine): ``start_uploaders`` (default on) starts them at FIT_START
instead (one uploader on every rank, and rank 0's pointer check).
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
from typing import Any, Optional

from composer.callbacks import CheckpointSaver
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from training.checkpoints import compat
from training.checkpoints.object_store import OCIStore

log = logging.getLogger(__name__)
CHECKPOINT = re.compile(r'ep\d+-ba(\d+)(?:[^\d/][^/]*)?$')  # a file or a sharded folder
SHARD = re.compile(r'__(\d+)_0\.distcp$')  # a rank's file of a sharded checkpoint


def checkpoints(names: list[str], folder: str) -> dict[int, list[str]]:
    """batch -> object names of each checkpoint directly under `folder`."""
    found: dict[int, list[str]] = {}
    for name in names:
        rel = name[len(folder) + 1:] if name.startswith(folder + '/') else None
        m = CHECKPOINT.match(rel.split('/')[0]) if rel else None
        if m:
            found.setdefault(int(m.group(1)), []).append(name)
    return found


def _started(_: int) -> int:
    """A task for an uploader process: it exists, and has imported what uploads need."""
    return os.getpid()


class BucketKeep(Callback):

    def __init__(self, pointer_poll_s: float = 2.0, start_uploaders: bool = True):
        self.pointer_poll_s = pointer_poll_s
        self.start_uploaders = start_uploaders
        self.rows: list[dict[str, Any]] = []  # rank 0: one per checkpoint saved by this run
        self._t0 = 0.0
        self.saver: Optional[CheckpointSaver] = None
        self.store: Optional[OCIStore] = None
        self.keep = -1
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._saved_batch = None

    # ------------------------------------------------------------------ events

    def init(self, state: State, logger: Logger) -> None:
        savers = [cb for cb in state.callbacks if isinstance(cb, CheckpointSaver)]
        saver = savers[0] if savers else None
        uploader = getattr(saver, 'remote_uploader', None)
        if saver is None or uploader is None or uploader.remote_backend_name != 'oci':
            return  # no checkpoints in a bucket: nothing to do
        compat.set_pointer_poll(saver, self.pointer_poll_s)
        if saver.latest_remote_file_name is None or not saver.remote_file_name:
            return
        if not re.match(r'ep\{epoch\}-ba\{batch\}', os.path.basename(saver.filename.filename)):
            log.warning('bucket_keep: checkpoint names %r are not Composer\'s default '
                        'ep{epoch}-ba{batch}-...: nothing is deleted from the bucket',
                        saver.filename.filename)
            return
        self.saver = saver
        self.keep = saver.num_checkpoints_to_keep
        if self.keep == 0:  # 0 keeps no local copy; the bucket must keep the latest
            self.keep = 1
        if dist.get_global_rank() == 0:
            self.store = uploader.remote_backend

    def fit_start(self, state: State, logger: Logger) -> None:
        self._t0, self.rows = time.monotonic(), []
        uploader = self.saver.remote_uploader if self.saver else None
        if uploader is not None and self.start_uploaders:
            # One process each: every rank uploads its files, rank 0 also checks that all of a
            # checkpoint's files are in before it moves the pointer.
            uploader.upload_executor.submit(_started, 0)
            if dist.get_global_rank() == 0:
                uploader.check_remote_files_exist_executor.submit(_started, 0)
        self._saved_batch = self._last_saved()
        if self.store is None:
            return
        self._pointer_name = self.saver.latest_remote_file_name.format(state).lstrip('/') \
            + '.symlink'
        self._folder = os.path.dirname(self._pointer_name)
        self._drop_newer_than_resumed(int(state.timestamp.batch))
        if self.keep > 0:
            self._thread = threading.Thread(target=self._loop, name='bucket_keep', daemon=True)
            self._thread.start()

    # The CheckpointSaver runs after this callback at each event: a save at BATCH_CHECKPOINT is
    # seen at the next BATCH_START, or at FIT_END for the last one.
    def batch_start(self, state: State, logger: Logger) -> None:
        self._see_save()

    def fit_end(self, state: State, logger: Logger) -> None:
        self._see_save()

    def _last_saved(self) -> Optional[int]:
        saved = self.saver.last_checkpoint_batch if self.saver else None
        return None if saved is None else int(saved.value)

    def _see_save(self) -> None:
        saved = self._last_saved()
        if self._thread is None or saved == self._saved_batch:
            return
        self._saved_batch = saved
        with self._lock:
            self.rows.append({'batch': saved, 'saved_at_s': round(time.monotonic() - self._t0, 3),
                              'resumable_after_s': None, '_saved': time.monotonic()})
        self._wake.set()

    def close(self, state: State, logger: Logger) -> None:
        # CheckpointSaver.fit_end has waited for the uploads and the last pointer by now.
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self._thread = None
        try:
            latest = self.pointer()
            if latest is not None:
                with self._lock:
                    self._pointer_moved(latest)
            self.prune()
        except Exception as e:  # a failed clean-up must not fail a finished run
            log.warning('bucket_keep: could not prune %s: %s', self._folder, e)

    # ------------------------------------------------------------------ work

    def pointer(self) -> Optional[int]:
        """The batch of the checkpoint the `latest` pointer names, or None without one."""
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'latest.symlink')
            try:
                self.store.download_object(self._pointer_name, path)
            except FileNotFoundError:
                return None
            with open(path) as f:
                target = f.read().strip()
        found = checkpoints([target], self._folder)
        return next(iter(found), None)

    def prune(self) -> list[int]:
        """Delete the checkpoints older than the N newest at or before the pointer's; returns
        the batches deleted."""
        with self._lock:
            latest = self.pointer()
            if latest is None:
                return []
            found = checkpoints(self.store.list_objects(self._folder + '/'), self._folder)
            done = sorted(b for b in found if b <= latest)
            old = done[:-self.keep]
            for batch in old:
                for name in found[batch]:
                    self.store.delete_object(name)
            if old:
                log.info('bucket_keep: deleted checkpoints at batches %s from %s (kept %s)',
                         old, self.store.get_uri(self._folder), done[-self.keep:])
            return old

    def _drop_newer_than_resumed(self, batch: int) -> None:
        with self._lock:
            latest = self.pointer()
            if (latest or 0) != batch:
                return  # not resumed from this folder's pointer: leave the bucket as it is
            found = checkpoints(self.store.list_objects(self._folder + '/'), self._folder)
            for b in sorted(x for x in found if x > batch):
                log.info('bucket_keep: deleting %s at batch %d, newer than the checkpoint this '
                         'run resumed from (a killed run\'s; it will be saved again)',
                         self._folder, b)
                for name in found[b]:
                    self.store.delete_object(name)

    def checkpoints(self) -> list[dict[str, Any]]:
        """The rows of the checkpoints this run saved (rank 0; see the module's docstring)."""
        with self._lock:
            return [{k: v for k, v in row.items() if not k.startswith('_')} for row in self.rows]

    def upload_beside(self, path: str) -> None:
        """A file of the run's into the checkpoint folder (rank 0; the run report)."""
        if self.store is not None:
            self.store.upload_object(f'{self._folder}/{os.path.basename(path)}', path)

    def _pointer_moved(self, batch: int) -> None:
        """Completes the rows of the checkpoints the pointer now names or has passed."""
        t = time.monotonic()
        for row in self.rows:
            if row['batch'] <= batch and row['resumable_after_s'] is None:
                row['resumable_after_s'] = round(t - row['_saved'], 3)
                sizes = self.store.object_sizes(f'{self._folder}/ep')
                found = checkpoints(list(sizes), self._folder).get(row['batch'], [])
                ranks = {int(m.group(1)): sizes[n] for n in found
                         for m in [SHARD.search(n)] if m}
                row.update(objects=len(found), bytes=sum(sizes[n] for n in found),
                           bytes_per_rank=[ranks[k] for k in sorted(ranks)] or None)

    def _loop(self) -> None:
        """After each save: wait until the pointer moves, then prune."""
        last = None
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            while not self._stop.is_set():
                try:
                    latest = self.pointer()
                    if latest != last:
                        last = latest
                        if latest is not None:
                            with self._lock:
                                self._pointer_moved(latest)
                        self.prune()
                    if latest is not None and latest >= (self._saved_batch or 0):
                        break
                except Exception as e:  # the bucket unreachable for a while: try later
                    log.warning('bucket_keep: %s', e)
                self._stop.wait(self.pointer_poll_s)

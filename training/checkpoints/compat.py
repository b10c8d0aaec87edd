"""The only code that touches Composer's internals, written for Composer 0.32.1 (PyPI
mosaicml==0.32.1; install() checks the version through data_prep.versions). Each hook is the
narrowest one Composer offers for what we need:

- `build_remote_backend` (composer/utils/object_store/utils.py) builds its backend-name ->
  class dict on every call from the module's global `OCIObjectStore`. Checkpoint saves
  (RemoteUploader), logger uploads such as llm-foundry's hf_checkpointer
  (RemoteUploaderDownloader) and their spawned upload processes all build their store there,
  so that global is where ours goes.
- `maybe_create_object_store_from_uri` (autoresume, load_path, get_file, checkpoint
  downloads) looks the scheme up in the module-level map BACKEND_TO_OBJECT_STORE_FACTORY.
- CheckpointSaver uploads the `latest` pointer of a checkpoint only once it has seen every
  file of it in the bucket, polling every `_symlink_upload_wait_before_next_try_in_seconds`
  (30 s): a run killed within those 30 s resumes from the checkpoint before. One HEAD per file
  every few seconds costs nothing beside a checkpoint upload, so callbacks/bucket_keep.py
  shortens it.
"""
from __future__ import annotations

import functools

from data_prep import versions

HOOKS = 'training/checkpoints/compat.py'


def use_store_for_oci(store_class) -> None:
    """Make every oci:// store Composer builds an instance of `store_class(bucket=...)`."""
    versions.require(versions.COMPOSER, HOOKS)
    from composer.utils import file_helpers
    from composer.utils.object_store import utils
    utils.OCIObjectStore = store_class
    file_helpers.BACKEND_TO_OBJECT_STORE_FACTORY['oci'] = (
        lambda bucket, path: store_class(bucket=bucket))


def set_pointer_poll(saver, seconds: float) -> None:
    """How often a CheckpointSaver looks for a new checkpoint's files in the bucket before it
    uploads the `latest` pointer to it."""
    saver._symlink_upload_wait_before_next_try_in_seconds = seconds


def finish_resumed_runs(on_finished) -> None:
    """A run that autoresumes from a checkpoint at its max_duration (a job restarted after its
    end, `make train` twice) returns from `Trainer.fit()` after `on_finished(state)`, instead of
    Composer's ValueError ("No training would occur"). Decided from the trainer's state (its
    timestamp against max_duration), for a fit() called without arguments, as llm-foundry's
    train() calls it. Idempotent."""

    versions.require(versions.COMPOSER, HOOKS)
    from composer import Trainer
    if getattr(Trainer.fit, '_finishes_resumed_runs', False):
        return
    fit = Trainer.fit

    @functools.wraps(fit)
    def fitting(self, *args, **kwargs):
        end = self.state.max_duration
        if not args and not kwargs and end is not None \
                and self.state.timestamp.get(end.unit) >= end:
            on_finished(self.state)
            return
        return fit(self, *args, **kwargs)

    fitting._finishes_resumed_runs = True
    Trainer.fit = fitting

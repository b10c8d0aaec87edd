"""The only code that touches Composer's internals, behind one version check (Composer 0.32.1,
PyPI mosaicml==0.32.1). Each hook is the narrowest one Composer offers for what we need:

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
  every few seconds costs nothing beside a checkpoint upload, so keep.py shortens it.
"""
from __future__ import annotations

SUPPORTED = '0.32.1'


class UnsupportedComposer(RuntimeError):
    """Composer is not the version these hooks were written for."""


def require_supported() -> None:
    import composer
    if composer.__version__ != SUPPORTED:
        raise UnsupportedComposer(
            f'data_prep.composer_ext was written for Composer (mosaicml) {SUPPORTED}, found '
            f'{composer.__version__}: check its hooks (data_prep/composer_ext/compat.py) '
            f'against that version, or install mosaicml=={SUPPORTED}')


def use_store_for_oci(store_class) -> None:
    """Make every oci:// store Composer builds an instance of `store_class(bucket=...)`."""
    from composer.utils import file_helpers
    from composer.utils.object_store import utils
    utils.OCIObjectStore = store_class
    file_helpers.BACKEND_TO_OBJECT_STORE_FACTORY['oci'] = (
        lambda bucket, path: store_class(bucket=bucket))


def set_pointer_poll(saver, seconds: float) -> None:
    """How often a CheckpointSaver looks for a new checkpoint's files in the bucket before it
    uploads the `latest` pointer to it."""
    saver._symlink_upload_wait_before_next_try_in_seconds = seconds

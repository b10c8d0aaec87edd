"""Our extensions of mosaicml-streaming, installed by one idempotent `install()` that
train.py and every command call before streaming is used (a converter, which only writes
and merges, calls `install_transport()`: the oci:// transport alone):

- oci.py      our oci:// downloader and uploader, in streaming's DOWNLOADER_MAPPINGS/UPLOADERS
- stream.py   `CheckedStream`, registered in streaming's streams_registry as `checked`
              (recipes: `train_loader.dataset.stream_name: checked`)
- compat.py   what still needs streaming's private internals (a failed shard ends the pass
              loudly; cache accessors for callbacks/cache_stats.py; which shared memory is
              a live run's), behind one version check
- cache.py    the cached root index made the remote's when a run starts
"""
from __future__ import annotations

_installed = False
_transport_installed = False


def install_transport() -> None:
    """Only our oci:// downloader and uploader, in streaming's maps: what MDSWriter and
    merge_index need (a converter). Imports streaming's storage modules, not its datasets."""
    global _transport_installed
    if _transport_installed:
        return
    from data_prep.streaming_ext import compat, oci
    compat.require_supported()
    oci.register()
    _transport_installed = True


def install() -> None:
    """Register our transport and Stream in streaming, and make shard failures loud. Fails in
    one line (UnsupportedStreaming) on a streaming version compat.py was not written for."""
    global _installed
    if _installed:
        return
    from streaming.base.stream import streams_registry

    from data_prep.streaming_ext import compat
    from data_prep.streaming_ext.stream import STREAM_NAME, CheckedStream
    install_transport()
    if STREAM_NAME not in streams_registry.get_all():
        streams_registry.register(STREAM_NAME, func=CheckedStream)
    compat.patch_dataset()
    compat.patch_shm_prefix()
    _installed = True

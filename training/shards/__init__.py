"""How a run reads shards: our extensions of mosaicml-streaming for training, installed by one
idempotent `install()` that train.py calls on every rank before any dataset is built:

- stream.py         `CheckedStream`, registered in streaming's streams_registry as `checked`
                    (recipes: `train_loader.dataset.stream_name: checked`)
- shard_errors.py   a shard that cannot be prepared ends the pass loudly, named
- cache.py          the cached root index made the remote's when a run starts; the node's
                    shard states for callbacks/cache_stats.py
- shared_memory.py  which of streaming's shared memory is a live run's; race-free prefixes

The oci:// transport (data_prep.streaming_ext) comes with it.
"""
from __future__ import annotations

_installed = False


def install() -> None:
    """Register our transport and Stream in streaming, make shard failures loud and prefixes
    race-free. Fails in one line (UnsupportedVersion) on a streaming version these hooks were
    not written for."""
    global _installed
    if _installed:
        return
    from streaming.base.stream import streams_registry

    from data_prep.streaming_ext import install_transport
    from training.shards import shard_errors, shared_memory
    from training.shards.stream import STREAM_NAME, CheckedStream
    install_transport()
    if STREAM_NAME not in streams_registry.get_all():
        streams_registry.register(STREAM_NAME, func=CheckedStream)
    shard_errors.patch_dataset()
    shared_memory.patch_shm_prefix()
    _installed = True

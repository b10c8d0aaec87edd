"""The remotes a recipe reads and writes: every URL's scheme and credentials (save_folder in
oci:// through the object store Composer will save with), and no other live run on this
machine using the same shard cache."""
from __future__ import annotations

import os

from omegaconf import DictConfig

from training.config import ConfigError, datasets, oci_urls, remotes


def check_remotes(cfg: DictConfig, where: str) -> None:
    """Every remote's scheme is known and its credentials usable; save_folder in oci:// is
    listed through the object store Composer will save with (training.checkpoints)."""
    from data_prep.storage import RemoteError, check_url
    from training import checkpoints
    save = cfg.get('save_folder')
    try:
        checkpoints.install(oci_urls(cfg))
        for url in remotes(cfg):
            if url == save and url.startswith('oci://'):
                checkpoints.check_folder(url, str(cfg.get('run_name')))
            else:
                check_url(url)
    except RemoteError as err:
        raise ConfigError(f'{where}: {err}') from None


def check_cache_free(cfg: DictConfig, where: str) -> None:
    """Two runs sharing one cache folder evict each other's shards; streaming refuses it only
    deep in dataset setup (and only while its shared memory survives)."""
    from training.shards import shared_memory
    for key, _, local, split in datasets(cfg):
        if not local:
            continue
        folder = os.path.abspath(os.path.join(local, split or ''))
        pids = shared_memory.live_users([folder]).get(folder)
        if pids:
            raise ConfigError(f'{where}: {key}.local {local!r} is the cache of a run still '
                              f'going on this machine (pid {", ".join(map(str, pids))}): give '
                              f'this run its own cache folder, or wait for that one to end')

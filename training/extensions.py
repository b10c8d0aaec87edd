"""Our extensions of streaming, Composer and llm-foundry, installed in one place: train.py
calls install() on every rank before llm-foundry builds anything.

- streaming: our oci:// transport, the `checked` stream, loud shard errors, race-free shared
  memory (training/shards);
- Composer: every oci:// object store it builds is ours (training/checkpoints), and a run
  autoresumed at its max_duration returns from fit() instead of raising;
- llm-foundry: MPT accepts `attn_impl: sdpa` (training/attention.py); the recipe's FSDP version
  is selected and kept at every world size (training/fsdp.py); the Hugging Face export's
  uploader processes start on rank 0 only (training/export.py).
"""
from __future__ import annotations

import os

from omegaconf import DictConfig

from training.config import ConfigError, oci_urls


def _finished(state, save_folder) -> None:
    print(f'train.py: run {state.run_name} already reached max_duration {state.max_duration} '
          f'(checkpoints in {save_folder}); nothing to do', flush=True)


def install(cfg: DictConfig, where: str) -> list[str]:
    """Installs everything (idempotent); returns what the run's log should say, a line each.
    Takes `fsdp_config.version` out of `cfg` (training/fsdp.py)."""
    from data_prep.storage import RemoteError
    from training import attention, checkpoints, export, fsdp, shards
    from training.checkpoints import compat
    lines = []
    shards.install()
    try:  # before any check: checkpoints in oci:// go through our client from here on
        checkpoints.install(oci_urls(cfg))
    except RemoteError as err:
        raise ConfigError(f'{where}: {err}') from None
    save = cfg.get('save_folder')
    compat.finish_resumed_runs(lambda state: _finished(state, save))
    attention.allow_sdpa_in_mpt()
    export.upload_from_rank_0_only()
    chosen = fsdp.select(cfg)
    if chosen:
        lines.append(chosen)
    if fsdp.fsdp_section(cfg) and fsdp.keep_at_world_size_1() \
            and int(os.environ.get('WORLD_SIZE') or 1) == 1:
        lines.append('one process: fsdp_config is kept (llm-foundry would revert to DDP); '
                     'Composer runs FSDP over one rank')
    return lines

"""Which FSDP a recipe runs, chosen in the recipe: `fsdp_config.version`.

Composer 0.32.1 has two FSDP implementations and picks one from the environment variable
FSDP_VERSION (read when the Trainer parses its parallelism config): 1, the default, is torch's
FullyShardedDataParallel (flat parameters; it needs CUDA: Composer passes
`device_id=torch.cuda.current_device()`), 2 is torch's `fully_shard` (per-parameter DTensor
shards; runs over NCCL on GPUs and over gloo on CPU processes, which is how CI tests the
sharded path). An environment variable is easy to forget on one node of sixteen, and a copied
yaml would not carry it, so the recipe names the version and train.py sets the variable for
every process it starts (Composer's spawned uploaders inherit it). `version` is ours: it is
taken out of `fsdp_config` before llm-foundry and Composer see it.

A recipe with `fsdp_config` runs FSDP at every world size, one process included: llm-foundry
0.22's train() drops `fsdp_config` when the world size is 1 ("Reverting to DDP", the one use of
`get_world_size` in llmfoundry/command_utils/train.py; tests/training/test_fsdp.py checks that
it stays the one), which would make one process save another checkpoint format than two (a
monolithic .pt under a sharded checkpoint's pointer name) and refuse `init_device: mixed`.
Composer itself runs FSDP at world size 1, so that module alone is given a `dist` whose world
size reads at least 2; Composer, streaming and the rest of llm-foundry see the real one.
"""
from __future__ import annotations

import importlib
import os
import types
from typing import Optional

from omegaconf import DictConfig

from data_prep import versions

ENV = 'FSDP_VERSION'  # what Composer reads
VERSIONS = (1, 2)
# Keys FSDP2 has no use for (Composer warns and ignores them): FULL_SHARD is fully_shard's only
# way (reshard_after_forward: true), sync_module_states is set by Composer for mixed init,
# FSDP2's all-gathers need no limit, and its activation checkpointing is never reentrant.
FSDP1_ONLY = ('sharding_strategy', 'limit_all_gathers', 'sync_module_states',
              'activation_checkpointing_reentrant', 'use_orig_params', 'forward_prefetch',
              'backward_prefetch', 'cpu_offload', 'keep_low_precision_grads')


def fsdp_section(cfg: DictConfig) -> Optional[DictConfig]:
    return cfg.get('fsdp_config') or (cfg.get('parallelism_config') or {}).get('fsdp')


def version(cfg: DictConfig) -> Optional[int]:
    """The FSDP version a recipe runs (None: no FSDP); without `version`, Composer's choice."""
    section = fsdp_section(cfg)
    if not section:
        return None
    value = section.get('version')
    return int(os.environ.get(ENV, '1')) if value is None else value


def select(cfg: DictConfig) -> Optional[str]:
    """Takes `fsdp_config.version` out of the recipe and sets FSDP_VERSION to it (the recipe
    wins over the environment; checks.check_fsdp has checked it). Returns a line for the run's
    log, or None when the recipe names no version."""
    section = fsdp_section(cfg)
    if not section or 'version' not in section:
        return None
    want = section.pop('version')
    if want == 1:
        as_fsdp1(section)
    have = os.environ.get(ENV)
    overridden = f' ({ENV}={have} in the environment is overridden)' \
        if have not in (None, '', str(want)) else ''
    os.environ[ENV] = str(want)
    name = 'torch fully_shard (FSDP2)' if want == 2 else 'torch FullyShardedDataParallel (FSDP1)'
    return f'fsdp_config.version {want}: {name}{overridden}'


def as_fsdp1(section) -> None:
    """A recipe written for FSDP2 means the same under FSDP1, so that `fsdp_config.version=1`
    alone switches: reshard_after_forward is FULL_SHARD (true) or SHARD_GRAD_OP (false), and
    activation checkpointing is non-reentrant (FSDP2's only kind; FSDP1's default is
    reentrant). What the recipe sets for FSDP1 itself is kept."""
    reshard = section.pop('reshard_after_forward', True)
    section.setdefault('sharding_strategy', 'FULL_SHARD' if reshard else 'SHARD_GRAD_OP')
    if section.get('activation_checkpointing'):
        section.setdefault('activation_checkpointing_reentrant', False)


class _WorldSizeAtLeast2(types.ModuleType):
    """composer.utils.dist for llmfoundry.command_utils.train alone: world size >= 2."""

    def __init__(self, dist):
        super().__init__(dist.__name__)
        self._dist = dist

    def __getattr__(self, name):
        return getattr(self._dist, name)

    def get_world_size(self) -> int:
        return max(2, self._dist.get_world_size())


def keep_at_world_size_1() -> bool:
    """llm-foundry's train() keeps `fsdp_config` at world size 1. Returns False if already."""
    versions.require(versions.LLMFOUNDRY, 'training/fsdp.py')
    # the module, not the function llmfoundry.command_utils exports under the same name
    train = importlib.import_module('llmfoundry.command_utils.train')
    if isinstance(train.dist, _WorldSizeAtLeast2):
        return False
    train.dist = _WorldSizeAtLeast2(train.dist)
    return True

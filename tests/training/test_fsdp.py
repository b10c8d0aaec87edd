"""The recipe chooses its FSDP (`fsdp_config.version`, training/fsdp.py), checked in one line,
and FSDP is kept at world size 1 (llm-foundry would revert to DDP) through one hook."""
import importlib
import inspect

import pytest

from tests.helpers import ROOT
from training import checks, fsdp
from training.config import ConfigError, load_config

CPU = str(ROOT / 'yamls/cpu/c4_zstd.yaml')


def test_the_recipe_sets_the_version_for_composer(monkeypatch):
    monkeypatch.setenv(fsdp.ENV, '1')
    cfg = load_config(CPU, [])
    checks.check_fsdp(cfg, CPU)
    assert fsdp.version(cfg) == 2
    line = fsdp.select(cfg)
    assert line == ('fsdp_config.version 2: torch fully_shard (FSDP2) (FSDP_VERSION=1 in the '
                    'environment is overridden)')
    assert 'version' not in cfg.fsdp_config  # llm-foundry and Composer never see it
    import os
    assert os.environ[fsdp.ENV] == '2'


@pytest.mark.parametrize('override, message', [
    ('fsdp_config.version=3', 'fsdp_config.version must be 1 (torch FSDP, CUDA only) or 2 '
                              '(torch fully_shard), got 3'),
    ('+fsdp_config.sharding_strategy=FULL_SHARD',
     'fsdp_config.sharding_strategy is an FSDP1 setting that fsdp_config.version 2 ignores: '
     'remove it, or use version: 1'),
])
def test_a_wrong_version_or_an_fsdp1_key_under_version_2_is_one_line(override, message):
    cfg = load_config(CPU, [override.lstrip('+')])
    with pytest.raises(ConfigError) as err:
        checks.check_fsdp(cfg, 'r.yaml')
    assert str(err.value) == f'r.yaml: {message}'


def test_the_hook_is_the_one_world_size_check_in_llm_foundrys_train():
    """fsdp.keep_at_world_size_1 changes what `dist.get_world_size()` reads in that module
    only: it must stay the revert's one use (llm-foundry is pinned; a new version must be
    looked at)."""
    source = inspect.getsource(importlib.import_module('llmfoundry.command_utils.train'))
    assert source.count('get_world_size') == 1
    assert 'Reverting to DDP' in source
    fsdp.keep_at_world_size_1()
    train = importlib.import_module('llmfoundry.command_utils.train')
    from composer.utils import dist
    assert dist.get_world_size() == 1 and train.dist.get_world_size() == 2


@pytest.mark.parametrize('recipe', ['yamls/c4_zstd.yaml', 'yamls/cpu/c4_zstd.yaml'])
def test_fsdp_version_1_is_one_override_away(recipe, monkeypatch):
    """The recipes' fsdp_config builds Composer's FSDP2Config as written, and with
    `fsdp_config.version=1` its FSDPConfig, meaning the same (FULL_SHARD, non-reentrant
    activation checkpointing): every key known to the class that takes it."""
    from composer.utils.parallelism import FSDP2Config, FSDPConfig
    from omegaconf import OmegaConf
    monkeypatch.delenv(fsdp.ENV, raising=False)
    cfg = load_config(str(ROOT / recipe), [])
    fsdp.select(cfg)
    FSDP2Config(**OmegaConf.to_container(cfg.fsdp_config))
    cfg = load_config(str(ROOT / recipe), ['fsdp_config.version=1'])
    checks.check_fsdp(cfg, recipe)
    assert fsdp.select(cfg).startswith('fsdp_config.version 1: torch FullyShardedDataParallel')
    section = OmegaConf.to_container(cfg.fsdp_config)
    assert section['sharding_strategy'] == 'FULL_SHARD'
    assert section['activation_checkpointing_reentrant'] is False
    assert 'reshard_after_forward' not in section and 'version' not in section
    FSDPConfig(**section)

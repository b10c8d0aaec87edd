"""A recipe as llm-foundry reads it: the yaml with `key=value` overrides, and the streams its
loaders read."""
from __future__ import annotations

from typing import Iterator, Optional

from omegaconf import DictConfig
from omegaconf import OmegaConf as om


class ConfigError(ValueError):
    """A recipe that cannot run; the message names the file and key."""


def load_config(yaml_path: str, overrides: list[str]) -> DictConfig:
    om.clear_resolver('oc.env')  # as llm-foundry's train_from_yaml: recipes do not read the env
    try:
        with open(yaml_path) as f:
            cfg = om.load(f)
    except FileNotFoundError:
        raise ConfigError(f'{yaml_path}: no such recipe file') from None
    if overrides:
        bad = [o for o in overrides if '=' not in o]
        if bad:
            raise ConfigError(f'override {bad[0]!r} is not key=value')
        cfg = om.merge(cfg, om.from_cli(overrides))
    return cfg


def datasets(cfg: DictConfig) -> Iterator[tuple[str, Optional[str], Optional[str], Optional[str]]]:
    """(key, remote, local, split) of every stream the loaders read: the dataset itself, or
    each of its `streams` (whose missing keys fall back to the dataset's, as in llm-foundry)."""
    for loader in ('train_loader', 'eval_loader'):
        dataset = (cfg.get(loader) or {}).get('dataset') or {}
        streams = dataset.get('streams') or {}
        if not streams:
            yield (f'{loader}.dataset', dataset.get('remote'), dataset.get('local'),
                   dataset.get('split'))
        for name, s in streams.items():
            s = s or {}
            yield (f'{loader}.dataset.streams.{name}', s.get('remote', dataset.get('remote')),
                   s.get('local', dataset.get('local')), s.get('split', dataset.get('split')))


def needs_gpus(cfg: DictConfig) -> bool:
    """Whether the recipe shards the model with FSDP or uses llm-foundry's mixed (meta-device)
    init, which is FSDP only: then every process needs its own CUDA GPU."""
    fsdp = cfg.get('fsdp_config') or (cfg.get('parallelism_config') or {}).get('fsdp')
    return bool(fsdp) or (cfg.get('model') or {}).get('init_device') == 'mixed'

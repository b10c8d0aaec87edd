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


def remotes(cfg: DictConfig) -> list[str]:
    """Every remote URL the run reads or writes: dataset remotes, stream remotes, save_folder."""
    found = [remote for _, remote, _, _ in datasets(cfg)]
    found.append(cfg.get('save_folder'))
    return [r for r in found if isinstance(r, str) and r]


def oci_urls(cfg: DictConfig) -> list[str]:
    """Every oci:// URL anywhere in the config (save_folder, load_path, callbacks' folders)."""
    found, todo = [], [om.to_container(cfg, resolve=True)]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, str) and item.startswith('oci://'):
            found.append(item)
    return found


def gpu_settings(cfg: DictConfig) -> list[str]:
    """The recipe's settings that need CUDA GPUs, one per process, each as a message names it
    (empty: it runs on CPU processes too, FSDP included)."""
    from training.fsdp import version
    fsdp = version(cfg)
    need = []
    precision = cfg.get('precision')
    if precision not in (None, 'fp32'):
        need.append(f'precision {precision} (Composer trains in fp32 on a CPU)')
    init = (cfg.get('model') or {}).get('init_device')
    if init in ('mixed', 'meta') and fsdp:  # Composer's meta init allocates on cuda
        need.append(f'model.init_device {init}')
    if fsdp == 1:
        need.append('FSDP version 1 (fsdp_config.version: 2 runs on CPU processes)')
    return need

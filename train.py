"""Fine-tune with a recipe: `composer train.py yamls/<recipe>.yaml [key=value ...]`.

llm-foundry's trainer (`train_from_yaml`) plus our layer, which runs first on every rank:
installs our streaming extensions (data_prep.streaming_ext), clears streaming shared memory left by a crashed
run, and checks the config, so a typo or a missing credential fails in one line before any
model, dataloader worker or download starts. Overrides are llm-foundry's: `max_duration=10ba`,
`variables.data_remote=oci://bucket@namespace/c4_zstd`.
"""
from __future__ import annotations

import difflib
import inspect
import sys

from omegaconf import DictConfig
from omegaconf import OmegaConf as om

# Keys llm-foundry's text loader reads from `train_loader.dataset` besides the dataset classes'
# own parameters (llmfoundry/data/text_data.py and data/utils.py); anything else it drops silently.
_LOADER_KEYS = {'streams', 'eos_token_id', 'bos_token_id', 'override_eos_token_id_mismatch_error',
                'override_bos_token_id_mismatch_error', 'seq_parallel_replication'}


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


def _valid_dataset_keys() -> set[str]:
    from llmfoundry.data.text_data import StreamingTextDataset
    from streaming import StreamingDataset
    return (set(inspect.signature(StreamingTextDataset).parameters)
            | set(inspect.signature(StreamingDataset).parameters) | _LOADER_KEYS) - {'self', 'kwargs'}


def check_dataset_keys(cfg: DictConfig, where: str) -> None:
    """llm-foundry drops unknown keys under `train_loader.dataset`; we refuse them instead."""
    valid = _valid_dataset_keys()
    for loader in ('train_loader', 'eval_loader'):
        dataset = cfg.get(loader, {}).get('dataset', {}) if cfg.get(loader) else {}
        for key in dataset:
            if key not in valid:
                near = difflib.get_close_matches(key, sorted(valid), n=1)
                hint = f' (did you mean {near[0]!r}?)' if near else ''
                raise ConfigError(f'{where}: unknown key {loader}.dataset.{key}{hint}')
        # streaming uses download_retry as the number of tries: 0 fails deep in dataset setup.
        retry = dataset.get('download_retry') if dataset else None
        if retry is not None and (not isinstance(retry, int) or retry < 1):
            raise ConfigError(f'{where}: {loader}.dataset.download_retry must be an integer '
                              f'>= 1 (streaming counts tries, not re-tries), got {retry!r}')


def remotes(cfg: DictConfig) -> list[str]:
    """Every remote URL the run reads or writes: dataset remotes, stream remotes, save_folder."""
    found = []
    for loader in ('train_loader', 'eval_loader'):
        dataset = (cfg.get(loader) or {}).get('dataset') or {}
        found.append(dataset.get('remote'))
        found.extend((s or {}).get('remote') for s in (dataset.get('streams') or {}).values())
    found.append(cfg.get('save_folder'))
    return [r for r in found if isinstance(r, str) and r]


def check_config(cfg: DictConfig, where: str) -> None:
    """Everything we can check without starting workers: llm-foundry's schema, dataset keys,
    and that every remote's scheme is known and its credentials usable."""
    from llmfoundry.command_utils.train import TRAIN_CONFIG_KEYS, TrainConfig
    from llmfoundry.utils.config_utils import make_dataclass_and_log_config
    try:
        make_dataclass_and_log_config(cfg, TrainConfig, TRAIN_CONFIG_KEYS, transforms='all')
    except Exception as err:  # llm-foundry raises several types; the message is what matters
        raise ConfigError(f'{where}: {err}') from None
    check_dataset_keys(cfg, where)
    from data_prep.storage import RemoteError, check_url
    for url in remotes(cfg):
        try:
            check_url(url)
        except RemoteError as err:
            raise ConfigError(f'{where}: {err}') from None


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ('-h', '--help'):
        print(__doc__.strip())
        return 0 if argv else 2
    yaml_path, overrides = argv[0], argv[1:]
    try:
        cfg = load_config(yaml_path, overrides)
        check_config(cfg.copy(), yaml_path)
    except ConfigError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2

    from streaming.base.util import clean_stale_shared_memory

    from data_prep.streaming_ext import install
    install()
    clean_stale_shared_memory()  # a crashed run's leftovers make the next one fail (FileExistsError)

    from llmfoundry.command_utils.train import train
    try:
        train(cfg)
    except ValueError as err:
        # Composer's answer when autoresume finds the run already at max_duration: for us
        # a finished run, not an error (`make train` twice, a job restarted after its end).
        if 'No training would occur' not in str(err):
            raise
        print(f'train.py: run {cfg.get("run_name")} already reached max_duration '
              f'{cfg.get("max_duration")} (checkpoints in {cfg.get("save_folder")}); nothing to do')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

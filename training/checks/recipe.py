"""What a recipe alone tells, on any machine: its FSDP version and keys, llm-foundry's schema,
the dataset keys llm-foundry would drop silently, the export folder."""
from __future__ import annotations

import difflib
import inspect

from omegaconf import DictConfig

from training import fsdp
from training.config import ConfigError

# Keys llm-foundry's text loader reads from `train_loader.dataset` besides the dataset classes'
# own parameters (llmfoundry/data/text_data.py and data/utils.py); anything else it drops silently.
_LOADER_KEYS = {'streams', 'eos_token_id', 'bos_token_id', 'override_eos_token_id_mismatch_error',
                'override_bos_token_id_mismatch_error', 'seq_parallel_replication'}


def _valid_dataset_keys() -> set[str]:
    from llmfoundry.data.text_data import StreamingTextDataset
    from streaming import StreamingDataset
    return (set(inspect.signature(StreamingTextDataset).parameters)
            | set(inspect.signature(StreamingDataset).parameters)
            | _LOADER_KEYS) - {'self', 'kwargs'}


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


def check_fsdp(cfg: DictConfig, where: str) -> None:
    """`fsdp_config.version` (ours, training/fsdp.py) is 1 or 2, and version 2 carries no FSDP1
    setting that it would ignore (Composer only warns)."""
    section = fsdp.fsdp_section(cfg)
    if not section or 'version' not in section:
        return
    want = section.get('version')
    if want not in fsdp.VERSIONS:
        raise ConfigError(f'{where}: fsdp_config.version must be 1 (torch FSDP, CUDA only) or '
                          f'2 (torch fully_shard), got {want!r}')
    ignored = [k for k in fsdp.FSDP1_ONLY if k in section] if want == 2 else []
    if ignored:
        raise ConfigError(f'{where}: fsdp_config.{ignored[0]} is an FSDP1 setting that '
                          f'fsdp_config.version 2 ignores: remove it, or use version: 1')


def check_schema(cfg: DictConfig, where: str) -> None:
    """llm-foundry's own validation of the whole config (unknown top-level keys, types)."""
    from llmfoundry.command_utils.train import TRAIN_CONFIG_KEYS, TrainConfig
    from llmfoundry.utils.config_utils import make_dataclass_and_log_config
    try:
        make_dataclass_and_log_config(cfg.copy(), TrainConfig, TRAIN_CONFIG_KEYS,
                                      transforms='all')
    except Exception as err:  # llm-foundry raises several types; the message is what matters
        raise ConfigError(f'{where}: {err}') from None


def check_export_folder(cfg: DictConfig, where: str) -> None:
    """The recipes' hf_checkpointer exports into ${save_folder}; with save_folder=null it would
    fail inside llm-foundry with an AttributeError once the trainer is being built."""
    export = (cfg.get('callbacks') or {}).get('hf_checkpointer')
    if export is not None and not export.get('save_folder'):
        raise ConfigError(f'{where}: callbacks.hf_checkpointer.save_folder is empty (the '
                          f'recipes export the model into save_folder): set save_folder, or '
                          f'callbacks.hf_checkpointer.save_folder=PATH for the exported model')


def check_recipe(cfg: DictConfig, where: str) -> None:
    """What the recipe alone tells, on any machine."""
    check_fsdp(cfg, where)
    check_schema(cfg, where)
    check_dataset_keys(cfg, where)
    check_export_folder(cfg, where)

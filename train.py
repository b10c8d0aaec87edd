"""Fine-tune with a recipe: `composer train.py yamls/<recipe>.yaml [key=value ...]`.

llm-foundry's trainer (`train_from_yaml`) plus our layer, which runs first on every rank:
checks the config (devices, schema, remotes and credentials, cache folders, no other live run
on the same cache; the packages its settings need, its tokenizer and model sources, TMPDIR:
data_prep/preflight.py; the datasets as their records say they were made: tokenizer, sample
length, vocabulary: training/dataset_checks.py), so a mistake fails in one line before any
model, dataloader worker or download starts; installs our streaming extensions
(data_prep.streaming_ext) and our oci:// checkpoint store in Composer (data_prep.composer_ext;
docs/checkpoints.md); makes the cached root index the remote's; clears streaming shared memory
that a crashed run left (only what no live process holds). A failure before training starts
still writes the run's report (run_metrics.json, status failed). Overrides are llm-foundry's:
`max_duration=10ba`, `variables.data_remote=oci://bucket@namespace/c4_zstd`, `run_name=try2`.
FSDP_AT_WORLD_SIZE_1=1 keeps a recipe's FSDP on one GPU (llm-foundry reverts to DDP there).
"""
from __future__ import annotations

import difflib
import inspect
import os
import sys

from omegaconf import DictConfig
from omegaconf import OmegaConf as om

from training.config import ConfigError, datasets, load_config  # noqa: F401 (train.load_config)
from training.dataset_checks import check_datasets

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


def remotes(cfg: DictConfig) -> list[str]:
    """Every remote URL the run reads or writes: dataset remotes, stream remotes, save_folder."""
    found = [remote for _, remote, _, _ in datasets(cfg)]
    found.append(cfg.get('save_folder'))
    return [r for r in found if isinstance(r, str) and r]


def check_devices(cfg: DictConfig, where: str) -> None:
    """An FSDP recipe on a machine without CUDA GPUs (a GPU recipe tried on a laptop) fails in
    Composer or llm-foundry only once the model is being built, with a traceback."""
    fsdp = cfg.get('fsdp_config') or (cfg.get('parallelism_config') or {}).get('fsdp')
    init = (cfg.get('model') or {}).get('init_device')
    if not fsdp and init != 'mixed':  # mixed: llm-foundry's meta-device init, FSDP only
        return
    import torch
    gpus = torch.cuda.device_count()
    procs = int(os.environ.get('LOCAL_WORLD_SIZE') or 1)  # set by the composer launcher
    twin = os.path.join(os.path.dirname(where), 'cpu', os.path.basename(where))
    cpu = twin if os.path.exists(twin) else 'the recipes in yamls/cpu/'
    if gpus == 0:
        raise ConfigError(f'{where}: this recipe shards the model with FSDP, which needs CUDA '
                          f'GPUs, one per process (it is sized for 8, a BM.H100.8: `composer '
                          f'train.py` starts one process per GPU), and this machine has none; '
                          f'on a CPU use {cpu}')
    if procs > gpus:
        raise ConfigError(f'{where}: {procs} processes on this node but {gpus} CUDA GPU(s): '
                          f'FSDP needs one GPU per process (composer -n {gpus} train.py ...)')


def check_local_folders(cfg: DictConfig, where: str) -> None:
    """Cache and checkpoint folders on this machine must be creatable (a path under a regular
    file gave a traceback from inside a dataloader worker). Nothing is created here."""
    folders = [(f'{key}.local', local) for key, _, local, _ in datasets(cfg)]
    save = cfg.get('save_folder')
    if isinstance(save, str) and '://' not in save:
        folders.append(('save_folder', save))
    for key, path in folders:
        if not isinstance(path, str) or not path:
            continue
        parent = os.path.abspath(path)
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise ConfigError(f'{where}: {key} {path!r} cannot be created: {parent} is a file, '
                              f'not a folder')
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f'{where}: {key} {path!r}: no permission to write in {parent}')


def check_cache_free(cfg: DictConfig, where: str) -> None:
    """Two runs sharing one cache folder evict each other's shards; streaming refuses it only
    deep in dataset setup (and only while its shared memory survives: see compat.py)."""
    from data_prep.streaming_ext import compat
    for key, _, local, split in datasets(cfg):
        if not local:
            continue
        folder = os.path.abspath(os.path.join(local, split or ''))
        pids = compat.live_users([folder]).get(folder)
        if pids:
            raise ConfigError(f'{where}: {key}.local {local!r} is the cache of a run still '
                              f'going on this machine (pid {", ".join(map(str, pids))}): give '
                              f'this run its own cache folder, or wait for that one to end')


def sync_cached_indexes(cfg: DictConfig, where: str) -> None:
    """The cached root index must be the remote's (a repaired or re-converted dataset)."""
    from data_prep.storage import RemoteError
    from data_prep.streaming_ext.cache import sync_index
    for key, remote, local, split in datasets(cfg):
        if not remote or not local or os.path.abspath(remote) == os.path.abspath(local):
            continue
        try:
            change = sync_index(remote, local, split)
        except RemoteError as err:
            raise ConfigError(f'{where}: {key}: {err}') from None
        if change:
            print(f'train.py: {change}', flush=True)


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
    check_export_folder(cfg, where)
    from data_prep import composer_ext
    from data_prep.storage import RemoteError, check_url
    save = cfg.get('save_folder')
    try:  # before any check: checkpoints in oci:// go through our client from here on
        composer_ext.install(oci_urls(cfg))
    except RemoteError as err:
        raise ConfigError(f'{where}: {err}') from None
    for url in remotes(cfg):
        try:
            if url == save and url.startswith('oci://'):
                # with the store Composer will save through
                composer_ext.check_folder(url, str(cfg.get('run_name')))
            else:
                check_url(url)
        except RemoteError as err:
            raise ConfigError(f'{where}: {err}') from None


def check_export_folder(cfg: DictConfig, where: str) -> None:
    """The recipes' hf_checkpointer exports into ${save_folder}; with save_folder=null it would
    fail inside llm-foundry with an AttributeError once the trainer is being built."""
    export = (cfg.get('callbacks') or {}).get('hf_checkpointer')
    if export is not None and not export.get('save_folder'):
        raise ConfigError(f'{where}: callbacks.hf_checkpointer.save_folder is empty (the '
                          f'recipes export the model into save_folder): set save_folder, or '
                          f'callbacks.hf_checkpointer.save_folder=PATH for the exported model')


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


def keep_in_bucket(cfg: DictConfig) -> None:
    """Checkpoints in oci://: our bucket_keep callback applies save_num_checkpoints_to_keep to
    the bucket as well (data_prep/composer_ext/keep.py); Composer prunes local copies only."""
    save = cfg.get('save_folder')
    if isinstance(save, str) and save.startswith('oci://'):
        if not cfg.get('callbacks'):
            cfg.callbacks = {}
        if 'bucket_keep' not in cfg.callbacks:
            cfg.callbacks.bucket_keep = {}


class _PreFitReport:
    """Where rank 0's run_metrics.json goes when the run fails before fit starts (the
    run_report callback writes it from FIT_START on): taken from the config before llm-foundry
    consumes it."""

    def __init__(self, cfg: DictConfig):
        self.folder = None
        named = cfg.get('callbacks') or {}
        if 'run_report' not in named or os.environ.get('RANK', '0') != '0':
            return
        from callbacks import run_report
        from callbacks._common import DEFAULT_FOLDER
        run_report.forget_fit_started()
        template = (named.get('run_report') or {}).get('folder') or DEFAULT_FOLDER
        self.run_name = cfg.get('run_name')
        self.folder = template.format(run_name=self.run_name)
        self.info = {'max_duration': cfg.get('max_duration'),
                     'world_size': int(os.environ.get('WORLD_SIZE') or 1)}
        dataset = (cfg.get('train_loader') or {}).get('dataset') or {}
        self.info.update({k: dataset.get(k) for k in ('remote', 'local', 'split')})

    def write(self, err: BaseException) -> None:
        from callbacks import run_report
        if self.folder is None or run_report.fit_started():
            return  # no report asked for, not rank 0, or the callback's close() has written it
        try:
            path = run_report.write_failed_before_fit(self.folder, self.run_name, err,
                                                      self.info)
            print(f'train.py: failed before training started; report in {path}',
                  file=sys.stderr)
        except OSError as e:  # the original error matters more than the report's
            print(f'train.py: could not write the run report in {self.folder}: {e}',
                  file=sys.stderr)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ('-h', '--help'):
        print(__doc__.strip())
        return 0 if argv else 2
    yaml_path, overrides = argv[0], argv[1:]
    from data_prep import llmfoundry_ext, preflight
    preflight.quiet_known_warnings()
    from data_prep.streaming_ext import compat, install
    try:
        cfg = load_config(yaml_path, overrides)
        check_devices(cfg, yaml_path)
        check_config(cfg.copy(), yaml_path)
        check_local_folders(cfg, yaml_path)
        preflight.check_packages(cfg, yaml_path)
        preflight.check_sources(cfg, yaml_path)
        preflight.check_temp_dir(cfg, yaml_path)
        for line in check_datasets(cfg, yaml_path):  # the data as the recipe reads it
            if os.environ.get('RANK', '0') == '0':
                print(line, flush=True)
        install()
        try:  # MPT's attn_impl sdpa; FSDP_AT_WORLD_SIZE_1=1 keeps FSDP on one GPU
            for change in llmfoundry_ext.install():
                print(f'train.py: {change}', flush=True)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        check_cache_free(cfg, yaml_path)
        sync_cached_indexes(cfg, yaml_path)
    except (ConfigError, preflight.Missing) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2

    # A crashed run's leftovers make the next one fail (FileExistsError); a live run's stay.
    compat.clean_stale_shared_memory()

    keep_in_bucket(cfg)
    if os.environ.get('LOCAL_RANK', '0') == '0':  # the latest checkpoint comes from the bucket
        from data_prep import composer_ext
        save = cfg.get('save_folder')
        for path in composer_ext.forget_autoresume_copy(save, cfg.get('run_name')) if save else ():
            print(f'train.py: removed {path} (an earlier autoresume download; the bucket has '
                  f'the latest checkpoint)', flush=True)
    from llmfoundry.command_utils.train import train
    report = _PreFitReport(cfg)
    try:
        train(cfg)
    except BaseException as err:
        # Composer's answer when autoresume finds the run already at max_duration: for us
        # a finished run, not an error (`make train` twice, a job restarted after its end).
        if not (isinstance(err, ValueError) and 'No training would occur' in str(err)):
            report.write(err)
            raise
        print(f'train.py: run {cfg.get("run_name")} already reached max_duration '
              f'{cfg.get("max_duration")} (checkpoints in {cfg.get("save_folder")}); nothing to do')
    return 0


if __name__ == '__mp_main__':
    # A process Composer spawns to upload checkpoints imports this file under this name before
    # it builds its object store: ours must be there too (the namespaces come in the env).
    from data_prep import composer_ext
    composer_ext.install()

if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

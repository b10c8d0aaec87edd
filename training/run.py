"""`composer train.py <recipe> [key=value ...]` on every rank: load, check, install, train.

1. load the recipe (training/config.py) with llm-foundry's overrides;
2. check it (training/checks/): every mistake one line and exit code 2, before any model,
   dataloader worker or download starts; the datasets as their records say they were made;
3. install our extensions of streaming, Composer and llm-foundry (training/extensions.py), and
   make the cached root indexes the remotes'; clear streaming shared memory that a crashed run
   left (only what no live process holds);
4. train with llm-foundry's `train` (what its scripts/train/train.py runs). A failure before
   training starts still writes the run's report (run_metrics.json, status failed); a run
   restarted after it reached max_duration ends at once (nothing to do), not with an error.
"""
from __future__ import annotations

import os
import sys

from omegaconf import DictConfig

from training import checks
from training.config import ConfigError, datasets, load_config

USAGE = """usage: composer [-n PROCS] train.py RECIPE.yaml [key=value ...]

Fine-tune with a recipe (yamls/): llm-foundry's trainer after our checks. Overrides are
llm-foundry's: max_duration=10ba, variables.data_remote=oci://bucket@namespace/c4/zstd,
run_name=try2. docs/training.md has the rest."""


def sync_cached_indexes(cfg: DictConfig, where: str) -> list[str]:
    """The cached root index must be the remote's (a repaired or re-converted dataset);
    returns what changed, a line each."""
    from data_prep.storage import RemoteError
    from training.shards.cache import sync_index
    changes = []
    for key, remote, local, split in datasets(cfg):
        if not remote or not local or os.path.abspath(remote) == os.path.abspath(local):
            continue
        try:
            change = sync_index(remote, local, split)
        except RemoteError as err:
            raise ConfigError(f'{where}: {key}: {err}') from None
        if change:
            changes.append(change)
    return changes


def keep_in_bucket(cfg: DictConfig) -> None:
    """Checkpoints in oci://: our bucket_keep callback applies save_num_checkpoints_to_keep to
    the bucket as well and times each checkpoint (callbacks/bucket_keep.py)."""
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
        print(USAGE)
        return 0 if argv else 2
    where, overrides = argv[0], argv[1:]
    checks.quiet_known_warnings()
    from training import extensions
    try:
        cfg = load_config(where, overrides)
        checks.check_recipe(cfg, where)
        checks.check_remotes(cfg, where)
        checks.check_machine(cfg, where)
        notes = checks.check_datasets(cfg, where)  # the data as the recipe reads it
        changes = extensions.install(cfg, where)
        checks.check_cache_free(cfg, where)
        changes += sync_cached_indexes(cfg, where)
    except ConfigError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if os.environ.get('RANK', '0') == '0':
        for line in notes:
            print(line, flush=True)
    for line in changes:
        print(f'train.py: {line}', flush=True)

    from training.shards.shared_memory import clean_stale_shared_memory
    clean_stale_shared_memory()  # a crashed run's leftovers make the next one fail
    keep_in_bucket(cfg)
    if os.environ.get('LOCAL_RANK', '0') == '0':  # the latest checkpoint comes from the bucket
        from training import checkpoints
        save = cfg.get('save_folder')
        for path in checkpoints.forget_autoresume_copy(save, cfg.get('run_name')) if save else ():
            print(f'train.py: removed {path} (an earlier autoresume download; the bucket has '
                  f'the latest checkpoint)', flush=True)
    from llmfoundry.command_utils.train import train
    report = _PreFitReport(cfg)
    try:
        train(cfg)
    except BaseException as err:
        report.write(err)
        raise
    return 0

"""What this machine has for a recipe: the CUDA GPUs its settings need, cache and checkpoint
folders it can create, the optional packages its settings ask for, the tokenizer and Hugging
Face model it names, a temporary folder its dataloader workers can use.

Without these checks each one fails late, after the launcher has started every rank: a missing
flash-attn in llm-foundry's model build ("flash-attention 2 is not installed"), a missing
wandb when the logger is built, a tokenizer folder that was never made (`make tokenizer`) as
a 130-line traceback about huggingface.co, a long TMPDIR as a first batch that never comes.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from omegaconf import DictConfig

from training.config import ConfigError, datasets, gpu_settings

# flash-attn has no wheels on PyPI, only an sdist whose setup.py fetches a prebuilt wheel from
# the project's GitHub release matching torch's major.minor, CUDA major and C++ ABI, else
# compiles for an hour or more. llm-foundry[gpu] pins 2.7.4.post1, released before torch 2.7
# (its wheels stop at torch 2.6: it would compile); 2.8.3's release builds torch 2.7 wheels
# (cu12, both ABIs, CPython 3.9-3.13). setup.py imports torch, hence --no-build-isolation.
FLASH_ATTN_VERSION = '2.8.3'
FLASH_ATTN_INSTALL = (f'.venv/bin/pip install ninja && .venv/bin/pip install '
                      f'--no-build-isolation flash-attn=={FLASH_ATTN_VERSION}')
MAKE_TOKENIZER = 'build/tokenizer'  # the Makefile's TOKENIZER: `make tokenizer` builds it
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository


def quiet_known_warnings() -> None:
    """Drops the one warning every start printed that no user can act on (llm-foundry 0.22
    imports pkg_resources; setup.py pins setuptools<81 for it), so a failed check is one line."""
    import warnings
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)


class Missing(ConfigError):
    """Something the recipe asks for is not on this machine; the message says what and how."""


@dataclass(frozen=True)
class Package:
    module: str           # the import name
    dist: str             # the name pip installs
    fix: str              # what to do, besides changing the key that asks for it
    min_version: Optional[str] = None


FLASH_ATTN = Package(
    'flash_attn', 'flash-attn',
    f'use model.attn_implementation: sdpa (torch\'s built-in FlashAttention kernels, no '
    f'package) or, for MPT, attn_config.attn_impl: torch; or install it: `{FLASH_ATTN_INSTALL}`',
    min_version='2.0.1')
TRANSFORMER_ENGINE = Package('transformer_engine', 'transformer-engine',
                             '`pip install transformer-engine[pytorch]` (NVIDIA GPUs only)')
# llm-foundry's logger names (llmfoundry.registry.loggers) -> the package each needs
LOGGER_PACKAGES = {
    'wandb': Package('wandb', 'wandb', '`.venv/bin/pip install wandb`'),
    'mlflow': Package('mlflow', 'mlflow', '`.venv/bin/pip install mlflow`'),
    'tensorboard': Package('tensorboard', 'tensorboard', '`.venv/bin/pip install tensorboard`'),
    'mosaicml': Package('mcli', 'mosaicml-cli', '`.venv/bin/pip install mosaicml-cli`'),
}


def _mpt_settings(model: dict) -> dict[str, Any]:
    """The MPT settings that need packages, with llm-foundry's defaults where the recipe has
    none (its default attention is flash and its default loss flash-attn's fused one)."""
    import inspect

    from llmfoundry.models.mpt.modeling_mpt import ComposerMPTCausalLM
    from llmfoundry.models.utils.config_defaults import attn_config_defaults
    attn = {**attn_config_defaults, **(model.get('attn_config') or {})}
    loss = inspect.signature(ComposerMPTCausalLM.__init__).parameters['loss_fn'].default
    fc = model.get('fc_type') or {}
    return {'attn_impl': attn['attn_impl'], 'rope': attn['rope'],
            'rope_impl': attn['rope_impl'], 'loss_fn': model.get('loss_fn', loss),
            'ffn_type': (model.get('ffn_config') or {}).get('ffn_type'),
            'fc_type': fc.get('name') if isinstance(fc, dict) else fc}


def needs(cfg) -> Iterator[tuple[str, Package]]:
    """(the setting as the message names it, the package it needs) for every setting of the
    recipe that needs an optional package. One table for all of them, so that a new case is
    one more line here."""
    model = cfg.get('model') or {}
    if model.get('use_flash_attention_2'):
        yield 'model.use_flash_attention_2: true', FLASH_ATTN
    if model.get('attn_implementation') == 'flash_attention_2':
        yield 'model.attn_implementation: flash_attention_2', FLASH_ATTN
    if model.get('name') == 'mpt_causal_lm':
        mpt = _mpt_settings(model)
        default = '' if 'attn_impl' in (model.get('attn_config') or {}) else ' (the default)'
        if mpt['attn_impl'] == 'flash':
            yield f'model.attn_config.attn_impl: flash{default}', FLASH_ATTN
        if mpt['rope'] and mpt['rope_impl'] == 'dail':
            yield 'model.attn_config.rope_impl: dail (with rope: true)', FLASH_ATTN
        if mpt['loss_fn'] == 'fused_crossentropy':
            default = '' if 'loss_fn' in model else ' (the default)'
            yield f'model.loss_fn: fused_crossentropy{default}', Package(
                'flash_attn', 'flash-attn', 'use model.loss_fn: torch_crossentropy, or install '
                f'it: `{FLASH_ATTN_INSTALL}`')
        if mpt['ffn_type'] == 'te_ln_mlp':
            yield 'model.ffn_config.ffn_type: te_ln_mlp', TRANSFORMER_ENGINE
        if mpt['fc_type'] == 'te':
            yield 'model.fc_type: te', TRANSFORMER_ENGINE
    if model.get('peft_config'):
        yield 'model.peft_config', Package('peft', 'peft', '`.venv/bin/pip install peft`')
    if cfg.get('precision') == 'amp_fp8':
        yield 'precision: amp_fp8', TRANSFORMER_ENGINE
    if (cfg.get('tokenizer') or {}).get('name') == 'tiktoken':
        yield 'tokenizer.name: tiktoken', Package('tiktoken', 'tiktoken',
                                                  '`.venv/bin/pip install tiktoken`')
    for name in cfg.get('loggers') or {}:
        if name in LOGGER_PACKAGES:
            yield f'loggers.{name}', LOGGER_PACKAGES[name]


def _problem(package: Package) -> Optional[str]:
    """Why `package` cannot be used here, or None when it can."""
    try:
        found = importlib.util.find_spec(package.module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken module entry
        found = False
    if not found:
        return 'which is not installed'
    try:  # installed is not enough: flash-attn built for another torch fails here
        importlib.import_module(package.module)
    except Exception as err:  # ImportError, OSError (a missing CUDA library), ...
        first = (str(err).splitlines() or [''])[0][:300]
        return f'which is installed but does not import ({type(err).__name__}: {first})'
    if package.min_version:
        from packaging.version import Version
        try:
            have = importlib.metadata.version(package.dist)
        except importlib.metadata.PackageNotFoundError:
            return None  # importable but not installed by pip (a source checkout): trust it
        if Version(have) < Version(package.min_version):
            return f'>= {package.min_version}, and {have} is installed'
    return None


def check_packages(cfg, where: str) -> None:
    """Refuses, in one line, a recipe whose settings need a package that is not importable."""
    for setting, package in needs(cfg):
        problem = _problem(package)
        if problem:
            raise Missing(f'{where}: {setting} needs the package {package.dist} (import '
                          f'{package.module}), {problem}: {package.fix}')


# ----------------------------------------------------------------------------- sources

def _sources(cfg) -> Iterator[tuple[str, str, str]]:
    """(key, name, a file every such repository has) for the tokenizer and a Hugging Face
    model that llm-foundry will load with from_pretrained."""
    from llmfoundry.registry import tokenizers
    name = (cfg.get('tokenizer') or {}).get('name')
    if isinstance(name, str) and name and name not in tokenizers.get_all():
        yield 'tokenizer.name', name, 'tokenizer_config.json'
    model = cfg.get('model') or {}
    path = model.get('pretrained_model_name_or_path')
    if isinstance(path, str) and path:
        yield 'model.pretrained_model_name_or_path', path, 'config.json'


def _hub_problem(name: str, probe_file: str) -> Optional[str]:
    """None when `name` can be loaded from the Hugging Face cache or the hub, else why not."""
    import requests
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )
    try:
        cached = try_to_load_from_cache(name, probe_file)
    except HFValidationError:
        return 'not a folder here, nor a Hugging Face Hub name'
    if isinstance(cached, str):
        return None
    download = f'download it first (`huggingface-cli download {name}`)'
    if constants.HF_HUB_OFFLINE:
        return (f'not a folder here, not in the Hugging Face cache, and HF_HUB_OFFLINE is set: '
                f'{download}')
    try:
        HfApi().model_info(name, timeout=10)
    except GatedRepoError:
        return (f'a gated repository on {constants.ENDPOINT}: accept its terms there and set '
                f'HF_TOKEN')
    except RepositoryNotFoundError:
        return f'no such repository on {constants.ENDPOINT} (or it is private: set HF_TOKEN)'
    except (requests.ConnectionError, requests.Timeout, OfflineModeIsEnabled):
        return (f'not a folder here, not in the Hugging Face cache, and the hub '
                f'({constants.ENDPOINT}) is unreachable: {download} where the hub is reachable '
                f'(HF_HOME names the cache), or set HF_ENDPOINT to a mirror')
    except HfHubHTTPError:  # the hub answered, with something else (429, 5xx): let it load
        return None
    return None


def check_sources(cfg, where: str) -> None:
    """The tokenizer and a Hugging Face model must be a local folder, in the Hugging Face
    cache, or on a hub this machine reaches; one line naming which and what to do, else."""
    for key, name, probe_file in _sources(cfg):
        if os.path.isdir(name):
            continue
        ours = (os.path.normpath(name) == MAKE_TOKENIZER
                or os.path.abspath(name) == os.path.join(ROOT, MAKE_TOKENIZER))
        if ours or name.startswith(('/', './', '../', '~')):
            hint = ': run `make tokenizer` to build it' if ours else ''
            raise Missing(f'{where}: {key} {name!r}: no such folder{hint}')
        problem = _hub_problem(name, probe_file)
        if problem:
            raise Missing(f'{where}: {key} {name!r} is {problem}')


# ----------------------------------------------------------------------------- the machine

# A DataLoader worker hands each batch's tensors to its rank through a Unix socket that
# multiprocessing's resource sharer opens at TMPDIR/pymp-XXXXXXXX/listener-XXXXXXXX (torch's
# file_descriptor sharing strategy, the default on Linux). Linux caps a socket path at 107
# bytes: with a longer TMPDIR the bind fails in the worker's queue feeder thread, which only
# prints the error and drops the batch, and the rank waits for it forever.
SOCKET_PATH_MAX = 107
RESOURCE_SHARER_TAIL = os.path.join('pymp-' + 'x' * 8, 'listener-' + 'x' * 8)
TMPDIR_MAX = SOCKET_PATH_MAX - len(RESOURCE_SHARER_TAIL) - 1  # 75: the '/' between them


def _first_loader_with_workers(cfg) -> Optional[str]:
    from omegaconf import ListConfig
    for key in ('train_loader', 'eval_loader'):  # eval_loader may be a list of loaders
        found = cfg.get(key) or []
        for loader in found if isinstance(found, (list, tuple, ListConfig)) else [found]:
            if hasattr(loader, 'get') and (loader.get('num_workers') or 0) > 0:
                return key
    return None


def check_temp_dir(cfg, where: str) -> None:
    """Refuses, in one line, a TMPDIR too long for the dataloader workers' sockets."""
    key = _first_loader_with_workers(cfg)
    tmp = tempfile.gettempdir()
    if key is None or len(os.fsencode(tmp)) <= TMPDIR_MAX:
        return
    length = len(os.fsencode(os.path.join(tmp, RESOURCE_SHARER_TAIL)))
    raise Missing(f'{where}: {key}.num_workers > 0 needs a shorter temporary folder: the '
                  f'workers\' sockets under {tmp} would be {length} bytes long, over Linux\'s '
                  f'{SOCKET_PATH_MAX} (the first batch would never come); set TMPDIR to a '
                  f'folder of at most {TMPDIR_MAX} bytes, e.g. TMPDIR=/tmp')


def check_devices(cfg: DictConfig, where: str) -> None:
    """Settings that need CUDA GPUs, on a machine without them (a GPU recipe tried on a laptop),
    fail in Composer or llm-foundry only once the model is being built, with a traceback. FSDP
    itself does not need them: version 2 shards over gloo on CPU processes (the CPU twins)."""
    import torch
    gpus = torch.cuda.device_count()
    procs = int(os.environ.get('LOCAL_WORLD_SIZE') or 1)  # set by the composer launcher
    need = gpu_settings(cfg)
    if gpus == 0 and need:
        twin = os.path.join(os.path.dirname(where), 'cpu', os.path.basename(where))
        cpu = twin if os.path.exists(twin) else 'the recipes in yamls/cpu/'
        raise ConfigError(f'{where}: {"; ".join(need)} need CUDA GPUs, and this machine has '
                          f'none (this recipe is sized for a BM.H100.8: `composer train.py` '
                          f'starts one process per GPU); on a CPU use {cpu}')
    if gpus and procs > gpus:
        raise ConfigError(f'{where}: {procs} processes on this node but {gpus} CUDA GPU(s): '
                          f'one GPU per process (composer -n {gpus} train.py ...)')


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


def check_machine(cfg: DictConfig, where: str) -> None:
    """What this machine has for the recipe: packages, devices, folders, the tokenizer and
    model sources, TMPDIR."""
    check_packages(cfg, where)
    check_devices(cfg, where)
    check_local_folders(cfg, where)
    check_sources(cfg, where)
    check_temp_dir(cfg, where)

"""train.py refuses, in one line and before any training starts, a recipe that asks for a
package this machine cannot import or a tokenizer it cannot get (training/checks.py).

Three starts of `python train.py` as a user runs it (the stock install has no flash-attn):
the 7B recipe's former `use_flash_attention_2: true`, the CPU recipe without `make tokenizer`
(before: a 130-line traceback about huggingface.co), a hub tokenizer with the hub unreachable.
The other settings of preflight's table go through train.main in this process, their packages
hidden from it (sys.modules[name] = None makes `import name` fail as if not installed)."""
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import train
from tests.helpers import PY, ROOT, free_port, one_error_line
from training.config import load_config

CPU = str(ROOT / 'yamls/cpu/c4_zstd.yaml')


def local(tmp_path) -> list[str]:
    """The CPU recipe's data and checkpoints in local folders: its save_folder is the local
    store's bucket, whose credentials would be checked (and missing) before these."""
    return [f'variables.data_remote={tmp_path}/mds', f'save_folder={tmp_path}/ckpt']


def start(args: list[str], cwd, env: dict | None = None) -> str:
    import os
    proc = subprocess.run([PY, str(ROOT / 'train.py'), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})
    assert proc.returncode == 2, proc.stderr[-3000:]
    return one_error_line(proc.stderr)


@pytest.mark.slow
def test_missing_package_and_tokenizer_each_fail_in_one_line(tmp_path, capsys, monkeypatch):
    assert importlib.util.find_spec('flash_attn') is None, 'this venv is not a stock install'
    data = local(tmp_path)

    # The 7B recipe asking for flash-attn (its package is checked before its devices).
    line = _main_of([str(ROOT / 'yamls/c4_zstd.yaml'), f'variables.bucket={tmp_path}',
                     f'variables.data_local={tmp_path}/cache', 'model.use_flash_attention_2=true'],
                    capsys)
    assert line.startswith('error: ') and 'c4_zstd.yaml: model.use_flash_attention_2: true ' \
        'needs the package flash-attn (import flash_attn), which is not installed' in line, line
    assert 'model.attn_implementation: sdpa' in line and \
        '--no-build-isolation flash-attn==2.8.3' in line, line

    # No `make tokenizer` (run elsewhere than the repository, so a built one is not found).
    monkeypatch.chdir(tmp_path)
    line = _main_of([CPU, *data], capsys)
    assert line == (f"error: {CPU}: tokenizer.name 'build/tokenizer': no such folder: run "
                    f"`make tokenizer` to build it")
    assert not (tmp_path / 'build').exists() and not (tmp_path / 'results').exists()

    # A hub name, not in the cache, the hub down (a process of its own: huggingface_hub reads
    # HF_ENDPOINT when it is imported).
    hub = f'http://127.0.0.1:{free_port()}'
    line = start([CPU, *data, 'tokenizer.name=Qwen/Qwen2.5-7B'], cwd=tmp_path,
                 env={'HF_ENDPOINT': hub, 'HF_HUB_CACHE': str(tmp_path / 'hf')})
    assert f"tokenizer.name 'Qwen/Qwen2.5-7B' is not a folder here, not in the Hugging Face " \
        f"cache, and the hub ({hub}) is unreachable: download it first " \
        f"(`huggingface-cli download Qwen/Qwen2.5-7B`)" in line, line


def _main_of(args: list[str], capsys) -> str:
    """train.py in this process (its checks stop it before any import of llm-foundry's
    training): its one error line."""
    capsys.readouterr()
    assert train.main(args) == 2
    return one_error_line(capsys.readouterr().err)


def _main(args: list[str], capsys) -> str:
    return _main_of([CPU, *args], capsys)


@pytest.mark.parametrize('hidden, overrides, says', [
    ('flash_attn', ['model.attn_config.attn_impl=flash'],
     'model.attn_config.attn_impl: flash needs the package flash-attn'),
    ('flash_attn', ['model.loss_fn=fused_crossentropy'],
     'model.loss_fn: fused_crossentropy needs the package flash-attn'),
    ('flash_attn', ['model.attn_config.rope=true'],
     'model.attn_config.rope_impl: dail (with rope: true) needs the package flash-attn'),
    ('wandb', ['loggers.wandb={}'], 'loggers.wandb needs the package wandb (import wandb), '
     'which is not installed: `.venv/bin/pip install wandb`'),
    ('mlflow', ['loggers.mlflow={}'], 'loggers.mlflow needs the package mlflow'),
    ('tensorboard', ['loggers.tensorboard={}'], 'loggers.tensorboard needs the package '
     'tensorboard'),
    ('transformer_engine', ['precision=amp_fp8'], 'precision: amp_fp8 needs the package '
     'transformer-engine'),
    ('tiktoken', ['tokenizer.name=tiktoken'], 'tokenizer.name: tiktoken needs the package '
     'tiktoken'),
])
def test_each_setting_that_needs_a_package_names_it(hidden, overrides, says, tmp_path, capsys,
                                                    monkeypatch, tokenizer_dir):
    monkeypatch.setitem(sys.modules, hidden, None)
    line = _main([*local(tmp_path), f'tokenizer.name={tokenizer_dir}',
                  *overrides], capsys)
    assert line.startswith(f'error: {CPU}: ') and says in line, line


def test_an_installed_package_that_does_not_import_is_named(tmp_path, capsys, monkeypatch,
                                                            tokenizer_dir):
    # flash-attn built for another torch: installed, and `import flash_attn` fails.
    shim = tmp_path / 'site' / 'flash_attn'
    shim.mkdir(parents=True)
    (shim / '__init__.py').write_text("raise ImportError('flash_attn_2_cuda: undefined symbol')")
    monkeypatch.syspath_prepend(str(tmp_path / 'site'))
    line = _main([*local(tmp_path), f'tokenizer.name={tokenizer_dir}',
                  'model.attn_config.attn_impl=flash'], capsys)
    assert 'which is installed but does not import (ImportError: flash_attn_2_cuda: ' \
        'undefined symbol)' in line, line


def test_offline_hub_name_not_in_the_cache(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)  # what HF_HUB_OFFLINE=1 sets
    line = _main([*local(tmp_path), 'tokenizer.name=Qwen/Qwen2.5-7B'], capsys)
    assert "tokenizer.name 'Qwen/Qwen2.5-7B' is not a folder here, not in the Hugging Face " \
        "cache, and HF_HUB_OFFLINE is set" in line, line


def test_no_save_folder_names_the_export_folder(tmp_path, capsys, tokenizer_dir):
    line = _main([*local(tmp_path), f'tokenizer.name={tokenizer_dir}', 'save_folder=null'],
                 capsys)
    assert line == (f'error: {CPU}: callbacks.hf_checkpointer.save_folder is empty (the '
                    f'recipes export the model into save_folder): set save_folder, or '
                    f'callbacks.hf_checkpointer.save_folder=PATH for the exported model')


PICKLE_A_TENSOR = '''
import torch
from multiprocessing.reduction import ForkingPickler
try:
    ForkingPickler.dumps(torch.zeros(4))  # what a DataLoader worker's queue does with a batch
    print('ok')
except OSError as err:
    print(err)
'''


def _tmpdir_of_length(base: str, n: int) -> str:
    path = os.path.join(base, 'd')
    path += 'x' * (n - len(path))
    assert len(path) == n, path  # base is short: not under tmp_path, which xdist makes long
    os.makedirs(path)
    return path


def test_a_tmpdir_too_long_for_the_workers_sockets_fails_in_one_line(tmp_path, tokenizer_dir,
                                                                     monkeypatch, capsys):
    from training import checks
    longest = checks.TMPDIR_MAX
    base = tempfile.mkdtemp(prefix='tmp-', dir='/tmp')
    try:
        # The limit is torch's and Linux's, not ours: a worker sends a batch with TMPDIR at the
        # longest length allowed, and cannot with one byte more (the batch would be dropped).
        for n, says in ((longest, 'ok'), (longest + 1, 'AF_UNIX path too long')):
            env = {**os.environ, 'TMPDIR': _tmpdir_of_length(os.path.join(base, str(n)), n)}
            out = subprocess.run([PY, '-c', PICKLE_A_TENSOR], env=env, capture_output=True,
                                 text=True, timeout=120, check=True).stdout.strip()
            assert out == says, (n, out)

        long_tmp = _tmpdir_of_length(os.path.join(base, 'run'), longest + 1)
        monkeypatch.setenv('TMPDIR', long_tmp)
        monkeypatch.setattr(tempfile, 'tempdir', None)  # gettempdir() reads TMPDIR again
        line = _main([*local(tmp_path), f'tokenizer.name={tokenizer_dir}'], capsys)
        assert line == (f'error: {CPU}: train_loader.num_workers > 0 needs a shorter temporary '
                        f'folder: the workers\' sockets under {long_tmp} would be 108 bytes '
                        f'long, over Linux\'s 107 (the first batch would never come); set TMPDIR '
                        f'to a folder of at most {longest} bytes, e.g. TMPDIR=/tmp'), line

        # with no dataloader workers the same folder is fine for the check
        cfg = load_config(CPU, ['train_loader.num_workers=0', 'eval_loader.num_workers=0'])
        assert tempfile.gettempdir() == long_tmp
        checks.check_temp_dir(cfg, CPU)
    finally:
        shutil.rmtree(base, ignore_errors=True)

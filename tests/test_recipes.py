"""Every recipe validates against llm-foundry's training config; train.py's checks fail early,
in one line, on the mistakes llm-foundry would let through or report late."""
import glob

import pytest

import train
from tests.helpers import ROOT

GPU_RECIPES = ['yamls/c4_zstd.yaml', 'yamls/c4_uncompressed.yaml']
ALL_RECIPES = sorted(glob.glob('yamls/**/*.yaml', root_dir=ROOT, recursive=True))


def test_recipe_set_is_complete():
    assert set(GPU_RECIPES) | {'yamls/cpu/c4_zstd.yaml', 'yamls/cpu/c4_uncompressed.yaml'} <= set(ALL_RECIPES)


@pytest.mark.parametrize('recipe', ALL_RECIPES)
def test_recipe_validates_with_user_overrides(recipe, oci_store, tmp_path):
    # The overrides a user passes: their bucket (here the local OCI store), a shorter run.
    overrides = ['max_duration=20ba', 'variables.run_name=check']
    if recipe in GPU_RECIPES:
        overrides.append('variables.bucket=oci://c4-bench@local')
    cfg = train.load_config(str(ROOT / recipe), overrides)
    train.check_config(cfg, recipe)
    assert cfg.max_duration == '20ba'
    names = set(cfg.callbacks)
    assert {'data_wait', 'cache_stats', 'throughput', 'run_report'} <= names, recipe


@pytest.mark.parametrize('recipe', GPU_RECIPES)
def test_gpu_recipes_are_fsdp_bf16_on_oci(recipe):
    cfg = train.load_config(str(ROOT / recipe), [])
    assert cfg.fsdp_config.sharding_strategy == 'FULL_SHARD'
    assert cfg.fsdp_config.activation_checkpointing is True
    assert cfg.precision == 'amp_bf16'
    assert cfg.model.init_device in ('meta', 'mixed') and cfg.fsdp_config.sync_module_states
    assert cfg.train_loader.dataset.remote.startswith('oci://')
    assert cfg.save_folder.startswith('oci://') and cfg.autoresume is True
    for key in ('predownload', 'cache_limit', 'num_canonical_nodes', 'shuffle_algo',
                'download_timeout', 'download_retry'):
        assert key in cfg.train_loader.dataset, key


def test_the_two_variants_differ_only_where_the_data_differs():
    def flat(recipe):
        cfg = train.load_config(str(ROOT / recipe), [])
        from omegaconf import OmegaConf
        return OmegaConf.to_container(cfg, resolve=True)
    for a, b in [GPU_RECIPES, ['yamls/cpu/c4_zstd.yaml', 'yamls/cpu/c4_uncompressed.yaml']]:
        fa, fb = flat(a), flat(b)
        diff = {k for k in fa if fa[k] != fb[k]}
        assert diff <= {'variables', 'run_name', 'train_loader', 'save_folder'}, diff
        la, lb = fa['train_loader']['dataset'], fb['train_loader']['dataset']
        assert {k for k in la if la[k] != lb[k]} <= {'remote', 'local'}


class _Result:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


def _train_cli(*args, env=None, capsys=None, monkeypatch=None):
    """train.py's main() in this process (the checks run before any training starts), so the
    heavy imports are paid once for all these tests."""
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    code = train.main([str(ROOT / args[0]), *args[1:]])
    return _Result(code, capsys.readouterr().err.replace(str(ROOT) + '/', ''))


def test_unknown_dataset_key_is_an_error_naming_the_closest_valid_key(capsys, monkeypatch):
    proc = _train_cli('yamls/cpu/c4_zstd.yaml', 'train_loader.dataset.cache_limt=1gb', capsys=capsys, monkeypatch=monkeypatch)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: yamls/cpu/c4_zstd.yaml: unknown key train_loader.dataset.cache_limt "
        "(did you mean 'cache_limit'?)")


def test_oci_remote_without_credentials_fails_in_one_line(tmp_path, capsys, monkeypatch):
    env = {'OCI_CONFIG_FILE': str(tmp_path / 'missing-config'), 'OCI_CLI_AUTH': 'api_key'}
    proc = _train_cli('yamls/c4_zstd.yaml', env=env, capsys=capsys, monkeypatch=monkeypatch)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert 'Traceback' not in proc.stderr and lines[-1].startswith('error: yamls/c4_zstd.yaml:')
    assert 'missing-config' in lines[-1]


def test_remote_scheme_typo_fails_in_one_line(capsys, monkeypatch):
    proc = _train_cli('yamls/cpu/c4_zstd.yaml', 'variables.data_remote=oic://c4-bench/c4', capsys=capsys,
                      monkeypatch=monkeypatch)
    assert proc.returncode == 2
    assert "unsupported remote 'oic://c4-bench/c4'" in proc.stderr.strip().splitlines()[-1]


def test_top_level_typo_is_an_error(capsys, monkeypatch):
    proc = _train_cli('yamls/cpu/c4_zstd.yaml', 'max_duraton=5ba', capsys=capsys, monkeypatch=monkeypatch)
    assert proc.returncode == 2 and 'max_duraton' in proc.stderr.strip().splitlines()[-1]

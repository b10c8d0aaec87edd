"""Every recipe validates against llm-foundry's training config; train.py's checks fail early,
in one line, on the mistakes llm-foundry would let through or report late."""
import glob

import pytest

import train
from tests.helpers import ROOT, one_error_line, validate
from training.config import load_config

GPU_RECIPES = ['yamls/c4_zstd.yaml', 'yamls/c4_uncompressed.yaml']
ALL_RECIPES = sorted(glob.glob('yamls/**/*.yaml', root_dir=ROOT, recursive=True))


def test_recipe_set_is_complete():
    cpu = {'yamls/cpu/c4_zstd.yaml', 'yamls/cpu/c4_uncompressed.yaml'}
    assert set(GPU_RECIPES) | cpu <= set(ALL_RECIPES)


@pytest.mark.parametrize('recipe', ALL_RECIPES)
def test_recipe_validates_with_user_overrides(recipe, oci_store, tmp_path):
    # The overrides a user passes: their bucket (here the local OCI store), a shorter run.
    overrides = ['max_duration=20ba', 'variables.run_name=check']
    if recipe in GPU_RECIPES:
        overrides.append('variables.bucket=oci://c4-bench@local')
    cfg = load_config(str(ROOT / recipe), overrides)
    validate(cfg, recipe)
    assert cfg.max_duration == '20ba'
    names = set(cfg.callbacks)
    assert {'data_wait', 'cache_stats', 'throughput', 'run_report'} <= names, recipe


@pytest.mark.parametrize('recipe', GPU_RECIPES)
def test_gpu_recipes_are_fsdp_bf16_on_oci(recipe):
    cfg = load_config(str(ROOT / recipe), [])
    fsdp = cfg.fsdp_config
    assert fsdp.version == 2 and fsdp.reshard_after_forward is True  # FSDP2, FULL_SHARD
    assert fsdp.activation_checkpointing is True and fsdp.state_dict_type == 'sharded'
    assert cfg.precision == 'amp_bf16' and fsdp.mixed_precision == 'PURE'
    assert cfg.model.init_device == 'mixed'
    # the CPU twin shards the same way, less what needs CUDA
    twin = load_config(str(ROOT / recipe.replace('yamls/', 'yamls/cpu/')), []).fsdp_config
    assert {k: twin[k] for k in twin if k != 'mixed_precision'} == \
        {k: fsdp[k] for k in twin if k != 'mixed_precision'}
    assert cfg.train_loader.dataset.remote.startswith('oci://')
    assert cfg.save_folder.startswith('oci://') and cfg.autoresume is True
    for key in ('predownload', 'cache_limit', 'num_canonical_nodes', 'shuffle_algo',
                'download_timeout', 'download_retry'):
        assert key in cfg.train_loader.dataset, key


def test_the_two_variants_differ_only_where_the_data_differs():
    missing = object()  # a key present in one variant only is a difference too

    def flat(recipe):
        cfg = load_config(str(ROOT / recipe), [])
        from omegaconf import OmegaConf
        return OmegaConf.to_container(cfg, resolve=True)
    for a, b in [GPU_RECIPES, ['yamls/cpu/c4_zstd.yaml', 'yamls/cpu/c4_uncompressed.yaml']]:
        fa, fb = flat(a), flat(b)
        diff = {k for k in fa.keys() | fb.keys() if fa.get(k, missing) != fb.get(k, missing)}
        assert diff <= {'variables', 'run_name', 'train_loader', 'eval_loader', 'save_folder',
                        'callbacks'}, diff
        for loader in ('train_loader', 'eval_loader'):
            la, lb = fa[loader], fb[loader]
            assert {k for k in la.keys() | lb.keys()
                    if la.get(k, missing) != lb.get(k, missing)} <= {'dataset'}
            la, lb = la['dataset'], lb['dataset']
            assert {k for k in la.keys() | lb.keys()
                    if la.get(k, missing) != lb.get(k, missing)} <= {'remote', 'local'}
        ca, cb = fa['callbacks'], fb['callbacks']  # the model export follows save_folder
        assert {k for k in ca.keys() | cb.keys()
                if ca.get(k, missing) != cb.get(k, missing)} <= {'hf_checkpointer'}
        assert ca['hf_checkpointer']['save_folder'] == fa['save_folder']
        assert cb['hf_checkpointer']['save_folder'] == fb['save_folder']


@pytest.mark.parametrize('recipe', GPU_RECIPES + ['yamls/cpu/c4_zstd.yaml',
                                                    'yamls/cpu/c4_uncompressed.yaml'])
def test_recipes_evaluate_export_and_can_log_to_mlflow(recipe, tmp_path):
    """Held-out loss on the validation split, bounded; a Hugging Face model beside the
    checkpoints; windowed tokens/s and time remaining on the console; an MLflow block that
    validates once uncommented."""
    import yaml
    from omegaconf import OmegaConf
    cfg = load_config(str(ROOT / recipe), [])
    ev = cfg.eval_loader
    assert ev.dataset.split == 'validation' and ev.dataset.shuffle is False
    assert ev.dataset.remote == cfg.train_loader.dataset.remote
    assert str(cfg.eval_interval).endswith('ba') and 1 <= cfg.eval_subset_num_batches <= 32
    hf = cfg.callbacks.hf_checkpointer
    assert hf.save_folder == cfg.save_folder and hf.save_interval == '1dur'
    assert {'speed_monitor', 'runtime_estimator'} <= set(cfg.callbacks)
    text = (ROOT / recipe).read_text()
    block = text[text.index('# loggers:'):].splitlines()
    block = [line[2:] for line in block if line.startswith('# ') or line == '#']
    loggers = yaml.safe_load('\n'.join(block))['loggers']
    assert set(loggers['mlflow']) >= {'experiment_name', 'tracking_uri'}
    cfg.loggers = OmegaConf.create(loggers)
    cfg.loggers.mlflow.tracking_uri = f'file:{tmp_path}/mlruns'
    # (validate asks the bucket; here a local folder stands for it)
    if recipe in GPU_RECIPES:
        cfg.variables.bucket = str(tmp_path)
    else:
        cfg.variables.data_remote, cfg.save_folder = str(tmp_path), str(tmp_path / 'ckpt')
    validate(cfg, recipe)


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
    proc = _train_cli('yamls/cpu/c4_zstd.yaml', 'train_loader.dataset.cache_limt=1gb',
                      capsys=capsys, monkeypatch=monkeypatch)
    assert proc.returncode == 2
    assert one_error_line(proc.stderr) == (
        "error: yamls/cpu/c4_zstd.yaml: unknown key train_loader.dataset.cache_limt "
        "(did you mean 'cache_limit'?)")


def test_oci_remote_without_credentials_fails_in_one_line(tmp_path, capsys, monkeypatch):
    env = {'OCI_CONFIG_FILE': str(tmp_path / 'missing-config'), 'OCI_CLI_AUTH': 'api_key'}
    proc = _train_cli('yamls/cpu/c4_uncompressed.yaml',
                      # (not c4-bench: earlier runs in this process named it @local, and one
                      # bucket with two namespaces is refused before credentials are read)
                      'variables.data_remote=oci://other-bucket@ns/c4',
                      f'save_folder={tmp_path}/ckpt', env=env, capsys=capsys,
                      monkeypatch=monkeypatch)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert line.startswith('error: yamls/cpu/c4_uncompressed.yaml:') and 'missing-config' in line


def test_remote_scheme_typo_fails_in_one_line(capsys, monkeypatch):
    proc = _train_cli('yamls/cpu/c4_zstd.yaml', 'variables.data_remote=oic://c4-bench/c4',
                      capsys=capsys, monkeypatch=monkeypatch)
    assert proc.returncode == 2
    assert "unsupported remote 'oic://c4-bench/c4'" in one_error_line(proc.stderr)


def test_top_level_typo_is_an_error(capsys, monkeypatch):
    proc = _train_cli('yamls/cpu/c4_zstd.yaml', 'max_duraton=5ba', capsys=capsys,
                      monkeypatch=monkeypatch)
    assert proc.returncode == 2 and 'max_duraton' in one_error_line(proc.stderr)


@pytest.mark.parametrize('recipe', GPU_RECIPES)
def test_gpu_recipe_on_a_machine_without_gpus_fails_in_one_line(recipe, oci_store, capsys,
                                                                 monkeypatch):
    # Without the check: Composer refuses amp_bf16 on a CPU, or its meta init asks for CUDA,
    # in a traceback once the model is being built.
    import torch
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA GPUs')
    proc = _train_cli(recipe, 'variables.bucket=oci://c4-bench@local', capsys=capsys,
                      monkeypatch=monkeypatch)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert line == (f'error: {recipe}: precision amp_bf16 (Composer trains in fp32 on a CPU); '
                    f'model.init_device mixed need CUDA GPUs, and this machine has none (this '
                    f'recipe is sized for a BM.H100.8: `composer train.py` starts one process '
                    f'per GPU); on a CPU use yamls/cpu/{recipe[6:]}'), line


@pytest.mark.parametrize('override', ['variables.data_remote=gs://c4-bucket/c4',
                                      'save_folder=azure://container/ckpt',
                                      'variables.data_remote=hf://datasets/me/c4'])
def test_scheme_we_cannot_check_is_refused_in_one_line(override, tmp_path, capsys, monkeypatch):
    # Before: gs://, azure://, hf:// ... passed the checks unchecked and failed later on
    # missing credentials, in a traceback.
    proc = _train_cli('yamls/cpu/c4_zstd.yaml', f'variables.data_remote={tmp_path}', override,
                      capsys=capsys, monkeypatch=monkeypatch)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    scheme = override.split('=')[1].split('://')[0]
    assert f'{scheme}:// is not supported here' in line and override.split('=')[1] in line


@pytest.mark.parametrize('recipe', ALL_RECIPES)
def test_either_run_name_override_names_the_run_and_its_checkpoints(recipe):
    # Before: run_name=try2 renamed the run but save_folder still used variables.run_name,
    # so autoresume picked up the previous run's checkpoints.
    default = load_config(str(ROOT / recipe), [])
    checkpoints = default.get('save_folder') is not None  # (gpu_check's MPT saves none)
    if checkpoints:
        assert default.save_folder.endswith(f'/checkpoints/{default.variables.run_name}')
    for override in ('run_name=try2', 'variables.run_name=try2'):
        cfg = load_config(str(ROOT / recipe), [override])
        assert cfg.run_name == 'try2', override
        if checkpoints:
            assert cfg.save_folder.endswith('/checkpoints/try2'), (override, cfg.save_folder)


def test_cache_folder_that_cannot_be_created_fails_in_one_line(tmp_path, capsys, monkeypatch):
    # Before: a traceback (NotADirectoryError) once the dataset was being built.
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a folder')
    proc = _train_cli('yamls/cpu/c4_zstd.yaml', f'variables.data_remote={tmp_path}',
                      f'variables.data_local={blocker}/cache', f'save_folder={tmp_path}/ckpt',
                      capsys=capsys, monkeypatch=monkeypatch)
    assert proc.returncode == 2
    assert one_error_line(proc.stderr) == (
        f'error: yamls/cpu/c4_zstd.yaml: train_loader.dataset.local {str(blocker)+"/cache"!r} '
        f'cannot be created: {blocker} is a file, not a folder')

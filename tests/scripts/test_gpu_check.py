"""The GPU check is prepared here and runs in one call on a bare GPU machine: the archive it
carries fits and holds the training stack, and scripts/gpu_check/run.sh --dry-run runs the same
script, archive and commands with only the training replaced, so the call cannot fail on a
missing file or a wrong path."""
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from scripts.gpu_check import report as gpu_check_report
from tests.helpers import PY, ROOT, free_port, run

ARCHIVE = ROOT / 'build' / 'gpu' / 'gpu-site.tar.xz'
LIMIT = 60 * 1024 * 1024
# What the training path imports, by the top-level name it is imported as (besides torch and
# numpy, which the GPU machine has): found by running it on Python 3.12 with torch 2.11.
TRAINING_IMPORTS = ['composer', 'llmfoundry', 'streaming', 'transformers', 'tokenizers',
                    'huggingface_hub', 'datasets', 'pyarrow', 'pandas', 'torchvision', 'mlflow',
                    'mcli', 'databricks', 'google/auth', 'google/protobuf', 'cryptography',
                    'bs4', 'omegaconf', 'pkg_resources', 'zstandard', 'isal', 'orjson', 'dill',
                    'multiprocess', 'torchmetrics', 'accelerate', 'catalogue', 'xxhash',
                    'oci', 'circuitbreaker', 'jwt', 'crc32c']  # oci: checkpoints in oci://
NOT_CARRIED = ['torch', 'numpy', 'triton', 'nvidia']


# A few pins packed by the same script: a pure-Python one, two compiled for CPython 3.12, and
# the oci SDK that the script trims, with its pure-Python dependencies (the whole set, 107
# packages, takes minutes to pack; `make gpu-pack` checks it the same way).
SMALL_PINS = ['catalogue==2.0.10', 'xxhash==3.8.2', 'zstd==1.5.6.1', 'oci==2.189.0',
              'circuitbreaker==2.1.3', 'pyjwt==2.15.1']


@pytest.fixture(scope='module')
def pins_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('pins') / 'pins.txt'
    path.write_text('\n'.join(SMALL_PINS) + '\n')
    return path


@pytest.fixture(scope='module')
def archive(pins_file) -> Path:
    """scripts/gpu_check/pack.sh (what `make gpu-pack` runs) on the small pin set."""
    out = pins_file.parent / 'gpu-site.tar.xz'
    run(['bash', 'scripts/gpu_check/pack.sh', str(out)], timeout=900,
        env={'GPU_PINS': str(pins_file), 'PY': PY})
    assert out.is_file()
    return out


@pytest.fixture(scope='module')
def dry_run(archive, pins_file, tmp_path_factory):
    """`scripts/gpu_check/run.sh --dry-run` in a fresh folder: (its work folder, OUT, its
    output)."""
    tmp = tmp_path_factory.mktemp('gpu_check')
    work, out = tmp / 'work', tmp / 'out'
    env = {'PYTHON': PY, 'GPU_CHECK_DIR': str(work), 'OUT': str(out),
           'GPU_CHECK_SAMPLE_MB': '1', 'GPU_CHECK_ARCHIVE': str(archive),
           'GPU_PINS': str(pins_file),
           'GPU_CHECK_STORE_PORT': str(free_port())}  # not 9300: make store's, in other tests
    proc = run(['bash', 'scripts/gpu_check/run.sh', '--dry-run'], timeout=1200, env=env)
    return work, out, proc.stdout


def test_pins_cover_what_the_training_path_imports():
    """Every top-level name the training path imports comes from a distribution pinned in
    gpu-constraints.txt (by this machine's installed distributions); torch, numpy and the
    oci SDK are not carried."""
    from importlib.metadata import packages_distributions
    provides = packages_distributions()
    pinned = gpu_check_report.pins(ROOT / 'gpu-constraints.txt')
    for name in TRAINING_IMPORTS:
        dists = {d.lower().replace('_', '-') for d in provides.get(name.split('/')[-1], [])
                 + provides.get(name.split('/')[0], [])}
        assert dists & set(pinned), (name, dists)
    for name in NOT_CARRIED:
        assert not any(p == name or p.startswith(f'{name}-') for p in pinned), name


@pytest.mark.slow
def test_pack_holds_every_pin_for_python_312_and_our_entry_points(archive, pins_file, dry_run):
    assert archive.stat().st_size <= LIMIT, f'{archive.stat().st_size / 2**20:.1f} MiB'
    site = dry_run[0] / 'site'  # the archive as the script unpacked it
    tops = {p.name for p in site.iterdir()}
    assert any(p.startswith('zstd.cpython-312-') for p in tops)  # built for the GPU machine
    assert {'catalogue', 'xxhash'} <= tops
    for pin, version in gpu_check_report.pins(pins_file).items():
        assert any(re.fullmatch(rf'{re.escape(pin)}-{re.escape(version)}\.dist-info',
                                t.lower().replace('_', '-')) for t in tops), f'{pin}=={version}'
    text = next(site.glob('oci_c4_recipes-*.dist-info')).joinpath('entry_points.txt').read_text()
    for cb in gpu_check_report.CALLBACKS:
        assert re.search(rf'^{cb}=callbacks\.', text, re.M), cb
    assert not list(site.rglob('tests')) and not list(site.rglob('*.pyc'))
    # the oci SDK without its other 170+ service clients
    assert sorted(p.parent.name for p in (site / 'oci').glob('*/models')) == \
        ['dns', 'identity', 'object_storage', 'work_requests']


@pytest.mark.slow
def test_trimmed_oci_sdk_carries_checkpoints_to_the_store(dry_run, oci_store):
    """Our client, through the object store Composer uses for oci://, with the oci SDK from
    the archive as the script unpacked it (pure Python: importable here too)."""
    site = dry_run[0] / 'site'
    program = '''
import os, sys, tempfile
import oci
assert oci.__file__.startswith(sys.argv[1]), oci.__file__
from training import checkpoints
checkpoints.install(['oci://c4-bench@local/ckpt'])
store = checkpoints.store_for('oci://c4-bench@local/ckpt')
with tempfile.TemporaryDirectory() as tmp:
    data = os.urandom(1 << 20)
    open(f'{tmp}/a', 'wb').write(data)
    store.upload_object('ckpt/a', f'{tmp}/a')
    store.download_object('ckpt/a', f'{tmp}/b')
    assert open(f'{tmp}/b', 'rb').read() == data
    print('ok', type(store).__name__, store.get_object_size('ckpt/a'))
'''
    env = {**os.environ, 'PYTHONPATH': f'{site}{os.pathsep}{ROOT}'}
    proc = subprocess.run([PY, '-c', program, str(site)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == 'ok OCIStore 1048576', proc.stdout + proc.stderr[-3000:]


@pytest.mark.slow
def test_pack_over_its_limit_keeps_nothing(tmp_path):
    out = tmp_path / 'gpu-site.tar.xz'
    pins_file = tmp_path / 'pins.txt'
    pins_file.write_text(SMALL_PINS[0] + '\n')  # one small package is enough to be over 0
    proc = subprocess.run(['bash', 'scripts/gpu_check/pack.sh', str(out)], cwd=ROOT,
                          env={**os.environ, 'GPU_PINS': str(pins_file), 'PY': PY,
                               'GPU_PACK_LIMIT_MIB': '0'},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1
    assert re.search(rf'gpu-pack: error: {re.escape(str(out))} would be \d+ MiB, over 0 MiB',
                     proc.stderr), proc.stderr[-2000:]
    assert not out.exists() and not Path(f'{out}.tmp').exists()


RUNS = {  # run name -> (recipe, what its overrides must say)
    'qwen2_fsdp_to_30ba': ('yamls/gpu_check/qwen2_fsdp.yaml',
                           {'max_duration': '30ba', 'save_interval': '20ba',
                            'model.config_overrides.num_hidden_layers': '8'}),
    'qwen2_resume_from_20ba': ('yamls/gpu_check/qwen2_fsdp.yaml',
                               {'max_duration': '30ba', 'save_folder': 'null',
                                'autoresume': 'false'}),
    'mpt_1b_mb8': ('yamls/gpu_check/mpt_1b.yaml', {'device_train_microbatch_size': '8'}),
    'mpt_1b_mb12': ('yamls/gpu_check/mpt_1b.yaml', {'device_train_microbatch_size': '12'}),
    'mpt_1b_mb4': ('yamls/gpu_check/mpt_1b.yaml', {'device_train_microbatch_size': '4'}),
    'qwen2_28l_fsdp2': ('yamls/gpu_check/qwen2_fsdp.yaml',
                        {'fsdp_config.activation_checkpointing': 'false', 'save_folder': 'null',
                         'fsdp_config.version': '2'}),
    'qwen2_28l_fsdp1': ('yamls/gpu_check/qwen2_fsdp.yaml',
                        {'fsdp_config.activation_checkpointing': 'false', 'save_folder': 'null',
                         'fsdp_config.version': '1'}),
}


@pytest.mark.slow
def test_dry_run_runs_the_device_call_but_the_training(dry_run, pins_file):
    work, out, log = dry_run
    # the archive, unpacked where PYTHONPATH will point, with every pin and our entry points
    assert gpu_check_report.check_site(work / 'site', need_gpu=False, pins_path=pins_file) == []
    # the data the recipes read
    assert (work / 'data' / 'mds' / 'train' / 'index.json').is_file()
    assert (work / 'data' / 'tokenizer' / 'tokenizer.json').is_file()
    # the local OCI store was started, probed through the object store Composer builds for
    # oci:// (ours: training.checkpoints), and stopped at the end; the checkpoints go there
    assert 'local OCI store in' in log
    assert re.search(r'checkpoints to oci://gpu-check@local/checkpoints through '
                     r'training\.checkpoints\.object_store\.OCIStore: 1 MiB up and back', log), \
        log[-3000:]
    ckpt = 'oci://gpu-check@local/checkpoints'
    assert not gpu_check_report_running(work / 'store')
    # the six training commands, in order, each checked by train.py with its own overrides
    cmds = [shlex.split(line.split('would run: ', 1)[1]) for line in log.splitlines()
            if 'dry run: would run: ' in line]
    assert len(cmds) == len(RUNS)
    assert log.count("with the run's overrides passes train.py's checks") == len(RUNS)
    for cmd, (name, (recipe, says)) in zip(cmds, RUNS.items()):
        assert cmd[1:7] == ['-m', 'composer.cli', '-n', '1', 'train.py', recipe]
        over = dict(a.split('=', 1) for a in cmd[7:])
        assert over['callbacks.run_report.folder'] == str(work / 'runs' / name)
        for key in ('variables.data_remote', 'variables.tokenizer'):
            assert Path(over[key]).is_dir(), (key, over[key])
        assert int(over['device_train_microbatch_size']) >= 1  # never `auto` (torch 2.11 FSDP)
        for key, value in says.items():
            assert over[key] == value, (name, key, over.get(key))
        if name == 'qwen2_fsdp_to_30ba':
            assert over['save_folder'] == f'{ckpt}/gpu-check-qwen2'
        if name == 'qwen2_resume_from_20ba':
            assert over['load_path'] == f'{ckpt}/gpu-check-qwen2/ep0-ba20'
    # the table comes last, and the log and table are in OUT for the call to bring back
    last = log.rstrip().splitlines()
    assert last[-1].startswith('| 8x H100 80GB (llm-foundry, published) | MPT-7B')
    assert last[-2].startswith('| 8x H100 80GB (llm-foundry, published) | MPT-1B')
    assert (out / 'gpu_check.log').is_file() and (out / 'summary.md').is_file()
    rows = json.loads((out / 'summary.json').read_text())['runs']
    assert [r['run'] for r in rows] == list(RUNS)
    assert [r['status'] for r in rows] == ['dry run'] * len(RUNS)


def gpu_check_report_running(store_dir: Path) -> bool:
    from local_services import background
    return background.running(store_dir, 'store') is not None


def test_missing_archive_fails_in_one_line_before_any_work(tmp_path):
    env = {**os.environ, 'PYTHON': PY, 'GPU_CHECK_DIR': str(tmp_path / 'w'),
           'GPU_CHECK_ARCHIVE': str(tmp_path / 'nope.tar.xz')}
    proc = subprocess.run(['bash', 'scripts/gpu_check/run.sh'], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f'gpu_check: error: {tmp_path}/nope.tar.xz is missing '
        '(the archive: make gpu-pack here, and carry build/gpu)']
    assert not (tmp_path / 'w').exists()


def test_check_site_names_each_missing_or_wrong_pin(tmp_path):
    pins = gpu_check_report.pins()
    for i, (name, version) in enumerate(pins.items()):
        if i in (0, 1):  # leave out the first; give the second a wrong version
            version = '0.0.1' if i == 1 else None
        if version:
            info = tmp_path / f'{name.replace("-", "_")}-{version}.dist-info'
            info.mkdir()
            (info / 'METADATA').write_text(f'Name: {name}\nVersion: {version}\n')
    problems = gpu_check_report.check_site(tmp_path, need_gpu=False)
    first, second = list(pins.items())[:2]
    assert problems[:2] == [f'{first[0]}=={first[1]} not in {tmp_path} (found None)',
                            f'{second[0]}=={second[1]} not in {tmp_path} (found 0.0.1)']
    assert 'entry points' in problems[2] and len(problems) == 3


def test_table_shows_each_run_beside_the_published_figure(tmp_path):
    runs = tmp_path / 'runs'
    (runs / 'mpt_1b_mb8').mkdir(parents=True)
    (runs / 'mpt_1b_mb8' / 'run_metrics.json').write_text(json.dumps({
        'status': 'completed', 'device': 'NVIDIA H100 80GB HBM3', 'steps': 40,
        'throughput_tokens_per_s_per_device': 31234.6, 'mfu': 0.2876,
        'data_wait_fraction': 0.0123, 'time_to_first_batch_s': 1.234,
        'peak_gpu_memory_gib': 55.51}))
    (runs / 'mpt_1b_mb8' / 'steps.jsonl').write_text('{"step": 1}\n')
    text, rows = gpu_check_report.table(runs, tmp_path / 'out', dry_run=False)
    lines = text.splitlines()
    mb8 = lines[2 + list(gpu_check_report.RUNS).index('mpt_1b_mb8')]
    assert mb8 == ('| NVIDIA H100 80GB HBM3 | MPT-1B shape, SDPA, no act. ckpt, microbatch 8 '
                   '| completed | - | 40 | 31,235 | 28.8% | 1.2% | 1.23 | 55.5 |')
    assert lines[2].split(' | ')[2:5] == ['no report', '-', '-']  # the first Qwen2 run: none
    assert lines[-2].split(' | ')[5:7] == ['45,455', '41.8%']
    assert lines[-1].split(' | ')[5:7] == ['10,643', '46.4%']
    assert (tmp_path / 'out' / 'mpt_1b_mb8' / 'steps.jsonl').read_text() == '{"step": 1}\n'


CONSOLE = '''[batch=20/30]:
\t Train time/batch: 19
\t Train loss/train/total: 9.8125
[batch=21/30]:
\t Train loss/train/total: {l21}
[batch=22/30]:
\t Train loss/train/total: {l22}
'''


def test_notes_measure_the_checkpoint_in_the_store_and_compare_losses(oci_store, tmp_path):
    """The lines above the table, from a real store's request log: a checkpoint folder written
    through the object store Composer uses for oci:// (ours), read back, and two runs' console
    logs: the uninterrupted one and the resumed one."""
    from training import checkpoints
    url = 'oci://c4-bench@local/checkpoints'
    checkpoints.install([url])
    store = checkpoints.store_for(url)
    files = {'.metadata': 3000, '__0_0.distcp': 3_000_000}
    for name, size in files.items():
        (tmp_path / name).write_bytes(os.urandom(size))
        store.upload_object(f'checkpoints/gpu-check-qwen2/ep0-ba20/{name}', str(tmp_path / name))
    (tmp_path / 'x').write_bytes(b'x')
    store.upload_object('checkpoints/elsewhere/ep0-ba20/x', str(tmp_path / 'x'))  # not counted
    store.download_object('checkpoints/gpu-check-qwen2/ep0-ba20/__0_0.distcp',
                          str(tmp_path / 'back'))
    logs = tmp_path / 'logs'
    logs.mkdir()
    (logs / 'qwen2_fsdp_to_30ba.log').write_text(
        'INFO: composer.distributed.dist_strategy: FSDP: Using sharding_strategy='
        'ShardingStrategy.FULL_SHARD\n' + CONSOLE.format(l21='9.7001', l22='9.6500'))
    (logs / 'qwen2_resume_from_20ba.log').write_text(CONSOLE.format(l21='9.7001',
                                                                    l22='9.6504'))
    lines = gpu_check_report.notes(logs, oci_store.log_path, url)
    assert len(lines) == 3, lines
    saved = re.fullmatch(rf'checkpoint {url}/gpu-check-qwen2/ep0-ba20: a distributed checkpoint '
                         r'\(\.metadata, \.distcp\), 2 files, 0\.00 GB; saved in ([\d.]+) s '
                         r'\(([\d,]+) MB/s\)', lines[0])
    assert saved, lines[0]
    assert lines[1].startswith(f'checkpoint {url}/gpu-check-qwen2/ep0-ba20: loaded 0.00 GB in ')
    io = gpu_check_report.checkpoint_io(oci_store.log_path, 'checkpoints/gpu-check-qwen2')
    assert io['ep0-ba20']['write']['bytes'] == sum(files.values())
    assert io['ep0-ba20']['read']['bytes'] == files['__0_0.distcp']
    assert lines[2] == ("resume: losses of steps 21-22 equal to the uninterrupted run's (max "
                        "|difference| 0.0004, tolerance 0.001); first step 21: 9.7001 vs 9.7001")
    assert gpu_check_report.fsdp_seen(logs / 'qwen2_fsdp_to_30ba.log') == 'on (FULL_SHARD)'
    with open(logs / 'qwen2_fsdp_to_30ba.log', 'a') as f:  # torch's words at world size 1
        f.write('UserWarning: FSDP is switching to use `NO_SHARD` instead of '
                'ShardingStrategy.FULL_SHARD since the world size is 1.\n')
    assert gpu_check_report.fsdp_seen(logs / 'qwen2_fsdp_to_30ba.log') == \
        'on (FULL_SHARD -> NO_SHARD)'
    assert gpu_check_report.fsdp_seen(logs / 'qwen2_resume_from_20ba.log') == '-'
    (logs / 'fsdp2.log').write_text('INFO: composer.distributed.prepare_distributed: Prepare '
                                    'FSDP2 took 0.61 seconds\n')
    assert gpu_check_report.fsdp_seen(logs / 'fsdp2.log') == 'FSDP2'

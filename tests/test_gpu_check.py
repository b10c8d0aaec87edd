"""The GPU check is prepared here and runs in one call on a bare GPU machine: the archive it
carries fits and holds the training stack, and scripts/gpu_check.sh --dry-run runs the same
script, archive and commands with only the training replaced, so the call cannot fail on a
missing file or a wrong path."""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PY, ROOT, run

sys.path.insert(0, str(ROOT / 'scripts'))
import gpu_check_report  # noqa: E402

ARCHIVE = ROOT / 'build' / 'gpu' / 'gpu-site.tar.xz'
LIMIT = 60 * 1024 * 1024
# What the training path imports, by the top-level name it is imported as (besides torch and
# numpy, which the GPU machine has): found by running it on Python 3.12 with torch 2.11.
TRAINING_IMPORTS = ['composer', 'llmfoundry', 'streaming', 'transformers', 'tokenizers',
                    'huggingface_hub', 'datasets', 'pyarrow', 'pandas', 'torchvision', 'mlflow',
                    'mcli', 'databricks', 'google/auth', 'google/protobuf', 'cryptography',
                    'bs4', 'omegaconf', 'pkg_resources', 'zstandard', 'isal', 'orjson', 'dill',
                    'multiprocess', 'torchmetrics', 'accelerate', 'catalogue', 'xxhash']
NOT_CARRIED = ['torch', 'numpy', 'oci', 'triton', 'nvidia']


# A few pins packed by the same script: a pure-Python one, two compiled for CPython 3.12 (the
# whole set, 102 packages, takes minutes to pack; `make gpu-pack` checks it the same way).
SMALL_PINS = ['catalogue==2.0.10', 'xxhash==3.8.2', 'zstd==1.5.6.1']


@pytest.fixture(scope='module')
def pins_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('pins') / 'pins.txt'
    path.write_text('\n'.join(SMALL_PINS) + '\n')
    return path


@pytest.fixture(scope='module')
def archive(pins_file) -> Path:
    """scripts/gpu_pack.sh (what `make gpu-pack` runs) on the small pin set."""
    out = pins_file.parent / 'gpu-site.tar.xz'
    run(['bash', 'scripts/gpu_pack.sh', str(out)], timeout=900,
        env={'GPU_PINS': str(pins_file), 'PY': PY})
    assert out.is_file()
    return out


@pytest.fixture(scope='module')
def dry_run(archive, pins_file, tmp_path_factory):
    """`scripts/gpu_check.sh --dry-run` in a fresh folder: (its work folder, OUT, its output)."""
    tmp = tmp_path_factory.mktemp('gpu_check')
    work, out = tmp / 'work', tmp / 'out'
    env = {'PYTHON': PY, 'GPU_CHECK_DIR': str(work), 'OUT': str(out),
           'GPU_CHECK_SAMPLE_MB': '1', 'GPU_CHECK_ARCHIVE': str(archive),
           'GPU_PINS': str(pins_file)}
    proc = run(['bash', 'scripts/gpu_check.sh', '--dry-run'], timeout=1200, env=env)
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


@pytest.mark.slow
def test_pack_over_its_limit_keeps_nothing(pins_file, tmp_path):
    out = tmp_path / 'gpu-site.tar.xz'
    proc = subprocess.run(['bash', 'scripts/gpu_pack.sh', str(out)], cwd=ROOT,
                          env={**os.environ, 'GPU_PINS': str(pins_file), 'PY': PY,
                               'GPU_PACK_LIMIT_MIB': '0'},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1
    assert re.search(rf'gpu-pack: error: {re.escape(str(out))} would be \d+ MiB, over 0 MiB',
                     proc.stderr), proc.stderr[-2000:]
    assert not out.exists() and not Path(f'{out}.tmp').exists()


@pytest.mark.slow
def test_dry_run_runs_the_device_call_but_the_training(dry_run, pins_file):
    work, out, log = dry_run
    # the archive, unpacked where PYTHONPATH will point, with every pin and our entry points
    assert gpu_check_report.check_site(work / 'site', need_gpu=False, pins_path=pins_file) == []
    # the data the recipes read
    assert (work / 'data' / 'mds' / 'train' / 'index.json').is_file()
    assert (work / 'data' / 'tokenizer' / 'tokenizer.json').is_file()
    # the three training commands, each checked by train.py with its own overrides
    cmds = [shlex.split(line.split('would run: ', 1)[1]) for line in log.splitlines()
            if 'dry run: would run: ' in line]
    assert [c[6] for c in cmds] == ['yamls/gpu_check/mpt_1b.yaml',
                                    'yamls/gpu_check/qwen2_fsdp.yaml',
                                    'yamls/gpu_check/qwen2_fsdp.yaml']
    assert log.count("with the run's overrides passes train.py's checks") == 3
    for cmd in cmds:
        assert cmd[1:6] == ['-m', 'composer.cli', '-n', '1', 'train.py']
        over = dict(a.split('=', 1) for a in cmd[7:])
        for key in ('variables.data_remote', 'variables.tokenizer'):
            assert Path(over[key]).is_dir(), (key, over[key])
        assert int(over['device_train_microbatch_size']) >= 1  # never `auto` (torch 2.11 FSDP)
    assert [dict(a.split('=', 1) for a in c[7:]).get('max_duration') for c in cmds] == \
        [None, '20ba', '30ba']
    # the table comes last, and the log and table are in OUT for the call to bring back
    assert log.rstrip().splitlines()[-1].startswith('| 8x H100 80GB (llm-foundry, published)')
    assert (out / 'gpu_check.log').is_file() and (out / 'summary.md').is_file()
    rows = json.loads((out / 'summary.json').read_text())
    assert [r['status'] for r in rows] == ['dry run'] * 3


def test_missing_archive_fails_in_one_line_before_any_work(tmp_path):
    env = {**os.environ, 'PYTHON': PY, 'GPU_CHECK_DIR': str(tmp_path / 'w'),
           'GPU_CHECK_ARCHIVE': str(tmp_path / 'nope.tar.xz')}
    proc = subprocess.run(['bash', 'scripts/gpu_check.sh'], cwd=ROOT, env=env,
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
    (runs / 'mpt_1b').mkdir(parents=True)
    (runs / 'mpt_1b' / 'run_metrics.json').write_text(json.dumps({
        'status': 'completed', 'device': 'NVIDIA H100 80GB HBM3', 'steps': 40,
        'throughput_tokens_per_s_per_device': 31234.6, 'mfu': 0.2876,
        'data_wait_fraction': 0.0123, 'time_to_first_batch_s': 1.234,
        'peak_gpu_memory_gib': 55.51}))
    (runs / 'mpt_1b' / 'steps.jsonl').write_text('{"step": 1}\n')
    text, rows = gpu_check_report.table(runs, tmp_path / 'out', dry_run=False)
    lines = text.splitlines()
    assert lines[2] == ('| NVIDIA H100 80GB HBM3 | MPT-1B shape, amp_bf16, torch attention '
                        '| completed | 40 | 31,235 | 28.8% | 1.2% | 1.23 | 55.5 |')
    assert lines[3].split(' | ')[2:4] == ['no report', '-']  # qwen2 run 1: nothing ran
    assert lines[-1].split(' | ')[4:6] == ['45,455', '41.8%']
    assert (tmp_path / 'out' / 'mpt_1b' / 'steps.jsonl').read_text() == '{"step": 1}\n'

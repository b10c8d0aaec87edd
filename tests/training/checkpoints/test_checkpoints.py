"""Checkpoints in oci:// through our client (training.checkpoints), end to end: the CPU recipe
saving to the local OCI store, killed with SIGKILL during training and again while a checkpoint
is being uploaded, resumes each time from the last complete checkpoint in the bucket with the
uninterrupted run's losses, step for step; the bucket keeps save_num_checkpoints_to_keep; a
wrong key, a missing bucket and an unreachable endpoint fail the pre-flight check in one line.

Witnesses are the store's own: its files (the `latest` pointer, bodies being received), its
listing and its request log, never our client."""
import io
import json
import os
import re
import signal
import subprocess
import time
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from local_services.oci_store import Knobs, start_store
from local_services.oci_store.storage import Storage
from tests.helpers import COMPOSER, ROOT, free_port, other_key_config

RECIPE = 'yamls/cpu/c4_zstd.yaml'
BUCKET, STEPS, EVERY = 'c4-bench', 12, 4
# Losses of the resumed runs against the uninterrupted one: fp32 on the CPU, same data order.
TOLERANCE = 1e-6


def command(tmp: Path, mds: Path, tokenizer: Path, name: str, store_dir: Path,
            delay_s: float = 0.0) -> list:
    saved = store_dir / 'buckets' / BUCKET / 'ckpt' / name / 'ep0-ba{batch}-rank0.pt'
    return [COMPOSER, str(ROOT / 'train.py'), str(ROOT / RECIPE),
            f'variables.data_remote={mds}', f'variables.data_local={tmp}/cache-{name}',
            f'tokenizer.name={tokenizer}', f'variables.run_name={name}',
            f'save_folder=oci://{BUCKET}@local/ckpt/{{run_name}}', f'save_interval={EVERY}ba',
            'save_num_checkpoints_to_keep=1', f'max_duration={STEPS}ba',
            'callbacks.bucket_keep.pointer_poll_s=0.5',
            f'callbacks.run_report.folder={tmp}/runs/{name}',
            f'code_paths=[{ROOT}/tests/programs/loss_log.py]',
            f'callbacks.loss_log.path={tmp}/loss-{name}.jsonl',
            f'callbacks.loss_log.delay_s={delay_s}',
            f"callbacks.loss_log.hold_for='{saved}'", f'callbacks.loss_log.every={EVERY}']


def losses(tmp: Path, name: str) -> list[dict]:
    path = tmp / f'loss-{name}.jsonl'
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def pointer(store, name: str):
    """The batch of the checkpoint the bucket's `latest` pointer names, read from its file."""
    path = store.data_dir / 'buckets' / BUCKET / 'ckpt' / name / 'latest-rank0.pt.symlink'
    try:
        m = re.search(r'-ba(\d+)-', path.read_text())
    except FileNotFoundError:
        return None
    return int(m.group(1)) if m else None


def listing(store, name: str) -> list[str]:
    """The checkpoints in the store's own listing of the run's checkpoint folder (not the run
    report or the Hugging Face export that the recipe also writes there)."""
    found = Storage(store.data_dir).list_objects(BUCKET, f'ckpt/{name}/')
    names = [o['name'][len(f'ckpt/{name}/'):] for o in found['objects']]
    return [n for n in names if '/' not in n and re.search(r'\.pt(\.symlink)?$', n)]


def receiving(store) -> bool:
    """A large request body is arriving in the store (a checkpoint's PUT under way)."""
    return any(p.stat().st_size > 4096 for p in (store.data_dir / 'tmp').iterdir())


def start(cmd, cwd: Path, log: Path):
    return subprocess.Popen(cmd, cwd=cwd, stdout=open(log, 'w'), stderr=subprocess.STDOUT,
                            start_new_session=True)


def kill_when(proc, ready, log: Path, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f'ended before {what}:\n{log.read_text()[-3000:]}'
        assert time.monotonic() < deadline, f'no {what} in {timeout} s'
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher, the rank and its upload processes
    proc.wait()


def finish(cmd, cwd: Path, log: Path) -> str:
    proc = start(cmd, cwd, log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-5000:]
    return log.read_text()


def same_losses(got: list[dict], ref: dict[int, float]) -> float:
    worst = 0.0
    for row in got:
        want = ref[row['batch']]
        worst = max(worst, abs(row['loss'] - want))
        assert abs(row['loss'] - want) <= TOLERANCE * max(1.0, abs(want)), (row, want)
    return worst


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(900)  # four trainings in a row: 447 s in one CI run, near the usual 600
def test_killed_twice_resumes_from_the_bucket_with_the_same_losses(mds_zstd, tokenizer_dir,
                                                                   tmp_path, monkeypatch):
    data = tmp_path / 'store'
    store = start_store(data, buckets=[BUCKET])
    port = store.port
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    work = tmp_path / 'work'  # the runs' working folder: Composer's autoresume copies go here
    work.mkdir()
    try:
        # The reference: uninterrupted. Keep-N deletes an older checkpoint only after the
        # pointer has moved to a newer, complete one.
        finish(command(tmp_path, mds_zstd, tokenizer_dir, 'ref', data), work, tmp_path / 'ref.log')
        ref = {r['batch']: r['loss'] for r in losses(tmp_path, 'ref')}
        assert sorted(ref) == list(range(1, STEPS + 1))
        assert listing(store, 'ref') == [f'ep0-ba{STEPS}-rank0.pt', 'latest-rank0.pt.symlink']
        log = store.requests()
        puts = [i for i, r in enumerate(log) if r['method'] == 'PUT' and r['status'] == 200]
        for batch in range(EVERY, STEPS, EVERY):
            gone = [i for i, r in enumerate(log) if r['method'] == 'DELETE'
                    and r['path'].endswith(f'/ckpt/ref/ep0-ba{batch}-rank0.pt')]
            newer = [i for i in puts if log[i]['path'].endswith(
                f'/ckpt/ref/ep0-ba{batch + EVERY}-rank0.pt')]
            moved = [i for i in puts if log[i]['path'].endswith('/ckpt/ref/latest-rank0.pt'
                                                                 '.symlink')]
            assert len(gone) == 1 and newer and newer[0] < gone[0], (batch, gone, newer)
            assert any(newer[0] < i < gone[0] for i in moved), 'deleted before the pointer moved'

        # 1. Killed during training, once the pointer names the first checkpoint (loss_log
        # paces the run: the step after a save waits for it in the bucket, see its docstring).
        cmd = command(tmp_path, mds_zstd, tokenizer_dir, 'run', data, delay_s=0.5)
        first = start(cmd, work, tmp_path / 'run1.log')
        kill_when(first, lambda: pointer(store, 'run') is not None, tmp_path / 'run1.log',
                  'a checkpoint in the bucket')
        run1 = losses(tmp_path, 'run')
        assert pointer(store, 'run') == EVERY and run1[-1]['batch'] < 2 * EVERY, run1[-1]

        # 2. Resumed from it; killed while the last checkpoint is being uploaded (the store
        # takes that one PUT at 0.5 MB/s: ~9 s for its 4.7 MB).
        store.stop()
        store = start_store(data, port=port, knobs=Knobs(
            bandwidth_mbps=0.5, shape_match=rf'^PUT .*/ckpt/run/ep0-ba{STEPS}-rank0\.pt$'))
        second = start(cmd, work, tmp_path / 'run2.log')
        # (once the pointer names ba8, the one body the store can be receiving is ba12's)
        kill_when(second, lambda: pointer(store, 'run') == 2 * EVERY and receiving(store),
                  tmp_path / 'run2.log', 'upload of the last checkpoint')
        run2 = losses(tmp_path, 'run')[len(run1):]
        assert run2[0]['batch'] == EVERY + 1, 'did not resume from the complete checkpoint'
        assert run2[-1]['batch'] == STEPS  # it had trained to the end; only the upload was left
        # the partial upload is no object; the pointer names the whole checkpoint before it
        assert pointer(store, 'run') == 2 * EVERY
        assert f'ep0-ba{STEPS}-rank0.pt' not in listing(store, 'run')
        stale = work / 'oci:' / f'{BUCKET}@local' / 'ckpt' / 'run' / 'latest-rank0.pt'
        assert stale.exists()  # Composer's copy of the checkpoint run 2 resumed from

        # 3. The same command again, on a fast store: Composer's copy is removed, so it
        # resumes from the checkpoint the bucket's pointer names, and finishes.
        store.stop()
        store = start_store(data, port=port)
        out = finish(cmd, work, tmp_path / 'run3.log')
        assert f'removed {stale}' in out
        run3 = losses(tmp_path, 'run')[len(run1) + len(run2):]
        assert [r['batch'] for r in run3] == list(range(2 * EVERY + 1, STEPS + 1))
        worst = same_losses(run1 + run2 + run3, ref)
        print(f'largest loss difference from the uninterrupted run: {worst:.3g}')
        assert listing(store, 'run') == [f'ep0-ba{STEPS}-rank0.pt', 'latest-rank0.pt.symlink']
        assert pointer(store, 'run') == STEPS
    finally:
        store.stop()


# ----------------------------------------------------------------------------- pre-flight

def _train_main(args: list[str]) -> tuple[int, list[str]]:
    import train
    err = io.StringIO()
    with redirect_stderr(err):
        rc = train.main(args)
    return rc, err.getvalue().strip().splitlines()


def test_preflight_fails_in_one_line_with_the_store_that_saves(oci_store, mds_zstd,
                                                               tokenizer_dir, tmp_path,
                                                               monkeypatch):
    args = [RECIPE, f'variables.data_remote={mds_zstd}', f'variables.data_local={tmp_path}/c',
            f'tokenizer.name={tokenizer_dir}',
            'variables.run_name=pre', 'save_folder=oci://c4-bench@local/ckpt/{run_name}']

    def fails(*extra) -> str:
        oci_store.clear_log()
        rc, lines = _train_main([*args, *extra])
        assert rc == 2 and len(lines) == 1 and lines[0].startswith(f'error: {RECIPE}: '), lines
        assert not (tmp_path / 'c').exists()
        return lines[0]

    line = fails('save_folder=oci://c4-bnech@local/ckpt/{run_name}')
    assert "bucket 'c4-bnech' not found in namespace 'local'" in line
    # the request is the checkpoint store's: a listing in the checkpoint folder
    assert [(r['method'], r['path'], r['query'].get('prefix')) for r in oci_store.requests()] \
        == [('GET', '/n/local/b/c4-bnech/o', 'ckpt/pre/.probe-')]

    wrong = other_key_config(tmp_path, Path(oci_store.env()['OCI_CONFIG_FILE']))
    monkeypatch.setenv('OCI_CONFIG_FILE', str(wrong))
    line = fails()
    assert '401 NotAuthenticated' in line and str(wrong) in line
    monkeypatch.setenv('OCI_CONFIG_FILE', oci_store.env()['OCI_CONFIG_FILE'])

    port = free_port()
    monkeypatch.setenv('OCI_OBJECT_STORAGE_ENDPOINT', f'http://127.0.0.1:{port}')
    monkeypatch.setenv('OCI_TRANSPORT_ATTEMPTS', '2')
    line = fails()
    assert f'http://127.0.0.1:{port} unreachable after 2 attempts' in line

    # nothing was written to the bucket by any of them
    assert not (oci_store.data_dir / 'buckets' / 'c4-bench' / 'ckpt').exists()


@pytest.fixture(autouse=True)
def _namespaces(monkeypatch):
    monkeypatch.setenv('OCI_BUCKET_NAMESPACES', '')  # install() sets it: restored after

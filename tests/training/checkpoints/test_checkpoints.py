"""Sharded checkpoints in oci:// through our client (training.checkpoints), end to end, on the
path the GPU recipes take: the CPU twin with FSDP (Composer's FSDP2 over gloo) on 2 and on 4
processes, each rank writing its own shard (`ep0-baN/__<rank>_0.distcp`, rank 0 `.metadata`)
into the local OCI store, Composer moving `latest-sharded-rank0.symlink`, bucket_keep keeping
one checkpoint folder, autoresume resharding on load.

One run of 12 steps, a checkpoint every 4, killed with SIGKILL (the launcher, its ranks and
their uploader processes) and resumed twice, the same command each time but for the process
count. Each launch is killed while its last checkpoint's shard of one rank is arriving in the
store (that PUT slowed), so it has trained past the checkpoint it is resumed from: the steps
the next launch trains again are its reference, on another process count.

  K1  2 processes: trains 1-8, killed during ba8's upload (the pointer names ba4);
  K2  4 processes: resumes from ba4 (2 shards loaded by 4 ranks), not from the partial ba8,
      trains 5-12 and is killed during ba12's upload (the pointer names its ba8);
  K3  2 processes: resumes from ba8 (4 shards loaded by 2 ranks), trains 9-12, finishes.

Witnesses are the store's own (its files, listing and request log) and a test callback's
(tests/programs/step_log.py: the logged loss, every rank's samples, every rank's parameters)."""
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
from tests.helpers import COMPOSER, ROOT, free_port, global_batches, other_key_config

RECIPE = 'yamls/cpu/c4_zstd.yaml'
BUCKET, STEPS, EVERY = 'c4-bench', 12, 4
POINTER = 'latest-sharded-rank0.symlink'
SLOW_MBPS = 0.25  # a rank's shard (1-8 MB) arrives over seconds: the test kills the run then
# The loss at each step retrained on another process count against the first training of that
# step, as the logger reports it (mean over ranks): the ranks' gradients are summed in another
# order (measured: up to 1.1e-7 relative).
OTHER = 1e-4


def command(tmp: Path, mds: Path, tokenizer: Path, name: str, store_dir: Path,
            procs: int) -> list:
    saved = store_dir / 'buckets' / BUCKET / 'ckpt' / name / 'ep0-ba{batch}'
    # Every run starts its uploader processes with the run (bucket_keep's default): spawned at
    # the first save instead, as Composer does, the pointer check of ba4 was still importing
    # when ba8 was in, on a quiet machine, and the pointer never named ba4.
    return [COMPOSER, '-n', str(procs), str(ROOT / 'train.py'), str(ROOT / RECIPE),
            f'variables.data_remote={mds}', f'variables.data_local={tmp}/cache-{name}',
            f'tokenizer.name={tokenizer}', f'variables.run_name={name}',
            f'save_folder=oci://{BUCKET}@local/ckpt/{{run_name}}', f'save_interval={EVERY}ba',
            'save_num_checkpoints_to_keep=1', f'max_duration={STEPS}ba',
            'callbacks.bucket_keep.pointer_poll_s=0.5',
            f'callbacks.run_report.folder={tmp}/runs/{name}',
            f'code_paths=[{ROOT}/tests/programs/step_log.py]',
            f'callbacks.step_log.path={tmp}/steps-{name}.jsonl',
            f"callbacks.step_log.hold_for='{saved}'",
            f'callbacks.step_log.every={EVERY}',
            # the export stays local: the bucket's checkpoints are what this test is about
            f'callbacks.hf_checkpointer.save_folder={tmp}/hf-{name}']


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def losses(tmp: Path, name: str) -> list[dict]:
    return rows(tmp / f'steps-{name}.jsonl')


def samples(tmp: Path, name: str, segment: list[dict]) -> dict[int, list[str]]:
    """Step -> the samples every rank trained on at that step, in the launches that logged
    `segment` (rows of losses())."""
    launches = {r['launch'] for r in segment}
    found: dict[int, list[str]] = {}
    for path in sorted(tmp.glob(f'steps-{name}.jsonl.samples.*')):
        for row in rows(path):
            if row['launch'] in launches:
                found.setdefault(row['batch'], []).extend(row['samples'])
    return found


def pointer(store, name: str):
    """The batch of the checkpoint the bucket's `latest` pointer names, read from its file."""
    path = store.data_dir / 'buckets' / BUCKET / 'ckpt' / name / POINTER
    try:
        m = re.search(r'/ep0-ba(\d+)$', path.read_text().strip())
    except FileNotFoundError:
        return None
    return int(m.group(1)) if m else None


def listing(store, name: str) -> dict[str, int]:
    """The checkpoints in the store's own listing of the run's checkpoint folder (not the run
    report or the Hugging Face export that the recipe also writes there): name -> size."""
    found = Storage(store.data_dir).list_objects(BUCKET, f'ckpt/{name}/', fields=('name', 'size'))
    out = {o['name'][len(f'ckpt/{name}/'):]: o['size'] for o in found['objects']}
    return {n: size for n, size in out.items() if n == POINTER or n.startswith('ep0-ba')}


def receiving(store) -> bool:
    """A large request body is arriving in the store (a checkpoint's PUT under way)."""
    return any(p.stat().st_size > 4096 for p in (store.data_dir / 'tmp').iterdir())


def start(cmd, cwd: Path, log: Path):
    return subprocess.Popen(cmd, cwd=cwd, stdout=open(log, 'w'), stderr=subprocess.STDOUT,
                            start_new_session=True)


def kill_when(proc, ready, log: Path, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f'ended before {what}:\n{log.read_text()[-3000:]}'
        assert time.monotonic() < deadline, f'no {what} in {timeout} s'
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher, the ranks and their upload processes
    proc.wait()


def finish(cmd, cwd: Path, log: Path) -> str:
    proc = start(cmd, cwd, log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-5000:]
    return log.read_text()


def worst(got: list[dict], ref: dict[int, float], tolerance: float) -> float:
    """The largest relative difference of `got`'s losses from the reference's, each checked."""
    largest = 0.0
    for row in got:
        want = ref[row['batch']]
        diff = abs(row['loss'] - want) / max(1.0, abs(want))
        assert diff <= tolerance, (row, want, diff)
        largest = max(largest, diff)
    return largest


def slowed(data: Path, port: int, batch: int, rank: int):
    """The store (again), `rank`'s shard of ba`batch` arriving at SLOW_MBPS; its log emptied
    and no body of an earlier launch's left in its tmp/, which receiving() reads."""
    for body in (data / 'tmp').glob('*'):
        body.unlink()
    shard = rf'^PUT .*/ckpt/run/ep0-ba{batch}/__{rank}_0\.distcp$'
    store = start_store(data, port=port, buckets=[BUCKET],
                        knobs=Knobs(bandwidth_mbps=SLOW_MBPS, shape_match=shard))
    store.clear_log()
    return store


def pointer_moved_before_deleting(log: list[dict], batch: int, newer: int) -> None:
    """In one launch's request log: ba`batch` was deleted only after every file of ba`newer`
    was in and the pointer had moved (keep 1)."""
    gone = [i for i, r in enumerate(log)
            if r['method'] == 'DELETE' and f'/ckpt/run/ep0-ba{batch}/' in r['path']]
    put = [i for i, r in enumerate(log) if r['method'] == 'PUT' and r['status'] == 200
           and f'/ckpt/run/ep0-ba{newer}/' in r['path']]
    moved = [i for i, r in enumerate(log) if r['method'] == 'PUT' and r['status'] == 200
             and r['path'].endswith(f'/ckpt/run/{POINTER}')]
    assert gone and put, (batch, gone, put)
    assert any(max(put) < i < min(gone) for i in moved), \
        f'ba{batch} deleted before the pointer moved'


def parameters_per_rank(tmp: Path, world: int) -> None:
    """Each of `world` ranks held its part of the parameters at FIT_START (FSDP sharded them,
    not replicated): the launch's last row of every rank."""
    params = [rows(tmp / f'steps-run.jsonl.params.{rank}')[-1] for rank in range(world)]
    full = params[0]['full']
    assert all(p['full'] == full and p['world'] == world for p in params), params
    assert sum(p['local'] for p in params) == full
    assert all(abs(p['local'] - full / world) <= 0.05 * full for p in params), params


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(1200)  # three trainings of 2-4 processes in a row
def test_sharded_run_killed_and_resumed_on_other_process_counts(mds_zstd, tokenizer_dir,
                                                                 tmp_path, monkeypatch):
    data, port = tmp_path / 'store', free_port()
    store = slowed(data, port, 2 * EVERY, 1)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    work = tmp_path / 'work'  # the runs' working folder: Composer's autoresume copies go here
    work.mkdir()
    cmd = {n: command(tmp_path, mds_zstd, tokenizer_dir, 'run', data, n) for n in (2, 4)}
    try:
        # K1: 2 processes, killed while rank 1's shard of ba8 arrives (the pointer names ba4).
        k1 = start(cmd[2], work, tmp_path / 'k1.log')
        kill_when(k1, lambda: pointer(store, 'run') == EVERY and receiving(store),
                  tmp_path / 'k1.log', "ba8's upload")
        run1 = losses(tmp_path, 'run')
        assert [r['batch'] for r in run1] == list(range(1, 2 * EVERY + 1)), run1
        assert pointer(store, 'run') == EVERY
        assert f'ep0-ba{2 * EVERY}/__1_0.distcp' not in listing(store, 'run')  # never an object
        parameters_per_rank(tmp_path, 2)

        # K2: 4 processes, resumed from ba4 (the pointer's), not from the partial ba8; killed
        # while rank 3's shard of ba12 arrives (the pointer names its ba8).
        store.stop()
        store = slowed(data, port, STEPS, 3)
        k2 = start(cmd[4], work, tmp_path / 'k2.log')
        kill_when(k2, lambda: pointer(store, 'run') == 2 * EVERY and receiving(store),
                  tmp_path / 'k2.log', "ba12's upload")
        run2 = losses(tmp_path, 'run')[len(run1):]
        assert [r['batch'] for r in run2] == list(range(EVERY + 1, STEPS + 1)), \
            'did not resume from the complete checkpoint'
        assert pointer(store, 'run') == 2 * EVERY
        assert sorted(n for n in listing(store, 'run') if n.startswith(f'ep0-ba{2 * EVERY}/')) \
            == [f'ep0-ba{2 * EVERY}/.metadata'] + [f'ep0-ba{2 * EVERY}/__{r}_0.distcp'
                                                   for r in range(4)]
        assert f'ep0-ba{STEPS}/__3_0.distcp' not in listing(store, 'run')
        pointer_moved_before_deleting(store.requests(), EVERY, 2 * EVERY)
        parameters_per_rank(tmp_path, 4)

        # K3: 2 processes, resumed from the 4-process ba8, not from the partial ba12; finishes.
        store.stop()
        store = start_store(data, port=port)
        store.clear_log()
        finish(cmd[2], work, tmp_path / 'k3.log')
        run3 = losses(tmp_path, 'run')[len(run1) + len(run2):]
        assert [r['batch'] for r in run3] == list(range(2 * EVERY + 1, STEPS + 1)), run3
        pointer_moved_before_deleting(store.requests(), 2 * EVERY, STEPS)

        # Retrained on another process count, each step gives the loss of its first training
        # (K1's 5-8 by K2, K2's 9-12 by K3), within OTHER; and it learns.
        other = max(worst(run2[:EVERY], {r['batch']: r['loss'] for r in run1}, OTHER),
                    worst(run3, {r['batch']: r['loss'] for r in run2}, OTHER))
        assert run3[-1]['loss'] < run1[0]['loss'] - 0.3, (run1, run3)
        print(f'largest loss difference retrained on another process count: {other:.3g}')

        # The samples: each launch's step is the same global batch, the one llm-foundry's
        # loader gives one process (the ranks' parts disjoint); over the steps that count
        # (K1 1-4, K2 5-8, K3 9-12) none repeated, none skipped.
        reference = global_batches(ROOT / RECIPE, [f'variables.data_remote={mds_zstd}',
                                                   f'tokenizer.name={tokenizer_dir}'],
                                   tmp_path / 'one-process-cache', 16)
        for segment in (run1, run2, run3):
            seen = samples(tmp_path, 'run', segment)
            for step in (r['batch'] for r in segment):
                assert len(seen[step]) == len(set(seen[step])) == 16, step
                assert sorted(seen[step]) == sorted(reference[step - 1]), step
        assert len({s for step in reference[:STEPS] for s in step}) == 16 * STEPS

        # The bucket at the end: one checkpoint folder and the pointer naming it; the run
        # report says when it became resumable and its bytes per rank.
        final = listing(store, 'run')
        assert sorted(final) == [f'ep0-ba{STEPS}/.metadata', f'ep0-ba{STEPS}/__0_0.distcp',
                                 f'ep0-ba{STEPS}/__1_0.distcp', POINTER], final
        assert pointer(store, 'run') == STEPS
        report = json.loads((tmp_path / 'runs' / 'run' / 'run_metrics.json').read_text())
        (saved,) = report['checkpoints']
        assert saved['batch'] == STEPS and saved['objects'] == 3, saved
        assert saved['resumable_after_s'] > 0, saved
        assert saved['bytes_per_rank'] == [final[f'ep0-ba{STEPS}/__0_0.distcp'],
                                           final[f'ep0-ba{STEPS}/__1_0.distcp']]
        assert saved['bytes'] == sum(v for k, v in final.items() if k != POINTER)
        print('ba12 resumable after', saved['resumable_after_s'], 's; bytes per rank:',
              saved['bytes_per_rank'])
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

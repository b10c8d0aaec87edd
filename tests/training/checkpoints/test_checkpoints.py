"""Sharded checkpoints in oci:// through our client (training.checkpoints), end to end, on the
path the GPU recipes take: the CPU twin with FSDP (Composer's FSDP2 over gloo) on 2 and on 4
processes, each rank writing its own shard (`ep0-baN/__<rank>_0.distcp`, rank 0 `.metadata`)
into the local OCI store, Composer moving `latest-sharded-rank0.symlink`, bucket_keep keeping
one checkpoint folder, autoresume resharding on load.

An uninterrupted reference run (2 processes, 12 steps, a checkpoint every 4; its own store,
started beside K1) and one run killed with SIGKILL (the launcher, its ranks and their uploader
processes) and resumed, the same command each time but for the process count:

  K1  2 processes: killed while rank 1's shard of ba8 is arriving in the store (that PUT
      slowed to 0.5 MB/s), the pointer naming ba4; steps 1-8 equal the reference's, bit for
      bit (the same process count, the same samples);
  K2  4 processes: resumes from ba4 (2 shards loaded by 4 ranks), not from the partial ba8;
      killed during training once the pointer names its own ba8;
  K3  2 processes: resumes from ba8 (4 shards loaded by 2 ranks), finishes.

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
from tests.helpers import COMPOSER, ROOT, free_port, other_key_config

RECIPE = 'yamls/cpu/c4_zstd.yaml'
BUCKET, STEPS, EVERY = 'c4-bench', 12, 4
POINTER = 'latest-sharded-rank0.symlink'
# The loss at each step against the reference's, as the logger reports it (mean over ranks):
# the same process count trains bit for bit (fp32 on the CPU, same samples in the same order);
# another count sums the ranks' gradients in another order (measured: up to 3e-6 relative).
SAME, OTHER = 1e-6, 1e-4


def command(tmp: Path, mds: Path, tokenizer: Path, name: str, store_dir: Path,
            procs: int) -> list:
    saved = store_dir / 'buckets' / BUCKET / 'ckpt' / name / 'ep0-ba{batch}'
    # Every launch starts its uploader processes with the run (bucket_keep's default): spawned
    # at the first save instead, as Composer does, the pointer check of ba4 was still importing
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


def start(cmd, cwd: Path, log: Path, store):
    """A launch in its own working folder (llm-foundry's ranks signal each other with files in
    it, and Composer's autoresume copies go there) against `store`."""
    cwd.mkdir(exist_ok=True)
    return subprocess.Popen(cmd, cwd=cwd, stdout=open(log, 'w'), stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, **store.env()})


def kill_when(proc, ready, log: Path, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f'ended before {what}:\n{log.read_text()[-3000:]}'
        assert time.monotonic() < deadline, f'no {what} in {timeout} s'
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher, the ranks and their upload processes
    proc.wait()


def finish(proc, log: Path) -> None:
    assert proc.wait(timeout=600) == 0, log.read_text()[-5000:]


def worst(got: list[dict], ref: dict[int, float], tolerance: float) -> float:
    """The largest relative difference of `got`'s losses from the reference's, each checked."""
    largest = 0.0
    for row in got:
        want = ref[row['batch']]
        diff = abs(row['loss'] - want) / max(1.0, abs(want))
        assert diff <= tolerance, (row, want, diff)
        largest = max(largest, diff)
    return largest


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(1200)  # four trainings of 2-4 processes, the first two at once
def test_sharded_run_killed_and_resumed_on_other_process_counts(mds_zstd, tokenizer_dir,
                                                                 tmp_path):
    ref_store = start_store(tmp_path / 'ref-store', buckets=[BUCKET])
    data = tmp_path / 'store'
    # K1's store: rank 1's shard of ba8 arrives at 0.5 MB/s (the test kills the run then).
    store = start_store(data, buckets=[BUCKET], knobs=Knobs(
        bandwidth_mbps=0.5, shape_match=rf'^PUT .*/ckpt/run/ep0-ba{2 * EVERY}/__1_0\.distcp$'))
    port = store.port
    cmd2 = command(tmp_path, mds_zstd, tokenizer_dir, 'run', data, 2)
    cmd4 = command(tmp_path, mds_zstd, tokenizer_dir, 'run', data, 4)
    try:
        # The reference, uninterrupted, 2 processes; and K1: 2 processes, killed while rank 1's
        # shard of ba8 arrives (the pointer names ba4). Both at once, each with its own store.
        ref_run = start(command(tmp_path, mds_zstd, tokenizer_dir, 'ref', ref_store.data_dir, 2),
                        tmp_path / 'work-ref', tmp_path / 'ref.log', ref_store)
        k1 = start(cmd2, tmp_path / 'work', tmp_path / 'k1.log', store)
        kill_when(k1, lambda: pointer(store, 'run') == EVERY and receiving(store),
                  tmp_path / 'k1.log', 'the upload of a rank\'s shard')
        run1 = losses(tmp_path, 'run')
        assert [r['batch'] for r in run1] == list(range(1, 2 * EVERY + 1)), run1
        assert pointer(store, 'run') == EVERY
        partial = listing(store, 'run')
        assert f'ep0-ba{2 * EVERY}/__1_0.distcp' not in partial, partial  # never an object
        finish(ref_run, tmp_path / 'ref.log')

        ref_rows = losses(tmp_path, 'ref')
        ref = {r['batch']: r['loss'] for r in ref_rows}
        assert sorted(ref) == list(range(1, STEPS + 1))
        ref_samples = samples(tmp_path, 'ref', ref_rows)
        assert sorted(ref_samples) == list(range(1, STEPS + 1))
        assert all(len(s) == len(set(s)) == 16 for s in ref_samples.values())  # disjoint ranks

        # Each rank holds half of the parameters: FSDP sharded them (not replicated).
        params = [rows(tmp_path / f'steps-ref.jsonl.params.{rank}')[0] for rank in (0, 1)]
        full = params[0]['full']
        assert all(p['full'] == full and p['world'] == 2 for p in params)
        assert sum(p['local'] for p in params) == full
        assert all(abs(p['local'] - full / 2) <= 0.05 * full for p in params), params

        # Keep-1 over checkpoint folders: at the end one folder and the pointer; a folder was
        # deleted only after every file of the next one was in and the pointer had moved.
        final = listing(ref_store, 'ref')
        assert sorted(final) == [f'ep0-ba{STEPS}/.metadata', f'ep0-ba{STEPS}/__0_0.distcp',
                                 f'ep0-ba{STEPS}/__1_0.distcp', POINTER], final
        assert pointer(ref_store, 'ref') == STEPS
        log = ref_store.requests()
        for batch in range(EVERY, STEPS, EVERY):
            folder = f'/ckpt/ref/ep0-ba{batch}/'
            gone = [i for i, r in enumerate(log) if r['method'] == 'DELETE' and folder in r['path']]
            newer = [i for i, r in enumerate(log) if r['method'] == 'PUT' and r['status'] == 200
                     and f'/ckpt/ref/ep0-ba{batch + EVERY}/' in r['path']]
            moved = [i for i, r in enumerate(log) if r['method'] == 'PUT' and r['status'] == 200
                     and r['path'].endswith(f'/ckpt/ref/{POINTER}')]
            assert len(gone) == 3 and len(newer) == 3, (batch, gone, newer)
            assert any(max(newer) < i < min(gone) for i in moved), \
                'deleted before the pointer moved'

        # The run report: when each checkpoint became resumable, and its bytes per rank.
        report = json.loads((tmp_path / 'runs' / 'ref' / 'run_metrics.json').read_text())
        saved = report['checkpoints']
        assert [c['batch'] for c in saved] == [EVERY, 2 * EVERY, STEPS], saved
        assert all(c['resumable_after_s'] > 0 and c['objects'] == 3 for c in saved), saved
        last = saved[-1]
        assert last['bytes_per_rank'] == [final[f'ep0-ba{STEPS}/__0_0.distcp'],
                                          final[f'ep0-ba{STEPS}/__1_0.distcp']]
        assert last['bytes'] == sum(v for k, v in final.items() if k != POINTER)
        print('save-to-pointer s:', [(c['batch'], c['resumable_after_s']) for c in saved],
              'bytes per rank:', last['bytes_per_rank'])

        # K2: resumed by 4 processes from ba4 (the pointer's), not from the partial ba8; killed
        # during training once the pointer names its own ba8.
        store.stop()
        store = start_store(data, port=port)
        k2 = start(cmd4, tmp_path / 'work', tmp_path / 'k2.log', store)
        kill_when(k2, lambda: pointer(store, 'run') == 2 * EVERY, tmp_path / 'k2.log',
                  'the 4-process checkpoint in the bucket')
        run2 = losses(tmp_path, 'run')[len(run1):]
        assert run2[0]['batch'] == EVERY + 1, 'did not resume from the complete checkpoint'
        assert sorted(n for n in listing(store, 'run') if n.startswith(f'ep0-ba{2 * EVERY}/')) \
            == [f'ep0-ba{2 * EVERY}/.metadata'] + [f'ep0-ba{2 * EVERY}/__{r}_0.distcp'
                                                   for r in range(4)]

        # K3: resumed by 2 processes from the 4-process checkpoint; finishes.
        finish(start(cmd2, tmp_path / 'work', tmp_path / 'k3.log', store), tmp_path / 'k3.log')
        run3 = losses(tmp_path, 'run')[len(run1) + len(run2):]
        assert [r['batch'] for r in run3] == list(range(2 * EVERY + 1, STEPS + 1)), run3

        # The same process count from the start: the reference's losses, step for step;
        # resumed on other counts: within OTHER. The committed steps (K1 1-4, K2 5-8, K3 9-12)
        # trained on the reference's samples, each step the same set: none repeated, none
        # skipped.
        same = worst(run1, ref, SAME)
        committed = [r for r in run2 if r['batch'] <= 2 * EVERY] + run3
        other = worst(committed, ref, OTHER)
        print(f'largest loss difference from the uninterrupted run: same process count '
              f'{same:.3g}, resumed on other counts {other:.3g}')
        for segment, steps in ((run1, range(1, EVERY + 1)),
                               (run2, range(EVERY + 1, 2 * EVERY + 1)),
                               (run3, range(2 * EVERY + 1, STEPS + 1))):
            seen = samples(tmp_path, 'run', segment)
            for step in steps:
                assert sorted(seen[step]) == sorted(ref_samples[step]), step
        assert sorted(listing(store, 'run')) == sorted(final)
        assert pointer(store, 'run') == STEPS
    finally:
        store.stop()
        ref_store.stop()


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

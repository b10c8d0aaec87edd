"""train.py's start against what earlier runs left on the machine:
a training still running, a crashed run's shared memory, a cache whose root index is stale;
and a failure before fit still writes the run's report.

One test, two in-process starts of train.main (its checks run before any training):
  1. on the cache of a live run: one line naming that run, and its shared memory survives;
  2. on a cache a crashed run left (its shared memory still in /dev/shm) holding a damaged
     index.json and a stale shard, the remote's index being fine: the leftovers are cleared,
     the index replaced, the dataset builds; the start then fails on purpose in the model
     (n_heads does not divide d_model), after the dataset, before fit: the report says so.
"""
import json
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

import train
from tests.helpers import one_error_line

RECIPE = 'yamls/cpu/c4_zstd.yaml'


def shm_mapped_by(pid: int) -> set[str]:
    """The /dev/shm files a process maps, read from /proc (the witness, not our code)."""
    out = set()
    with open(f'/proc/{pid}/maps') as f:
        for line in f:
            if '/dev/shm/' in line:
                out.add(line[line.index('/dev/shm/'):].strip())
    return out


def _hold(remote: Path, local: Path, conn) -> None:
    """A stand-in for a training still running: our streaming extensions installed (as by
    train.py) and a StreamingDataset over `remote` cached in `local` (split train, as the
    recipes), which registers streaming's shared memory for that folder; then it waits."""
    os.setsid()  # its own group: killed with the resource tracker it may start
    from streaming import StreamingDataset

    from training.shards import install
    install()
    ds = StreamingDataset(remote=str(remote), local=str(local), split='train', batch_size=8)
    conn.send(len(ds))
    while True:
        time.sleep(60)


def hold(remote: Path, local: Path):
    """Forked (streaming already imported here), so that no import is paid again."""
    ctx = multiprocessing.get_context('fork')
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_hold, args=(remote, local, theirs), daemon=True)
    proc.start()
    assert ours.poll(120) and ours.recv() > 0, 'the holder did not build its dataset'
    return proc


def kill(proc) -> None:
    # kill -9 with its resource tracker, if it started one (which unlinks what a dead creator
    # leaves, unless it dies too: a node's processes killed together, the OOM killer, ...)
    if proc.is_alive():
        os.killpg(proc.pid, signal.SIGKILL)
    proc.join()


def start(args: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = train.main([RECIPE, *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.slow
@pytest.mark.e2e
def test_start_beside_a_live_run_and_after_a_crashed_one(mds_zstd, tokenizer_dir, tmp_path,
                                                         capsys, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    remote = tmp_path / 'remote'
    shutil.copytree(mds_zstd, remote)
    live_cache, crashed_cache = tmp_path / 'live', tmp_path / 'crashed'
    mine = shm_mapped_by(os.getpid())  # a forked child starts with its parent's mappings
    live = hold(remote, live_cache)  # one after the other: streaming's choice of a prefix
    crashed = None                   # is racy
    try:
        crashed = hold(remote, crashed_cache)
        # (a process maps the shared memory of every dataset it found while taking its own)
        live_shm = shm_mapped_by(live.pid) - mine
        crashed_shm = shm_mapped_by(crashed.pid) - live_shm - mine
        assert live_shm and crashed_shm
        kill(crashed)
        left = {p: os.stat(p).st_ino for p in crashed_shm}  # a crash leaves them behind

        common = [f'variables.data_remote={remote}', f'tokenizer.name={tokenizer_dir}',
                  f'save_folder={tmp_path}/ckpt', 'variables.run_name=start', 'max_duration=2ba',
                  f'callbacks.run_report.folder={tmp_path}/report']

        # 1. The live run's cache: refused in one line naming it; nothing of it removed
        #    (streaming's clean_stale_shared_memory removed all of it, and so its own check).
        rc, _, err = start([*common, f'variables.data_local={live_cache}'], capsys)
        assert rc == 2, err[-3000:]
        line = one_error_line(err)
        assert f'{live_cache}' in line and f'pid {live.pid}' in line, line
        assert live.is_alive() and all(os.path.exists(p) for p in live_shm)

        # 2. The crashed run's cache, its root index damaged (as it was cached while the
        #    remote's was broken, since repaired) and one shard of an earlier dataset.
        index = crashed_cache / 'train' / 'index.json'
        good = (remote / 'train' / 'index.json').read_bytes()
        index.write_bytes(good[: len(good) // 2])
        stale = crashed_cache / 'train' / 'shard.00000.mds'
        stale.write_bytes(b'an earlier dataset')
        with pytest.raises(ValueError, match='d_model must be divisible by n_heads'):
            start([*common, f'variables.data_local={crashed_cache}', 'model.n_heads=3'],
                  capsys)
        out = capsys.readouterr().out
        # the leftovers were removed (the new dataset may have taken the same names again)
        assert all(not os.path.exists(p) or os.stat(p).st_ino != ino for p, ino in left.items())
        assert index.read_bytes() == good and not stale.exists()
        assert f'{index} differed from {remote}/train/index.json' in out, out
        report = json.loads((tmp_path / 'report' / 'run_metrics.json').read_text())
        assert report['status'] == 'failed' and report['stage'] == 'before_fit'
        assert report['run_name'] == 'start' and report['steps'] == 0
        assert 'd_model must be divisible by n_heads' in report['error'], report
        assert report['local'] == str(crashed_cache) and report['remote'] == str(remote)
        # and the live run's shared memory is still all there
        assert live.is_alive() and all(os.path.exists(p) for p in live_shm)
    finally:
        for proc in (live, crashed):
            if proc is not None:
                kill(proc)

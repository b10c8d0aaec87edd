"""One conversion at a time per dataset (data_prep.pipeline.lease): two real conversions into one
remote at once, and the lease's takeover rules on a real local remote."""
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from data_prep.pipeline import lease as lease_mod
from data_prep.pipeline.lease import LOCK, Lease, LeaseError
from data_prep.pipeline.verify import verify
from data_prep.storage import open_remote
from tests.helpers import PY, ROOT, expected_digest, one_error_line
from tests.mds import sample_digest


@pytest.mark.slow
def test_second_concurrent_conversion_refuses_in_one_line(sample_dir, tmp_path):
    out = tmp_path / 'out'
    cmd = [PY, '-m', 'data_prep.convert', '--data-files', str(sample_dir / 'c4-train.*.json.gz'),
           '--remote', str(out), '--size-limit', '64kb', '--workers', '2', '--no-progress',
           '--max-docs', '200']
    first = subprocess.Popen(cmd + ['--json'], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lock = out / 'train' / LOCK
    deadline = time.monotonic() + 120
    while not lock.exists():
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # Hold the first run still while the second starts: it holds the lease, so the second
    # must stop, whatever the machine's load, before it lists or deletes anything.
    os.kill(first.pid, signal.SIGSTOP)
    try:
        holder = json.loads(lock.read_text())
        second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 2
    line = one_error_line(second.stderr)
    assert line.startswith(f'error: {out / "train"} is being converted by another run '
                           f'{holder["run_id"]} on host {socket.gethostname()} '
                           f'(pid {first.pid}), started {holder["started"]}'), line
    stdout, stderr = first.communicate(timeout=240)
    assert first.returncode == 0, stderr
    s = json.loads(stdout)
    assert s['published'] and s['samples'] == 200 and not lock.exists()
    per_file = [sample_texts_of(p)[:50] for p in sorted(sample_dir.glob('c4-train.*.json.gz'))]
    assert sample_digest(str(out), 'train') == expected_digest([t for f in per_file for t in f])
    assert verify(str(out))['ok']


def sample_texts_of(path):
    import gzip
    with gzip.open(path, 'rt', encoding='utf-8') as f:
        return [json.loads(line)['text'] for line in f]


@pytest.fixture
def remote(tmp_path, monkeypatch):
    monkeypatch.setattr(lease_mod, 'SETTLE_S', 0.01)
    return open_remote(str(tmp_path / 'remote'))


def _plant(remote, **fields) -> dict:
    record = {'run_id': 'other', 'host': socket.gethostname(), 'pid': os.getpid(),
              'pid_start': lease_mod._proc_start(os.getpid()), 'started': 'then',
              'started_unix': time.time(), 'heartbeat_unix': time.time(), **fields}
    remote.write(f'train/{LOCK}', json.dumps(record).encode())
    return record


def test_live_holder_is_refused_stale_ones_are_taken_over(remote):
    _plant(remote)  # a live process of this host (ours), beating now
    with pytest.raises(LeaseError, match='by another run other on host .* last heartbeat 0 s'):
        Lease(remote, 'train').acquire()

    dead = subprocess.Popen(['true'])
    dead.wait()
    _plant(remote, pid=dead.pid, pid_start='1')  # its process is gone from this host
    with Lease(remote, 'train') as lease:
        assert lease.took_over and f'its process {dead.pid} is gone' in lease.took_over
        assert json.loads(remote.read(f'train/{LOCK}'))['run_id'] == lease.run_id
    assert remote.list() == {}  # released

    _plant(remote, host='elsewhere', heartbeat_unix=time.time() - 3600)  # silent for an hour
    with Lease(remote, 'train') as lease:
        assert 'no heartbeat for 60 min' in lease.took_over

    _plant(remote, host='elsewhere', heartbeat_unix=time.time() - 60)  # another host, alive
    with pytest.raises(LeaseError, match='host elsewhere'):
        Lease(remote, 'train').acquire()


def test_a_lost_lease_stops_the_run_and_is_not_released(remote):
    lease = Lease(remote, 'train').acquire()
    lease.check()
    other = _plant(remote, host='elsewhere')  # taken by someone else
    with pytest.raises(LeaseError, match='lost its lease .* to run other on host elsewhere'):
        lease.check()
    lease.release()
    assert json.loads(remote.read(f'train/{LOCK}')) == other  # not ours to remove

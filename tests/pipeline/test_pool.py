"""The pool's stop paths end in bounded time whatever SIGTERM handler the process has:
a part that fails while another worker is busy converting, and a worker killed from outside.
Real conversions into the local OCI store, slowed (100 ms a request) so that the other worker
is always in the middle of its part when the pool stops. With multiprocessing.Pool, a worker
that survived its SIGTERM went back for a task and waited forever on the task queue's lock,
which the parent holds from terminate() on, while the parent joined it forever; and a worker
killed from outside left Pool waiting for its result forever. Both tests hang on that code."""
import gzip
import json
import subprocess

import pytest

from local_services.oci_store import Knobs, start_store
from tests.helpers import PY, ROOT, sample_texts

pytestmark = pytest.mark.slow

RUN_S = 20  # a conversion that stops takes a few seconds here
IMPORT_S = 60  # the program's start-up (import composer: ~10-30 s on a loaded 2-core machine)
DOCS = 100  # a part of 100 documents: ~25 shards of 4 KiB, seconds of uploads


@pytest.fixture
def slow_store(tmp_path, monkeypatch):
    store = start_store(tmp_path / 'store', buckets=['c4-bench'], knobs=Knobs(latency_ms=100))
    for key, value in store.env().items():
        monkeypatch.setenv(key, value)
    yield store
    store.stop()


def _inputs(folder, sample_dir, first_line: str | None = None) -> str:
    """Two C4 files of DOCS documents; the first one's first line replaced if given."""
    folder.mkdir()
    docs = [json.dumps({'text': t, 'timestamp': '', 'url': ''})
            for t in sample_texts(sample_dir)[:DOCS]]
    for i in range(2):
        lines = [first_line] + docs[1:] if i == 0 and first_line else docs
        with gzip.open(folder / f'c4-train.0000{i}-of-00002.json.gz', 'wt') as f:
            f.writelines(line + '\n' for line in lines)
    return str(folder / '*.json.gz')


def _runs(handler: str, remote: str, *scenarios: str) -> list[dict]:
    proc = subprocess.run([PY, 'tests/programs/convert_stops.py', handler, remote, *scenarios],
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=IMPORT_S + RUN_S * len(scenarios))
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(runs) == len(scenarios)
    for r in runs:
        assert r['seconds'] < RUN_S and r['children'] == 0, r  # bounded, no worker left
    return runs


def test_after_import_composer_failures_and_a_killed_worker_end_then_rerun_completes(
        tmp_path, sample_dir, slow_store):
    bad = _inputs(tmp_path / 'bad', sample_dir, first_line='{"text": ""}')
    good = _inputs(tmp_path / 'good', sample_dir)
    remote = 'oci://c4-bench@local/stops'
    *failed, killed, again = _runs('composer', remote, *[f'run={bad}'] * 3, f'kill={good}',
                                   f'run={good}')
    for r in failed:
        assert r['error'] == 'BadRecordError', r
        assert r['message'].startswith(f'{tmp_path}/bad/c4-train.00000-of-00002.json.gz:1: ')
    assert killed['error'] == 'WorkerDied', killed
    assert 'killed by SIGKILL' in killed['message'] and '.json.gz (part ' in killed['message']
    assert again['error'] is None, again  # the same command again: complete, nothing lost
    from data_prep.storage import open_remote
    index = json.loads(open_remote(remote).read('train/index.json'))
    assert sum(s['samples'] for s in index['shards']) == 2 * DOCS


def test_workers_die_on_sigterm_whatever_handler_they_inherit(tmp_path, sample_dir, slow_store):
    bad = _inputs(tmp_path / 'bad', sample_dir, first_line='{"text": ""}')
    for r in _runs('ignore', 'oci://c4-bench@local/ignored', f'run={bad}', f'run={bad}'):
        assert r['error'] == 'BadRecordError', r

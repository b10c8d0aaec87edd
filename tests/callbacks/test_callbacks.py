"""The metric callbacks (callbacks/) in real runs of the CPU recipe against the local OCI store.

Three short runs (8 batches) prove the issue's claims, each run proving more than one:
  A  `composer -n 2`, empty cache, plain store: hit rate 0, downloads = the shards it read,
     the report and steps.jsonl cover both ranks; also the no-latency data-wait baseline;
  B  one rank, A's cache, immediately after: hit rate 1.0, nothing downloaded; SIGTERM after
     3 steps, so it also proves an interrupted run still writes its report, marked as such;
  C  `composer -n 2`, empty cache, the store adding 3 s to every request: data wait clearly up.
The store's own request log is the independent witness for what was downloaded.
"""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import COMPOSER, PY, ROOT, run

RECIPE = 'yamls/cpu/c4_zstd.yaml'
BUCKET, PREFIX = 'c4-bench', 'c4_zstd'
REMOTE = f'oci://{BUCKET}@local/{PREFIX}'
LATENCY_MS = 3000
STEPS = 8


@pytest.fixture(scope='module')
def store(mds_zstd, tmp_path_factory):
    """The local store (a real subprocess) holding the zstd MDS sample under c4_zstd/train."""
    from data_prep.servers.oci_store import start_store
    from data_prep.storage.oci.client import upload_file
    data = tmp_path_factory.mktemp('cb_store')
    st = start_store(data, buckets=[BUCKET])
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in st.env().items():
                mp.setenv(k, v)
            for f in sorted((mds_zstd / 'train').iterdir()):
                upload_file(str(f), BUCKET, 'local', f'{PREFIX}/train/{f.name}')
        yield st
    finally:
        st.stop()


def train(store, tokenizer_dir, tmp: Path, name: str, cache: Path, ranks: int = 1):
    """One real run of the recipe; returns (run_metrics.json, steps.jsonl rows, store requests)."""
    store.clear_log()
    folder = tmp / 'runs' / name
    launcher = [COMPOSER, '-n', str(ranks)] if ranks > 1 else [COMPOSER]
    run([*launcher, 'train.py', RECIPE, f'variables.data_remote={REMOTE}',
         f'variables.data_local={cache}', f'tokenizer.name={tokenizer_dir}',
         f'save_folder={tmp}/ckpt-{name}', f'variables.run_name={name}',
         f'max_duration={STEPS}ba', f'callbacks.run_report.folder={folder}'],
        env=store.env())
    report = json.loads((folder / 'run_metrics.json').read_text())
    steps = [json.loads(line) for line in (folder / 'steps.jsonl').read_text().splitlines()]
    return report, steps, store.requests()


def shard_gets(log):
    return [r for r in log if r['method'] == 'GET' and '/shard.' in r['path'] and r['status'] == 200]


def shards_in_cache(cache: Path) -> dict[str, int]:
    """Shard name -> bytes of its object in the bucket, for every shard now in the cache."""
    index = json.loads((cache / 'train' / 'index.json').read_text())
    out = {}
    for shard in index['shards']:
        if (cache / 'train' / shard['raw_data']['basename']).exists():
            out[shard['zip_data']['basename']] = shard['zip_data']['bytes']
    return out


@pytest.fixture(scope='module')
def cold_two_ranks(store, tokenizer_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('cb_cold')
    cache = tmp / 'cache'
    report, steps, log = train(store, tokenizer_dir, tmp, 'cold2', cache, ranks=2)
    return report, steps, log, cache, tmp


def test_empty_cache_two_ranks(cold_two_ranks):
    report, steps, log, cache, _ = cold_two_ranks
    assert report['status'] == 'completed' and report['partial'] is False
    assert report['run_name'] == 'cold2' and report['world_size'] == 2 and report['steps'] == STEPS
    assert report['remote'] == REMOTE and report['compression'] == 'zstd'
    # nothing was cached: every shard the run read was a miss, and exactly those were downloaded
    read = shards_in_cache(cache)
    gets = shard_gets(log)
    assert read and report['cache_hits'] == 0 and report['cache_hit_rate'] == 0.0
    assert report['cache_misses'] == len(read) == len(gets)
    assert report['bytes_downloaded'] == sum(read.values()) == sum(r['bytes'] for r in gets)
    assert report['cache_evictions'] == 0 and report['cache_stats_all_ranks'] is True
    assert report['cache_bytes_at_end'] >= sum(read.values())
    # both ranks are in the report and in every step of the per-step series
    ranks = report['data_wait_per_rank']
    assert [r['rank'] for r in ranks] == [0, 1] and all(r['steps'] == STEPS for r in ranks)
    assert [s['step'] for s in steps] == list(range(1, STEPS + 1))
    assert all(len(s['data_wait_ms_per_rank']) == 2 for s in steps)
    assert all(s['samples'] == 16 and s['tokens'] > 0 and s['samples_per_s'] > 0 for s in steps)
    assert report['samples'] == 16 * STEPS
    for key in ('wall_s', 'time_to_first_batch_s', 'throughput_samples_per_s',
                'throughput_tokens_per_s', 'data_wait_s', 'data_wait_fraction',
                'data_wait_p50_ms', 'data_wait_p95_ms'):
        assert isinstance(report[key], float) and report[key] >= 0, key
    assert report['data_wait_p50_ms'] <= report['data_wait_p95_ms'] <= report['data_wait_max_ms']
    assert 0 < report['data_wait_fraction'] < 1
    assert report['throughput_is_steady_state'] is True
    assert report['mfu'] is None  # no known peak on a CPU


def test_second_run_same_cache_hits_everything_and_sigterm_is_reported(cold_two_ranks, store,
                                                                     tokenizer_dir):
    """The warm-cache run is also the interrupted run: SIGTERM (a preemption) after 3 steps."""
    _, _, _, cache, tmp = cold_two_ranks
    cached = shards_in_cache(cache)
    folder = tmp / 'runs' / 'warm1'
    store.clear_log()
    proc = subprocess.Popen(
        [PY, 'train.py', RECIPE, f'variables.data_remote={REMOTE}', f'variables.data_local={cache}',
         f'tokenizer.name={tokenizer_dir}', f'save_folder={tmp}/ckpt-warm1',
         'variables.run_name=warm1', 'max_duration=40ba', f'callbacks.run_report.folder={folder}'],
        cwd=ROOT, env={**os.environ, **store.env()}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    steps_file = folder / 'steps.jsonl'
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if steps_file.exists() and len(steps_file.read_text().splitlines()) >= 3:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.1)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    report = json.loads((folder / 'run_metrics.json').read_text())
    steps = [json.loads(line) for line in steps_file.read_text().splitlines()]
    # the cache served everything: nothing downloaded, the store saw no shard request
    assert report['world_size'] == 1 and report['cache_shards_at_start'] == len(cached)
    assert report['cache_hit_rate'] == 1.0 and report['cache_misses'] == 0
    assert 0 < report['cache_hits'] <= len(cached)
    assert report['bytes_downloaded'] == 0 and shard_gets(store.requests()) == []
    # stopped before the end: the report says so and still carries the numbers so far
    assert report['status'] == 'interrupted' and report['partial'] is True
    assert 3 <= report['steps'] < 40 and len(steps) == report['steps']
    assert report['data_wait_s'] is not None and report['throughput_samples_per_s'] > 0


def test_store_latency_raises_data_wait(cold_two_ranks, store, tokenizer_dir, tmp_path):
    from data_prep.servers.oci_store import Knobs, start_store
    baseline = cold_two_ranks[0]
    slow = start_store(store.data_dir, knobs=Knobs(latency_ms=LATENCY_MS),
                       log_path=tmp_path / 'slow.jsonl')
    try:
        report, steps, log = train(slow, tokenizer_dir, tmp_path, 'slow2', tmp_path / 'cache',
                                   ranks=2)
    finally:
        slow.stop()
    assert report['status'] == 'completed' and report['cache_hit_rate'] == 0.0
    assert report['cache_misses'] == len(shard_gets(log)) > 0
    # no rank gets a first batch before one shard has come through a 3 s request
    assert report['time_to_first_batch_s'] >= LATENCY_MS / 1000
    assert report['data_wait_s'] >= LATENCY_MS / 1000 + baseline['data_wait_s']
    # a clear effect on the fraction of wall time too (seen: 0.17 to 0.35 against 0.03 to 0.04)
    assert report['data_wait_fraction'] > 2 * baseline['data_wait_fraction'] + 0.05, (
        report['data_wait_fraction'], baseline['data_wait_fraction'])
    assert max(s['data_wait_ms'] for s in steps) >= LATENCY_MS

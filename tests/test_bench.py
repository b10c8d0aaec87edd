"""`make bench` at its smallest: every variant and cache state gets a row in results.json whose
numbers are the ones its own run wrote in run_metrics.json; report.md and the plots exist."""
import json

from tests.helpers import PY, run

ROW_FROM_METRICS = {'samples_per_s': 'throughput_samples_per_s', 'tokens_per_s': 'throughput_tokens_per_s',
                    'data_wait_fraction': 'data_wait_fraction', 'time_to_first_batch_s': 'time_to_first_batch_s',
                    'cache_hit_rate': 'cache_hit_rate', 'bytes_downloaded': 'bytes_downloaded'}


def test_smallest_bench_rows_agree_with_each_runs_metrics(tmp_path):
    proc = run([PY, 'scripts/bench.py', '--sample-mb', '1', '--steps', '3', '--no-plain-pair',
                '--build', str(tmp_path / 'build'), '--store-dir', str(tmp_path / 'store'),
                '--out', str(tmp_path / 'results')], timeout=600)
    out = tmp_path / 'results' / 'latest'
    assert out.is_symlink() and '[6/6]' in proc.stdout
    # Stages 1-2 are the seed's first test: allenai/c4 en from a (local) hub into the bucket.
    manifest = next((tmp_path / 'store').rglob('zstd/train/part-00000/manifest.json'))
    assert json.loads(manifest.read_text())['input'].startswith('hf://datasets/allenai/c4@')
    results = json.loads((out / 'results.json').read_text())
    rows = {(r['variant'], r['cache']): r for r in results['rows']}
    assert set(rows) == {(v, c) for v in ('uncompressed', 'zstd') for c in ('cold', 'warm')}
    for row in results['rows']:
        metrics = json.loads((out / 'runs' / row['run'] / 'run_metrics.json').read_text())
        assert metrics['status'] == 'completed' and metrics['steps'] == 3
        for key, mkey in ROW_FROM_METRICS.items():
            assert row[key] == metrics[mkey], (row['run'], key)
        bucket = results['buckets'][row['variant']]
        assert (row['bucket_bytes'], row['objects']) == (bucket['bytes'], bucket['objects'])
    assert rows['uncompressed', 'cold']['cache_hit_rate'] == 0 and rows['zstd', 'warm']['cache_hit_rate'] == 1
    assert rows['zstd', 'cold']['bucket_bytes'] < rows['uncompressed', 'cold']['bucket_bytes'] / 2
    assert results['machine']['cores'] >= 1 and results['versions']['mosaicml-streaming'] == '0.12.0'
    report = (out / 'report.md').read_text()
    assert report.count('\n| ') == 1 + 4 and 'zstd stores the dataset in' in report
    for png in ('throughput.png', 'data_wait.png', 'bucket.png'):
        assert (out / png).stat().st_size > 5000

"""`make bench` at its smallest: every variant and cache state gets a row in results.json whose
numbers are the ones its own run wrote in run_metrics.json; the loader-only tables are the
numbers of loader.json; report.md and the plots exist. `make bench-start`'s C4-scale index and
measurements, built at small size with the same code."""
import json
import os

import pytest

from scripts.bench import end_to_end as bench
from scripts.bench import end_to_end_report as bench_report
from scripts.bench import start as bench_start
from scripts.bench import start_report as bench_start_report
from tests.helpers import PY, ROOT, run

ROW_FROM_METRICS = {'samples_per_s': 'throughput_samples_per_s',
                    'tokens_per_s': 'throughput_tokens_per_s',
                    'data_wait_fraction': 'data_wait_fraction',
                    'data_wait_steady_fraction': 'data_wait_steady_fraction',
                    'time_to_first_batch_s': 'time_to_first_batch_s',
                    'cache_hit_rate': 'cache_hit_rate', 'bytes_downloaded': 'bytes_downloaded'}


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(900)  # make bench end to end, six trainings: 371 s in a fresh-clone run
def test_smallest_bench_rows_agree_with_each_runs_metrics(tmp_path):
    proc = run([PY, '-m', 'scripts.bench.end_to_end', '--sample-mb', '1', '--steps', '3',
                '--no-plain-pair',
                '--bandwidths', '3', '--loader-formats', 'tokens',
                '--build', str(tmp_path / 'build'), '--store-dir', str(tmp_path / 'store'),
                '--out', str(tmp_path / 'results'), '--startup', str(tmp_path / 'none')],
               timeout=900)
    out = tmp_path / 'results' / 'latest'
    assert out.is_symlink() and '[6/8]' in proc.stdout and '[8/8]' in proc.stdout
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
        assert 0 <= row['data_wait_steady_fraction'] <= row['data_wait_fraction'] + 0.05
        bucket = results['buckets'][row['variant']]
        assert (row['bucket_bytes'], row['objects']) == (bucket['bytes'], bucket['objects'])
        assert row['convert_source'] == 'this run' and row['convert_mb_per_s'] > 0
    assert rows['uncompressed', 'cold']['cache_hit_rate'] == 0
    # Held-out loss per run (the validation split, converted beside train), and the same
    # losses in every run: the same samples in the same order whatever the compression.
    assert next((tmp_path / 'store').rglob('zstd/validation/index.json'))
    same = results['losses']
    assert same['equal'] and same['steps'] == 3 and same['runs'] == 4, same
    for row in results['rows']:
        metrics = json.loads((out / 'runs' / row['run'] / 'run_metrics.json').read_text())
        assert row['eval_loss'] == metrics['eval_loss'] == metrics['evals'][-1]['loss']
        assert row['eval_perplexity'] == metrics['eval_perplexity'] > 1
        assert row['train_loss'] == metrics['train_loss']
    assert len({(r['train_loss'], r['eval_loss']) for r in results['rows']}) == 1
    runs = [{**r, 'losses': [json.loads(line)['loss']
                             for line in (out / 'runs' / r['name'] / 'steps.jsonl').open()]}
            for r in results['runs']]
    runs[-1]['losses'][1] += 1e-6  # one step off: named
    assert bench_report.same_losses(runs)['first_difference'] == (
        f'{runs[-1]["name"]}: training loss at step 2 differs from {runs[0]["name"]}\'s')
    # Warm: every shard the cold pass left in the cache is read from it. (Not a hit rate of
    # 1 in 3 steps: with its shards local, the warm pass's read-ahead runs past where the
    # cold pass's had got to, and those downloads are misses; make bench's longer runs: 100%.)
    for variant in ('uncompressed', 'zstd'):
        warm = json.loads((out / 'runs' / rows[variant, 'warm']['run'] / 'run_metrics.json')
                          .read_text())
        assert warm['cache_hits'] == warm['cache_shards_at_start'] > 0, (variant, warm)
        assert warm['cache_evictions'] == 0
        assert rows[variant, 'warm']['cache_hit_rate'] > 0.5
    # small shards compress less than 64 MiB ones (make bench: 2.9x)
    assert rows['zstd', 'cold']['bucket_bytes'] < rows['uncompressed', 'cold']['bucket_bytes'] / 1.5
    assert results['machine']['cores'] >= 1
    assert results['machine']['versions']['mosaicml-streaming'] == '0.12.0'
    # >= 8 shards per part: every part holds its shards + index.json + manifest.json
    assert results['buckets']['zstd']['objects'] >= 8 * (8 + 2)

    loader = json.loads((out / 'loader.json').read_text())
    assert loader == results['loader']
    passes = [r for r in loader['runs'] if not r['bandwidth_mbps']]
    assert {(r['variant'], r['cache']) for r in passes} == set(rows)
    for r in loader['runs']:
        # whole batches; 64 canonical nodes repeat some samples of a dataset this small
        assert r['samples'] >= r['dataset_samples'] - r['dataset_samples'] % 16 > 0, r
        assert r['samples'] % 16 == 0 and r['batches'] == r['samples'] // 16
        assert r['tokens'] == 2048 * r['samples'] and r['steady_cpu_s'] > 0
        assert r['tokens_per_cpu_s'] == r['steady_tokens'] / r['steady_cpu_s']
        assert (r['bytes_downloaded'] > 0) == (r['cache'] == 'cold')
    assert [r['bandwidth_mbps'] for r in loader['runs'] if r['bandwidth_mbps']] == [3.0, 3.0]
    warm = {r['variant']: r for r in passes if r['cache'] == 'warm'}
    for h in results['headroom']:
        w = warm[h['variant']]
        assert h['tokens_per_core'] == w['tokens_per_cpu_s']
        assert h['node_tokens_per_s'] == w['tokens_per_cpu_s'] * 64

    report = (out / 'report.md').read_text()
    assert 'zstd stores the dataset in' in report and 'steady data wait' in report
    assert report.count('| tokens |') == 4 + 2  # passes, then the headroom rows
    for h in results['headroom']:
        assert f'{h["tokens_per_core"]:,.0f}' in report
        assert f'{h["headroom_MPT-1B"]:,.1f}x' in report
    assert 'Conclusion: pre-tokenized zstd data' in report
    assert 'Losses: all 4 runs (uncompressed and zstd, cold and warm) trained with the same ' \
        'loss at every one of their 3 steps' in report
    assert f'| {rows["zstd", "warm"]["eval_loss"]:.4f} |' in report
    assert 'Conclusion: zstd downloads' in report
    assert 'run `make bench-start`' in report
    for png in ('throughput.png', 'data_wait.png', 'bucket.png', 'bandwidth.png'):
        assert (out / png).stat().st_size > 5000

    # A conversion found complete reports what its parts' manifests recorded, never 0.0.
    dataset = tmp_path / 'store' / 'buckets' / 'c4-bench' / 'c4' / 'zstd' / 'train'
    recorded = bench.recorded_speed(str(dataset))
    assert recorded['parts'] == 8 and recorded['mb_per_s_per_worker'] > 0
    skipped = {**results['conversions']['zstd'], 'parts_converted': 0, 'recorded': recorded}
    assert bench_report.convert_figure(skipped) == (recorded['mb_per_s_per_worker'],
                                                    "the parts' manifests, per worker")
    none = {**skipped, 'recorded': None}
    assert bench_report.convert_figure(none) == (None, 'not converted in this run')
    conv = {'uncompressed': none, 'zstd': none}
    table_rows = bench_report.rows(conv, results['buckets'], results['runs'])
    assert ' 0.0 ' not in bench_report.table(table_rows)
    assert 'neither was converted in this run' in bench_report.sentences(table_rows, None)


def test_c4_shapes():
    assert bench_start.c4_shape('text') == (364_868_892, 12_350)
    samples, shards = bench_start.c4_shape('tokens')
    assert samples == 76_000_000 and 9_200 < shards < 9_400  # 8,199 bytes per sample, 64 MiB


@pytest.mark.slow
@pytest.mark.e2e
def test_c4_scale_index_small_with_the_same_code(tmp_path, tokenizer_dir):
    """The index, the per-node work, the real DataLoader path and the report, at 20,000
    samples in 400 shards: only the shards the first batches read land in the cache."""
    os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
    root = tmp_path / 'c4-tokens'
    shape = bench_start.write_c4_index(root, 'tokens', 20_000, 400)
    assert bench_start.write_c4_index(root, 'tokens', 20_000, 400) == shape  # idempotent
    index = json.loads((root / 'train' / 'index.json').read_text())
    counts = [s['samples'] for s in index['shards']]
    assert len(counts) == 400 and sum(counts) == 20_000 and set(counts) == {50}
    links = {os.path.realpath(root / 'train' / s['zip_data']['basename']) for s in index['shards']}
    assert len(links) == 1 and len(list((root / 'templates').iterdir())) == 1

    tokenizer = str(tokenizer_dir)
    loader = bench_start.recipe_loader(ROOT / 'yamls' / 'c4_zstd.yaml')
    assert loader['device_batch_size'] == 16 and loader['num_workers'] == 8
    import llmfoundry.data.text_data  # noqa: F401  (once, before the forked runs)
    over = {}  # the recipe's own setting
    node = bench_start.in_child(bench_start.node_work, loader, root, tmp_path / 'cache',
                                tokenizer, over, False)
    assert (node['samples'], node['shards']) == (20_000, 400)
    assert node['num_canonical_nodes'] == 64  # py1s over 64 canonical nodes
    assert 1 <= node['first_batch_shards_per_rank'] <= 16
    assert node['epoch_bytes'] >= 20_000 * 8 and node['work_cpu_s'] > 0
    e2e = bench_start.in_child(bench_start.first_batch, loader, root, tmp_path / 'cache',
                               tokenizer, over, True)
    assert e2e['workers'] == 8 and e2e['batch_shape'][0] == 16
    assert 0 < e2e['shards_copied'] < 400  # only what was read exists in the cache
    assert e2e['first_batch_s'] >= e2e['construct_s'] > 0 and e2e['peak_pss_bytes'] > 0

    results = {'recipe': 'yamls/c4_zstd.yaml', 'loader': loader, 'node': bench_start.NODE,
               'shapes': {'tokens': shape}, 'text_scale': 1.0,
               'rows': [{'format': 'tokens', 'shuffle_algo': 'py1s', 'node_fresh': node,
                         'e2e_resume': e2e, 'node_resume': node}]}
    out = tmp_path / 'report'
    out.mkdir()
    text = bench_start_report.write_start_report(out, results, seconds=1.0)
    saved = json.loads((out / 'results.json').read_text())
    (row,) = saved['summary']
    assert row['fresh_work_cpu_s'] == node['work_cpu_s']
    assert row['resume_first_batch_s'] == e2e['first_batch_s']
    assert f'{node["work_cpu_s"]:.1f} / ' in text and f'/ {e2e["first_batch_s"]:.1f} |' in text
    assert 'Conclusion: with the recipe' in text and (out / 'report.md').read_text().strip() == text

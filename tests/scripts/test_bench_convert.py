"""`make bench-convert` at its smallest: every side has a row whose parts add up, the sides
read the same input (documents and bytes checked against the files themselves), and the
ratios and the projection are the ones its rows give; its tokens rows (ours, llm-foundry's
converter, the per-core limits, one worker) with the small sample tokenizer, the same token
stream as llm-foundry's."""
import gzip
import json
import os

import pytest

from tests.helpers import PY, run, sample_texts

# An end-to-end bench: left out of `make test-fast` (-m "not slow and not e2e").
pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_smallest_bench_convert_rows_are_whole_and_consistent(sample_dir, tokenizer_dir,
                                                              tmp_path):
    out = tmp_path / 'bench.json'
    proc = run([PY, '-m', 'scripts.bench.convert', '--input-dir', str(sample_dir), '--rounds', '1',
                '--build', str(tmp_path / 'build'), '--json', str(out), '--tokenizer',
                str(tokenizer_dir), '--one-core-files', '1', '--token-rounds', '1'], timeout=1200)
    res = json.loads(out.read_text())
    rows = res['rows']
    files = sorted(sample_dir.glob('c4-train.*.json.gz'))
    json_bytes = sum(len(gzip.decompress(f.read_bytes())) for f in files)
    docs = len(sample_texts(sample_dir))
    assert set(rows) == {'a', 'b', 'c'} | ({'d'} if 'd' in rows else set())
    if 'd' not in rows:
        assert 'spark' in res['not_run']['d'] and '(d) Spark local[2]  ' in proc.stdout
    for key, row in rows.items():
        assert row['input_bytes'] == json_bytes and row['samples'] == docs, key
        assert row['startup_s'] > 0 and row['convert_s'] > 0 and row['end_s'] >= 0, key
        assert row['startup_s'] + row['convert_s'] + row['end_s'] == \
            pytest.approx(row['whole_s'], abs=1e-6), key
        assert row['whole_mb_per_s'] == pytest.approx(json_bytes / 1e6 / row['whole_s'])
        assert row['convert_mb_per_s'] == pytest.approx(json_bytes / 1e6 / row['convert_s'])
        assert row['cpu_s'] > 0
    a, b, c = rows['a'], rows['b'], rows['c']
    assert res['input']['json_mb'] == pytest.approx(json_bytes / 1e6)
    assert res['input']['documents'] == docs and res['input']['files'] == len(files)
    workers = min(os.cpu_count(), len(files))
    assert a['workers'] == len(a['worker_mb_per_cpu_s']) == workers and a['parts'] == len(files)
    assert res['speedup_whole'] == pytest.approx(b['whole_s'] / a['whole_s'])
    assert res['speedup_convert'] == pytest.approx(b['convert_s'] / a['convert_s'])
    assert res['worker_share_wall'] == pytest.approx(min(a['worker_mb_per_s']) /
                                                     c['convert_mb_per_s'])
    for row in (b, c):  # CPU of the conversion itself, measured inside the process
        assert 0 < row['convert_cpu_s'] < row['cpu_s']
        assert row['convert_mb_per_cpu_s'] == pytest.approx(json_bytes / 1e6 / row['convert_cpu_s'])
    assert res['worker_share_cpu'] == pytest.approx(min(a['worker_mb_per_cpu_s']) /
                                                    c['convert_mb_per_cpu_s'])
    assert res['zstd_ratio'] == pytest.approx(res['input']['text_mb'] * 1e6 / a['bytes'])
    for p in res['projection']:
        assert p['hours'] == max(p['limits_h'].values()) == p['limits_h'][p['bound']]
    assert [p['cores'] for p in res['projection']] == sorted(p['cores'] for p in res['projection'])
    assert f"(a) vs (b), whole processes   {res['speedup_whole']:.2f}x" in proc.stdout

    # tokens: every row converted what it was given, in whole 2048-token samples
    t = res['tokens']
    trows = t['rows']
    assert set(trows) == {'t0', 'tL', 'c-hf', 't1', 'c-tt', 't2'}
    first = len(gzip.decompress(files[0].read_bytes()))
    for key, row in trows.items():
        assert row['input_bytes'] == (json_bytes if key in ('t0', 'tL') else first), key
        assert row['tokens'] == row['samples'] * 2048 > 0, key
        assert row['tokens_per_cpu_s'] == pytest.approx(row['tokens'] / row['cpu_s'])
    # one stream per file: the parts drop at most a sample's worth each, llm-foundry one
    assert trows['t0']['tokens'] <= trows['tL']['tokens'] + 2048
    assert trows['t0']['tokens'] >= trows['tL']['tokens'] - 2048 * len(files)
    assert trows['c-hf']['tokens'] == trows['t1']['tokens'] == trows['t2']['tokens'] == \
        trows['c-tt']['tokens']
    same = t['same_stream']
    assert same['equal'] and not same['problems'], same
    assert same['documents_matched'] + same['foundry_only_documents'] == \
        same['documents_foundry'] <= docs
    assert 'tokenizers' in t['encoders']['c-hf'] and t['encoders']['c-tt'].startswith('tiktoken')
    chf, ctt = trows['c-hf'], trows['c-tt']
    assert ctt['limit_tokens_per_cpu_s'] / chf['limit_tokens_per_cpu_s'] == \
        pytest.approx(t['tt_limit_vs_hf_limit'])
    assert 0 < chf['encode_cpu_s'] < chf['convert_cpu_s'] < chf['cpu_s']
    assert t['t1_share_of_hf_limit'] == pytest.approx(
        trows['t1']['tokens_per_cpu_s'] / chf['limit_tokens_per_cpu_s'])
    assert t['t2_vs_hf_alone'] == pytest.approx(
        trows['t2']['tokens_per_cpu_s'] / t['hf_alone_tokens_per_cpu_s'])
    assert t['foundry_vs_ours_whole'] == pytest.approx(trows['tL']['whole_s'] /
                                                       trows['t0']['whole_s'])
    assert "same token stream as llm-foundry's: yes" in proc.stdout
    assert f"(t2) / tokenizers alone, per CPU-s     {t['t2_vs_hf_alone']:.2f}x" in proc.stdout

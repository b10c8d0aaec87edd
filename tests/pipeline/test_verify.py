"""data_prep.verify and data_prep.stats on real MDS datasets, each damaged a different way."""
import json
import shutil

import pytest

from data_prep.pipeline.convert import ConvertConfig, convert
from data_prep.pipeline.stats import bucket_stats
from data_prep.pipeline.verify import verify
from data_prep.stats import main as stats_main
from data_prep.verify import main as verify_main


@pytest.fixture(scope='module')
def dataset(sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp('verify_src')
    s = convert(ConvertConfig(remote=str(out), data_files=str(sample_dir / 'c4-train.*.json.gz'),
                              compression='zstd', size_limit='64kb', max_docs=400,
                              hashes=['sha1', 'xxh64'], workers=2, progress=False))
    assert s['published']
    return out, s


@pytest.fixture
def copy(dataset, tmp_path):
    src, _ = dataset
    shutil.copytree(src, tmp_path / 'ds')
    return tmp_path / 'ds'


def _shard(root, n=1):
    return sorted((root / 'train' / 'part-00001').rglob('shard.*'))[n]


def test_a_good_dataset_passes_with_counts(dataset, capsys):
    out, s = dataset
    report = verify(str(out))
    assert report['ok'] and report['problems'] == []
    assert report['splits']['train']['samples'] == s['samples'] == 400
    assert report['splits']['train']['hashes_checked']
    assert verify(str(out / 'train'))['ok']  # the split folder itself is a dataset root too
    assert verify_main([str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith('OK')


def test_missing_truncated_and_corrupt_shards_are_named(copy, capsys):
    missing, short = _shard(copy, 0), _shard(copy, 1)
    missing.unlink()
    short.write_bytes(short.read_bytes()[:-10])
    assert verify_main([str(copy)]) == 1
    out = capsys.readouterr().out
    assert f'PROBLEM {missing}: missing' in out
    assert f'PROBLEM {short}: ' in out and 'index says' in out


def test_same_size_corruption_is_caught_by_hashes_not_sizes(copy):
    victim = _shard(copy, 1)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert verify(str(copy), hashes=False)['ok']  # sizes alone cannot see it
    report = verify(str(copy))
    assert not report['ok']
    assert any(str(victim) in p and 'sha1' in p for p in report['problems'])
    assert any(str(victim) in p and 'xxh64' in p for p in report['problems'])


def test_sample_count_mismatch_with_manifest(copy):
    manifest = copy / 'train' / 'part-00002' / 'manifest.json'
    m = json.loads(manifest.read_text())
    m['samples'] += 1
    manifest.write_text(json.dumps(m))
    report = verify(str(copy), hashes=False)
    assert not report['ok'] and 'part-00002' in report['problems'][0]
    assert 'its manifest' in report['problems'][0]


def test_no_index_is_a_problem_and_stats_count_objects(tmp_path, dataset, capsys):
    assert verify_main([str(tmp_path)]) == 1
    assert 'no index.json' in capsys.readouterr().out
    out, s = dataset
    st = bucket_stats(str(out))
    files = [p for p in out.rglob('*') if p.is_file()]
    assert st['objects'] == len(files) == s['objects']
    assert st['bytes'] == sum(p.stat().st_size for p in files) == s['bytes']
    assert st['list_seconds'] >= 0
    assert stats_main([str(out), '--json']) == 0
    assert json.loads(capsys.readouterr().out)['objects'] == len(files)

"""A document larger than a shard is not bad input: it is kept whole, in a shard of its own."""
import gzip
import json

from data_prep.pipeline.verify import verify
from tests.helpers import (
    expected_digest,
)
from tests.mds import sample_digest


def test_document_larger_than_a_shard_is_kept_whole(tmp_path):
    from data_prep.pipeline.convert import ConvertConfig, convert
    data = tmp_path / 'in'
    data.mkdir()
    big = ' '.join(f'word{i}' for i in range(20000))  # about 150 KB, the shard limit is 16 KB
    texts = [f'Document {i}.' for i in range(5)]
    texts.insert(2, big)
    with gzip.open(data / 'c4-train.00000-of-00001.json.gz', 'wt', encoding='utf-8') as f:
        for t in texts:
            f.write(json.dumps({'text': t, 'url': 'u', 'timestamp': 't'}) + '\n')
    s = convert(ConvertConfig(remote=str(tmp_path / 'out'), data_files=str(data / '*.gz'),
                              size_limit='16kb', compression='zstd', workers=1, progress=False))
    assert s['published'] and s['samples'] == len(texts) and sum(s['skipped'].values()) == 0
    assert sample_digest(str(tmp_path / 'out'), 'train') == expected_digest(texts)
    assert verify(str(tmp_path / 'out'))['ok']
    index = json.loads((tmp_path / 'out' / 'train' / 'index.json').read_text())
    assert [sh['samples'] for sh in index['shards']].count(1) >= 1  # the big one alone

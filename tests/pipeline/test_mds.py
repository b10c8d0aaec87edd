"""MDS shards written with streaming's MDSWriter read back identically, raw and zstd."""
import pytest
from streaming import MDSWriter, StreamingDataset

from tests.helpers import sample_texts


@pytest.mark.parametrize('compression', [None, 'zstd'])
def test_written_shards_read_back_identically(sample_dir, tmp_path, compression):
    texts = sample_texts(sample_dir)[:400]
    with MDSWriter(out=str(tmp_path / 'mds'), columns={'text': 'str'}, compression=compression,
                   size_limit=1 << 18) as writer:
        for text in texts:
            writer.write({'text': text})
    shards = sorted(p.name for p in (tmp_path / 'mds').iterdir() if p.name.startswith('shard.'))
    assert len(shards) > 2
    assert all(name.endswith('.mds.zstd' if compression else '.mds') for name in shards)
    ds = StreamingDataset(
        remote=str(tmp_path / 'mds'), local=str(tmp_path / 'cache'), shuffle=False, batch_size=1
    )
    assert [ds[i]['text'] for i in range(len(ds))] == texts

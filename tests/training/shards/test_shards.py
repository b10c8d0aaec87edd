"""Our streaming extensions for training: installed once, through streaming's own registries where
it has them; the `checked` stream refuses a damaged shard by name."""
import json

import pytest
from streaming import StreamingDataset
from streaming.base.storage import download, upload
from streaming.base.stream import streams_registry

from data_prep.streaming_ext import oci
from tests.helpers import read_ids, write_mds
from training.shards import install
from training.shards.stream import CheckedStream, ShardUnavailable


def test_install_is_idempotent_and_uses_streamings_registries():
    install()
    install()
    assert download.DOWNLOADER_MAPPINGS['oci'] is oci.OCIDownloader
    assert getattr(upload, upload.UPLOADERS['oci']) is oci.OCIUploader
    assert streams_registry.get('checked') is CheckedStream
    # also found through the entry point setup.py declares, without install()
    assert streams_registry.get_entry_point('checked') is CheckedStream


def test_stream_name_checked_makes_streaming_build_our_stream(tmp_path):
    write_mds(str(tmp_path / 'ds'), 50)
    ds = StreamingDataset(local=str(tmp_path / 'ds'), batch_size=4, stream_name='checked')
    assert [type(s) for s in ds.streams] == [CheckedStream]


def test_truncated_local_shard_is_named_not_read(tmp_path):
    """No checksum in the transport (a local path): the checked stream compares the cached
    shard with the index and names it; without it streaming would read a short file."""
    src = tmp_path / 'ds'
    write_mds(str(src), 300, size_limit=1 << 13, repeat=30)
    index = json.loads((src / 'index.json').read_text())
    first = index['shards'][0]['samples']
    victim = src / 'shard.00001.mds'
    victim.write_bytes(victim.read_bytes()[:-100])
    seen: list[int] = []
    with pytest.raises(ShardUnavailable, match='shard.00001.mds of .*index says'):
        read_ids(str(src), tmp_path / 'cache', seen=seen)
    # the pass stopped at the bad shard, loudly: samples of shard 0 only, in order (streaming
    # stops yielding as soon as a background thread fails, so maybe not all of them)
    assert seen == list(range(len(seen))) and len(seen) <= first
    assert not (tmp_path / 'cache' / 'shard.00001.mds').exists()  # not left in the cache


def test_same_size_change_is_caught_by_validate_hash_xxh64(tmp_path):
    """docs/failures.md's full hash check for any remote: a shard changed in place, same size (no
    size check can see it, a local path has no MD5), read with `validate_hash: xxh64`."""
    from streaming import MDSWriter
    src = tmp_path / 'ds'
    with MDSWriter(out=str(src), columns={'id': 'int', 'text': 'str'}, hashes=['xxh64'],
                   size_limit=1 << 13) as writer:  # our conversions record xxh64 too
        for i in range(300):
            writer.write({'id': i, 'text': f'document {i} ' + 'lorem ipsum ' * (i % 30)})
    victim = src / 'shard.00001.mds'
    data = bytearray(victim.read_bytes())
    data[-10] ^= 0x01  # one letter of the shard's last text, still ASCII
    victim.write_bytes(bytes(data))
    # without the hash check the change goes through unseen
    assert sorted(read_ids(str(src), tmp_path / 'plain')) == list(range(300))
    ds = StreamingDataset(remote=str(src), local=str(tmp_path / 'hashed'), shuffle=False,
                          batch_size=8, stream_name='checked', validate_hash='xxh64')
    with pytest.raises(ShardUnavailable, match=rf'shard\.00001\.mds of {src}.*Checksum'):
        list(ds)
    assert not (tmp_path / 'hashed' / 'shard.00001.mds').exists()

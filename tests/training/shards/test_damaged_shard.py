"""A shard truncated or altered in the bucket, and a shard the index does not name: the reader
names it (no silent early end of the pass, no hang) and `python -m data_prep.verify` names
it too (docs/failures.md)."""
import json
import time

import pytest

from data_prep.pipeline.verify import verify
from data_prep.verify import main as verify_main
from tests.helpers import (
    read_ids,
    write_mds,
)
from training.shards.stream import ShardUnavailable

BUCKET = 'c4-bench'


def test_damaged_shard_is_named_by_the_reader_and_by_verify(oci_store, tmp_path, capsys):
    bucket = oci_store.data_dir / 'buckets' / BUCKET
    for name in ('trunc', 'altered'):
        write_mds(f'oci://{BUCKET}@local/{name}/train', 400, size_limit=1 << 13, compression='zstd',
                  repeat=30)
    index = json.loads((bucket / 'trunc' / 'train' / 'index.json').read_text())
    first = index['shards'][0]['samples']
    assert len(index['shards']) >= 3
    short = bucket / 'trunc' / 'train' / 'shard.00001.mds.zstd'
    short.write_bytes(short.read_bytes()[:-7])                 # truncated in the bucket
    changed = bucket / 'altered' / 'train' / 'shard.00001.mds.zstd'
    data = bytearray(changed.read_bytes())
    data[len(data) // 2] ^= 0x5A                               # altered, same size
    changed.write_bytes(bytes(data))

    for name in ('trunc', 'altered'):
        remote = f'oci://{BUCKET}@local/{name}/train'
        # The pass stops at the bad shard with an error naming it and its remote: before the
        # fix streaming ended the pass early in silence and the run trained on.
        seen: list[int] = []
        with pytest.raises(ShardUnavailable) as err:
            read_ids(remote, tmp_path / f'cache-{name}', seen=seen)
        assert f'shard.00001.mds.zstd of {remote}' in str(err.value)
        # shard 0 only, in order: nothing from the bad shard on (streaming stops yielding as
        # soon as a background thread fails, so maybe not all of shard 0)
        assert seen == list(range(len(seen))) and len(seen) <= first
        assert not (tmp_path / f'cache-{name}' / 'shard.00001.mds').exists()
        # the verify command names it too
        assert verify_main([f'oci://{BUCKET}@local/{name}']) == 1
        out = capsys.readouterr().out
        assert f'PROBLEM {remote}/shard.00001.mds.zstd' in out, out

    # Two DataLoader workers: the error reaches the training loop, it does not hang.
    t0 = time.monotonic()
    with pytest.raises(ShardUnavailable, match=r'shard\.00001\.mds\.zstd'):
        read_ids(f'oci://{BUCKET}@local/altered/train', tmp_path / 'cache-dl', workers=2)
    assert time.monotonic() - t0 < 60  # a hang would be forever: this only bounds the test

    # Any remote, no checksum in the transport: a truncated raw shard at a local path is
    # caught by its size against the index, not read as garbage.
    local = tmp_path / 'local_ds'
    write_mds(str(local), 300, size_limit=1 << 13, repeat=30)
    victim = local / 'shard.00001.mds'
    victim.write_bytes(victim.read_bytes()[:-100])
    with pytest.raises(ShardUnavailable, match='shard.00001.mds of .*index says'):
        read_ids(str(local), tmp_path / 'cache-local')
    # verify also covers every shard present: one the index does not name is reported
    victim.unlink()
    (local / 'shard.00009.mds').write_bytes(b'stray')
    problems = verify(str(local))['problems']
    assert f'{local}/shard.00001.mds: missing' in problems
    assert f'{local}/shard.00009.mds: a shard the index does not name' in problems

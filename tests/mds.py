"""MDS read back for the tests, by hand from the format (a sample count, offsets, the samples):
what the converter wrote, byte for byte, in index order, with nothing of streaming's reader in
between but its decompression."""
from __future__ import annotations

import hashlib
import json
from typing import Iterator

import numpy as np

from data_prep.pipeline.layout import INDEX, shard_file_infos
from data_prep.storage import open_remote


def iter_samples(url: str, split: str = '') -> Iterator[bytes]:
    """The encoded bytes of every sample of an MDS dataset, in index order."""
    from streaming.base.compression import decompress
    remote = open_remote(url)
    prefix = f'{split.strip("/")}/' if split else ''
    index = json.loads(remote.read(prefix + INDEX))
    for shard in index['shards']:
        stored, _raw = shard_file_infos(shard)[0]
        data = remote.read(prefix + stored['basename'])
        if shard.get('zip_data'):
            data = decompress(shard['compression'], data)
        n = int(np.frombuffer(data[:4], np.uint32)[0])
        offsets = np.frombuffer(data[4:4 + 4 * (n + 1)], np.uint32)
        for i in range(n):
            yield data[offsets[i]:offsets[i + 1]]


def sample_digest(url: str, split: str = '') -> tuple[int, str]:
    """(number of samples, sha256 over every sample's bytes in order): equal datasets match."""
    h, n = hashlib.sha256(), 0
    for sample in iter_samples(url, split):
        h.update(len(sample).to_bytes(8, 'little'))
        h.update(sample)
        n += 1
    return n, h.hexdigest()

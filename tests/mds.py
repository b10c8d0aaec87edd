"""MDS read back for the tests: a digest of every sample's bytes, in index order."""
from __future__ import annotations

import hashlib

from data_prep.pipeline.verify import iter_samples

__all__ = ['iter_samples', 'sample_digest']


def sample_digest(url: str, split: str = '') -> tuple[int, str]:
    """(number of samples, sha256 over every sample's bytes in order): equal datasets match."""
    h, n = hashlib.sha256(), 0
    for sample in iter_samples(url, split):
        h.update(len(sample).to_bytes(8, 'little'))
        h.update(sample)
        n += 1
    return n, h.hexdigest()

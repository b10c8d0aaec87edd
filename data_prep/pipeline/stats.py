"""Bucket stats: bytes and object count under a prefix, and how long listing them took.

    python -m data_prep.stats REMOTE [--json]
"""
from __future__ import annotations

import time

from data_prep.storage import open_remote


def bucket_stats(url: str, prefix: str = '') -> dict:
    """{'remote', 'prefix', 'bytes', 'objects', 'list_seconds'} for every object under
    url/prefix."""
    remote = open_remote(url)
    t0 = time.perf_counter()
    listing = remote.list(prefix)
    seconds = time.perf_counter() - t0
    return {'remote': url, 'prefix': prefix, 'bytes': sum(listing.values()),
            'objects': len(listing), 'list_seconds': seconds}

"""Bucket stats: bytes and object count under a prefix, how long listing them took, and how
each dataset split found there was made (its record, dataset.json: record.py).

    python -m data_prep.stats REMOTE [--json]
"""
from __future__ import annotations

import time

from data_prep.pipeline.layout import INDEX
from data_prep.pipeline.record import RecordError, read_record
from data_prep.storage import open_remote


def dataset_roots(listing: dict[str, int]) -> list[str]:
    """The folders ('' for the listed prefix itself) holding a root index: those with an
    index.json and no such folder above them (a part's own index is below its split's)."""
    folders = sorted(name[:-len(INDEX)].rstrip('/') for name in listing
                     if name == INDEX or name.endswith('/' + INDEX))
    roots: list[str] = []
    for folder in folders:  # sorted: a folder comes after every folder above it
        if not any(r == '' or folder.startswith(r + '/') for r in roots):
            roots.append(folder)
    return roots


def bucket_stats(url: str, prefix: str = '') -> dict:
    """{'remote', 'prefix', 'bytes', 'objects', 'list_seconds', 'splits'} for every object
    under url/prefix; 'splits': dataset folder -> its record (None: it has none; a string: why
    it cannot be read)."""
    remote = open_remote(url)
    t0 = time.perf_counter()
    listing = remote.list(prefix)
    seconds = time.perf_counter() - t0
    splits: dict = {}
    for root in dataset_roots(listing):
        try:
            splits[root] = read_record(remote, root)
        except RecordError as exc:
            splits[root] = str(exc)
    return {'remote': url, 'prefix': prefix, 'bytes': sum(listing.values()),
            'objects': len(listing), 'list_seconds': seconds, 'splits': splits}

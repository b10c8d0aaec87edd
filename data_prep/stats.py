"""Bucket stats: bytes and object count under a prefix, and how long listing them took.

    python -m data_prep.stats REMOTE [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from data_prep.remote import open_remote


def bucket_stats(url: str, prefix: str = '') -> dict:
    """{'remote', 'prefix', 'bytes', 'objects', 'list_seconds'} for every object under url/prefix."""
    if url.startswith('oci://'):
        from data_prep.oci_transport import register
        register()
    remote = open_remote(url)
    t0 = time.perf_counter()
    listing = remote.list(prefix)
    seconds = time.perf_counter() - t0
    return {'remote': url, 'prefix': prefix, 'bytes': sum(listing.values()),
            'objects': len(listing), 'list_seconds': seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog='python -m data_prep.stats',
                                description='Bytes and object count under a remote prefix, and '
                                            'the time one paged listing took.')
    p.add_argument('remote', help='local path, s3://bucket/prefix or oci://bucket@namespace/prefix')
    p.add_argument('--prefix', default='', help='only objects under this sub-prefix')
    p.add_argument('--json', action='store_true', help='print JSON')
    args = p.parse_args(argv)
    try:
        s = bucket_stats(args.remote, args.prefix)
    except Exception as exc:
        print(f'error: cannot list {args.remote}: {type(exc).__name__}: {exc}', file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(s))
    else:
        print(f'{args.remote}: {s["bytes"]:,} bytes ({s["bytes"] / 1e6:,.1f} MB) in '
              f'{s["objects"]:,} objects; listed in {s["list_seconds"]:.3f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())

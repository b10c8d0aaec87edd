"""`python -m data_prep.stats REMOTE`: bytes and object count under a remote prefix, and how
each dataset split there was made (its record, dataset.json)."""
from __future__ import annotations

import argparse
import json
import sys

from data_prep.pipeline.record import NO_RECORD, describe
from data_prep.pipeline.stats import bucket_stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog='python -m data_prep.stats',
                                description='Bytes and object count under a remote prefix, the '
                                            'time one paged listing took, and how each dataset '
                                            'split there was made.')
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
        for split, record in s['splits'].items():
            name = split or '.'
            if isinstance(record, dict):
                print(f'  {name}:')
                print('\n'.join(f'    {line}' for line in describe(record)))
            else:
                print(f'  {name}: {record or NO_RECORD}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

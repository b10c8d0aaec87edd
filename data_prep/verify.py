"""`python -m data_prep.verify REMOTE`: check an MDS dataset (data_prep.pipeline.verify)."""
from __future__ import annotations

import argparse
import json
import sys

from data_prep.pipeline.record import NO_RECORD
from data_prep.pipeline.verify import verify


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog='python -m data_prep.verify',
                                description='Verify an MDS dataset in a local path, s3:// or '
                                            'oci:// remote; non-zero exit naming each problem.')
    p.add_argument('remote', help='dataset root (holding index.json) or a folder of splits')
    p.add_argument('--split', help='check only this split folder under REMOTE')
    p.add_argument('--sizes-only', action='store_true',
                   help='check presence and sizes from one listing; do not download shards')
    p.add_argument('--workers', type=int, default=8, help='parallel shard downloads (default 8)')
    p.add_argument('--json', action='store_true', help='print the report as JSON')
    args = p.parse_args(argv)
    try:
        report = verify(args.remote, args.split, hashes=not args.sizes_only, workers=args.workers)
    except Exception as exc:
        print(f'error: cannot verify {args.remote}: {type(exc).__name__}: {exc}', file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for problem in report['problems']:
            print(f'PROBLEM {problem}')
        for sp, info in report['splits'].items():
            checked = ['sizes', 'hashes'] if info['hashes_checked'] else ['sizes']
            checked += ['the record'] if info['record'] else []
            checked += ['sample lengths and token ids'] if info['tokens_checked'] else []
            print(f'{args.remote} [{sp}]: {info["shards"]} shards, {info["samples"]:,} samples, '
                  f'{info["bytes"]:,} bytes; checked: {", ".join(checked)}')
            if not info['record']:
                print(f'{args.remote} [{sp}]: {NO_RECORD}: how it was made is not checked')
        print('OK' if report['ok'] else f'FAILED: {len(report["problems"])} problem(s)')
    return 0 if report['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())

"""`python -m data_prep.sample`: write the offline C4-format sample (data_prep.pipeline.sample)."""
from __future__ import annotations

import argparse
import os
import sys

from data_prep.pipeline.sample import DEFAULT_OUT, generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m data_prep.sample',
        description='Write an offline C4-format sample (allenai/c4 file names and records).')
    parser.add_argument(
        '--out', default=DEFAULT_OUT, help=f'output directory (default {DEFAULT_OUT})'
    )
    parser.add_argument('--size-mb', type=float, default=8,
                        help='total MB of document text across all files (default 8)')
    parser.add_argument(
        '--train-files', type=int, default=8, help='number of train files (default 8)'
    )
    parser.add_argument(
        '--val-files', type=int, default=1, help='number of validation files (default 1)'
    )
    parser.add_argument('--seed', type=int, default=17, help='random seed; same seed, same files')
    parser.add_argument('--workers', type=int, default=None, help='processes (default: the cores)')
    args = parser.parse_args(argv)
    if args.size_mb <= 0 or args.train_files < 1 or args.val_files < 0:
        parser.error('--size-mb must be > 0, --train-files >= 1, --val-files >= 0')
    paths = generate(
        args.out, args.size_mb, args.train_files, args.val_files, args.seed, args.workers
    )
    total = sum(os.path.getsize(p) for p in paths)
    print(f'{len(paths)} files, {total / 1e6:.1f} MB gzipped, in {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

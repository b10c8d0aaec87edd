"""`python -m data_prep.tokenizer`: train the small offline BPE tokenizer."""
from __future__ import annotations

import argparse
import sys

from data_prep.pipeline.tokenizer import DEFAULT_VOCAB, EOS, PAD, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m data_prep.tokenizer',
                                     description='Train the small offline BPE tokenizer.')
    parser.add_argument('--data-dir', default='build/c4_sample',
                        help='directory with c4-train.*.json.gz files (default build/c4_sample)')
    parser.add_argument(
        '--out', default='build/tokenizer', help='output directory (default build/tokenizer)'
    )
    parser.add_argument('--vocab-size', type=int, default=DEFAULT_VOCAB,
                        help=f'vocabulary size, special tokens included (default {DEFAULT_VOCAB})')
    parser.add_argument(
        '--max-mb', type=float, default=20, help='MB of text to train on (default 20)'
    )
    args = parser.parse_args(argv)
    fast = train(args.data_dir, args.out, args.vocab_size, args.max_mb)
    print(f'tokenizer with {len(fast)} tokens (eos {EOS}, pad {PAD}) in {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

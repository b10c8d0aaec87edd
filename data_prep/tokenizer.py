"""`python -m data_prep.tokenizer`: train an offline tokenizer: the small BPE the tests use, or
one built as Qwen2.5's is (the recipes' model: 151,643 BPE tokens, its split and added tokens),
for measuring tokenization at the real vocabulary's size (docs/converting.md)."""
from __future__ import annotations

import argparse
import sys

from data_prep.pipeline.tokenizer import DEFAULT_VOCAB, EOS, PAD, train, train_qwen2_like


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m data_prep.tokenizer',
                                     description='Train an offline BPE tokenizer.')
    parser.add_argument('--like', choices=['small', 'qwen2.5'], default='small',
                        help='small: 4096 tokens, trained on --data-dir in seconds (the tests); '
                        'qwen2.5: built as Qwen2.5\'s tokenizer is, 151,665 tokens, from '
                        'generated text (~40 s, 1.2 GB)')
    parser.add_argument('--data-dir', default='build/c4_sample',
                        help='small: directory with c4-train.*.json.gz files '
                        '(default build/c4_sample)')
    parser.add_argument(
        '--out', default='build/tokenizer', help='output directory (default build/tokenizer)'
    )
    parser.add_argument('--vocab-size', type=int, default=DEFAULT_VOCAB,
                        help=f'small: vocabulary size, special tokens included (default '
                        f'{DEFAULT_VOCAB})')
    parser.add_argument(
        '--max-mb', type=float, default=20, help='small: MB of text to train on (default 20)'
    )
    args = parser.parse_args(argv)
    if args.like == 'qwen2.5':
        fast = train_qwen2_like(args.out)
        print(f'Qwen2.5-like tokenizer with {len(fast):,} tokens (eos {fast.eos_token}) in '
              f'{args.out}')
        return 0
    fast = train(args.data_dir, args.out, args.vocab_size, args.max_mb)
    print(f'tokenizer with {len(fast)} tokens (eos {EOS}, pad {PAD}) in {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

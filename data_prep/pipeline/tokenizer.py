"""Offline tokenizers: a small byte-level BPE trained on the C4-format sample, and one built
as Qwen2.5's is (train_qwen2_like) for measuring at the real vocabulary's size.

Built in seconds (the Qwen2.5-like one in ~40 s), so never committed or downloaded. Saved as
Hugging Face fast tokenizer directories: llm-foundry loads them with `tokenizer.name: <dir>`.
llm-foundry's on-the-fly tokenization needs a pad token, so one is set beside eos.
"""
from __future__ import annotations

import glob
import gzip
import json
from pathlib import Path

EOS, PAD = '<|endoftext|>', '<|pad|>'
DEFAULT_VOCAB = 4096


def _texts(files: list[str], max_bytes: int):
    seen = 0
    for path in files:
        with gzip.open(path, 'rt', encoding='utf-8') as f:
            for line in f:
                text = json.loads(line)['text']
                seen += len(text)
                yield text
                if seen >= max_bytes:
                    return


def train(data_dir: str, out: str, vocab_size: int = DEFAULT_VOCAB, max_mb: float = 20):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    files = sorted(glob.glob(str(Path(data_dir) / 'c4-train.*.json.gz')))
    if not files:
        raise SystemExit(f'error: no c4-train.*.json.gz files in {data_dir} (run `make sample`)')
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_texts(files, int(max_mb * 1e6)), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS,
                                   unk_token=EOS, pad_token=PAD, model_max_length=1 << 20)
    fast.save_pretrained(out)
    return fast


# --------------------------------------------------------------------------- Qwen2.5-like

# Qwen2.5's tokenizer as transformers builds it (convert_slow_tokenizer.Qwen2Converter, and
# Qwen2.5-7B's tokenizer.json): NFC, this split, byte-level BPE of 151,643 tokens (ids
# 0-151,642), then 22 added tokens at 151,643-151,664, the first 14 special; eos and pad
# <|endoftext|>, no bos; the post-processor adds nothing.
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
                 r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2_BPE_TOKENS = 151_643
QWEN2_ADDED = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|object_ref_start|>',
               '<|object_ref_end|>', '<|box_start|>', '<|box_end|>', '<|quad_start|>',
               '<|quad_end|>', '<|vision_start|>', '<|vision_end|>', '<|vision_pad|>',
               '<|image_pad|>', '<|video_pad|>', '<tool_call>', '</tool_call>', '<|fim_prefix|>',
               '<|fim_middle|>', '<|fim_suffix|>', '<|fim_pad|>', '<|repo_name|>', '<|file_sep|>']
QWEN2_SPECIAL = 14
# Letters of the scripts Qwen2.5's vocabulary also covers (inclusive code point ranges), for
# the made-up words that fill the vocabulary past what the English sample can give.
_SCRIPTS = {
    'latin': [(0x61, 0x7A), (0xE0, 0xFF), (0x100, 0x17F)], 'greek': [(0x3B1, 0x3C9)],
    'cyrillic': [(0x430, 0x44F)], 'arabic': [(0x627, 0x64A)], 'devanagari': [(0x905, 0x939)],
    'hangul': [(0xAC00, 0xD7A3)], 'kana': [(0x3041, 0x3096), (0x30A1, 0x30FA)],
    'han': [(0x4E00, 0x9FA5)],
}
_NO_SPACES = ('kana', 'han')


def _made_up_words(words_per_script: int, seed: int) -> list[str]:
    """Lines of made-up words, per script: 2-8 letters, the letters Zipf-distributed (so pairs
    repeat and BPE has merges to learn), 50 words a line (no spaces for Japanese and Chinese)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    lines = []
    for name, ranges in _SCRIPTS.items():
        letters = [chr(c) for a, b in ranges for c in range(a, b + 1)]
        p = 1 / np.arange(1, len(letters) + 1)
        lengths = rng.integers(2, 9, size=words_per_script)
        picks = rng.choice(len(letters), size=int(lengths.sum()), p=p / p.sum())
        ends = np.cumsum(lengths)
        words = [''.join(letters[j] for j in picks[e - n:e]) for n, e in zip(lengths, ends)]
        sep = '' if name in _NO_SPACES else ' '
        lines += [sep.join(words[i:i + 50]) for i in range(0, len(words), 50)]
    return lines


def train_qwen2_like(out: str, english_docs: int = 10_000, words_per_script: int = 100_000,
                     seed: int = 3, bpe_tokens: int = QWEN2_BPE_TOKENS):
    """A tokenizer built as Qwen2.5's is (above), its 151,643 BPE tokens learnt offline: from
    `english_docs` documents of the C4-like sample generator (seed `seed`: other documents
    than the sample's and the benchmarks', which use seed 17) and, since those hold only ~15k
    distinct words, made-up words in 8 other scripts. About 40 s and 1.2 GB here; saved as a
    Qwen2TokenizerFast directory (tokenizer.json, vocab.json, merges.txt). The tests make a
    smaller one (fewer documents, words and `bpe_tokens`) in seconds."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import Qwen2TokenizerFast

    from data_prep.pipeline.sample import documents
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior='isolated', invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=bpe_tokens, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = list(documents(english_docs, seed=seed)) + _made_up_words(words_per_script, seed + 1)
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=i < QWEN2_SPECIAL)
                    for i, t in enumerate(QWEN2_ADDED)])
    fast = Qwen2TokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, unk_token=None,
                              bos_token=None, model_max_length=131_072)
    fast.save_pretrained(out)
    return fast

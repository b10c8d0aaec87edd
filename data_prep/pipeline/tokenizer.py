"""A small byte-level BPE tokenizer trained offline on the C4-format sample.

Built in seconds, so it is never committed or downloaded. Saved as a Hugging Face
`PreTrainedTokenizerFast` directory, so llm-foundry loads it with `tokenizer.name: <dir>`.
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

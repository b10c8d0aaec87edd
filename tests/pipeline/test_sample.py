"""The offline C4-format sample and the tokenizer trained on it."""
import gzip
import hashlib
import json

import numpy as np
import zstandard

from data_prep.pipeline.sample import documents, generate
from tests.helpers import sample_texts


def test_file_names_and_records_match_allenai_c4(sample_dir):
    names = sorted(p.name for p in sample_dir.iterdir())
    assert names == [f'c4-train.{i:05d}-of-00004.json.gz' for i in range(4)] + \
        ['c4-validation.00000-of-00001.json.gz']
    with gzip.open(sample_dir / names[0], 'rt', encoding='utf-8') as f:
        records = [json.loads(line) for line in f]
    assert len(records) > 50
    for rec in records:
        assert set(rec) == {'text', 'timestamp', 'url'}
        assert rec['text'].strip() and rec['url'].startswith('https://')
        assert rec['timestamp'].endswith('Z')


def test_documents_do_not_repeat_and_compress_like_web_text(sample_dir):
    texts = sample_texts(sample_dir)
    assert len(set(texts)) == len(texts)
    blob = '\n'.join(texts).encode('utf-8')
    ratio = len(blob) / len(zstandard.ZstdCompressor(level=3).compress(blob))
    assert 2.3 <= ratio <= 3.8, ratio


def test_document_lengths_are_c4s_mean_with_a_long_tail():
    """C4 `en`: 2,271 bytes of text per document on average. 10,000 documents put the mean
    within ~30 bytes (one standard error); the bounds below are 4 of them, and the median and
    tail those of the lognormal the module documents."""
    sizes = np.array([len(t.encode('utf-8')) for t in documents(10_000, seed=11)])
    assert 2_150 <= sizes.mean() <= 2_390, sizes.mean()
    assert 1_300 <= np.median(sizes) <= 1_550, np.median(sizes)
    assert 4_300 <= np.percentile(sizes, 90) <= 5_500, np.percentile(sizes, 90)
    assert 10_500 <= np.percentile(sizes, 99) <= 17_000, np.percentile(sizes, 99)
    assert sizes.max() > 25_000 and sizes.min() >= 80  # a long tail; no one-liners


def test_generation_is_deterministic(tmp_path):
    a, b = tmp_path / 'a', tmp_path / 'b'
    for out in (a, b):
        generate(str(out), size_mb=0.3, train_files=2, val_files=1, seed=5, workers=1)
    def digest(d):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir()}

    assert digest(a) == digest(b)
    generate(str(tmp_path / 'c'), size_mb=0.3, train_files=2, val_files=1, seed=6, workers=1)
    assert digest(tmp_path / 'c') != digest(a)


def test_read_through_datasets_streaming_api(sample_dir):
    from datasets import load_dataset
    ds = load_dataset('json', data_files=str(sample_dir / 'c4-train.*.json.gz'), split='train',
                      streaming=True)
    streamed = [rec['text'] for rec in ds]
    assert sorted(streamed) == sorted(sample_texts(sample_dir))


def test_tokenizer_has_eos_and_pad_and_round_trips(tokenizer_dir, sample_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert len(tok) == 4096
    assert tok.eos_token == '<|endoftext|>' and tok.pad_token == '<|pad|>'
    assert tok.pad_token_id != tok.eos_token_id
    text = sample_texts(sample_dir)[0]
    ids = tok(text)['input_ids']
    assert tok.decode(ids) == text
    assert len(ids) < len(text) / 2  # BPE merges: well under one token per byte

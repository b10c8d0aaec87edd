"""The encoder of `--format tokens` (data_prep/pipeline/encoder.py): tiktoken's ids equal
`tokenizer(text)`'s, as llm-foundry calls it, on held-out text and on text made to part them;
where tiktoken cannot be exact the conversion uses tokenizers and says why; either way a
conversion writes the same samples.

Two real tokenizers: the small sample one (GPT-2's split, no normalizer, its added tokens in
the vocabulary) and a Qwen2.5-like one (Qwen2's split, NFC, 22 added tokens), smaller than
the benchmark's so that it builds in seconds."""
import json
import random

import pytest

from data_prep.convert import main as convert_main
from data_prep.pipeline.encoder import Inexact, load_encoder
from data_prep.pipeline.estimate import estimate, estimate_line, is_real_bucket, json_bytes
from data_prep.pipeline.tokenizer import QWEN2_ADDED
from tests.helpers import one_error_line, sample_texts
from tests.mds import sample_digest


@pytest.fixture(scope='module')
def qwen_dir(tmp_path_factory):
    from data_prep.pipeline.tokenizer import train_qwen2_like
    out = tmp_path_factory.mktemp('qwen_like')
    train_qwen2_like(str(out), english_docs=1500, words_per_script=4000, bpe_tokens=30_000)
    return out


def _tok(path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(path))


def _made_to_part_them(added: list[str]) -> list[str]:
    """Texts where a split, a normalizer or an added-token match could go another way."""
    rng = random.Random(5)
    scripts = 'aé Ωж ש ع ह ก 한 日本 😀 👨‍👩‍👧 ١٢ ⅷ ½ \u0301 \u1df6 \u0898 \u212b \u1e9b\u0323'
    texts = [
        # whitespace runs of every kind, at the start, middle and end
        ' \t\n\r\n\u00a0\u3000\u2003  x  \n\n\n   y\t\t\t\r\r\n z   ',
        '\n' * 500 + ' ' * 1000 + '\t' * 300 + 'end' + ' ' * 777,
        # added tokens inside words, adjacent, cut short, and before a mark NFC would fuse
        ''.join(f'a{t}b {t}{t}\n{t}>\u0338 {t[:-1]} ' for t in added) + '<|<||>|>',
        # decomposed and composed forms, marks whose class Python and tokenizers disagree on
        'e\u0301 e\u0301\u0323 A\u030a \u212b \u1e9b\u0323 a\u1df6\u0301 \u0898\u0301 '
        '\u1100\u1161\u11a8 \u0958 q\u0307\u0323 \u0344 \u0f73',
        # contractions in every case, numbers, code
        "DON'T it'S I'M we'Ve they'LL you'd 'S 'll ''' 123456789 3.14 1e-9 0x1F ١٢٣٤",
        'def f(x):\n    return {"a": [1, 2]}  # ~/path?q=1&r=2\n\tif (a&&b) { c->d[0] += 1; }',
    ]
    # random mixes of scripts, marks, spaces and punctuation
    pieces = scripts.split() + [' ', '  ', '\n', '\t', '.', ',', "'s", '--', '...', '"'] + added
    texts += [''.join(rng.choice(pieces) for _ in range(400)) for _ in range(40)]
    return texts


def _long_documents(sample_dir) -> list[str]:
    docs = sample_texts(sample_dir, 'validation')
    return ['\n\n'.join(docs)[:1_000_000],                      # a 1 MB document
            'x' * 100_000, 'ab' * 60_000 + ' ' + 'é' * 30_000,  # long single pieces
            ' '.join(docs[:50]).replace(' ', '   ')]


@pytest.mark.parametrize('which', ['small', 'qwen_like'])
def test_tiktoken_ids_equal_tokenizers_on_held_out_and_adversarial_text(which, sample_dir,
                                                                        tokenizer_dir, qwen_dir):
    tok = _tok(tokenizer_dir if which == 'small' else qwen_dir)
    enc = load_encoder(tok, 'tiktoken')
    assert enc.name == 'tiktoken' and 'same ids as tokenizers' in enc.why
    added = list(tok.get_added_vocab())
    assert which == 'small' or added == QWEN2_ADDED
    # held out: the validation file (the small tokenizer learnt from train files; the
    # Qwen2.5-like one from other generated documents)
    texts = sample_texts(sample_dir, 'validation') + _made_to_part_them(added) + \
        _long_documents(sample_dir)
    want = tok(texts, truncation=False, padding=False)['input_ids']  # as llm-foundry calls it
    got = enc.encode_batch(texts)
    assert [g.dtype.name for g in got] == ['int32'] * len(texts)
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if g.tolist() != w]
    assert not bad, f'{len(bad)} texts differ, e.g. {texts[bad[0]][:80]!r}'
    assert sum(map(len, want)) > 100_000
    # added tokens in the text are the tokenizer's ids, as tokenizers matches them
    text = f'x{added[0]}y'
    assert enc.encode_batch([text])[0].tolist() == tok(text)['input_ids']
    assert tok.convert_tokens_to_ids(added[0]) in tok(text)['input_ids']


@pytest.mark.slow
def test_tiktoken_ids_equal_tokenizers_for_every_code_point(qwen_dir):
    """Both regex engines and both NFCs on every code point but the surrogates, each beside
    letters, digits, spaces and itself (the engines' Unicode tables may differ in age)."""
    tok = _tok(qwen_dir)
    enc = load_encoder(tok, 'tiktoken')
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    texts = [''.join(f' {chr(c)}a{chr(c)}{chr(c)}1\t{chr(c)}' for c in cps[i:i + 1000])
             for i in range(0, len(cps), 1000)]
    want = [e.ids for e in tok.backend_tokenizer.encode_batch_fast(texts)]
    got = enc.encode_batch(texts)
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if g.tolist() != w]
    assert not bad, f'code points {hex(cps[bad[0] * 1000])}.. differ'


def _variant(tokenizer_dir, tmp_path, name, change):
    """The small tokenizer with its tokenizer.json changed by `change(spec)`."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    spec = json.loads((tokenizer_dir / 'tokenizer.json').read_text())
    change(spec)
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
                                   eos_token='<|endoftext|>', pad_token='<|pad|>')
    out = tmp_path / name
    fast.save_pretrained(out)
    return out


def _swap_two_merged_tokens(spec):
    vocab = spec['model']['vocab']
    a, b = (''.join(m) for m in spec['model']['merges'][:2])
    vocab[a], vocab[b] = vocab[b], vocab[a]


def _orphan_token(spec):
    spec['model']['merges'].pop()  # its token stays in the vocabulary, made by no merge


def _split(pattern):
    def change(spec):
        spec['pre_tokenizer'] = {'type': 'Sequence', 'pretokenizers': [
            {'type': 'Split', 'pattern': {'Regex': pattern}, 'behavior': 'Isolated',
             'invert': False},
            {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': True,
             'use_regex': False}]}
    return change


@pytest.mark.parametrize('name, change, why', [
    ('lowercase', lambda s: s.update(normalizer={'type': 'Lowercase'}),
     'its normalizer (Lowercase) is not NFC'),
    ('whitespace', lambda s: s.update(pre_tokenizer={'type': 'Whitespace'}),
     'its pre-tokenizer (Whitespace) is not a byte-level regex split'),
    ('bos', lambda s: s.update(post_processor={
        'type': 'TemplateProcessing',
        'single': [{'SpecialToken': {'id': '<|endoftext|>', 'type_id': 0}},
                   {'Sequence': {'id': 'A', 'type_id': 0}}],
        'pair': [{'Sequence': {'id': 'A', 'type_id': 0}}, {'Sequence': {'id': 'B', 'type_id': 0}}],
        'special_tokens': {'<|endoftext|>': {'id': '<|endoftext|>', 'ids': [0],
                                             'tokens': ['<|endoftext|>']}}}),
     'its post-processor adds tokens to a text'),
    ('lstrip', lambda s: s['added_tokens'][0].update(lstrip=True),
     "added token '<|endoftext|>' is not matched as written"),
    ('merge_order', _swap_two_merged_tokens, 'its merges are not in the order of the ids'),
    ('orphan', _orphan_token, '1 tokens are made by no merge'),
    ('dropout', lambda s: s['model'].update(dropout=0.1), 'its BPE has dropout'),
    # tokenizers keeps what a split's regex does not match, tiktoken drops it: only the
    # probe text shows it
    ('gaps', _split('[a-z]+'), 'the probe text gives other ids'),
    ('regex', _split(r'\X|\s+'), 'tiktoken cannot load its split regex'),
])
def test_falls_back_to_tokenizers_and_says_why(name, change, why, tokenizer_dir, tmp_path):
    tok = _tok(_variant(tokenizer_dir, tmp_path, name, change))
    enc = load_encoder(tok)
    assert enc.name == 'tokenizers' and why in enc.why, enc.why
    with pytest.raises(Inexact, match=why.split(' (')[0][:30]):
        load_encoder(tok, 'tiktoken')
    text = 'Fallback Ids: é  <|endoftext|>\n'
    if name != 'dropout':  # (BPE dropout draws its merges at random: no two calls alike)
        assert enc.encode_batch([text])[0].tolist() == tok(text)['input_ids']


def test_either_encoder_converts_to_the_same_samples_and_says_which(sample_dir, qwen_dir,
                                                                    tokenizer_dir, tmp_path,
                                                                    capsys):
    files = str(sample_dir / 'c4-train.*.json.gz')
    common = ['--data-files', files, '--tokenizer', str(qwen_dir), '--concat-tokens', '256',
              '--compression', 'zstd', '--workers', '2', '--no-progress', '--json']
    summaries = {}
    for encoder in ('tiktoken', 'tokenizers'):
        out = tmp_path / encoder
        assert convert_main([*common, '--remote', str(out), '--encoder', encoder]) == 0
        summaries[encoder] = json.loads(capsys.readouterr().out)
    assert summaries['tiktoken']['encoder'].startswith('tiktoken ')
    assert summaries['tokenizers']['encoder'] == 'tokenizers (as asked)'
    assert summaries['tiktoken']['samples'] > 500
    assert sample_digest(str(tmp_path / 'tiktoken'), 'train') == \
        sample_digest(str(tmp_path / 'tokenizers'), 'train')

    # A tokenizer tiktoken cannot load exactly: auto falls back and says so; tiktoken refuses
    lower = _variant(tokenizer_dir, tmp_path, 'lowercase',
                     lambda s: s.update(normalizer={'type': 'Lowercase'}))
    args = ['--data-files', files, '--tokenizer', str(lower), '--max-docs', '40',
            '--no-progress', '--json']
    assert convert_main([*args, '--remote', str(tmp_path / 'auto')]) == 0
    captured = capsys.readouterr()
    assert 'note: tokenizing with tokenizers, not the faster tiktoken: tiktoken cannot give ' \
        'the same ids for this tokenizer: its normalizer (Lowercase) is not NFC' in captured.err
    assert json.loads(captured.out)['encoder'].startswith('tokenizers (tiktoken cannot')
    assert convert_main([*args, '--remote', str(tmp_path / 'refused'), '--encoder',
                         'tiktoken']) == 2
    assert one_error_line(capsys.readouterr().err.split('\n', 1)[1]).startswith(
        f"error: --encoder tiktoken: it cannot give the same ids as tokenizer '{lower}': its "
        f'normalizer (Lowercase) is not NFC')
    assert not [p for p in (tmp_path / 'refused').rglob('*') if p.is_file()]  # nothing written


def test_estimate_before_a_run(sample_dir, tokenizer_dir, tmp_path, capsys):
    files = sorted(sample_dir.glob('c4-train.*.json.gz'))
    import gzip
    json_total = sum(len(gzip.decompress(f.read_bytes())) for f in files)
    out = tmp_path / 'est'
    assert convert_main(['--data-files', str(sample_dir / 'c4-train.*.json.gz'), '--remote',
                         str(out), '--tokenizer', str(tokenizer_dir), '--estimate-only',
                         '--workers', '2', '--json']) == 0
    e = json.loads(capsys.readouterr().out)
    assert e['files'] == len(files) and e['json_bytes'] == json_total  # each gzip's ISIZE
    assert e['format'] == 'tokens' and e['encoder'] == 'tiktoken' and e['workers'] == 2
    assert e['cpu_hours'] == pytest.approx(json_total / 1e6 / e['mb_per_cpu_s'] / 3600)
    assert not [p for p in out.rglob('*') if p.is_file()]  # nothing converted or published
    # the line: bytes, format, CPU-hours, wall time, the rate's source
    line = estimate_line(estimate([('s3://b/c4-train.00000-of-01024.json.gz', 300_000_000, None)]
                                  * 1024, 'tokens', 'tiktoken', 112))
    assert line.startswith('estimate: 1,024 files, 307.2 GB as stored (~903.5 GB of JSON), '
                           'tokens with tiktoken') and 'CPU-hours' in line and '112 workers' in line
    assert json_bytes(1000, 'x.json') == 1000 and json_bytes(100, 'x.json.gz') == 294
    # printed before a run only into a bucket that is not on this machine's loopback
    assert is_real_bucket('oci://b@n/c4', {})
    assert is_real_bucket('s3://b/c4', {'S3_ENDPOINT_URL': 'https://ns.compat.objectstorage.'
                                        'us-ashburn-1.oraclecloud.com'})
    assert not is_real_bucket('oci://c4-bench@local/c4',
                              {'OCI_OBJECT_STORAGE_ENDPOINT': 'http://127.0.0.1:9300'})
    assert not is_real_bucket(str(out), {})

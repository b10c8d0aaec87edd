"""The record a published split keeps of how it was made (dataset.json), as data_prep.convert
writes it, data_prep.verify checks it against the shards and data_prep.stats prints it."""
import json
import re
import shutil

import pytest

from data_prep.pipeline.convert import ConvertConfig, convert
from data_prep.pipeline.record import RECORD, ids_fingerprint, tokenizer_facts
from data_prep.pipeline.verify import verify
from data_prep.stats import main as stats_main
from data_prep.verify import main as verify_main

DOCS = 400  # documents per split: a few hundred 128-token samples, several shards


def _convert(sample_dir, remote, split='train', **kw) -> dict:
    kw.setdefault('size_limit', '64kb')
    return convert(ConvertConfig(remote=str(remote), split=split, progress=False, workers=2,
                                 data_files=str(sample_dir / f'c4-{split}.*.json.gz'),
                                 max_docs=DOCS, **kw))


@pytest.fixture(scope='module')
def tokens(sample_dir, tokenizer_dir, tmp_path_factory):
    """The sample's train split as 128-token samples of tokenizer_dir, zstd; and its summary."""
    out = tmp_path_factory.mktemp('tokens')
    s = _convert(sample_dir, out, format='tokens', tokenizer=str(tokenizer_dir),
                 concat_tokens=128, compression='zstd')
    return out, s


@pytest.fixture
def copy(tokens, tmp_path):
    shutil.copytree(tokens[0], tmp_path / 'ds')
    return tmp_path / 'ds'


def _record(root) -> dict:
    return json.loads((root / 'train' / RECORD).read_text())


def test_the_record_says_how_the_split_was_made(tokens, sample_dir, tokenizer_dir):
    from transformers import AutoTokenizer
    out, s = tokens
    r = _record(out)
    index = json.loads((out / 'train' / 'index.json').read_text())
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert (r['format'], r['split'], r['compression']) == ('tokens', 'train', 'zstd')
    assert r['columns'] == {'tokens': 'ndarray:int32'}
    t = r['tokenizer']
    assert t['name'] == str(tokenizer_dir) and t['class'] == type(tok).__name__
    assert (t['vocab_size'], t['max_id']) == (len(tok), len(tok) - 1)
    assert (t['eos_id'], t['bos_id'], t['pad_id']) == (tok.eos_token_id, tok.bos_token_id,
                                                        tok.pad_token_id)
    assert re.fullmatch('[0-9a-f]{64}', t['fingerprint'])
    assert r['concat'] == {'tokens': 128, 'bos_text': '', 'eos_text': tok.eos_token,
                           'bos_ids': [], 'eos_ids': [tok.eos_token_id]}
    assert r['source'] == {'data_files': [str(sample_dir / 'c4-train.*.json.gz')],
                           'max_docs': DOCS}
    c = r['counts']
    assert (c['samples'], c['documents'], c['parts']) == (s['samples'], DOCS, 4)
    assert c['tokens'] == 128 * s['samples'] and c['skipped'] == {}
    assert c['shards'] == len(index['shards']) > 4
    assert c['shard_bytes'] == sum(sh['zip_data']['bytes'] for sh in index['shards'])
    assert c['raw_bytes'] == sum(sh['raw_data']['bytes'] for sh in index['shards'])
    conv = r['converter']
    assert conv['name'] == 'data_prep.convert' and conv['version'] == '0.1.0'
    assert conv['commit'] is None or re.fullmatch('[0-9a-f]{40}', conv['commit'])
    assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ', r['written_at'])


def test_fingerprints_follow_the_vocabulary_not_the_folder(tokenizer_dir, other_tokenizer_dir,
                                                           tmp_path):
    from transformers import AutoTokenizer
    shutil.copytree(tokenizer_dir, tmp_path / 'same')
    one, same, other = (tokenizer_facts(AutoTokenizer.from_pretrained(p), str(p))
                        for p in (tokenizer_dir, tmp_path / 'same', other_tokenizer_dir))
    assert one['fingerprint'] == same['fingerprint'] != other['fingerprint']
    assert one['ids_fingerprint'] == same['ids_fingerprint'] != other['ids_fingerprint']
    # A pad token added at the end (tokenizer kwargs): another tokenizer, the same ids below it.
    padded = AutoTokenizer.from_pretrained(tokenizer_dir, pad_token='<|another pad|>')
    facts = tokenizer_facts(padded, str(tokenizer_dir))
    assert facts['fingerprint'] != one['fingerprint'] and facts['max_id'] == one['max_id'] + 1
    assert ids_fingerprint(padded.get_vocab(), one['max_id']) == one['ids_fingerprint']


def test_publishing_again_keeps_the_record_and_adds_a_missing_one(tokens, copy, sample_dir,
                                                                   tokenizer_dir):
    args = dict(format='tokens', tokenizer=str(tokenizer_dir), concat_tokens=128,
                compression='zstd')
    record = (copy / 'train' / RECORD).read_bytes()
    index = (copy / 'train' / 'index.json').read_bytes()
    s = _convert(sample_dir, copy, **args)
    assert s['parts_converted'] == 0 and s['published']
    assert (copy / 'train' / RECORD).read_bytes() == record  # time and all
    # A split published before records: the same command adds the record, index unchanged.
    (copy / 'train' / RECORD).unlink()
    s = _convert(sample_dir, copy, **args)
    assert s['parts_converted'] == 0
    assert (copy / 'train' / 'index.json').read_bytes() == index
    again = _record(copy)
    assert {k: v for k, v in again.items() if k != 'written_at'} == \
        {k: v for k, v in json.loads(record).items() if k != 'written_at'}


def test_a_text_split_records_no_tokenizer(sample_dir, tmp_path):
    s = _convert(sample_dir, tmp_path, split='validation')
    r = _record_of(tmp_path / 'validation')
    assert (r['format'], r['tokenizer'], r['concat'], r['compression']) == ('text', None, None,
                                                                            None)
    assert r['columns'] == {'text': 'str'}
    assert r['counts']['samples'] == r['counts']['documents'] == s['samples']
    assert r['counts']['tokens'] is None
    assert verify(str(tmp_path))['ok']


def _record_of(folder) -> dict:
    return json.loads((folder / RECORD).read_text())


def test_verify_checks_the_record_against_the_shards(tokens, copy, capsys):
    out, _ = tokens
    report = verify(str(out))
    assert report['ok'], report['problems']
    assert report['splits']['train']['record'] and report['splits']['train']['tokens_checked']
    assert verify_main([str(out)]) == 0
    assert 'checked: sizes, hashes, the record, sample lengths and token ids' in \
        capsys.readouterr().out

    # A record that does not match its shards: each disagreement named, in one line each.
    r = _record(copy)
    samples = r['counts']['samples']
    r['counts']['samples'] += 1
    r['concat']['tokens'] = 64
    r['tokenizer']['max_id'], r['tokenizer']['vocab_size'] = 99, 100
    r['compression'] = None
    (copy / 'train' / RECORD).write_text(json.dumps(r))
    where = f'{copy}/train/{RECORD}'
    assert verify_main([str(copy)]) == 1
    problems = [line for line in capsys.readouterr().out.splitlines()
                if line.startswith('PROBLEM')]
    assert f'PROBLEM {where}: records {samples + 1:,} samples, the dataset has {samples:,}' \
        in problems
    assert any(p.startswith(f'PROBLEM {where}: says compression none, and shard part-00000/')
               and p.endswith(' is zstd') for p in problems), problems
    assert f'PROBLEM {where}: says 64 tokens per sample, and the samples hold 128' in problems
    assert any(p.startswith(f'PROBLEM {where}: says tokenizer ') and '(100 ids, largest 99), '
               'and the samples hold id ' in p for p in problems), problems
    assert len(problems) == 4, problems
    # Without downloads (--sizes-only) the counts and settings are checked, not the samples.
    report = verify(str(copy), hashes=False)
    assert len(report['problems']) == 2 and not report['splits']['train']['tokens_checked']

    (copy / 'train' / RECORD).write_text('{"format": "tok')
    assert verify(str(copy), hashes=False)['problems'] == [f'{where}: not valid JSON '
                                                           f'(Unterminated string starting at: '
                                                           f'line 1 column 12 (char 11))']


def test_stats_print_the_record_and_say_when_there_is_none(tokens, copy, capsys):
    out, s = tokens
    assert stats_main([str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == '  train:'
    assert lines[2].split() == ['format', 'tokens,', '128', 'per', 'sample', '(documents',
                                'concatenated,', 'with', 'eos', "'<|endoftext|>'", '[0]);',
                                'compression', 'zstd']
    assert lines[3].startswith('    tokenizer  ')
    assert f'{s["samples"]:,} samples, {128 * s["samples"]:,} tokens from {DOCS} documents' \
        in lines[5]
    assert lines[6].startswith('    made by    data_prep.convert 0.1.0')
    assert stats_main([str(out), '--json']) == 0
    assert json.loads(capsys.readouterr().out)['splits']['train'] == _record(out)

    # A split published before records: one line says so, and verify passes it.
    (copy / 'train' / RECORD).unlink()
    assert stats_main([str(copy)]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        '  train: no dataset.json (published before datasets recorded how they were made, '
        'or by another tool)']
    assert verify_main([str(copy)]) == 0
    out_lines = capsys.readouterr().out.splitlines()
    assert out_lines[-2] == (f'{copy} [train]: no dataset.json (published before datasets '
                             f'recorded how they were made, or by another tool): how it was '
                             f'made is not checked')
    assert out_lines[-1] == 'OK'

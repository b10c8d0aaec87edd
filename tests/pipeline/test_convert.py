"""data_prep.convert: real MDS files, real worker processes, a real S3 server on 127.0.0.1.

Kept small (the 3 MB session sample, small shards, --max-docs) so the file runs in about a
minute and a half on two cores.
"""
import gzip
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from data_prep.convert import main as convert_main
from data_prep.pipeline.convert import ConvertConfig, ConvertError, convert
from data_prep.pipeline.records import REASONS, BadRecordError
from data_prep.pipeline.verify import verify
from tests.helpers import PY, ROOT, one_error_line, run, sample_texts
from tests.mds import iter_samples, sample_digest

SMALL = '64kb'  # shard size limit: several shards per part even on the small sample


def _texts(url: str, split: str = 'train') -> list[str]:
    # An MDS sample of one `str` column: a uint32 size, then the UTF-8 bytes.
    return [s[4:].decode('utf-8') for s in iter_samples(url, split)]


def _cfg(sample_dir, remote, **kw) -> ConvertConfig:
    kw.setdefault('size_limit', SMALL)
    kw.setdefault('workers', 2)
    return ConvertConfig(remote=str(remote), data_files=str(sample_dir / 'c4-train.*.json.gz'),
                         progress=False, **kw)


@pytest.fixture(scope='module')
def reference(sample_dir, tmp_path_factory):
    """An uninterrupted zstd conversion of the sample's train files, and its summary."""
    out = tmp_path_factory.mktemp('ref')
    summary = convert(_cfg(sample_dir, out, compression='zstd'))
    return out, summary


def test_every_record_once_in_order_verified_and_published(sample_dir, reference):
    out, s = reference
    texts = sample_texts(sample_dir)
    assert s['published'] and s['index'] == str(out / 'train' / 'index.json')
    assert s['documents'] == s['samples'] == len(texts)
    assert s['parts'] == s['parts_converted'] == 4 and s['workers'] == 2
    assert sum(s['skipped'].values()) == 0
    assert _texts(str(out)) == texts  # input file order, then line order
    index = json.loads((out / 'train' / 'index.json').read_text())
    assert len(index['shards']) > 4  # more than one shard per part
    assert all(sh['raw_data']['basename'].startswith('part-000') for sh in index['shards'])
    for part in range(4):
        assert (out / 'train' / f'part-{part:05d}' / 'manifest.json').exists()
    report = verify(str(out))
    assert report['ok'], report['problems']
    assert report['splits']['train']['samples'] == len(texts)
    listed = [p for p in (out / 'train').rglob('*') if p.is_file()]
    assert s['objects'] == len(listed) and s['bytes'] == sum(p.stat().st_size for p in listed)


def test_rerun_skips_complete_parts_and_redoes_a_broken_one(sample_dir, reference, tmp_path):
    import shutil
    ref, _ = reference
    out = tmp_path / 'copy'
    shutil.copytree(ref, out)
    # Lose one shard of part 2 (a failed late upload): that part alone is redone.
    shards = sorted((out / 'train' / 'part-00002').rglob('shard.*'))
    victim = shards[1]
    victim.unlink()
    s = convert(_cfg(sample_dir, out, compression='zstd'))
    assert s['parts_converted'] == 1 and s['parts_already_complete'] == 3
    # The part is written again, in an attempt folder of the new run's; the old one is gone.
    again = sorted((out / 'train' / 'part-00002').rglob('shard.*'))
    assert [p.name for p in again] == [p.name for p in shards] and s['published']
    assert not victim.parent.exists()
    assert sample_digest(str(out), 'train') == sample_digest(str(ref), 'train')


def test_sigkill_then_rerun_gives_the_same_dataset(sample_dir, reference, tmp_path):
    out = tmp_path / 'killed'
    cmd = [PY, '-m', 'data_prep.convert', '--data-files', str(sample_dir / 'c4-train.*.json.gz'),
           '--remote', str(out), '--compression', 'zstd', '--size-limit', '16kb',
           '--workers', '1', '--no-progress']
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list(out.glob('train/part-*/manifest.json')):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # the command; its workers die with it
    proc.wait()
    time.sleep(0.2)
    assert not (out / 'train' / 'index.json').exists(), 'published before the end'
    done = len(list(out.glob('train/part-*/manifest.json')))
    assert 1 <= done < 4
    bad = verify(str(out))
    assert not bad['ok']  # a half-written dataset is not a dataset
    r = run(cmd + ['--json'])
    s = json.loads(r.stdout)
    assert s['published'] and s['parts_already_complete'] == done
    assert s['parts_converted'] == 4 - done
    # Shard boundaries differ (16kb vs 64kb), the samples in order must not.
    ref, _ = reference
    assert list(iter_samples(str(out), 'train')) == list(iter_samples(str(ref), 'train'))
    assert verify(str(out))['ok']


def _write_gz(path: Path, lines: list[bytes]) -> None:
    with gzip.open(path, 'wb') as f:
        f.write(b'\n'.join(lines) + b'\n')


GOOD = json.dumps({'text': 'A good document.', 'url': 'u', 'timestamp': 't'}).encode()
BAD = {  # case: (the reason it is counted under, the line)
    'malformed_json': ('malformed_json', b'{"text": "unterminated'),
    'invalid_utf8': ('invalid_utf8', b'{"text": "caf\xe9 au lait"}'),
    'lone_surrogate': ('invalid_utf8', b'{"text": "half a pair \\ud800 is not UTF-8"}'),
    'missing_text': ('missing_text', b'{"content": "no text field"}'),
    'non_string_text': ('non_string_text', b'{"text": 42}'),
    'empty_text': ('empty_text', b'{"text": "  "}'),
    'blank_line': ('empty_text', b'  '),
}
UNICODE = 'Caf\u00e9 \U0001f600 \u2014 ok'
GOOD_UNICODE = json.dumps({'text': UNICODE}, ensure_ascii=False).encode()


@pytest.mark.parametrize('case', sorted(BAD))
def test_bad_record_stops_naming_file_and_line(tmp_path, case):
    reason, line = BAD[case]
    data = tmp_path / 'in'
    data.mkdir()
    _write_gz(data / 'c4-train.00000-of-00002.json.gz', [GOOD] * 5)
    _write_gz(data / 'c4-train.00001-of-00002.json.gz', [GOOD] * 3 + [line] + [GOOD])
    cfg = ConvertConfig(remote=str(tmp_path / 'out'), data_files=str(data / '*.json.gz'),
                        progress=False, workers=2)
    with pytest.raises(BadRecordError) as err:
        convert(cfg)
    assert err.value.reason == reason and err.value.line == 4
    assert str(err.value).startswith(f'{data / "c4-train.00001-of-00002.json.gz"}:4: ')
    assert not (tmp_path / 'out' / 'train' / 'index.json').exists()


def test_skip_counts_each_reason_and_cli_error_is_one_line(tmp_path):
    data = tmp_path / 'in'
    data.mkdir()
    # File 0 holds invalid UTF-8, so it is read in exact mode; file 1 is valid UTF-8 (the
    # fast path) with non-ASCII text, a lone surrogate escape and a blank line.
    lines = [GOOD]
    for case in sorted(BAD):
        lines += [BAD[case][1], GOOD]
    _write_gz(data / 'c4-train.00000-of-00002.json.gz', lines)
    fast = [GOOD_UNICODE, BAD['lone_surrogate'][1], BAD['blank_line'][1], GOOD_UNICODE]
    _write_gz(data / 'c4-train.00001-of-00002.json.gz', fast)
    proc = subprocess.run([PY, '-m', 'data_prep.convert', '--data-files', str(data / '*.gz'),
                           '--remote', str(tmp_path / 'out'), '--no-progress', '--workers', '1'],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1  # one worker: file 0 fails first
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and 'c4-train.00000-of-00002.json.gz:2: empty document' in err[0]
    assert 'Traceback' not in proc.stderr
    s = convert(ConvertConfig(remote=str(tmp_path / 'out'), data_files=str(data / '*.gz'),
                              progress=False, on_bad_record='skip'))
    good = [GOOD] * (len(BAD) + 1) + [GOOD_UNICODE] * 2
    assert s['published'] and s['documents'] == s['samples'] == len(good)
    assert s['input_bytes'] == sum(len(line) + 1 for line in good)  # each with its newline
    want = dict.fromkeys(REASONS, 0)
    for reason, _ in BAD.values():
        want[reason] += 1
    want['invalid_utf8'] += 1  # file 1's lone surrogate
    want['empty_text'] += 1    # and its blank line
    assert s['skipped'] == want
    assert _texts(str(tmp_path / 'out')) == ['A good document.'] * (len(BAD) + 1) + [UNICODE] * 2


def test_unreachable_inputs_and_remotes_are_one_line(tmp_path, sample_dir):
    env = {'AWS_EC2_METADATA_DISABLED': 'true', 'AWS_ACCESS_KEY_ID': '',
           'AWS_SECRET_ACCESS_KEY': '', 'AWS_SHARED_CREDENTIALS_FILE': str(tmp_path / 'none'),
           'AWS_CONFIG_FILE': str(tmp_path / 'none'), 'HF_HUB_OFFLINE': '1',
           'S3_ENDPOINT_URL': 'http://127.0.0.1:9'}
    files = str(sample_dir / 'c4-train.*.json.gz')
    cases = [
        (['--dataset', 'allenai/c4', '--subset', 'en', '--remote', str(tmp_path / 'o')],
         "cannot reach dataset 'allenai/c4'"),
        (['--data-files', str(tmp_path / 'nothing-*.json.gz'), '--remote', str(tmp_path / 'o')],
         'no input files match'),
        (['--data-files', files, '--remote', 's3://c4-bench/x'], 'missing or invalid credentials'),
    ]
    for args, message in cases:
        proc = subprocess.run([PY, '-m', 'data_prep.convert', *args], cwd=ROOT, text=True,
                              capture_output=True, timeout=60, env={**os.environ, **env})
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr


def test_s3_raw_conversion_verified_and_missing_bucket(sample_dir, s3_server, reference):
    from data_prep.pipeline.stats import bucket_stats
    cmd = [PY, '-m', 'data_prep.convert', '--data-files', str(sample_dir / 'c4-train.*.json.gz'),
           '--compression', 'none', '--size-limit', SMALL, '--workers', '2',
           '--upload-workers', '8', '--no-progress', '--json']
    proc = subprocess.run(cmd + ['--remote', 's3://no-such-bucket/c4'], cwd=ROOT, text=True,
                          capture_output=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr
    assert 'does not exist' in proc.stderr
    s = json.loads(run(cmd + ['--remote', 's3://c4-bench/c4_raw']).stdout)
    assert s['published'] and s['index'] == 's3://c4-bench/c4_raw/train/index.json'
    stats = bucket_stats('s3://c4-bench/c4_raw')
    assert (stats['bytes'], stats['objects']) == (s['bytes'], s['objects'])
    report = verify('s3://c4-bench/c4_raw')
    assert report['ok'], report['problems']
    ref, _ = reference  # zstd locally, raw in the bucket: the same samples
    assert sample_digest('s3://c4-bench/c4_raw', 'train') == sample_digest(str(ref), 'train')
    import boto3
    names = [o['Key'] for o in boto3.client('s3', endpoint_url=s3_server['S3_ENDPOINT_URL'])
             .list_objects_v2(Bucket='c4-bench', Prefix='c4_raw/')['Contents']]
    assert all(n.endswith(('.mds', 'index.json', 'manifest.json')) for n in names
               if n != 'c4_raw/train/dataset.json')
    assert 'c4_raw/train/dataset.json' in names  # the split's record


def test_tokens_format_matches_llm_foundry_concatenation(sample_dir, tokenizer_dir, tmp_path,
                                                        capsys):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    out = tmp_path / 'tok'
    files = str(sample_dir / 'c4-train.*.json.gz')
    # --tokenizer or --concat-tokens with --format text: one line, nothing written.
    for flags, named in ((['--tokenizer', str(tokenizer_dir)], '--tokenizer is'),
                         (['--concat-tokens', '128'], '--concat-tokens is'),
                         (['--tokenizer', str(tokenizer_dir), '--concat-tokens', '128'],
                          '--tokenizer and --concat-tokens are')):
        assert convert_main(['--data-files', files, '--remote', str(out), '--format', 'text',
                             *flags]) == 2
        assert one_error_line(capsys.readouterr().err) == (
            f'error: {named} for --format tokens, and --format text was given: drop '
            f'{"them" if " and " in named else "it"} to write text, or use --format tokens')
    with pytest.raises(ConvertError, match='is for --format tokens, and the format is text'):
        convert(_cfg(sample_dir, out, tokenizer=str(tokenizer_dir)))
    assert not out.exists()
    # Without --format they imply tokens, and say so in one line.
    assert convert_main(['--data-files', files, '--remote', str(out), '--json', '--no-progress',
                         '--tokenizer', str(tokenizer_dir), '--concat-tokens', '128',
                         '--max-docs', '40', '--compression', 'zstd', '--size-limit', SMALL,
                         '--workers', '2']) == 0
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[0] == \
        'note: --tokenizer and --concat-tokens given: writing --format tokens'
    s = json.loads(captured.out)
    assert s['published'] and s['format'] == 'tokens' and s['documents'] == 40
    assert s['samples'] > 10
    index = json.loads((out / 'train' / 'index.json').read_text())
    assert index['shards'][0]['column_names'] == ['tokens']
    assert index['shards'][0]['column_encodings'] == ['ndarray:int32']
    # Part 0 holds the first 10 documents of file 0, concatenated with eos between them.
    texts = sample_texts(sample_dir)[:10]
    stream = [i for t in texts for i in tok(t)['input_ids'] + [tok.eos_token_id]]
    first = next(iter_samples(str(out), 'train'))
    from streaming.base.format.mds.encodings import mds_decode
    tokens = mds_decode('ndarray:int32', first[4:])
    assert tokens.dtype == np.int32 and tokens.tolist() == stream[:128]


def test_oci_zstd_conversion_through_our_transport(sample_dir, oci_store, reference):
    url = 'oci://c4-bench@local/c4_zstd'
    s = convert(_cfg(sample_dir, url, compression='zstd', max_docs=200, upload_workers=4))
    assert s['published'] and s['index'] == f'{url}/train/index.json'
    assert s['documents'] == s['samples'] == 200
    report = verify(url)
    assert report['ok'], report['problems']
    assert _texts(url) == [t for i in range(4)
                           for t in _file_texts(sample_dir, i)[:50]]
    puts = [r for r in oci_store.requests() if r['method'] == 'PUT']
    assert sum(r['path'].endswith('/train/index.json') for r in puts) == 1  # root written once

    # Other inputs (the validation file) into this published dataset: one ConvertError line,
    # and the store is asked to delete nothing but the run's own lease.
    seen = len(oci_store.requests())
    other = ConvertConfig(remote=url, data_files=str(sample_dir / 'c4-validation.*.json.gz'),
                          progress=False, compression='zstd')
    with pytest.raises(ConvertError, match=r'c4_zstd/train holds a published dataset converted '
                       r'from other inputs .* would delete 4 of its parts \(200 samples\)\. '
                       r'Nothing was changed; .* --replace$'):
        convert(other)
    deletes = [r['path'] for r in oci_store.requests()[seen:] if r['method'] == 'DELETE']
    assert [p.rsplit('/', 1)[1] for p in deletes] == ['.lock.json']
    assert verify(url)['ok'] and len(_texts(url)) == 200


def _file_texts(sample_dir, i):
    path = sorted(sample_dir.glob('c4-train.*.json.gz'))[i]
    with gzip.open(path, 'rt', encoding='utf-8') as f:
        return [json.loads(line)['text'] for line in f]

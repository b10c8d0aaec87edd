"""data_prep.convert against inputs that change, vanish, break or hold nothing, and its staging
folder. Tiny inputs written here; real files, real workers."""
import gzip
import json
import os
from pathlib import Path

import pytest

from data_prep.convert import format_summary
from data_prep.convert import main as convert_main
from data_prep.pipeline.convert import ConvertConfig, ConvertError, convert
from data_prep.pipeline.records import (
    EMPTY_FILE,
    UNREADABLE_FILE,
    BadRecordError,
    InputError,
    iter_records,
    resolve_inputs,
)
from data_prep.pipeline.verify import verify
from tests.helpers import expected_digest, one_error_line
from tests.mds import sample_digest


def _docs(tag: str, n: int) -> list[str]:
    return [f'{tag} document {i}: ' + 'lorem ipsum dolor ' * (i % 7 + 1) for i in range(n)]


def _write(path: Path, texts: list[str], append: bool = False) -> None:
    with gzip.open(path, 'ab' if append else 'wb') as f:
        f.write(b''.join(json.dumps({'text': t}).encode() + b'\n' for t in texts))


def _cfg(data: Path, out: Path, **kw) -> ConvertConfig:
    kw.setdefault('workers', 2)
    return ConvertConfig(remote=str(out), data_files=str(data / '*.json.gz'), progress=False,
                         size_limit='8kb', **kw)


def test_changed_and_removed_inputs_are_redone_and_removed(tmp_path):
    data, out = tmp_path / 'in', tmp_path / 'out'
    data.mkdir()
    texts = {i: _docs(f'file{i}', 30) for i in range(3)}
    for i, t in texts.items():
        _write(data / f'c4-train.{i:05d}-of-00003.json.gz', t)
    s = convert(_cfg(data, out))
    assert s['published'] and s['samples'] == 90 and s['parts_redone'] == {}

    # Records appended to a finished part's file: that part alone is redone, and says why.
    victim = data / 'c4-train.00001-of-00003.json.gz'
    size = victim.stat().st_size
    _write(victim, ['an appended document'], append=True)
    texts[1].append('an appended document')
    s = convert(_cfg(data, out))
    assert s['parts_converted'] == 1 and s['parts_already_complete'] == 2
    why = s['parts_redone']['part-00001']
    assert why.startswith(f'input changed (size {size} -> {victim.stat().st_size}'), why
    assert 'part-00001: input changed (size' in format_summary(s)
    assert sample_digest(str(out), 'train') == expected_digest(texts[0] + texts[1] + texts[2])

    # The same content rewritten (a copy, a new modification time): nothing to redo.
    os.utime(victim, (1, 1))
    s = convert(_cfg(data, out))
    assert s['parts_converted'] == 0 and s['published']

    # An input file removed: other inputs than the published dataset's. Without --replace
    # the run refuses and deletes nothing.
    (data / 'c4-train.00002-of-00003.json.gz').unlink()
    before = _tree(out)
    with pytest.raises(ConvertError) as err:
        convert(_cfg(data, out))
    assert str(err.value).startswith(f'{out / "train"} holds a published dataset converted '
                                     f'from other inputs (e.g. ')
    assert 'would delete 1 of its parts (30 samples)' in str(err.value)
    assert str(err.value).endswith('run again with --replace')
    assert _tree(out) == before
    # With --replace: its part leaves the remote, the rest is published and verifies.
    s = convert(_cfg(data, out, replace=True))
    assert s['parts_removed'] == ['part-00002'] and s['parts_converted'] == 0
    assert 'part-00002: its input file is gone' in format_summary(s)
    assert not (out / 'train' / 'part-00002').exists()
    assert sample_digest(str(out), 'train') == expected_digest(texts[0] + texts[1])
    report = verify(str(out))
    assert report['ok'], report['problems']


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root: its size and modification time (ns)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob('*') if p.is_file()}


def test_other_inputs_into_a_published_dataset_refuse_in_one_line(tmp_path, capsys):
    """Converting other inputs into a remote that holds a dataset deletes
    nothing without --replace; the same inputs from another folder (a copy) are no other
    inputs."""
    ours, theirs, out = tmp_path / 'ours', tmp_path / 'theirs', tmp_path / 'out'
    for folder, tag in ((ours, 'ours'), (theirs, 'theirs')):
        folder.mkdir()
        for i in range(3 if tag == 'ours' else 2):
            _write(folder / f'c4-train.{i:05d}-of-00003.json.gz', _docs(f'{tag}{i}', 20))
    assert convert(_cfg(ours, out))['samples'] == 60
    before = _tree(out)
    argv = ['--data-files', str(theirs / '*.json.gz'), '--remote', str(out), '--workers', '1',
            '--size-limit', '8kb', '--no-progress']
    assert convert_main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == (f'error: {out / "train"} holds a published dataset converted from other '
                    f'inputs (e.g. {ours / "c4-train.00000-of-00003.json.gz"}): this run would '
                    f'delete 3 of its parts (60 samples). Nothing was changed; to replace that '
                    f'dataset, run again with --replace')
    assert _tree(out) == before  # not even the lease is left

    # The same files copied elsewhere: the same inputs (by content), converted again as today.
    copy = tmp_path / 'copy'
    copy.mkdir()
    for p in ours.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    s = convert(_cfg(copy, out))
    assert s['parts_converted'] == 3 and s['samples'] == 60

    assert convert_main(argv + ['--replace']) == 0
    assert 'parts removed      part-00002: its input file is gone' in capsys.readouterr().out
    texts = [t for i in range(2) for t in _docs(f'theirs{i}', 20)]
    assert sample_digest(str(out), 'train') == expected_digest(texts)
    assert verify(str(out))['ok']


def _damaged_inputs(data: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (what, the texts a skip-mode conversion keeps of it)."""
    data.mkdir()
    good = _docs('good', 20)
    _write(data / 'c4-train.00000.json.gz', good)
    # Truncated: the lines before the cut are the original's, and kept.
    full = _docs('truncated', 400)
    blob = gzip.compress(b''.join(json.dumps({'text': t}).encode() + b'\n' for t in full))
    (data / 'c4-train.00001.json.gz').write_bytes(blob[:len(blob) // 2])
    kept = full[:_whole_lines(data / 'c4-train.00001.json.gz')]
    assert 0 < len(kept) < len(full)
    # Plain JSON named .json.gz; a gzip whose CRC fails at its end: nothing of it is trusted.
    (data / 'c4-train.00002.json.gz').write_bytes(json.dumps({'text': 'plain'}).encode() + b'\n')
    crc = bytearray(gzip.compress(b''.join(json.dumps({'text': t}).encode() + b'\n'
                                           for t in _docs('crc', 10))))
    crc[-6] ^= 1
    (data / 'c4-train.00003.json.gz').write_bytes(bytes(crc))
    # Empty: 0 bytes, and a gzip of nothing.
    (data / 'c4-train.00004.json.gz').write_bytes(b'')
    (data / 'c4-train.00005.json.gz').write_bytes(gzip.compress(b''))
    return {'00000': ('good', good), '00001': ('truncated', kept), '00002': ('plain', []),
            '00003': ('crc', []), '00004': ('empty', []), '00005': ('empty', [])}


def _whole_lines(path: Path) -> int:
    """The whole lines Python's gzip reads from a truncated file before the cut."""
    buf = b''
    with gzip.open(path, 'rb') as f:
        try:
            while chunk := f.read(4096):
                buf += chunk
        except EOFError:
            pass
    return buf.count(b'\n')


def test_unreadable_and_empty_inputs_are_named_or_skipped_and_counted(tmp_path, capsys):
    data = tmp_path / 'in'
    files = _damaged_inputs(data)
    # Each broken file, alone: an error naming it, its line and where the data broke.
    want = {'00001': (UNREADABLE_FILE, 'truncated after'),
            '00002': (UNREADABLE_FILE, 'damaged before its first line: BadGzipFile: Not a gz'),
            '00003': (UNREADABLE_FILE, 'BadGzipFile: CRC check failed'),
            '00004': (EMPTY_FILE, '0 bytes, no line'), '00005': (EMPTY_FILE, 'no line')}
    for name, (reason, detail) in want.items():
        path = str(data / f'c4-train.{name}.json.gz')
        with pytest.raises(BadRecordError) as err:
            list(iter_records(path, False, {}, exact=False))
        assert err.value.reason == reason and err.value.path == path, err.value
        assert detail in str(err.value), err.value
    kept = len(files['00001'][1])
    with pytest.raises(BadRecordError, match=rf'00001.json.gz:{kept + 1}: unreadable file '):
        list(iter_records(str(data / 'c4-train.00001.json.gz'), False, {}, exact=True))

    # The command: one line naming the file, no advice to re-run the same command.
    out = tmp_path / 'out'
    rc = convert_main(['--data-files', str(data / '*.json.gz'), '--remote', str(out),
                       '--workers', '1', '--no-progress'])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 1 and line.startswith(f'error: {data / "c4-train.00001.json.gz"}:{kept + 1}: '
                                       f'unreadable file (truncated after '), line
    assert 'again' not in line and 'Nothing was published' in line
    assert not (out / 'train' / 'index.json').exists()

    # --on-bad-record skip: each file counted once and named; the truncated file's lines
    # before the cut are kept, nothing of the others.
    s = convert(_cfg(data, out, on_bad_record='skip'))
    assert s['published'] and s['skipped'][UNREADABLE_FILE] == 3 and s['skipped'][EMPTY_FILE] == 2
    assert sum(s['skipped'].values()) == 5
    assert [x.split(':')[0] for x in s['files_skipped']] == [
        str(data / f'c4-train.{n}.json.gz') for n in ('00001', '00002', '00003', '00004', '00005')]
    assert 'lines before are kept' in s['files_skipped'][0]
    assert sample_digest(str(out), 'train') == expected_digest(
        [t for _what, texts in files.values() for t in texts])
    assert verify(str(out))['ok']


def test_all_empty_inputs_publish_nothing_and_verify_flags_an_empty_dataset(tmp_path):
    data = tmp_path / 'in'
    data.mkdir()
    (data / 'c4-train.00000.json.gz').write_bytes(b'')
    (data / 'c4-train.00001.json.gz').write_bytes(gzip.compress(b''))
    out = tmp_path / 'out'
    with pytest.raises(ConvertError, match='2 input file.s. gave 0 samples .*not published'):
        convert(_cfg(data, out, on_bad_record='skip'))
    assert not (out / 'train' / 'index.json').exists()
    # A 0-sample dataset (as an earlier version published): verify says so.
    from streaming import MDSWriter
    with MDSWriter(out=str(tmp_path / 'empty'), columns={'text': 'str'}):
        pass
    report = verify(str(tmp_path / 'empty'))
    assert not report['ok'] and any('names no samples' in p for p in report['problems'])


def test_a_directory_matched_by_the_glob_is_named(tmp_path):
    (tmp_path / 'c4-train.00000.json.gz').write_bytes(gzip.compress(b'{"text": "a"}\n'))
    (tmp_path / 'c4-train.00001.json.gz').mkdir()
    with pytest.raises(InputError, match=r'c4-train.00001.json.gz \(matched by .*\) is a dir'):
        resolve_inputs(data_files=str(tmp_path / '*.json.gz'))


def test_each_run_stages_in_its_own_folder_and_removes_it(tmp_path, s3_server):
    from data_prep.pipeline.convert import _staging
    from data_prep.storage import open_remote
    data, stage, url = tmp_path / 'in', tmp_path / 'stage', 's3://c4-bench/staged'
    data.mkdir()
    _write(data / 'c4-train.00000.json.gz', _docs('a', 20))
    _write(data / 'c4-train.00001.json.gz', _docs('b', 20))
    with gzip.open(data / 'c4-train.00001.json.gz', 'ab') as f:
        f.write(b'{"no": "text"}\n')
    cfg = _cfg(data, url, tmp_dir=str(stage))
    # A run that fails (a bad record) removes its staging folder too.
    with pytest.raises(BadRecordError):
        convert(cfg)
    assert os.listdir(stage / 'c4-convert') == []
    # A killed run's leftover folder for this remote is removed by the next run into it.
    killed = Path(_staging(cfg, open_remote(url), 'train', 'killed'))
    (killed / 'shard.00000.mds').write_bytes(b'half')
    cfg.on_bad_record = 'skip'
    s = convert(cfg)
    assert s['published'] and os.listdir(stage / 'c4-convert') == []
    assert sample_digest(url, 'train') == expected_digest(_docs('a', 20) + _docs('b', 20))


def test_a_remote_input_is_known_by_its_size_and_etag(tmp_path):
    """Hub and bucket inputs: what fsspec's info() says of them (here an HTTP server that sends
    an ETag, as object stores do; the Hub's blob id and LFS sha256 are read the same way)."""
    import hashlib
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from data_prep.pipeline.identity import input_identities, input_identity, same_input

    class WithETag(SimpleHTTPRequestHandler):
        def end_headers(self):
            path = self.translate_path(self.path)
            if os.path.isfile(path):
                with open(path, 'rb') as f:
                    self.send_header('ETag', f'"{hashlib.md5(f.read()).hexdigest()}"')
            super().end_headers()

        def log_message(self, *args):
            pass

    path = tmp_path / 'c4-train.00000.json.gz'
    _write(path, _docs('remote', 5))
    server = ThreadingHTTPServer(('127.0.0.1', 0), partial(WithETag, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f'http://127.0.0.1:{server.server_address[1]}/{path.name}'
        before = input_identity(url)
        assert before == {'size': path.stat().st_size,
                          'etag': hashlib.md5(path.read_bytes()).hexdigest()}
        assert input_identities([url]) == {url: before}
        _write(path, ['one more'], append=True)
        after = input_identity(url)
        assert after['size'] > before['size'] and not same_input(before, after)
    finally:
        server.shutdown()

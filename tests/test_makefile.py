"""`make test` and `make test-fast` fail when pytest collects no test: a
suite that silently runs nothing must not pass. The Makefile's own pytest command (as `make -n`
prints it, without running anything) is run on an empty folder, the way make runs it."""
import re
import subprocess

import pytest

from tests.helpers import ROOT


@pytest.mark.parametrize('target', ['test', 'test-fast'])
def test_make_test_fails_when_no_test_is_collected(target, tmp_path):
    printed = subprocess.run(['make', '-n', '--no-print-directory', target], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    commands = [line for line in printed.splitlines() if ' -m pytest ' in line]
    assert len(commands) == 1, printed
    command, n = re.subn(r'(?<=\s)tests(?=\s|$)', str(tmp_path), commands[0])
    assert n == 1, commands[0]  # the suite's folder, replaced by an empty one
    proc = subprocess.run(['bash', '-c', command], cwd=ROOT, capture_output=True, text=True)
    assert 'no tests ran' in proc.stdout, proc.stdout[-2000:]
    assert proc.returncode != 0  # pytest's 5, which make would report as a failure


@pytest.mark.slow
@pytest.mark.e2e
def test_make_convert_says_what_it_writes_and_converts_both_splits(sample_dir, tmp_path):
    """`make convert` into a real remote (here a local path, not the local store)
    names the sample and its size before it writes, and converts train and validation, raw
    and zstd, into the split names the recipes read. Small: CONVERT_ARGS caps the documents."""
    from data_prep.pipeline.verify import verify
    root = tmp_path / 'c4'
    proc = subprocess.run(['make', '--no-print-directory', '-o', 'sample', 'convert',
                           f'SAMPLE={sample_dir}', f'MDS_ROOT={root}',
                           'CONVERT_ARGS=--max-docs 40 --workers 1 --no-progress'],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = proc.stdout.splitlines()[0]
    files = sorted(sample_dir.glob('c4-*.json.gz'))
    mb = sum(p.stat().st_size for p in files) / 1e6
    assert first == (f'convert: about to write the offline sample {sample_dir} '
                     f'({len(files)} files, {mb:.1f} MB gzipped; not C4) into '
                     f'{root}/{{uncompressed,zstd}}/{{train,validation}}'), proc.stdout
    for variant in ('uncompressed', 'zstd'):
        report = verify(str(root / variant))
        assert report['ok'], report['problems']
        assert {s: r['samples'] for s, r in report['splits'].items()} == \
            {'train': 40, 'validation': 40}

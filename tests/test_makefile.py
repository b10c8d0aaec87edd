"""`make test` and `make test-fast` fail when pytest collects no test (issue 19, item 7): a
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

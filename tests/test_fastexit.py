"""data_prep.fastexit.exit_now: the atexit handlers run, the module teardown does not, the
exit code and everything printed survive; a running non-daemon thread is waited for."""
import subprocess
import textwrap

from tests.helpers import PY, ROOT

SCRIPT = textwrap.dedent('''
    import atexit, sys, threading, time
    from data_prep.fastexit import exit_now

    class Teardown:
        def __del__(self):  # runs when the interpreter clears this module at shutdown
            sys.stdout.write('teardown ran\\n')

    keep = Teardown()
    atexit.register(lambda: print('atexit ran'))
    if sys.argv[1] == 'thread':
        threading.Thread(target=lambda: (time.sleep(0.3), print('thread done'))).start()
    sys.stdout.write('output kept')  # no newline: buffered, must be flushed
    exit_now(7)
''')


def _run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, '-c', SCRIPT, mode], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_exit_now_runs_atexit_skips_teardown_keeps_code_and_output():
    proc = _run('plain')
    assert proc.returncode == 7
    assert proc.stdout == 'output keptatexit ran\n'  # and no 'teardown ran'
    assert proc.stderr == ''


def test_exit_now_waits_for_a_running_thread_the_ordinary_way():
    proc = _run('thread')
    assert proc.returncode == 7
    assert 'thread done' in proc.stdout and 'atexit ran' in proc.stdout

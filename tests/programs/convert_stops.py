"""Conversions that stop (a bad record, a worker killed from outside) in a process whose
SIGTERM handler is not the default, as in any process that has imported Composer.
Runs each SCENARIO=DATA_FILES in order into REMOTE and prints one JSON line per run:
{"scenario", "seconds", "error", "message", "children"} (children: processes left).

    python tests/programs/convert_stops.py HANDLER REMOTE SCENARIO=DATA_FILES [...]

HANDLER: `composer` (import composer: its handler turns SIGTERM into sys.exit), or `ignore`
(a handler that returns, as a graceful-shutdown handler does, and as Composer's amounts to
whenever its SystemExit is raised where it is swallowed). SCENARIO: `run` (convert), or `kill`
(SIGKILL one conversion worker 0.5 s after two are converting).
"""
import json
import multiprocessing
import os
import signal
import sys
import threading
import time

from data_prep.pipeline.convert import ConvertConfig, convert


def _kill_a_worker(stop: threading.Event) -> None:
    while not stop.wait(0.05):
        if len(multiprocessing.active_children()) >= 2:
            time.sleep(0.5)  # both are converting their parts (the store is slow)
            for worker in multiprocessing.active_children():
                try:
                    os.kill(worker.pid, signal.SIGKILL)
                    return
                except ProcessLookupError:
                    pass


def main() -> None:
    handler, remote, *scenarios = sys.argv[1:]
    if handler == 'composer':
        import composer  # noqa: F401
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None), 'no handler'
    else:
        signal.signal(signal.SIGTERM, lambda *_: None)
    for scenario in scenarios:
        what, data_files = scenario.split('=', 1)
        stop = threading.Event()
        if what == 'kill':
            threading.Thread(target=_kill_a_worker, args=(stop,), daemon=True).start()
        t0 = time.monotonic()
        try:
            convert(ConvertConfig(remote=remote, data_files=data_files, workers=2,
                                  progress=False, size_limit=1 << 12, upload_workers=2))
            error, message = None, ''
        except Exception as exc:
            error, message = type(exc).__name__, str(exc)
        stop.set()
        print(json.dumps({'scenario': what, 'seconds': round(time.monotonic() - t0, 2),
                          'error': error, 'message': message,
                          'children': len(multiprocessing.active_children())}), flush=True)


if __name__ == '__main__':
    main()

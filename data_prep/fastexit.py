"""End a command's process without Python's teardown of every module it imported.

After a conversion the interpreter's own shutdown (clearing the modules of datasets, pyarrow,
torch...: not atexit handlers, which are quick) takes ~1 s on an idle 2-core machine and
several under load, after the summary is printed and nothing is left to do. multiprocessing's
workers always end this way (os._exit); the command's main process does too once its work is
done: the atexit handlers run first (logging is flushed, temporary folders removed), then the
process exits with `code`. If another non-daemon thread is still running, the process exits
the ordinary way, which waits for it.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if others:
        sys.exit(code)
    atexit._run_exitfuncs()  # what the ordinary exit runs before tearing the modules down
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)

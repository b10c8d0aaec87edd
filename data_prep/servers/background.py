"""A server `start`ed in the background and found again by later commands (`status`, `stop`):
its state is `<data dir>/run/<name>.json` (pid, port, endpoint) and `<name>.pid`. Shared by the
local OCI store and the local Hugging Face Hub."""
from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path


def run_dir(data_dir) -> Path:
    return Path(data_dir) / 'run'


def running(data_dir, name: str) -> dict | None:
    """The recorded state of server `name`, if its process is alive and its port answers."""
    try:
        info = json.loads((run_dir(data_dir) / f'{name}.json').read_text())
        os.kill(info['pid'], 0)
        socket.create_connection(('127.0.0.1', info['port']), timeout=2).close()
    except (OSError, ValueError, KeyError):
        return None
    return info


def record(data_dir, name: str, pid: int, port: int, endpoint: str) -> dict:
    info = {'pid': pid, 'port': port, 'endpoint': endpoint}
    run = run_dir(data_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / f'{name}.json').write_text(json.dumps(info))
    (run / f'{name}.pid').write_text(f'{pid}\n')
    return info


def _gone(pid: int, seconds: float) -> bool:
    """Whether `pid` ends within `seconds` (polled; it is not our child)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return True
        time.sleep(0.1)
    return False


def stop(data_dir, name: str, label: str) -> None:
    """SIGTERM the recorded process, wait up to 10 s for it to go, then SIGKILL it; forget its
    state."""
    info = running(data_dir, name)
    if not info:
        print(f'{label}: not running')
    else:
        how = 'stopped'
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(info['pid'], sig)
            except OSError:
                break
            if _gone(info['pid'], 10.0):
                break
            how = 'killed (it did not stop on SIGTERM within 10 s)'
        print(f'{label}: {how} pid {info["pid"]}')
    for suffix in ('.json', '.pid'):
        (run_dir(data_dir) / f'{name}{suffix}').unlink(missing_ok=True)

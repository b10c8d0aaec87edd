"""The process side both local servers (the OCI store, the Hugging Face Hub) share: `serve` in
the foreground, a server started as a subprocess for tests and benches (`launch`,
RunningServer), and the `start`/`stop`/`status` commands, which find a server `start`ed in the
background again by its state: `<data dir>/run/<name>.json` (pid, port, endpoint) and
`<name>.pid`."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from local_services.shaped_http import SETTLE_PATH


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


def start(data_dir, name: str, launch_it: Callable, print_exports: Callable,
          already: Callable | None = None) -> int:
    """The `start` command: launch_it(log_path) -> RunningServer unless one runs (then
    `already()`, if given), record it, print its exports."""
    info = running(data_dir, name)
    if info:
        if already:
            already()
        print('already running')
    else:
        run = run_dir(data_dir)
        run.mkdir(parents=True, exist_ok=True)
        server = launch_it(run / 'requests.jsonl')
        info = record(data_dir, name, server.proc.pid, server.port, server.endpoint)
    print_exports(info, data_dir)
    return 0


def status(data_dir, name: str, label: str, print_exports: Callable) -> int:
    """The `status` command: the exports of a running server (0), or 'not running' (1)."""
    info = running(data_dir, name)
    if not info:
        print(f'{label}: not running')
        return 1
    print_exports(info, data_dir)
    return 0


def serve(server, info: dict) -> int:
    """The `serve` command once `server` listens: print `info` (one JSON line, which `launch`
    waits for), serve until SIGTERM or Ctrl-C."""
    print(json.dumps(info), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


def add_commands(sub, common, knobs, what: str, log_help: str, log_default=None) -> None:
    """The subcommands serve/start/stop/status of a server's command line: `common` (the
    data dir) for all, `knobs` for serve and start."""
    p = sub.add_parser('serve', parents=[common, knobs], help='run in the foreground')
    p.add_argument('--log', help=log_help, default=log_default)
    sub.add_parser('start', parents=[common, knobs],
                   help='run in the background (idempotent) and print the exports to use it')
    sub.add_parser('stop', parents=[common], help=f'stop the {what} started by `start`')
    sub.add_parser('status', parents=[common], help='say whether it runs, and the exports')


def run_command(args, prog: str, name: str, label: str, *, check: Callable, serve: Callable,
                launch_it: Callable, print_exports: Callable,
                already: Callable | None = None) -> int:
    """Run a server's command line, args.cmd of serve/start/stop/status, after check(args):
    serve(args) in the foreground; start: launch_it(args, log_path) -> RunningServer in the
    background (already(args) when one runs); stop; status. Bad input or a failed start: one
    line `prog: why` on stderr, exit 2."""
    data_dir = args.data_dir
    try:
        check(args)
        if args.cmd == 'serve':
            return serve(args)
        if args.cmd == 'start':
            return start(data_dir, name, lambda log: launch_it(args, log), print_exports,
                         already and (lambda: already(args)))
        if args.cmd == 'stop':
            stop(data_dir, name, label)
            return 0
        return status(data_dir, name, label, print_exports)
    except (ValueError, OSError, RuntimeError) as e:
        print(f'{prog}: {e}', file=sys.stderr)
        return 2


# ----------------------------------------------------------------------------- Python API

class RunningServer:
    """A server running as a subprocess (see `launch`): .endpoint, .env(), .requests() (the
    request log: method, path, query, status, bytes, in, fault, ms), .clear_log(), .stop()."""

    def __init__(self, proc, data_dir: Path, port: int, log_path: Path):
        self.proc, self.data_dir, self.port, self.log_path = proc, data_dir, port, log_path
        self.endpoint = f'http://127.0.0.1:{port}'

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def requests(self) -> list[dict]:
        """The request log so far: dicts with method, path, query, status, bytes, in, fault, ms."""
        self._settle()
        if not self.log_path.exists():
            return []
        with open(self.log_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def _settle(self) -> None:
        # A complete answer is logged before its last byte (shaped_http._log_once); this waits
        # for the requests still being handled (a client gone mid-body is logged at the end).
        if self.proc.poll() is None:
            conn = http.client.HTTPConnection('127.0.0.1', self.port, timeout=15)
            conn.request('GET', SETTLE_PATH)
            conn.getresponse().read()
            conn.close()

    def clear_log(self) -> None:
        # Truncate in place: the server appends to the same open file (O_APPEND).
        self._settle()
        with open(self.log_path, 'r+') as f:
            f.truncate(0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def launch(module: str, data_dir: Path, argv: list[str], log_path, errors_name: str,
           prog: str) -> tuple[subprocess.Popen, int, Path]:
    """Run `python -m module serve --data-dir data_dir --log log_path *argv` from this
    checkout and wait until it listens: (process, port, log path). A server that does not
    start: RuntimeError with the last line of run/<errors_name> (its stderr)."""
    log_path = Path(log_path or data_dir / 'run' / 'requests.jsonl').resolve()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.touch()
    cmd = [sys.executable, '-m', module, 'serve', '--data-dir', str(data_dir),
           '--log', str(log_path), *argv]
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        [str(root), *filter(None, [os.environ.get('PYTHONPATH')])])}
    run_dir(data_dir).mkdir(parents=True, exist_ok=True)
    errors = open(run_dir(data_dir) / errors_name, 'a+')
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, env=env, text=True,
                            cwd=root, start_new_session=True)
    line = proc.stdout.readline()  # serve prints one JSON line once it is listening
    if not line:
        proc.wait()
        errors.seek(0)
        last = (errors.read().strip().splitlines() or [f'exit code {proc.returncode}'])[-1]
        raise RuntimeError(f'did not start: {last.removeprefix(f"{prog}: ")}')
    return proc, json.loads(line)['port'], log_path

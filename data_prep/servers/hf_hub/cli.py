"""`python -m data_prep.servers.hf_hub {serve,start,stop,status}` and the Python API (start_hub)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from data_prep.servers import background
from data_prep.servers.hf_hub.repos import make_c4_repo
from data_prep.servers.hf_hub.server import DEFAULT_PAGE_SIZE, HubServer
from data_prep.servers.oci_store.cli import RunningStore
from data_prep.servers.oci_store.handler import FAULT_KINDS, Knobs, _kinds_arg

DEFAULT_PORT = 9400
DEFAULT_DATA_DIR = '.hub/data'
PROG = 'python -m data_prep.servers.hf_hub'


def hub_env(endpoint: str, data_dir) -> dict[str, str]:
    """What points huggingface_hub and datasets at a local hub (they read it at import)."""
    return {'HF_ENDPOINT': endpoint,
            'HF_HUB_OFFLINE': '0', 'HF_DATASETS_OFFLINE': '0',  # in case a shell set them
            'HF_HUB_DISABLE_TELEMETRY': '1',
            'HF_HUB_DISABLE_IMPLICIT_TOKEN': '1',  # a real token stays out of the stand-in
            # Own caches: the stand-in's allenai/c4 must not mix with the real one's.
            'HF_HOME': str(Path(data_dir).resolve() / 'hf_home')}


# ----------------------------------------------------------------------------- Python API

class RunningHub(RunningStore):
    """A hub running as a subprocess (see `start_hub`): .endpoint, .env(), .requests() (the
    request log: method, path, query, status, bytes, fault, ms), .clear_log(), .stop()."""

    def env(self) -> dict[str, str]:
        return hub_env(self.endpoint, self.data_dir)


def start_hub(data_dir, port: int = 0, knobs: Knobs | None = None, log_path=None,
              sample=None, page_size: int = DEFAULT_PAGE_SIZE) -> RunningHub:
    """Start `serve` as a real subprocess (port 0 = a free one) and wait until it listens.
    With `sample` (a `make sample` folder), allenai/c4 is laid out from it first."""
    data_dir = Path(data_dir).resolve()
    if sample is not None:
        make_c4_repo(data_dir, sample)
    knobs = (knobs or Knobs()).check()
    log_path = Path(log_path or data_dir / 'run' / 'requests.jsonl').resolve()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.touch()
    cmd = [sys.executable, '-m', 'data_prep.servers.hf_hub', 'serve', '--data-dir', str(data_dir),
           '--port', str(port), '--log', str(log_path), '--page-size', str(page_size),
           '--latency-ms', str(knobs.latency_ms), '--bandwidth-mbps', str(knobs.bandwidth_mbps),
           '--fault-rate', str(knobs.fault_rate), '--fault-kinds', ','.join(knobs.fault_kinds),
           '--fault-match', knobs.fault_match]
    if knobs.seed is not None:
        cmd += ['--seed', str(knobs.seed)]
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        [str(root), *filter(None, [os.environ.get('PYTHONPATH')])])}
    (data_dir / 'run').mkdir(parents=True, exist_ok=True)
    errors = open(data_dir / 'run' / 'hub.log', 'a+')
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, env=env, text=True,
                            cwd=root, start_new_session=True)
    line = proc.stdout.readline()  # serve prints one JSON line once it is listening
    if not line:
        proc.wait()
        errors.seek(0)
        last = (errors.read().strip().splitlines() or [f'exit code {proc.returncode}'])[-1]
        raise RuntimeError(f'did not start: {last.removeprefix("hf_hub: ")}')
    return RunningHub(proc, data_dir, json.loads(line)['port'], log_path)


# ----------------------------------------------------------------------------- CLI

def _knobs(args) -> Knobs:
    return Knobs(args.latency_ms, args.bandwidth_mbps, args.fault_rate, args.fault_kinds,
                 args.seed, args.fault_match).check()


def _serve(args) -> int:
    if args.sample:
        make_c4_repo(args.data_dir, args.sample)
    try:
        server = HubServer(args.data_dir, args.port, _knobs(args), args.log, args.page_size)
    except OSError as e:
        raise OSError(f'cannot listen on 127.0.0.1:{args.port} ({e.strerror}): another hub? '
                      f'`make hub-stop`, or pick --port') from None
    port = server.server_address[1]
    print(json.dumps({'port': port, 'pid': os.getpid(),
                      'data_dir': str(Path(args.data_dir).resolve()),
                      'endpoint': f'http://127.0.0.1:{port}'}), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


def _running(data_dir) -> dict | None:
    """The state of the `start`ed hub for this data dir, if its process is alive."""
    return background.running(data_dir, 'hub')


def _print_exports(info: dict, data_dir) -> None:
    run = background.run_dir(data_dir).resolve()
    repos = sorted(f'{p.parent.name}/{p.name}' for p in
                   (Path(data_dir) / 'datasets').glob('*/*') if p.is_dir())
    print(f'local Hugging Face Hub: pid {info["pid"]}, {info["endpoint"]}, data dir '
          f'{Path(data_dir).resolve()}, datasets: {", ".join(repos) or "none"}')
    print(f'  pid file {run / "hub.pid"}, request log {run / "requests.jsonl"}')
    print('  use it (e.g. --dataset allenai/c4 --subset en) after:')
    for k, v in hub_env(info['endpoint'], data_dir).items():
        print(f'export {k}={v}')


def _start(args) -> int:
    info = _running(args.data_dir)
    if info:
        if args.sample:
            make_c4_repo(args.data_dir, args.sample)  # picked up by the running hub
        print('already running')
        _print_exports(info, args.data_dir)
        return 0
    run = background.run_dir(args.data_dir)
    hub = start_hub(args.data_dir, args.port, _knobs(args), run / 'requests.jsonl',
                    args.sample, args.page_size)
    info = background.record(args.data_dir, 'hub', hub.proc.pid, hub.port, hub.endpoint)
    _print_exports(info, args.data_dir)
    return 0


def _stop(args) -> int:
    background.stop(args.data_dir, 'hub', 'local Hugging Face Hub')
    return 0


def _status(args) -> int:
    info = _running(args.data_dir)
    if not info:
        print('local Hugging Face Hub: not running')
        return 1
    _print_exports(info, args.data_dir)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description='A local Hugging Face Hub stand-in (127.0.0.1 only) serving '
        'dataset repositories from a folder, e.g. allenai/c4 `en` laid out from the offline '
        'sample, to huggingface_hub and datasets through HF_ENDPOINT.')
    sub = parser.add_subparsers(dest='cmd', required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--data-dir', default=DEFAULT_DATA_DIR,
                        help=f'repositories (datasets/<org>/<name>/), run state and the request '
                             f'log (default {DEFAULT_DATA_DIR})')
    knob = argparse.ArgumentParser(add_help=False)
    knob.add_argument('--port', type=int, default=DEFAULT_PORT,
                      help=f'port on 127.0.0.1, 0 = any free one (default {DEFAULT_PORT})')
    knob.add_argument('--sample', help='lay out allenai/c4 from this `make sample` folder '
                                       '(e.g. build/c4_sample) before serving')
    knob.add_argument('--page-size', type=int, default=DEFAULT_PAGE_SIZE,
                      help=f'entries per tree listing page (default {DEFAULT_PAGE_SIZE}, '
                           f'as the hub)')
    knob.add_argument('--latency-ms', type=float, default=0.0,
                      help='milliseconds added to every request')
    knob.add_argument('--bandwidth-mbps', type=float, default=0.0,
                      help='MB/s per connection, 0 = unlimited')
    knob.add_argument('--fault-rate', type=float, default=0.0,
                      help='fraction of requests that fail, 0..1')
    knob.add_argument('--fault-kinds', type=_kinds_arg, default=FAULT_KINDS,
                      help=f'comma list of {",".join(FAULT_KINDS)}: how they fail; reset cuts '
                           f'a file body half-way (default all)')
    knob.add_argument('--fault-match', default='',
                      help='regex on "METHOD /path": only matching requests may fail, e.g. '
                           '"GET /_lfs/.*c4-train.00001" (default all)')
    knob.add_argument('--seed', type=int, default=None, help='seed for the fault sequence')
    p = sub.add_parser('serve', parents=[common, knob], help='run in the foreground')
    p.add_argument('--log', help='append one JSON line per request to this file')
    sub.add_parser('start', parents=[common, knob],
                   help='run in the background (idempotent) and print the exports to use it')
    sub.add_parser('stop', parents=[common], help='stop the hub started by `start`')
    sub.add_parser('status', parents=[common], help='say whether it runs, and the exports')
    args = parser.parse_args(argv)
    try:
        if hasattr(args, 'fault_rate'):
            _knobs(args)
        return {'serve': _serve, 'start': _start, 'stop': _stop, 'status': _status}[args.cmd](args)
    except (ValueError, OSError, RuntimeError) as e:
        print(f'hf_hub: {e}', file=sys.stderr)
        return 2

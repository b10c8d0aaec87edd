"""The local OCI store's Python API (`start_store`) and command line: serve, start, stop, status.

Nothing installable emulates OCI Object Storage, so we carry the part of its REST API
(20160918) that the oci SDK and the OCI CLI use: namespace; bucket create/head/get/list;
object put/get (ranges)/head/list (prefix, paging, fields)/delete, with If-Match /
If-None-Match, Content-Type and opc-meta-* metadata; multipart create/part/commit/abort/list.
Objects are plain files under a data directory, so the store survives restarts:

    <data>/buckets, meta, uploads, tmp        the objects (see storage.py)
    <data>/client/{config,key.pem}           a throwaway API key (0600) clients sign with
    <data>/run/{store.json,store.pid,requests.jsonl,store.log}   the `start`ed server

It binds 127.0.0.1 only, serves one namespace (`local`), verifies every request's OCI
signature against that key (auth.py: 401 otherwise) and refuses object names that would
leave the bucket directory or that its file system cannot hold. Knobs emulate a far-away
bucket and a bad network: latency per request, bandwidth per connection, a fraction of
requests that fail (503, 500, 429, or the connection reset part-way through the body), and
an idle timeout after which a silent client is dropped.

    python -m data_prep.servers.oci_store {serve,start,stop,status} --help
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from data_prep.env import env_value
from data_prep.servers import background
from data_prep.servers.oci_store.auth import client_config
from data_prep.servers.oci_store.handler import (
    FAULT_KINDS,
    SETTLE_PATH,
    Knobs,
    StoreServer,
    _kinds_arg,
)
from data_prep.servers.oci_store.storage import NAMESPACE, Storage, StoreError
from data_prep.storage.oci.auth import ENDPOINT_ENV

DEFAULT_PORT = 9300
DEFAULT_DATA_DIR = '.store/data'
DEFAULT_BUCKETS = ('c4-bench',)


# ----------------------------------------------------------------------------- client credentials

def client_env(data_dir, endpoint: str) -> dict[str, str]:
    """Environment that points the oci SDK and data_prep.storage.oci at a store."""
    return {'OCI_CLI_AUTH': 'api_key',
            'OCI_CONFIG_FILE': str(client_config(data_dir).resolve()),
            'OCI_CLI_PROFILE': 'DEFAULT',
            ENDPOINT_ENV: endpoint}


# ----------------------------------------------------------------------------- Python API

class RunningStore:
    """A store running as a subprocess (see `start_store`)."""

    def __init__(self, proc, data_dir: Path, port: int, log_path: Path):
        self.proc, self.data_dir, self.port, self.log_path = proc, data_dir, port, log_path
        self.endpoint = f'http://127.0.0.1:{port}'

    def env(self) -> dict[str, str]:
        return client_env(self.data_dir, self.endpoint)

    def requests(self) -> list[dict]:
        """The request log so far: dicts with method, path, query, status, bytes, in, fault, ms."""
        self._settle()
        if not self.log_path.exists():
            return []
        with open(self.log_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def _settle(self) -> None:
        if self.proc.poll() is None:  # a response can reach the client before its log line
            conn = http.client.HTTPConnection('127.0.0.1', self.port, timeout=15)
            conn.request('GET', SETTLE_PATH)
            conn.getresponse().read()
            conn.close()

    def clear_log(self) -> None:
        # Truncate in place: the server appends to the same open file (O_APPEND).
        self._settle()
        with open(self.log_path, 'r+') as f:
            f.truncate(0)

    def create_bucket(self, name: str) -> None:
        Storage(self.data_dir).create_bucket(name)

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


def start_store(data_dir, port: int = 0, knobs: Knobs | None = None, log_path=None,
                buckets=()) -> RunningStore:
    """Start `serve` as a real subprocess (port 0 = a free one) and wait until it listens."""
    data_dir = Path(data_dir).resolve()
    knobs = (knobs or Knobs()).check()
    log_path = Path(log_path or data_dir / 'run' / 'requests.jsonl').resolve()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.touch()
    cmd = [sys.executable, '-m', 'data_prep.servers.oci_store', 'serve',
           '--data-dir', str(data_dir), '--port', str(port), '--log', str(log_path),
           '--latency-ms', str(knobs.latency_ms),
           '--bandwidth-mbps', str(knobs.bandwidth_mbps), '--fault-rate', str(knobs.fault_rate),
           '--fault-kinds', ','.join(knobs.fault_kinds), '--fault-match', knobs.fault_match,
           '--idle-timeout-s', str(knobs.idle_timeout_s), '--shape-match', knobs.shape_match]
    if knobs.seed is not None:
        cmd += ['--seed', str(knobs.seed)]
    for b in buckets:
        cmd += ['--bucket', b]
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        [str(root), *filter(None, [os.environ.get('PYTHONPATH')])])}
    (data_dir / 'run').mkdir(parents=True, exist_ok=True)
    errors = open(data_dir / 'run' / 'store.log', 'a+')
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, env=env, text=True,
                            cwd=root, start_new_session=True)
    line = proc.stdout.readline()  # serve prints one JSON line once it is listening
    if not line:
        proc.wait()
        errors.seek(0)
        last = (errors.read().strip().splitlines() or [f'exit code {proc.returncode}'])[-1]
        raise RuntimeError(f'did not start: {last.removeprefix("oci_store: ")}')
    info = json.loads(line)
    return RunningStore(proc, data_dir, info['port'], log_path)


# ----------------------------------------------------------------------------- CLI

def _serve(args) -> int:
    knobs = Knobs(args.latency_ms, args.bandwidth_mbps, args.fault_rate, args.fault_kinds,
                  args.seed, args.fault_match, args.idle_timeout_s, args.shape_match)
    try:
        server = StoreServer(args.data_dir, args.port, knobs, args.log)
    except OSError as e:
        raise OSError(f'cannot listen on 127.0.0.1:{args.port} ({e.strerror}): another store? '
                      f'`make store-stop`, or pick --port') from None
    for b in args.bucket or ():
        try:
            server.storage.create_bucket(b)
        except StoreError:
            pass  # already there: buckets persist with the data dir
    port = server.server_address[1]
    print(json.dumps({'port': port, 'pid': os.getpid(),
                      'data_dir': str(Path(args.data_dir).resolve()),
                      'endpoint': f'http://127.0.0.1:{port}', 'namespace': NAMESPACE}),
          flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


def _running(data_dir) -> dict | None:
    """The state of the `start`ed store for this data dir, if its process is alive."""
    return background.running(data_dir, 'store')


def _print_exports(info: dict, data_dir) -> None:
    print(f'local OCI store: pid {info["pid"]}, port {info["port"]}, data dir '
          f'{Path(data_dir).resolve()}, namespace {NAMESPACE}')
    print(f'  pid file {(background.run_dir(data_dir) / "store.pid").resolve()}, request log '
          f'{(background.run_dir(data_dir) / "requests.jsonl").resolve()}')
    print(f'  use it with URLs like oci://{DEFAULT_BUCKETS[0]}@{NAMESPACE}/<prefix> after:')
    for k, v in client_env(data_dir, info['endpoint']).items():
        print(f'export {k}={v}')


def _start(args) -> int:
    info = _running(args.data_dir)
    if info:
        print('already running')
        _print_exports(info, args.data_dir)
        return 0
    run = background.run_dir(args.data_dir)
    run.mkdir(parents=True, exist_ok=True)
    knobs = Knobs(args.latency_ms, args.bandwidth_mbps, args.fault_rate, args.fault_kinds,
                  args.seed, args.fault_match, args.idle_timeout_s, args.shape_match)
    store = start_store(args.data_dir, args.port, knobs, run / 'requests.jsonl',
                        args.bucket or DEFAULT_BUCKETS)
    info = background.record(args.data_dir, 'store', store.proc.pid, store.port, store.endpoint)
    _print_exports(info, args.data_dir)
    return 0


def _stop(args) -> int:
    background.stop(args.data_dir, 'store', 'local OCI store')
    return 0


def _status(args) -> int:
    info = _running(args.data_dir)
    if not info:
        print('local OCI store: not running')
        return 1
    _print_exports(info, args.data_dir)
    return 0


def main(argv=None) -> int:
    try:
        env = Knobs.from_env()
    except ValueError as e:
        print(f'oci_store: bad OCI_STORE_* environment: {e}', file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(
        prog='python -m data_prep.servers.oci_store',
        description='A local OCI Object Storage-compatible server (127.0.0.1 only, namespace '
                    f'{NAMESPACE!r}). Knobs default to OCI_STORE_* environment variables.')
    sub = parser.add_subparsers(dest='cmd', required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--data-dir', default=os.environ.get('OCI_STORE_DATA_DIR',
                                                             DEFAULT_DATA_DIR),
                        help=f'where objects live (env OCI_STORE_DATA_DIR, default '
                             f'{DEFAULT_DATA_DIR})')
    knob = argparse.ArgumentParser(add_help=False)
    knob.add_argument('--port', type=int, default=env_value('OCI_STORE_PORT', DEFAULT_PORT, int),
                      help=f'port on 127.0.0.1, 0 = any free one (env OCI_STORE_PORT, '
                           f'default {DEFAULT_PORT})')
    knob.add_argument('--latency-ms', type=float, default=env.latency_ms,
                      help='milliseconds added to every request (env OCI_STORE_LATENCY_MS)')
    knob.add_argument('--bandwidth-mbps', type=float, default=env.bandwidth_mbps,
                      help='MB/s per connection, 0 = unlimited (env OCI_STORE_BANDWIDTH_MBPS)')
    knob.add_argument('--fault-rate', type=float, default=env.fault_rate,
                      help='fraction of requests that fail, 0..1 (env OCI_STORE_FAULT_RATE)')
    knob.add_argument('--fault-kinds', type=_kinds_arg, default=env.fault_kinds,
                      help=f'comma list of {",".join(FAULT_KINDS)}: how they fail; reset cuts '
                           f'a GET body half-way (env OCI_STORE_FAULT_KINDS, default all)')
    knob.add_argument('--fault-match', default=env.fault_match,
                      help='regex on "METHOD /path": only matching requests may fail, e.g. '
                           '"GET .*/o/" (env OCI_STORE_FAULT_MATCH, default all)')
    knob.add_argument('--shape-match', default=env.shape_match,
                      help='regex on "METHOD /path": only matching requests are held to '
                           '--bandwidth-mbps, e.g. "PUT .*-ba12-" (env OCI_STORE_SHAPE_MATCH, '
                           'default all)')
    knob.add_argument('--seed', type=int, default=env.seed,
                      help='seed for the fault sequence (env OCI_STORE_SEED)')
    knob.add_argument('--idle-timeout-s', type=float, default=env.idle_timeout_s,
                      help='drop a connection silent this long, mid-request or between '
                           'requests (env OCI_STORE_IDLE_TIMEOUT_S, default 60)')
    knob.add_argument('--bucket', action='append',
                      help=f'create this bucket if missing, repeatable (start default: '
                           f'{",".join(DEFAULT_BUCKETS)})')
    p = sub.add_parser('serve', parents=[common, knob], help='run in the foreground')
    p.add_argument('--log', help='append one JSON line per request to this file '
                                 '(env OCI_STORE_LOG)', default=os.environ.get('OCI_STORE_LOG'))
    sub.add_parser('start', parents=[common, knob],
                   help='run in the background (idempotent) and print the exports to use it')
    sub.add_parser('stop', parents=[common], help='stop the store started by `start`')
    sub.add_parser('status', parents=[common], help='say whether it runs, and the exports')
    args = parser.parse_args(argv)
    try:
        if getattr(args, 'fault_rate', None) is not None:
            Knobs(args.latency_ms, args.bandwidth_mbps, args.fault_rate, args.fault_kinds,
                  args.seed, args.fault_match, args.idle_timeout_s, args.shape_match).check()
        return {'serve': _serve, 'start': _start, 'stop': _stop, 'status': _status}[args.cmd](args)
    except (ValueError, OSError, RuntimeError) as e:
        print(f'oci_store: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())

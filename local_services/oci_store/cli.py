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

    python -m local_services.oci_store {serve,start,stop,status} --help
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from data_prep.env import env_value
from data_prep.storage.oci.auth import ENDPOINT_ENV
from local_services import background
from local_services.oci_store.auth import client_config
from local_services.oci_store.handler import StoreServer
from local_services.oci_store.storage import NAMESPACE, Storage, StoreError
from local_services.shaped_http import FAULT_KINDS, Knobs, fault_kinds, fault_kinds_arg

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

class RunningStore(background.RunningServer):
    """A store running as a subprocess (see `start_store`)."""

    def env(self) -> dict[str, str]:
        return client_env(self.data_dir, self.endpoint)

    def create_bucket(self, name: str) -> None:
        Storage(self.data_dir).create_bucket(name)


def start_store(data_dir, port: int = 0, knobs: Knobs | None = None, log_path=None,
                buckets=()) -> RunningStore:
    """Start `serve` as a real subprocess (port 0 = a free one) and wait until it listens."""
    data_dir = Path(data_dir).resolve()
    knobs = (knobs or Knobs()).check()
    argv = ['--port', str(port), *knobs.argv(), '--idle-timeout-s', str(knobs.idle_timeout_s),
            '--shape-match', knobs.shape_match]
    for b in buckets:
        argv += ['--bucket', b]
    proc, port, log_path = background.launch('local_services.oci_store', data_dir, argv,
                                             log_path, 'store.log', 'oci_store')
    return RunningStore(proc, data_dir, port, log_path)


# ----------------------------------------------------------------------------- CLI

def _knobs(args) -> Knobs:
    return Knobs(args.latency_ms, args.bandwidth_mbps, args.fault_rate, args.fault_kinds,
                 args.seed, args.fault_match, args.idle_timeout_s, args.shape_match).check()


def _env_knobs() -> Knobs:
    """The knobs' defaults from the OCI_STORE_* environment."""
    return Knobs(latency_ms=env_value('OCI_STORE_LATENCY_MS', 0.0, float),
                 bandwidth_mbps=env_value('OCI_STORE_BANDWIDTH_MBPS', 0.0, float),
                 fault_rate=env_value('OCI_STORE_FAULT_RATE', 0.0, float),
                 fault_kinds=env_value('OCI_STORE_FAULT_KINDS', FAULT_KINDS, fault_kinds),
                 seed=env_value('OCI_STORE_SEED', None, int),
                 fault_match=os.environ.get('OCI_STORE_FAULT_MATCH', ''),
                 idle_timeout_s=env_value('OCI_STORE_IDLE_TIMEOUT_S', 60.0, float),
                 shape_match=os.environ.get('OCI_STORE_SHAPE_MATCH', ''))


def _serve(args) -> int:
    try:
        server = StoreServer(args.data_dir, args.port, _knobs(args), args.log)
    except OSError as e:
        raise OSError(f'cannot listen on 127.0.0.1:{args.port} ({e.strerror}): another store? '
                      f'`make store-stop`, or pick --port') from None
    for b in args.bucket or ():
        try:
            server.storage.create_bucket(b)
        except StoreError:
            pass  # already there: buckets persist with the data dir
    port = server.server_address[1]
    return background.serve(server, {'port': port, 'pid': os.getpid(),
                                     'data_dir': str(Path(args.data_dir).resolve()),
                                     'endpoint': f'http://127.0.0.1:{port}',
                                     'namespace': NAMESPACE})


def _print_exports(info: dict, data_dir) -> None:
    print(f'local OCI store: pid {info["pid"]}, port {info["port"]}, data dir '
          f'{Path(data_dir).resolve()}, namespace {NAMESPACE}')
    print(f'  pid file {(background.run_dir(data_dir) / "store.pid").resolve()}, request log '
          f'{(background.run_dir(data_dir) / "requests.jsonl").resolve()}')
    print(f'  use it with URLs like oci://{DEFAULT_BUCKETS[0]}@{NAMESPACE}/<prefix> after:')
    for k, v in client_env(data_dir, info['endpoint']).items():
        print(f'export {k}={v}')


def main(argv=None) -> int:
    try:
        env = _env_knobs()
    except ValueError as e:
        print(f'oci_store: bad OCI_STORE_* environment: {e}', file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(
        prog='python -m local_services.oci_store',
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
    knob.add_argument('--fault-kinds', type=fault_kinds_arg, default=env.fault_kinds,
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
    background.add_commands(sub, common, knob, 'store', 'append one JSON line per request to '
                            'this file (env OCI_STORE_LOG)', os.environ.get('OCI_STORE_LOG'))
    args = parser.parse_args(argv)
    return background.run_command(
        args, 'oci_store', 'store', 'local OCI store',
        check=lambda a: getattr(a, 'fault_rate', None) is not None and _knobs(a),
        serve=_serve, print_exports=_print_exports,
        launch_it=lambda a, log: start_store(a.data_dir, a.port, _knobs(a), log,
                                             a.bucket or DEFAULT_BUCKETS))


if __name__ == '__main__':
    sys.exit(main())

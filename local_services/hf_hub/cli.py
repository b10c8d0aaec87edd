"""`python -m local_services.hf_hub {serve,start,stop,status}` and the Python API (start_hub)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from local_services import background
from local_services.hf_hub.repos import make_c4_repo
from local_services.hf_hub.server import DEFAULT_PAGE_SIZE, HubServer
from local_services.shaped_http import FAULT_KINDS, Knobs, fault_kinds_arg

DEFAULT_PORT = 9400
DEFAULT_DATA_DIR = '.hub/data'
PROG = 'python -m local_services.hf_hub'


def hub_env(endpoint: str, data_dir) -> dict[str, str]:
    """What points huggingface_hub and datasets at a local hub (they read it at import)."""
    return {'HF_ENDPOINT': endpoint,
            'HF_HUB_OFFLINE': '0', 'HF_DATASETS_OFFLINE': '0',  # in case a shell set them
            'HF_HUB_DISABLE_TELEMETRY': '1',
            'HF_HUB_DISABLE_IMPLICIT_TOKEN': '1',  # a real token stays out of the stand-in
            # Own caches: the stand-in's allenai/c4 must not mix with the real one's.
            'HF_HOME': str(Path(data_dir).resolve() / 'hf_home')}


# ----------------------------------------------------------------------------- Python API

class RunningHub(background.RunningServer):
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
    argv = ['--port', str(port), '--page-size', str(page_size), *knobs.argv()]
    proc, port, log_path = background.launch('local_services.hf_hub', data_dir, argv,
                                             log_path, 'hub.log', 'hf_hub')
    return RunningHub(proc, data_dir, port, log_path)


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
    return background.serve(server, {'port': port, 'pid': os.getpid(),
                                     'data_dir': str(Path(args.data_dir).resolve()),
                                     'endpoint': f'http://127.0.0.1:{port}'})


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


def _add_sample(args) -> None:
    if args.sample:
        make_c4_repo(args.data_dir, args.sample)  # picked up by the running hub


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
    knob.add_argument('--fault-kinds', type=fault_kinds_arg, default=FAULT_KINDS,
                      help=f'comma list of {",".join(FAULT_KINDS)}: how they fail; reset cuts '
                           f'a file body half-way (default all)')
    knob.add_argument('--fault-match', default='',
                      help='regex on "METHOD /path": only matching requests may fail, e.g. '
                           '"GET /_lfs/.*c4-train.00001" (default all)')
    knob.add_argument('--seed', type=int, default=None, help='seed for the fault sequence')
    background.add_commands(sub, common, knob, 'hub',
                            'append one JSON line per request to this file')
    args = parser.parse_args(argv)
    return background.run_command(
        args, 'hf_hub', 'hub', 'local Hugging Face Hub',
        check=lambda a: hasattr(a, 'fault_rate') and _knobs(a),
        serve=_serve, print_exports=_print_exports, already=_add_sample,
        launch_it=lambda a, log: start_hub(a.data_dir, a.port, _knobs(a), log, a.sample,
                                           a.page_size))

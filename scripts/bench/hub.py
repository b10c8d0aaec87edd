"""`make bench-hub`: allenai/c4 `en` from a far-away hub, ours against the seed's single stream.

The local hub (local_services.hf_hub) serves C4-format files (generated if missing) as
allenai/c4 `en`, shaped like a hub across the internet: BANDWIDTH MB/s per connection and
LATENCY ms per request (default 50 MB/s, 40 ms). Two whole processes, timed from start to
exit, each with its own empty HF_HOME (the README, listings and files come from the hub):

(a) ours: `python -m data_prep.convert --dataset allenai/c4 --subset en --compression zstd`
    with all workers: each hub file is one part, so the workers download in parallel;
(b) the seed walkthrough: one `load_dataset('allenai/c4', 'en', streaming=True)` loop into
    one MDSWriter (scripts/bench/convert.side_naive), one stream.

Both write zstd MDS to a local folder, so the hub path is what is measured. MB/s are of
uncompressed input JSON per second of the whole process (start-up included), and of the work
alone (after imports and checks); CPU seconds are the process's and its workers', so MB per
CPU-second does not drop when other programs share the cores.

    python -m scripts.bench.hub [--size-mb 192] [--files 8] [--workers N] [--rounds 1]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from scripts.bench.lib import machine, run_timed, save_json

ROOT = Path(__file__).resolve().parents[2]


def seed_loop(out: str) -> int:
    """Runs (b) in this process (HF_ENDPOINT already pointing at the hub); prints its JSON."""
    import datasets  # noqa: F401  (imports are not the work)
    import streaming  # noqa: F401

    from scripts.bench.convert import side_naive
    shutil.rmtree(out, ignore_errors=True)
    t0, c0 = time.perf_counter(), time.process_time()
    result = side_naive([], out, dataset='allenai/c4', subset='en')
    print(json.dumps({'seconds': time.perf_counter() - t0,
                      'cpu_seconds': time.process_time() - c0, 'samples': result['samples']}))
    return 0


def timed(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process and all it waited for, its stdout)."""
    run = run_timed(cmd, env={**os.environ, **env})
    if run.returncode != 0:
        raise SystemExit(f'error: {" ".join(cmd[:6])}... exited {run.returncode}:\n'
                         f'{run.stderr[-3000:]}')
    return run.wall_s, run.cpu_s, run.stdout


KEYS = ('seconds', 'mb_per_s', 'work_seconds', 'work_mb_per_s', 'process_cpu_seconds',
        'mb_per_cpu_s', 'samples', 'hub')


def traffic(hub) -> dict:
    log = hub.requests()
    hub.clear_log()
    return {'requests': len(log), 'bytes': sum(r['bytes'] for r in log),
            'file_gets': sum(1 for r in log if r['path'].startswith('/_lfs/'))}


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--size-mb', type=float, default=192,
                   help='MB of text in the input (default 192)')
    p.add_argument('--files', type=int, default=8, help='train files in the hub (default 8)')
    p.add_argument('--workers', type=int, default=os.cpu_count(),
                   help=f'workers for (a) (default the cores, {os.cpu_count()})')
    p.add_argument('--bandwidth-mbps', type=float, default=50.0,
                   help='hub MB/s per connection (default 50)')
    p.add_argument('--latency-ms', type=float, default=40.0,
                   help='hub milliseconds per request (default 40)')
    p.add_argument('--rounds', type=int, default=1,
                   help='interleaved rounds; the best of each is kept (default 1)')
    p.add_argument('--build', default='build/bench_hub', help='work folder')
    p.add_argument('--json', default='results/bench_hub.json', help='where to save figures')
    p.add_argument('--seed-loop', metavar='OUT', help=argparse.SUPPRESS)  # (b), in a child
    return p.parse_args(argv)


def one_round(args, hub, build: Path) -> dict:
    """(a) and (b) once each, from a cold Hugging Face cache: name -> figures."""
    runs = {}
    for name in ('ours', 'seed'):
        home = build / 'hf_home' / name
        shutil.rmtree(home, ignore_errors=True)  # cold: nothing cached from a run before
        env = {**hub.env(), 'HF_HOME': str(home)}
        out = str(build / name)
        shutil.rmtree(out, ignore_errors=True)
        if name == 'ours':
            cmd = [sys.executable, '-m', 'data_prep.convert', '--dataset', 'allenai/c4',
                   '--subset', 'en', '--remote', out, '--compression', 'zstd',
                   '--workers', str(args.workers), '--no-progress', '--json']
        else:
            cmd = [sys.executable, '-m', 'scripts.bench.hub', '--seed-loop', out]
        seconds, cpu_seconds, stdout = timed(cmd, env)
        inner = json.loads(stdout[stdout.index('{'):])
        # inner seconds: the work after imports (ours: after its checks too)
        runs[name] = {**inner, 'work_seconds': inner['seconds'], 'seconds': seconds,
                      'process_cpu_seconds': cpu_seconds, 'hub': traffic(hub)}
    a = runs['ours']
    for x in runs.values():
        x['mb_per_s'] = a['input_bytes'] / 1e6 / x['seconds']
        x['work_mb_per_s'] = a['input_bytes'] / 1e6 / x['work_seconds']
        x['mb_per_cpu_s'] = a['input_bytes'] / 1e6 / x['process_cpu_seconds']
    return runs


def print_table(args, result: dict, a: dict, b: dict) -> None:
    json_mb, gz_mb = result['input']['json_mb'], result['input']['gz_mb']
    floor = result['network_floor_seconds']
    rows = [(f'(a) ours, {a["workers"]} workers, one part per file', a),
            ('(b) seed, one load_dataset stream', b)]
    print(f'\ninput: {args.files} hub files, {json_mb:.1f} MB JSON ({gz_mb:.1f} MB gzipped); '
          f'hub {args.bandwidth_mbps:g} MB/s per connection, {args.latency_ms:g} ms per request')
    print(f'{"":38s} whole process  MB/s  | work only  MB/s | CPU s  MB/CPU-s | requests')
    for label, x in rows:
        print(f'{label:38s} {x["seconds"]:8.1f} s {x["mb_per_s"]:6.1f} | '
              f'{x["work_seconds"]:7.1f} s {x["work_mb_per_s"]:6.1f} | '
              f'{x["process_cpu_seconds"]:5.1f} {x["mb_per_cpu_s"]:8.1f} | '
              f'{x["hub"]["requests"]:8d}')
    print(f'{"(a) / (b)":38s} {result["speedup_vs_seed"]:8.2f}x        | '
          f'{result["work_speedup_vs_seed"]:7.2f}x')
    print(f'network alone (gzipped bytes / bandwidth): (a) {floor["ours"]:.1f} s, '
          f'(b) {floor["seed"]:.1f} s')
    load0, load1 = result['loadavg_before'], result['loadavg_after']
    print(f'load average before {load0[0]:.2f}, after {load1[0]:.2f}, on '
          f'{result["machine"]["cores"]} cores; best of {args.rounds} round(s)')


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.seed_loop:
        return seed_loop(args.seed_loop)

    from data_prep.pipeline.sample import generate
    from local_services.hf_hub import Knobs, start_hub
    build = Path(args.build).resolve()
    data = build / f'input_{args.size_mb:g}mb_{args.files}f'
    generate(str(data), size_mb=args.size_mb, train_files=args.files, val_files=1)
    gz_mb = sum(f.stat().st_size for f in data.glob('c4-train.*')) / 1e6
    shutil.rmtree(build / 'hub', ignore_errors=True)
    knobs = Knobs(latency_ms=args.latency_ms, bandwidth_mbps=args.bandwidth_mbps)
    load0 = os.getloadavg()
    rounds = []
    with start_hub(build / 'hub', knobs=knobs, sample=data) as hub:
        print(f'hub {hub.endpoint}: {args.files} files, {gz_mb:.1f} MB gzipped, '
              f'{args.bandwidth_mbps:g} MB/s per connection, {args.latency_ms:g} ms per request',
              flush=True)
        for r in range(args.rounds):  # interleaved, so a change of load hits both alike
            runs = one_round(args, hub, build)
            a, b = runs['ours'], runs['seed']
            if a['samples'] != b['samples']:
                print(f'MISMATCH: ours {a["samples"]} samples, seed {b["samples"]}',
                      file=sys.stderr)
                return 1
            print(f'round {r + 1}: ours {a["seconds"]:.1f} s, seed {b["seconds"]:.1f} s, '
                  f'load {os.getloadavg()[0]:.2f}', flush=True)
            rounds.append(runs)
    a = min((x['ours'] for x in rounds), key=lambda x: x['seconds'])
    b = min((x['seed'] for x in rounds), key=lambda x: x['seconds'])
    # The network alone: every gzipped byte through one connection (b) or `workers` (a).
    floor_b = gz_mb / args.bandwidth_mbps
    floor_a = floor_b / min(a['workers'], args.files)
    result = {'input': {'files': args.files, 'json_mb': a['input_bytes'] / 1e6, 'gz_mb': gz_mb},
              'hub': {'bandwidth_mbps_per_connection': args.bandwidth_mbps,
                      'latency_ms': args.latency_ms},
              'ours': {k: a[k] for k in KEYS + ('workers', 'startup_seconds')},
              'seed': {k: b[k] for k in KEYS},
              'speedup_vs_seed': b['seconds'] / a['seconds'],
              'work_speedup_vs_seed': b['work_seconds'] / a['work_seconds'],
              'network_floor_seconds': {'ours': floor_a, 'seed': floor_b},
              'rounds': args.rounds, 'loadavg_before': load0, 'loadavg_after': os.getloadavg(),
              'machine': machine()}
    print_table(args, result, a, b)
    if args.json:
        save_json(args.json, result)
    return 0


if __name__ == '__main__':
    sys.exit(main())

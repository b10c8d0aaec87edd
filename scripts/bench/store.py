"""GET throughput of the local OCI store on loopback: it must not be the bottleneck.

    python -m scripts.bench.store [--objects 8 --size-mb 64 --connections 1,4 --json out.json]
                                  [--baseline CHECKOUT]   (another commit's store, side by side)

Starts a store on a free port with no shaping, puts shard-sized objects in it, then reads
them back three ways and prints MB/s:
  raw      plain HTTP GETs read into a reused buffer: what the store itself can serve
  oci-sdk  our transport (oci SDK, signed requests, temp file, size + MD5 check, rename):
           what a StreamingDataset download gets
  small    1 KiB GETs one after another on one connection: requests/s (index files,
           listings and HEADs are small answers; each must not wait on a delayed ACK)
  shaped   the same raw GETs with --latency-ms / --bandwidth-mbps, to show the knobs bite
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from local_services.oci_store import Knobs, RunningStore, start_store
from local_services.oci_store.auth import sign
from scripts.bench.lib import machine, process_cpu

BUCKET = 'bench'


def raw_gets(store, names: list[str], connections: int, size: int) -> float:
    """Read every object once over `connections` keep-alive connections; returns MB/s.
    Requests are signed (the store verifies every signature) before the clock starts."""
    config = store.env()['OCI_CONFIG_FILE']
    signed = {name: sign(config, 'GET', store.endpoint, f'/n/local/b/{BUCKET}/o/{name}')
              for name in names}

    def worker(mine: list[str]) -> int:
        conn = http.client.HTTPConnection('127.0.0.1', store.port, timeout=60)
        buf = memoryview(bytearray(8 << 20))
        total = 0
        for name in mine:
            conn.request('GET', f'/n/local/b/{BUCKET}/o/{name}', headers=signed[name])
            resp = conn.getresponse()
            while n := resp.readinto(buf):
                total += n
        conn.close()
        return total
    chunks = [names[i::connections] for i in range(connections)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        got = sum(pool.map(worker, chunks))
    elapsed = time.perf_counter() - t0
    assert got == size * len(names), f'read {got} bytes, expected {size * len(names)}'
    return got / elapsed / 1e6


def small_gets(store, count: int = 500) -> float:
    """`count` GETs of a 1 KiB object on one keep-alive connection; returns requests/s."""
    target = f'/n/local/b/{BUCKET}/o/small'
    headers = sign(store.env()['OCI_CONFIG_FILE'], 'GET', store.endpoint, target)
    conn = http.client.HTTPConnection('127.0.0.1', store.port, timeout=60)
    t0 = time.perf_counter()
    for _ in range(count):
        conn.request('GET', target, headers=headers)
        assert len(conn.getresponse().read()) == 1024
    elapsed = time.perf_counter() - t0
    conn.close()
    return count / elapsed


def sdk_gets(store, names: list[str], connections: int, out_dir: Path) -> float:
    os.environ.update(store.env())
    from data_prep.storage.oci import client as oci_client
    oci_client.client()  # build the client (key load) outside the timed part

    def one(name: str) -> int:
        local = out_dir / name
        oci_client.download_file(f'oci://{BUCKET}@local/{name}', str(local), timeout=120)
        size = local.stat().st_size
        local.unlink()
        return size
    t0 = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        got = sum(pool.map(one, names))
    return got / (time.perf_counter() - t0) / 1e6


def start_baseline(checkout: Path, data_dir: Path) -> RunningStore:
    """The store of another checkout (e.g. `git worktree add /tmp/base <commit>`) over the same
    data dir, started with the arguments every version of `serve` takes."""
    proc = subprocess.Popen([sys.executable, '-m', 'local_services.oci_store', 'serve',
                             '--data-dir', str(data_dir), '--port', '0'], cwd=checkout,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f'the baseline store in {checkout} did not start')
    return RunningStore(proc, data_dir, json.loads(line)['port'], data_dir / 'run' / 'none')


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--objects', type=int, default=8, help='objects to read (default 8)')
    p.add_argument('--size-mb', type=int, default=64, help='object size in MiB (default 64, '
                   'streaming\'s default shard size)')
    p.add_argument('--connections', default='1,4', help='parallel connections to try (1,4)')
    p.add_argument('--rounds', type=int, default=3, help='best of N rounds (default 3)')
    p.add_argument('--latency-ms', type=float, default=20, help='shaped run: latency (20)')
    p.add_argument('--bandwidth-mbps', type=float, default=100,
                   help='shaped run: MB/s per connection (100)')
    p.add_argument('--baseline', type=Path,
                   help='also measure the store of this checkout (another commit), side by '
                        'side: same objects, interleaved rounds, ratios printed')
    p.add_argument('--data-dir', help='store data dir (default: a temp dir, removed after)')
    p.add_argument('--json', help='also write the figures to this file')
    return p.parse_args()


def write_objects(data_dir: Path, names: list[str], size_mb: int) -> None:
    """The objects are files: written straight into the bucket (kept if already whole)."""
    block = os.urandom(1 << 20)
    for name in names:
        path = data_dir / 'buckets' / BUCKET / name
        if not path.exists() or path.stat().st_size != size_mb << 20:
            with open(path, 'wb') as f:
                for _ in range(size_mb):
                    f.write(block)
    (data_dir / 'buckets' / BUCKET / 'small').write_bytes(b's' * 1024)


def measure_unshaped(args, stores: dict, names: list[str], out_dir: Path,
                     results: dict) -> None:
    """Raw GETs, small GETs and our SDK client's GETs against each store, best of the rounds
    (interleaved, order rotated), into results."""
    conns = [int(c) for c in args.connections.split(',')]
    size = args.size_mb << 20

    def best(measure) -> dict:
        got = {k: [] for k in stores}
        for r in range(args.rounds):
            order = list(stores)[r % len(stores):] + list(stores)[:r % len(stores)]
            for k in order:
                got[k].append(measure(stores[k]))
        return {k: max(v) for k, v in got.items()}

    def record(key, value: dict, sub=None) -> None:
        for who, figures in (('this', results), ('baseline', results.get('baseline'))):
            if who in value:
                if sub is None:
                    figures[key] = round(value[who])
                else:
                    figures[key][sub] = round(value[who])

    def show(what: str, value: dict, unit: str, extra: str = '') -> None:
        line = f'  {what}: {value["this"]:8.0f} {unit}'
        if 'baseline' in value:
            line += (f'   baseline {value["baseline"]:8.0f} {unit}, ratio '
                     f'{value["this"] / value["baseline"]:.2f}')
        print(line + extra, flush=True)

    for st in stores.values():
        raw_gets(st, names[:1], 1, size)  # warm the page cache
    print(f'local OCI store GET throughput, loopback, no shaping: {args.objects} x '
          f'{args.size_mb} MiB objects, best of {args.rounds}, {os.cpu_count()} CPUs')
    for c in conns:
        mbps = best(lambda st: raw_gets(st, names, c, size))
        record('raw', mbps, c)
        show(f'raw HTTP GET   {c:2d} connection(s)', mbps, 'MB/s')
    rps = best(small_gets)
    record('small_get_rps', rps)
    show('1 KiB GETs, one connection ', rps, 'requests/s')
    for c in conns:
        mbps = best(lambda st: sdk_gets(st, names, c, out_dir))
        record('oci_sdk', mbps, c)
        show(f'oci SDK (ours) {c:2d} connection(s)', mbps, 'MB/s',
             '  (signed GET, temp file, size + MD5 check)')


def main() -> int:
    args = parse_args()
    names = [f'shard.{i:05d}.mds' for i in range(args.objects)]
    tmp = tempfile.TemporaryDirectory(prefix='bench_store_')
    data_dir = Path(args.data_dir or Path(tmp.name) / 'data')
    results = {'objects': args.objects, 'size_mb': args.size_mb, 'machine': machine(),
               'raw': {}, 'oci_sdk': {}, 'small_get_rps': None, 'shaped': {}}
    out_dir = Path(tmp.name) / 'downloads'
    out_dir.mkdir()

    with start_store(data_dir, buckets=[BUCKET]) as store:
        write_objects(data_dir, names, args.size_mb)
        stores = {'this': store}
        if args.baseline:
            stores['baseline'] = start_baseline(args.baseline.resolve(), data_dir)
            results['baseline'] = {'checkout': str(args.baseline), 'raw': {}, 'oci_sdk': {}}
        cpu0 = {k: process_cpu(st.proc.pid) for k, st in stores.items()}
        measure_unshaped(args, stores, names, out_dir, results)
        cpu = {k: process_cpu(st.proc.pid) - cpu0[k] for k, st in stores.items()}
        results['store_cpu_s'] = {k: round(v, 2) for k, v in cpu.items()}
        print('  store process CPU for all of the above: ' +
              ', '.join(f'{k} {v:.2f} s' for k, v in cpu.items()))
        if args.baseline:
            stores['baseline'].stop()

    knobs = Knobs(latency_ms=args.latency_ms, bandwidth_mbps=args.bandwidth_mbps)
    with start_store(data_dir, knobs=knobs) as store:
        c = max(int(c) for c in args.connections.split(','))
        mbps = raw_gets(store, names[:c], c, args.size_mb << 20)
        results['shaped'] = {'latency_ms': args.latency_ms,
                             'bandwidth_mbps': args.bandwidth_mbps, 'connections': c,
                             'mbps': round(mbps)}
        print(f'  shaped ({args.latency_ms:g} ms, {args.bandwidth_mbps:g} MB/s per connection), '
              f'{c} connection(s): {mbps:.0f} MB/s (expect about {c * args.bandwidth_mbps:g})')
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    tmp.cleanup()
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""The bench's report: results.json (for machines), report.md (one table and a few sentences
for a person), and PNG plots (throughput and data wait per step, bucket bytes and objects)."""
from __future__ import annotations

import json
import os
import platform
from importlib.metadata import version
from pathlib import Path

STACK = ['llm-foundry', 'mosaicml', 'mosaicml-streaming', 'torch', 'transformers', 'datasets', 'oci']


def machine() -> dict:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {'cores': os.cpu_count(), 'gpu': gpu, 'gpus': torch.cuda.device_count(),
            'platform': platform.platform(), 'python': platform.python_version()}


def rows(conversions: dict, buckets: dict, runs: list[dict]) -> list[dict]:
    """One row per run: the bucket's numbers for its variant beside the run's own."""
    raw_bytes = buckets['uncompressed']['bytes']
    out = []
    for run in runs:
        v, m = run['variant'], run['metrics']
        out.append({
            'run': run['name'], 'variant': v, 'cache': run['cache'], 'store': run['store'],
            'bucket_bytes': buckets[v]['bytes'], 'objects': buckets[v]['objects'],
            'compression_ratio': raw_bytes / buckets[v]['bytes'],
            'convert_mb_per_s': conversions[v]['mb_per_s'],
            'samples_per_s': m['throughput_samples_per_s'], 'tokens_per_s': m['throughput_tokens_per_s'],
            'data_wait_fraction': m['data_wait_fraction'], 'time_to_first_batch_s': m['time_to_first_batch_s'],
            'cache_hit_rate': m['cache_hit_rate'], 'bytes_downloaded': m['bytes_downloaded'],
            'steps': m['steps'], 'wall_s': m['wall_s'], 'status': m.get('status'),
        })
    return out


def _fmt(x, spec: str) -> str:
    return '–' if x is None else format(x, spec)


def table(rows: list[dict]) -> str:
    head = ('| run | bucket MB | objects | ratio | convert MB/s | samples/s | tokens/s | data wait '
            '| first batch s | cache hits | MB downloaded |\n|' + '---|' * 11)
    lines = [head]
    for r in rows:
        lines.append(
            f'| {r["variant"]}, {r["cache"]} cache, {r["store"]} store | {r["bucket_bytes"] / 1e6:.2f} '
            f'| {r["objects"]} | {r["compression_ratio"]:.2f}x | {r["convert_mb_per_s"]:.1f} '
            f'| {_fmt(r["samples_per_s"], ".1f")} | {_fmt(r["tokens_per_s"], ",.0f")} '
            f'| {_fmt(r["data_wait_fraction"] and 100 * r["data_wait_fraction"], ".1f")}% '
            f'| {_fmt(r["time_to_first_batch_s"], ".2f")} | {_fmt(r["cache_hit_rate"], ".0%")} '
            f'| {r["bytes_downloaded"] / 1e6:.2f} |')
    return '\n'.join(lines)


def _pick(rows, **want):
    return next((r for r in rows if all(r[k] == v for k, v in want.items())), None)


def sentences(rows: list[dict], shaping: dict | None) -> str:
    """What the numbers say: storage, cold start over the network, warm cache, the network."""
    raw, z = _pick(rows, variant='uncompressed'), _pick(rows, variant='zstd')
    store = raw['store']
    out = [f'zstd stores the dataset in {z["bucket_bytes"] / 1e6:.2f} MB against '
           f'{raw["bucket_bytes"] / 1e6:.2f} MB uncompressed ({z["compression_ratio"]:.2f}x smaller, '
           f'{z["objects"]} vs {raw["objects"]} objects); it converted at {z["convert_mb_per_s"]:.1f} '
           f'MB/s of input JSON against {raw["convert_mb_per_s"]:.1f}.']
    rc, zc = _pick(rows, variant='uncompressed', cache='cold', store=store), _pick(rows, variant='zstd', cache='cold', store=store)
    where = 'a store shaped like another region' if shaping else 'the bucket'
    out.append(f'From a cold cache over {where}, zstd downloaded {zc["bytes_downloaded"] / 1e6:.2f} MB '
               f'against {rc["bytes_downloaded"] / 1e6:.2f} MB, waited on data '
               f'{100 * (zc["data_wait_fraction"] or 0):.1f}% of the time against '
               f'{100 * (rc["data_wait_fraction"] or 0):.1f}%, and trained at '
               f'{zc["samples_per_s"] or 0:.1f} against {rc["samples_per_s"] or 0:.1f} samples/s.')
    rw, zw = _pick(rows, variant='uncompressed', cache='warm'), _pick(rows, variant='zstd', cache='warm')
    if rw and zw:
        out.append(f'With the cache warm both read from local disk (hit rate {rw["cache_hit_rate"]:.0%} and '
                   f'{zw["cache_hit_rate"]:.0%}, {(rw["bytes_downloaded"] + zw["bytes_downloaded"]) / 1e6:.2f} MB '
                   f'downloaded); time to first batch fell from {rc["time_to_first_batch_s"]:.2f} to '
                   f'{rw["time_to_first_batch_s"]:.2f} s (uncompressed) and {zc["time_to_first_batch_s"]:.2f} '
                   f'to {zw["time_to_first_batch_s"]:.2f} s (zstd).')
    rp, zp = _pick(rows, variant='uncompressed', store='plain'), _pick(rows, variant='zstd', store='plain')
    if shaping and rp and zp:
        out.append(f'Without the {shaping["latency_ms"]:.0f} ms / {shaping["bandwidth_mbps"]:.0f} MB/s shaping, '
                   f'cold data wait was {100 * (rp["data_wait_fraction"] or 0):.1f}% (uncompressed) and '
                   f'{100 * (zp["data_wait_fraction"] or 0):.1f}% (zstd): the difference is the network.')
    return ' '.join(out)


def plots(out: Path, runs: list[dict], buckets: dict) -> list[str]:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    made = []
    series = {r['name']: [json.loads(l) for l in open(r['steps_file'])] if os.path.exists(r['steps_file']) else []
              for r in runs}
    for key, label, fname in [('samples_per_s', 'samples/s', 'throughput.png'),
                              ('data_wait_ms', 'data wait per step (ms)', 'data_wait.png')]:
        fig, ax = plt.subplots(figsize=(8, 4))
        for name, steps in series.items():
            pts = [(s['step'], s[key]) for s in steps if s.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), label=name, marker='.', linewidth=1)
        ax.set_xlabel('step'), ax.set_ylabel(label), ax.grid(alpha=0.3), ax.legend(fontsize=7)
        ax.set_title(label + ' per run')
        fig.tight_layout(), fig.savefig(out / fname, dpi=110), plt.close(fig)
        made.append(fname)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.2))
    names = list(buckets)
    a1.bar(names, [buckets[n]['bytes'] / 1e6 for n in names], color=['#888', '#2a7'])
    a1.set_ylabel('MB in the bucket')
    a2.bar(names, [buckets[n]['objects'] for n in names], color=['#888', '#2a7'])
    a2.set_ylabel('objects')
    fig.suptitle('bucket bytes and objects per variant'), fig.tight_layout()
    fig.savefig(out / 'bucket.png', dpi=110), plt.close(fig)
    return made + ['bucket.png']


def write_report(out: Path, conversions: dict, buckets: dict, runs: list[dict], shaping: dict | None,
                 remote: str, recipes: str, seconds: float) -> str:
    table_rows = rows(conversions, buckets, runs)
    results = {'remote': remote, 'recipes': recipes, 'shaping': shaping, 'seconds': seconds,
               'machine': machine(), 'versions': {p: version(p) for p in STACK},
               'buckets': buckets, 'conversions': conversions, 'rows': table_rows,
               'runs': [{k: r[k] for k in ('name', 'variant', 'cache', 'store', 'metrics')} for r in runs]}
    (out / 'results.json').write_text(json.dumps(results, indent=1))
    pngs = plots(out, runs, buckets)
    shaped = (f'"shaped" = the local store with {shaping["latency_ms"]:.0f} ms per request and '
              f'{shaping["bandwidth_mbps"]:.0f} MB/s per connection, like a bucket in another region; '
              '"plain" = no shaping.' if shaping else f'Remote: {remote}.')
    m = results['machine']
    text = '\n'.join([
        f'# Bench: C4 sample → MDS (uncompressed, zstd) → {remote} → fine-tune ({recipes})', '',
        table(table_rows), '', sentences(table_rows, shaping), '',
        f'{shaped} Data wait = share of wall time in the loader; ratio = uncompressed bytes / variant bytes.',
        f'Machine: {m["cores"]} cores, {m["gpu"] or "no GPU"}. Plots: ' + ', '.join(pngs) + '.'])
    (out / 'report.md').write_text(text + '\n')
    return text

"""The bench's report: results.json (for machines), report.md (one table and a few sentences
for a person), and PNG plots (throughput and data wait per step, bucket bytes and objects)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from scripts.bench.lib import fmt, machine, pct
from scripts.bench.start_report import (
    LINK_MB_S,
    start_rows,
    start_sentence,
    start_table,
)


def convert_figure(summary: dict) -> tuple[float | None, str]:
    """(input MB/s, where the figure comes from) for a conversion summary. A conversion that
    found every part already complete did no work: its own speed would read 0.0."""
    if summary.get('reused'):
        return summary['mb_per_s'], 'an earlier run of the bench'
    if summary.get('parts_converted'):
        return summary['mb_per_s'], 'this run'
    recorded = summary.get('recorded')
    if recorded and recorded.get('mb_per_s_per_worker'):
        return recorded['mb_per_s_per_worker'], "the parts' manifests, per worker"
    return None, 'not converted in this run'


def rows(conversions: dict, buckets: dict, runs: list[dict]) -> list[dict]:
    """One row per run: the bucket's numbers for its variant beside the run's own."""
    raw_bytes = buckets['uncompressed']['bytes']
    out = []
    for run in runs:
        v, m = run['variant'], run['metrics']
        out.append(
            {
                'run': run['name'],
                'variant': v,
                'cache': run['cache'],
                'store': run['store'],
                'bucket_bytes': buckets[v]['bytes'],
                'objects': buckets[v]['objects'],
                'compression_ratio': raw_bytes / buckets[v]['bytes'],
                'convert_mb_per_s': convert_figure(conversions[v])[0],
                'convert_source': convert_figure(conversions[v])[1],
                'samples_per_s': m['throughput_samples_per_s'],
                'tokens_per_s': m['throughput_tokens_per_s'],
                'data_wait_fraction': m['data_wait_fraction'],
                'data_wait_steady_fraction': m.get('data_wait_steady_fraction'),
                'time_to_first_batch_s': m['time_to_first_batch_s'],
                'cache_hit_rate': m['cache_hit_rate'],
                'bytes_downloaded': m['bytes_downloaded'],
                'steps': m['steps'],
                'wall_s': m['wall_s'],
                'status': m.get('status'),
                'train_loss': m.get('train_loss'),
                'eval_loss': m.get('eval_loss'),
                'eval_perplexity': m.get('eval_perplexity'),
                'eval_fraction': m.get('eval_fraction'),
            }
        )
    return out


def table(rows: list[dict]) -> str:
    head = ('| run | bucket MB | objects | ratio | convert MB/s | samples/s | tokens/s | data wait '
            '| steady data wait | first batch s | cache hits | MB downloaded | train loss '
            '| eval loss | eval perplexity |\n|' + '---|' * 15)
    lines = [head]
    for r in rows:
        mark = '' if r['convert_source'] == 'this run' or r['convert_mb_per_s'] is None else '*'
        lines.append(
            f'| {r["variant"]}, {r["cache"]} cache, {r["store"]} store '
            f'| {r["bucket_bytes"] / 1e6:.2f} '
            f'| {r["objects"]} | {r["compression_ratio"]:.2f}x '
            f'| {fmt(r["convert_mb_per_s"], ".1f")}{mark} '
            f'| {fmt(r["samples_per_s"], ".1f")} | {fmt(r["tokens_per_s"], ",.0f")} '
            f'| {pct(r["data_wait_fraction"])} | {pct(r["data_wait_steady_fraction"])} '
            f'| {fmt(r["time_to_first_batch_s"], ".2f")} | {fmt(r["cache_hit_rate"], ".0%")} '
            f'| {r["bytes_downloaded"] / 1e6:.2f} | {fmt(r["train_loss"], ".4f")} '
            f'| {fmt(r["eval_loss"], ".4f")} | {fmt(r["eval_perplexity"], ",.1f")} |'
        )
    return '\n'.join(lines)


def convert_sentence(raw: dict, z: dict) -> str:
    if raw['convert_mb_per_s'] is None or z['convert_mb_per_s'] is None:
        return ('neither was converted in this run (both were already in the bucket, verified) '
                'and no speed was recorded when they were; `make bench-convert` measures it.')
    src = z['convert_source']
    where = ('' if src == 'this run' else
             f' (figures from {src}: they were not converted in this run)')
    return (f'it converted at {z["convert_mb_per_s"]:.1f} MB/s of input JSON against '
            f'{raw["convert_mb_per_s"]:.1f}{where}.')


def same_losses(runs: list[dict]) -> dict:
    """Whether every run trained with the same losses, step for step, and evaluated to the
    same held-out losses: they read the same samples in the same order whatever the
    compression, cache or store. Exact equality: the same float32 arithmetic on the same
    inputs gives the same bits."""
    first = runs[0]
    ref_evals = [(e['step'], e.get('loss')) for e in first['metrics'].get('evals') or []]
    out = {'equal': True, 'first_difference': None, 'reference': first['name'],
           'runs': len(runs), 'steps': len(first['losses']), 'evals': ref_evals}
    for run in runs[1:]:
        evals = [(e['step'], e.get('loss')) for e in run['metrics'].get('evals') or []]
        if run['losses'] != first['losses']:
            step = next((i + 1 for i, (a, b) in enumerate(zip(first['losses'], run['losses']))
                         if a != b), min(len(first['losses']), len(run['losses'])) + 1)
            out.update(equal=False, first_difference=f'{run["name"]}: training loss at step '
                       f'{step} differs from {first["name"]}\'s')
            break
        if evals != ref_evals:
            out.update(equal=False, first_difference=f'{run["name"]}: held-out losses {evals} '
                       f'differ from {first["name"]}\'s {ref_evals}')
            break
    return out


def losses_sentence(same: dict) -> str:
    if not same['equal']:
        return f'Losses: NOT equal across the runs ({same["first_difference"]}).'
    evals = ', '.join(f'{loss:.4f} at step {step}' for step, loss in same['evals']
                      if loss is not None)
    return (f'Losses: all {same["runs"]} runs (uncompressed and zstd, cold and warm) trained with '
            f'the same loss at every one of their {same["steps"]} steps and evaluated to the same '
            f'held-out loss ({evals or "no evaluation"}), bit for bit: they read the same '
            'samples in the same order, and compression changes nothing the model sees.')


def _pick(rows, **want):
    return next((r for r in rows if all(r[k] == v for k, v in want.items())), None)


def sentences(rows: list[dict], shaping: dict | None) -> str:
    """What the numbers say: storage, cold start over the network, warm cache, the network."""
    raw, z = _pick(rows, variant='uncompressed'), _pick(rows, variant='zstd')
    store = raw['store']
    out = [
        f'zstd stores the dataset in {z["bucket_bytes"] / 1e6:.2f} MB against '
        f'{raw["bucket_bytes"] / 1e6:.2f} MB uncompressed ({z["compression_ratio"]:.2f}x smaller, '
        f'{z["objects"]} vs {raw["objects"]} objects); ' + convert_sentence(raw, z)
    ]
    rc, zc = (
        _pick(rows, variant='uncompressed', cache='cold', store=store),
        _pick(rows, variant='zstd', cache='cold', store=store),
    )
    where = 'a store shaped like another region' if shaping else 'the bucket'
    out.append(
        f'From a cold cache over {where}, zstd downloaded {zc["bytes_downloaded"] / 1e6:.2f} MB '
        f'against {rc["bytes_downloaded"] / 1e6:.2f} MB, waited on data '
        f'{100 * (zc["data_wait_fraction"] or 0):.1f}% of the time against '
        f'{100 * (rc["data_wait_fraction"] or 0):.1f}% '
        f'({pct(zc["data_wait_steady_fraction"])} against '
        f'{pct(rc["data_wait_steady_fraction"])} after the first batch), and trained at '
        f'{zc["samples_per_s"] or 0:.1f} against {rc["samples_per_s"] or 0:.1f} samples/s.'
    )
    rw, zw = (
        _pick(rows, variant='uncompressed', cache='warm'),
        _pick(rows, variant='zstd', cache='warm'),
    )
    if rw and zw:
        out.append(
            f'With the cache warm both read from local disk (hit rate '
            f'{rw["cache_hit_rate"]:.0%} and {zw["cache_hit_rate"]:.0%}, '
            f'{(rw["bytes_downloaded"] + zw["bytes_downloaded"]) / 1e6:.2f} MB downloaded); '
            f'time to first batch fell from {rc["time_to_first_batch_s"]:.2f} to '
            f'{rw["time_to_first_batch_s"]:.2f} s (uncompressed) and '
            f'{zc["time_to_first_batch_s"]:.2f} to {zw["time_to_first_batch_s"]:.2f} s (zstd).'
        )
    rp, zp = (
        _pick(rows, variant='uncompressed', store='plain'),
        _pick(rows, variant='zstd', store='plain'),
    )
    if shaping and rp and zp:
        out.append(
            f'Without the {shaping["latency_ms"]:.0f} ms / '
            f'{shaping["bandwidth_mbps"]:.0f} MB/s shaping, '
            f'cold data wait was {100 * (rp["data_wait_fraction"] or 0):.1f}% (uncompressed) and '
            f'{100 * (zp["data_wait_fraction"] or 0):.1f}% (zstd): the difference is the network.'
        )
    return ' '.join(out)


def plots(out: Path, runs: list[dict], buckets: dict) -> list[str]:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    made = []
    series = {
        r['name']: [json.loads(line) for line in open(r['steps_file'])]
        if os.path.exists(r['steps_file'])
        else []
        for r in runs
    }
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


def write_report(
    out: Path,
    conversions: dict,
    buckets: dict,
    runs: list[dict],
    shaping: dict | None,
    remote: str,
    recipes: str,
    seconds: float,
    loader: dict | None = None,
    startup: dict | None = None,
) -> str:
    table_rows = rows(conversions, buckets, runs)
    results = {
        'remote': remote,
        'recipes': recipes,
        'shaping': shaping,
        'seconds': seconds,
        'machine': machine(),
        'buckets': buckets,
        'conversions': conversions,
        'rows': table_rows,
        'runs': [{k: r[k] for k in ('name', 'variant', 'cache', 'store', 'metrics')} for r in runs],
        'losses': same_losses(runs),
    }
    if loader:
        results['loader'] = loader
        results['headroom'] = headroom_rows(loader)
    if startup:
        results['startup'] = {'path': startup['path'], 'summary': start_rows(startup)}
    (out / 'results.json').write_text(json.dumps(results, indent=1))
    pngs = plots(out, runs, buckets)
    shaped = (
        f'"shaped" = the local store with {shaping["latency_ms"]:.0f} ms per request and '
        f'{shaping["bandwidth_mbps"]:.0f} MB/s per connection, like a bucket in another region; '
        '"plain" = no shaping.'
        if shaping
        else f'Remote: {remote}.'
    )
    shards = {v: buckets[v]['objects'] for v in buckets}
    m = results['machine']
    parts = [
        f'# Bench: C4 sample → MDS (uncompressed, zstd) → {remote} → fine-tune ({recipes})', '',
        table(table_rows), '', sentences(table_rows, shaping), '',
        losses_sentence(results['losses']), '',
        f'{shaped} Data wait = share of wall time in the loader; steady = the same after the first '
        'batch (start-up is the first-batch column); ratio = uncompressed bytes / variant bytes; '
        '* = a conversion speed not measured in this run (see the sentence). Objects per variant '
        f'({", ".join(f"{v} {n}" for v, n in shards.items())}) include each part\'s index and '
        'manifest: the shards are small on purpose, so a pass crosses shard boundaries and '
        'downloads ahead as it does at C4 size. Train loss = the last step\'s; eval loss and '
        'perplexity = the last evaluation on the validation split (the recipe\'s '
        'eval_subset_num_batches).']
    if loader:
        png = bandwidth_plot(out, loader)
        pngs += [png] if png else []
        parts += ['', '## Loader only: what the data path can feed', '',
                  f'The GPU recipes\' train_loader (yamls/c4_*.yaml: predownload '
                  f'{loader["predownload"]}, {loader["max_seq_len"]}-token samples, device batch '
                  f'{loader["recipe_loader"]["device_batch_size"]}) with {loader["workers"]} '
                  'worker (one loader core, one connection: the unit a node has 64 of), no '
                  f'model; text passes stop after {loader["text_batches"]} batches. Rates are '
                  'steady state (after the first batch); "per loader core" divides by the CPU '
                  'seconds of the loader\'s processes, so it holds under load. Shards: '
                  f'{loader["size_limit"] / 1e3:.0f} kB before compression.', '',
                  loader_tables(loader), '', headroom_sentence(loader)]
        if png:
            parts += ['', f'![tokens/s against bandwidth]({png})', '', bandwidth_sentence(loader)]
    if startup:
        parts += ['', f'## Start-up at C4 size (`make bench-start`, {startup["path"]})', '',
                  start_table(startup), '', start_sentence(startup)]
    else:
        parts += ['', 'Start-up at C4 size: run `make bench-start` (its own report; the next '
                  '`make bench` includes its latest table).']
    parts += ['', f'Machine: {m["cores"]} cores, {m["gpu"] or "no GPU"}, load {m["load"]}. '
              'Plots: ' + ', '.join(pngs) + '.']
    text = '\n'.join(parts)
    (out / 'report.md').write_text(text + '\n')
    return text


# ------------------------------------------------------------------------------ loader only

# One BM.H100.8 (docs/design.md): 112 cores, 8 GPUs, one 100 Gbps front-end link; the recipes run
# 8 dataloader workers per GPU, so 64 loader cores (112 - 8 rank processes = 104 at most).
NODE_GPUS, NODE_CORES, LOADER_CORES = 8, 112, 64
# llm-foundry's published 8xH100 throughput (bf16, seq 2048): parameters, tokens/s per GPU.
GPU_TOKENS = {'MPT-7B': (6.7e9, 10_643), 'MPT-1B': (1.3e9, 45_455)}


def smallest_model(tokens_per_gpu: float) -> float:
    """Parameters of the smallest model whose GPUs consume no more than `tokens_per_gpu`, on
    the power law through llm-foundry's two published points (a projection below 1.3 B)."""
    (n7, t7), (n1, t1) = GPU_TOKENS['MPT-7B'], GPU_TOKENS['MPT-1B']
    b = math.log(t1 / t7) / math.log(n7 / n1)
    return n1 * (t1 / tokens_per_gpu) ** (1 / b)


def _run(loader: dict, **want) -> dict | None:
    return next((r for r in loader['runs'] if all(r[k] == v for k, v in want.items())), None)


def headroom_rows(loader: dict) -> list[dict]:
    """Per dataset: what one loader core turns into samples (warm cache: reading, decompressing,
    tokenizing, collating; downloading 64 MiB shards adds little CPU, while the bench's small
    shards make it per-request overhead) and what the node's loader cores deliver against what
    its GPUs consume."""
    out = []
    for form in ('tokens', 'text'):
        for variant in ('uncompressed', 'zstd'):
            r = _run(loader, format=form, variant=variant, cache='warm', bandwidth_mbps=0.0)
            if not r:
                continue
            node = r['tokens_per_cpu_s'] * LOADER_CORES
            out.append({'format': form, 'variant': variant,
                        'tokens_per_core': r['tokens_per_cpu_s'], 'node_tokens_per_s': node,
                        **{f'headroom_{m}': node / (NODE_GPUS * t)
                           for m, (_, t) in GPU_TOKENS.items()},
                        'smallest_model': smallest_model(node / NODE_GPUS)})
    return out


def _params(n: float) -> str:
    return f'{n / 1e9:.1f} B' if n >= 1e9 else f'{n / 1e6:.0f} M'


def loader_tables(loader: dict) -> str:
    passes = ['| data | variant | cache | first batch s | samples/s | tokens/s | MB/s '
              '| per loader core: samples/s | tokens/s | MB/s | MB downloaded |',
              '|' + '---|' * 11]
    for r in loader['runs']:
        if r['bandwidth_mbps']:
            continue
        passes.append(
            f'| {r["format"]} | {r["variant"]} | {r["cache"]} | {r["first_batch_s"]:.2f} '
            f'| {r["samples_per_s"]:.0f} | {r["tokens_per_s"]:,.0f} | {r["mb_per_s"]:.1f} '
            f'| {r["samples_per_cpu_s"]:.0f} | {r["tokens_per_cpu_s"]:,.0f} '
            f'| {r["mb_per_cpu_s"]:.1f} | {r["bytes_downloaded"] / 1e6:.2f} |')
    need = {m: NODE_GPUS * t for m, (_, t) in GPU_TOKENS.items()}
    head = ['| data | variant | tokens/s per loader core | node: 64 loader cores '
            f'| MPT-7B node consumes {need["MPT-7B"]:,.0f}: headroom '
            f'| MPT-1B node consumes {need["MPT-1B"]:,.0f}: headroom '
            '| smallest model it feeds (projected) |', '|' + '---|' * 7]
    for h in headroom_rows(loader):
        head.append(f'| {h["format"]} | {h["variant"]} | {h["tokens_per_core"]:,.0f} '
                    f'| {h["node_tokens_per_s"]:,.0f} | {h["headroom_MPT-7B"]:,.1f}x '
                    f'| {h["headroom_MPT-1B"]:,.1f}x | {_params(h["smallest_model"])} |')
    return '\n'.join(passes) + '\n\n' + '\n'.join(head)


def headroom_sentence(loader: dict) -> str:
    rows = {(h['format'], h['variant']): h for h in headroom_rows(loader)}
    tok, txt = rows.get(('tokens', 'zstd')), rows.get(('text', 'zstd'))
    if not tok:
        return ''
    out = (f'Conclusion: pre-tokenized zstd data (the GPU recipes\' format) gives '
           f'{tok["tokens_per_core"]:,.0f} tokens/s per loader core, so the recipe\'s 64 workers '
           f'deliver {tok["headroom_MPT-1B"]:,.0f}x what 8 H100s consume on MPT-1B '
           f'({tok["headroom_MPT-7B"]:,.0f}x on MPT-7B): the loader can feed any model down to '
           f'~{_params(tok["smallest_model"])} parameters')
    if txt:
        cores = NODE_GPUS * GPU_TOKENS['MPT-1B'][1] / txt['tokens_per_core']
        out += (f'; text tokenized on the fly gives {txt["tokens_per_core"]:,.0f} per core, '
                f'{cores:.0f} cores for MPT-1B and a floor near {_params(txt["smallest_model"])}: '
                'keep the data pre-tokenized for small models')
    return out + '.'


def bandwidth_points(loader: dict, form: str, variant: str) -> list[tuple[float, float]]:
    """(MB/s per connection, steady tokens/s) of the cold passes; unshaped as 0."""
    return sorted((r['bandwidth_mbps'], r['tokens_per_s']) for r in loader['runs']
                  if r['format'] == form and r['variant'] == variant and r['cache'] == 'cold')


def bandwidth_model(loader: dict, form: str, variant: str):
    """tokens/s = min(what the connection carries, what one loader core turns into samples):
    bytes downloaded per token from the cold pass, the core's rate from the warm one."""
    cold = _run(loader, format=form, variant=variant, cache='cold', bandwidth_mbps=0.0)
    warm = _run(loader, format=form, variant=variant, cache='warm', bandwidth_mbps=0.0)
    if not (cold and warm and cold['tokens']):
        return None
    wire = cold['bytes_downloaded'] / (cold['tokens'] / cold['samples'] * cold['dataset_samples'])
    return lambda mb_s: min(mb_s * 1e6 / wire, warm['tokens_per_cpu_s'])


def bandwidth_plot(out: Path, loader: dict) -> str | None:
    if not loader.get('bandwidths'):
        return None
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    top = max(loader['bandwidths'])
    unshaped = top * 4
    fig, ax = plt.subplots(figsize=(8, 4.5))
    style = {'uncompressed': ('#888', 'o'), 'zstd': ('#2a7', 's')}
    for form, dash in (('tokens', '-'), ('text', ':')):
        for variant, (color, marker) in style.items():
            pts = [(b or unshaped, t) for b, t in bandwidth_points(loader, form, variant)]
            if pts:
                ax.plot(*zip(*sorted(pts)), dash, color=color, marker=marker,
                        label=f'{form}, {variant}')
            model = bandwidth_model(loader, form, variant)
            if model and form == 'tokens':
                xs = sorted(loader['bandwidths']) + [unshaped]
                ax.plot(xs, [model(x) for x in xs], '--', color=color, alpha=0.5, linewidth=1,
                        label=f'{form}, {variant}: min(link, one core)')
    ax.set_xscale('log'), ax.set_yscale('log')
    ticks = sorted(loader['bandwidths']) + [unshaped]
    ax.set_xticks(ticks, [f'{b:g}' for b in ticks[:-1]] + ['unshaped'])
    ax.set_xlabel('store bandwidth per connection (MB/s)')
    ax.set_ylabel('tokens/s delivered (steady state)')
    ax.set_title(f'{loader["workers"]} loader worker(s), cold cache; tokens: 2048 per sample, '
                 'text: tokenized on the fly; dashed: the model', fontsize=9)
    ax.grid(alpha=0.3, which='both'), ax.legend(fontsize=8)
    fig.tight_layout(), fig.savefig(out / 'bandwidth.png', dpi=110), plt.close(fig)
    return 'bandwidth.png'


def bandwidth_sentence(loader: dict) -> str:
    """Where zstd stops paying: measured per bandwidth, and from the per-core rates."""
    z = _run(loader, format='tokens', variant='zstd', cache='warm', bandwidth_mbps=0.0)
    u = _run(loader, format='tokens', variant='uncompressed', cache='warm', bandwidth_mbps=0.0)
    zc = _run(loader, format='tokens', variant='zstd', cache='cold', bandwidth_mbps=0.0)
    uc = _run(loader, format='tokens', variant='uncompressed', cache='cold', bandwidth_mbps=0.0)
    if not (z and u and zc and uc and loader.get('bandwidths')):
        return ''
    ratio = uc['bytes_downloaded'] / max(zc['bytes_downloaded'], 1)
    wins = [b for b in sorted(loader['bandwidths'])
            if dict(bandwidth_points(loader, 'tokens', 'zstd')).get(b, 0)
            > dict(bandwidth_points(loader, 'tokens', 'uncompressed')).get(b, 0)]
    listed = ', '.join(f'{b:g}' for b in wins)
    measured = (f'measured here, zstd delivered more tokens/s at {listed} MB/s per connection'
                if wins else
                'measured here, zstd delivered no more tokens/s at any shaped bandwidth')
    per_conn = LINK_MB_S / LOADER_CORES
    return (f'Conclusion: zstd downloads {ratio:.1f}x fewer bytes, so it pays only while a '
            f'connection is slower than what one loader core turns into samples, '
            f'{z["mb_per_cpu_s"]:.1f} MB/s of uncompressed data for zstd '
            f'({u["mb_per_cpu_s"]:.1f} for uncompressed): above that both are CPU-bound '
            f'({measured}). On a BM.H100.8 one 100 Gbps link gives each of the 64 workers up to '
            f'{per_conn:.0f} MB/s, {per_conn / z["mb_per_cpu_s"]:.0f}x that: zstd does not raise '
            'steady throughput there; '
            f'it cuts bucket bytes and what a cold start must download by {ratio:.1f}x.')

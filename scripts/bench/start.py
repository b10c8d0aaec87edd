"""`make bench-start`: what streaming does before the first batch, at C4 `en`'s full size.

Before any rank gets a batch, streaming computes the epoch's partition and shuffle of every
sample, once per node (in dataloader worker 0 of local rank 0, while the node's other workers
wait), then shares it through shared memory; every autoresume does it again. At C4 size that
is tens of millions of samples, so it dominates start-up. This bench measures it with the
recipes' own `train_loader` (llm-foundry's text loader and the yaml's dataset settings) over an
index.json that describes C4 `en` at full size: the shard count and the samples per shard of
the text documents (364,868,892 in 12,350 shards) or of the tokens concatenated to 2048
(~76 M samples, ~9,290 shards at 64 MiB). Each entry of that index names a link to one of two
small real shards (their sample counts differ by one), so the run reads real MDS files and
only the shards it reads are copied into its cache; they hold short samples, so what the
first batches would download at full size (64 MiB per shard) is counted, not done.

Per setting (shuffle_algo, num_canonical_nodes, shuffle_block_size) it reports
  - node work: the per-node computation for one BM.H100.8 (1 node x 8 ranks x 8 workers),
    run once, as streaming runs it once per node: seconds (wall and CPU), peak memory, and
    the same for an autoresume half-way through the epoch;
  - which shards the first batches need (a rank's first batch waits for its worker's
    downloads, one shard after another) and how many shards a global batch mixes;
  - for the recipe's setting and the one it replaced, the whole path through the real
    DataLoader (one rank, the recipe's 8 workers): dataset construction to first batch,
    fresh and resumed, with the loader processes' peak memory.

    python -m scripts.bench.start [--formats tokens,text] [--quick] [--out results/bench-start]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

from scripts.bench.lib import in_child, link_latest, results_folder

ROOT = Path(__file__).resolve().parents[2]

SHARD_LIMIT = 1 << 26  # streaming's default size_limit, 64 MiB, as the recipes' data is written
# C4 `en` train (docs/design.md): documents, and ~156 B tokens concatenated into 2048-token samples.
C4_EN = {'text': {'samples': 364_868_892, 'shards': 12_350},
         'tokens': {'samples': 76_000_000, 'seq': 2048}}
NODE = {'ranks': 8, 'workers': 8}  # one BM.H100.8: 8 GPUs, the recipes' 8 workers per GPU


def c4_shape(fmt: str) -> tuple[int, int]:
    """(samples, shards) of C4 `en` train in a format. Tokens: 2048 int32 per sample as MDS
    encodes them (shape header + 8 KiB, + a 4-byte offset), 64 MiB shards."""
    spec = C4_EN[fmt]
    if 'shards' in spec:
        return spec['samples'], spec['shards']
    import numpy as np
    from streaming.base.format.mds.encodings import mds_encode
    per_sample = len(mds_encode('ndarray:int32', np.zeros(spec['seq'], np.int32))) + 4
    return spec['samples'], math.ceil(spec['samples'] / (SHARD_LIMIT // per_sample))


# ------------------------------------------------------------------------------ the index

def _template(path: Path, fmt: str, count: int, compression: str | None) -> dict:
    """A real shard of `count` short samples; returns its index entry."""
    import numpy as np
    from streaming import MDSWriter
    columns = {'tokens': 'ndarray:int32'} if fmt == 'tokens' else {'text': 'str'}
    with MDSWriter(out=str(path), columns=columns, compression=compression,
                   size_limit=1 << 30) as writer:
        for i in range(count):
            writer.write({'tokens': np.arange(i, i + 8, dtype=np.int32)} if fmt == 'tokens'
                         else {'text': f'document {i}'})
    (entry,) = json.loads((path / 'index.json').read_text())['shards']
    return entry


def write_c4_index(root, fmt: str, samples: int, shards: int,
                   compression: str | None = 'zstd') -> dict:
    """`root/train/index.json` describing `shards` shards with `samples` samples in all (spread
    evenly, as C4's are); each entry names `root/train/shard.NNNNN.mds[.zstd]`, a link to one of
    two real template shards in `root/templates/`. Idempotent; returns a summary."""
    root = Path(root)
    split = root / 'train'
    want = {'format': fmt, 'samples': samples, 'shards': shards, 'compression': compression}
    stamp = split / 'c4_scale.json'
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return want
    if samples < shards:
        raise ValueError(f'{samples} samples cannot fill {shards} shards')
    shutil.rmtree(root, ignore_errors=True)
    split.mkdir(parents=True)
    base, extra = divmod(samples, shards)
    counts = [base + 1, base] if extra else [base]
    templates = {n: _template(root / 'templates' / f'{n}', fmt, n, compression) for n in counts}
    entries = []
    for i in range(shards):
        n = base + 1 if i < extra else base
        entry = json.loads(json.dumps(templates[n]))
        kind = 'zip_data' if compression else 'raw_data'
        target = root / 'templates' / f'{n}' / entry[kind]['basename']
        for key in ('raw_data', 'zip_data'):
            if entry.get(key):
                suffix = '.zstd' if key == 'zip_data' else ''
                entry[key]['basename'] = f'shard.{i:05d}.mds{suffix}'
        os.symlink(target.resolve(), split / entry[kind]['basename'])
        entries.append(entry)
    (split / 'index.json').write_text(json.dumps({'version': 2, 'shards': entries}))
    stamp.write_text(json.dumps(want))
    return want


# ------------------------------------------------------------------------------ the recipe

def recipe_loader(recipe: Path) -> dict:
    """The recipe's train_loader, resolved, and its per-device batch on one node."""
    from omegaconf import OmegaConf
    cfg = OmegaConf.load(recipe)
    loader = OmegaConf.to_container(cfg.train_loader, resolve=True)
    loader['device_batch_size'] = int(cfg.global_train_batch_size) // NODE['ranks']
    return loader


def resolved(ds_cfg: dict, nodes: int = 1) -> tuple[int, int]:
    """(num_canonical_nodes, shuffle_block_size) as streaming 0.12 resolves them when unset:
    64 x nodes for py1s/py2s, else nodes; max(4M // canonical nodes, 2**18)."""
    ncn = ds_cfg.get('num_canonical_nodes') or (
        64 * nodes if ds_cfg.get('shuffle_algo', 'py1e') in ('py1s', 'py2s') else nodes)
    block = ds_cfg.get('shuffle_block_size') or max(4_000_000 // ncn, 1 << 18)
    return ncn, block


def _tokenizer(path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(path))


def _dataset_cfg(loader: dict, remote: Path, local: Path, overrides: dict) -> dict:
    cfg = {**loader['dataset'], 'remote': str(remote), 'local': str(local), 'split': 'train'}
    cfg.update(overrides)
    return {k: v for k, v in cfg.items() if v is not None}


# ------------------------------------------------------------------------------ measurements

def shard_metrics(ids, sample_offset_per_shard, prefetch: int, batches: int = 64) -> dict:
    """From the node's epoch array (1, ranks, workers, batches, batch): the shards each rank's
    first batch needs (worker 0's first batch: it downloads them one after another), the
    distinct shards the node needs for every worker's first `prefetch` batches, and the mean
    distinct shards per global batch over the first `batches` (how many shards a step mixes)."""
    import numpy as np
    _, ranks, workers, _, _ = ids.shape

    def shards(a):
        a = a[a >= 0]
        return np.unique(np.searchsorted(sample_offset_per_shard, a, side='right') - 1)
    per_rank = [len(shards(ids[0, r, 0, 0])) for r in range(ranks)]
    node = len(shards(ids[0, :, :, :prefetch]))
    # A rank's j-th batch comes from worker j % workers (DataLoader round-robin).
    mixing = [len(shards(ids[0, :, j % workers, j // workers])) for j in range(batches)]
    return {'first_batch_shards_per_rank': float(np.mean(per_rank)),
            'first_batches_shards_node': node,
            'shards_per_global_batch': float(np.mean(mixing))}


def breakdown(ds, world, sample_in_epoch: int) -> dict:
    """CPU seconds of each step of streaming 0.12's `generate_work_random_batching`, run one
    after another with the same functions: where the node work goes."""
    import numpy as np
    from streaming.base.partition import get_partitions
    from streaming.base.shuffle import get_shuffle
    out, c = {}, time.process_time()

    def lap(name):
        nonlocal c
        now = time.process_time()
        out[name], c = now - c, now
    units, small_per_big = ds.resample_streams(0)
    lap('resample_streams')
    big = get_partitions(ds.partition_algo, ds.epoch_size, ds.num_canonical_nodes,
                         world.num_nodes, world.ranks_per_node, world.workers_per_rank,
                         ds.batch_size, sample_in_epoch, ds.initial_physical_nodes)
    lap('get_partitions')
    shuffle = get_shuffle(ds.shuffle_algo, units, ds.num_canonical_nodes, ds.shuffle_seed, 0,
                          ds.shuffle_block_size)
    lap('get_shuffle')
    big = np.where(big != -1, shuffle[big], -1)
    lap('apply_shuffle')
    del shuffle
    np.where(big != -1, small_per_big[big], -1)  # identity unless a stream is resampled
    lap('map_to_samples')
    return out


def node_work(loader: dict, remote: Path, cache: Path, tokenizer: str, overrides: dict,
              resume: bool, steps: bool = False) -> dict:
    """(In a fresh process.) Builds the recipe's dataset, then runs streaming's per-node
    computation for one node of 8 ranks x 8 workers: `generate_work`, what dataloader worker 0
    of local rank 0 runs in `StreamingDataset._get_work` before sharing it."""
    import resource

    import psutil
    from llmfoundry.data.text_data import StreamingTextDataset
    from streaming.base.batching import generate_work
    from streaming.base.world import World

    from training.shards.shared_memory import clean_stale_shared_memory
    clean_stale_shared_memory()
    shutil.rmtree(cache, ignore_errors=True)
    ds_cfg = _dataset_cfg(loader, remote, cache, overrides)
    me = psutil.Process()
    rss0 = me.memory_info().rss
    t0, c0 = time.perf_counter(), time.process_time()
    ds = StreamingTextDataset(tokenizer=_tokenizer(tokenizer),
                              batch_size=loader['device_batch_size'], **ds_cfg)
    t1, c1 = time.perf_counter(), time.process_time()
    rss1 = me.memory_info().rss
    world = World(num_nodes=1, ranks_per_node=NODE['ranks'], workers_per_rank=NODE['workers'],
                  worker=0)
    ds.num_canonical_nodes, ds.shuffle_block_size = resolved(ds_cfg)
    sample_in_epoch = 0
    if resume:  # what load_state_dict hands the workers after an autoresume half-way
        sample_in_epoch = ds.epoch_size // 2
        ds.initial_physical_nodes = 1
    ids = generate_work(ds.batching_method, ds, world, 0, sample_in_epoch)
    t2, c2 = time.perf_counter(), time.process_time()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = {'samples': int(ds.num_samples), 'shards': int(ds.num_shards),
           'num_canonical_nodes': ds.num_canonical_nodes,
           'shuffle_block_size': ds.shuffle_block_size,
           'construct_s': t1 - t0, 'construct_cpu_s': c1 - c0, 'dataset_bytes': rss1 - rss0,
           'work_s': t2 - t1, 'work_cpu_s': c2 - c1, 'work_peak_bytes': peak - rss1,
           'epoch_bytes': int(ids.nbytes)}
    out.update(shard_metrics(ids, ds.sample_offset_per_shard, loader.get('prefetch_factor', 2)))
    if steps:
        del ids
        out['steps_cpu_s'] = breakdown(ds, world, sample_in_epoch)
    return out


def first_batch(loader: dict, remote: Path, cache: Path, tokenizer: str, overrides: dict,
                resume: bool) -> dict:
    """(In a fresh process.) llm-foundry's build_text_dataloader with the recipe's settings,
    one rank with the recipe's workers: seconds from dataset construction to the first batch,
    the loader processes' CPU seconds and peak memory."""
    import psutil
    from llmfoundry.data.text_data import build_text_dataloader

    from scripts.bench.lib import TreeSampler, tree_cpu, tree_memory
    from training.shards.shared_memory import clean_stale_shared_memory
    clean_stale_shared_memory()
    shutil.rmtree(cache, ignore_errors=True)
    ds_cfg = _dataset_cfg(loader, remote, cache, overrides)
    tok = _tokenizer(tokenizer)
    me = psutil.Process()
    base = tree_memory(me)[me.pid]['pss']
    with TreeSampler() as mem:
        # the main thread's own CPU: the sampler's thread is not part of the loader
        t0, c0 = time.perf_counter(), time.thread_time()
        spec = build_text_dataloader(
            tok, loader['device_batch_size'], ds_cfg, drop_last=loader.get('drop_last', True),
            num_workers=loader['num_workers'], prefetch_factor=loader.get('prefetch_factor', 2),
            persistent_workers=loader.get('persistent_workers', True))
        ds = spec.dataloader.dataset
        t1 = time.perf_counter()
        main_after = tree_memory(me)[me.pid]['pss']
        if resume:
            ncn, _ = resolved(ds_cfg)
            ds.load_state_dict({'epoch': 0, 'sample_in_epoch': ds.epoch_size // 2,
                                'num_canonical_nodes': ncn, 'shuffle_seed': ds.shuffle_seed,
                                'initial_physical_nodes': 1})
        it = iter(spec.dataloader)
        batch = next(it)
        t2 = time.perf_counter()
        cpu = tree_cpu(me)
        at_first = mem.sample()
        pids = [w.pid for w in getattr(it, '_workers', [])] or [p for p in cpu if p != me.pid]
    cpu[me.pid] = time.thread_time() - c0
    workers = {pid: cpu[pid] for pid in pids if pid in cpu}
    leader = max(workers, key=workers.get)
    read = sorted(p.name for p in (cache / 'train').glob('shard.*'))
    out = {'construct_s': t1 - t0, 'first_batch_s': t2 - t0,
           'critical_cpu_s': cpu[me.pid] + workers[leader], 'total_cpu_s': sum(cpu.values()),
           'peak_pss_bytes': mem.peak_pss - base, 'rank_dataset_bytes': main_after - base,
           'leader_peak_uss_bytes': mem.peak_uss_by_pid.get(leader, 0),
           'worker_uss_bytes': sorted(at_first[p]['uss'] for p in workers if p in at_first
                                      and p != leader),
           'shards_copied': len(read), 'batch_shape': list(batch['input_ids'].shape),
           'workers': len(workers)}
    del it, spec
    return out




# ------------------------------------------------------------------------------ the plan

PREVIOUS = {'shuffle_algo': 'py1e', 'num_canonical_nodes': 1}  # the recipes' setting before


def plan(loader: dict, formats: list[str], quick: bool) -> list[dict]:
    """Rows: the recipe's setting and the one it replaced (also through the real DataLoader,
    tokens), every other shuffle algorithm at one canonical node (fresh and resumed), then
    settings that matter, fresh only (a resume costs less, see the rows above): canonical nodes
    and block size for py1br, py1s at 64 canonical nodes. Text (scaled): the first two rows."""
    ds = loader['dataset']
    mine = {'shuffle_algo': ds.get('shuffle_algo', 'py1e'),
            'num_canonical_nodes': ds.get('num_canonical_nodes'),
            'shuffle_block_size': ds.get('shuffle_block_size')}
    rows = []
    for fmt in formats:
        tokens = fmt == 'tokens'
        first = [mine] + ([PREVIOUS] if PREVIOUS.items() - mine.items() else [])
        for over in first:
            rows.append({'format': fmt, 'overrides': over, 'resume': True, 'e2e': tokens})
        if quick or not tokens:
            continue
        for algo in ('py1br', 'py1s', 'py2s', 'naive'):
            rows.append({'format': fmt, 'overrides': {'shuffle_algo': algo,
                                                      'num_canonical_nodes': 1},
                         'resume': True, 'e2e': False})
        for algo, ncn, block in (('py1br', 8, None), ('py1br', 64, None), ('py1br', 1, 1 << 18),
                                 ('py1br', 1, 1 << 20), ('py1s', 64, None)):
            over = {'shuffle_algo': algo, 'num_canonical_nodes': ncn, 'shuffle_block_size': block}
            if over != mine:
                rows.append({'format': fmt, 'overrides': over, 'resume': False, 'e2e': False})
    return rows


def run(args) -> dict:
    from tqdm import tqdm
    loader = recipe_loader(Path(args.recipe))
    work = Path(args.work)
    import llmfoundry.data.text_data  # noqa: F401  (once: the forked runs inherit it)
    import streaming.base.batching  # noqa: F401
    formats = args.formats.split(',')
    shapes = {}
    for fmt in formats:
        samples, shards = (args.samples, args.shards) if args.samples else c4_shape(fmt)
        if fmt == 'text' and not args.samples:  # one core here cannot hold 365 M x 3 arrays
            samples, shards = round(samples * args.text_scale), round(shards * args.text_scale)
        shapes[fmt] = write_c4_index(work / f'c4-{fmt}', fmt, samples, shards,
                                     loader['dataset'].get('compression', 'zstd'))
    if args.compare:
        return compare(args, loader, work, shapes)
    rows = plan(loader, formats, args.quick)
    steps = sum((1 + r['resume']) * (1 + r['e2e']) for r in rows)
    bar = tqdm(total=steps, desc='start-up', unit='run', file=sys.stderr, dynamic_ncols=True)
    out = []
    for row in rows:
        remote, cache = work / f'c4-{row["format"]}', work / 'cache'
        res = {'format': row['format'], **row['overrides']}
        for resume in (False, True)[:1 + row['resume']]:
            tag = 'resume' if resume else 'fresh'
            bar.set_postfix_str(f'{row["format"]} {row["overrides"]} {tag} node work')
            res[f'node_{tag}'] = in_child(node_work, loader, remote, cache, args.tokenizer,
                                          row['overrides'], resume)
            bar.update()
            if row['e2e']:
                bar.set_postfix_str(f'{row["format"]} {row["overrides"]} {tag} DataLoader')
                res[f'e2e_{tag}'] = in_child(first_batch, loader, remote, cache, args.tokenizer,
                                             row['overrides'], resume)
                bar.update()
        out.append(res)
    bar.close()
    shutil.rmtree(work / 'cache', ignore_errors=True)
    return {'recipe': args.recipe, 'loader': loader, 'node': NODE, 'shapes': shapes,
            'text_scale': args.text_scale if 'text' in formats and not args.samples else 1.0,
            'rows': out}


def parse_setting(spec: str) -> dict:
    """'py1br:ncn=64:block=1048576' -> overrides."""
    algo, *rest = spec.split(':')
    out = {'shuffle_algo': algo}
    keys = {'ncn': 'num_canonical_nodes', 'block': 'shuffle_block_size'}
    for item in rest:
        key, _, value = item.partition('=')
        if key not in keys or not value.isdigit():
            raise SystemExit(f'--compare: bad setting {item!r} in {spec!r} (ncn=N, block=N)')
        out[keys[key]] = int(value)
    return out


def compare(args, loader: dict, work: Path, shapes: dict) -> dict:
    """Node work (tokens, fresh) for several settings side by side: interleaved rounds, so a
    change in the machine's load hits every setting alike; the best round counts."""
    from tqdm import tqdm
    settings = [parse_setting(s) for s in args.compare.split(';') if s]
    rounds = [[] for _ in settings]
    bar = tqdm(total=args.rounds * len(settings), desc='compare', unit='run', file=sys.stderr)
    for n in range(args.rounds):
        for i, over in enumerate(settings):
            bar.set_postfix_str(f'round {n + 1}: {over}')
            rounds[i].append(in_child(node_work, loader, work / 'c4-tokens', work / 'cache',
                                      args.tokenizer, over, False, n == args.rounds - 1))
            bar.update()
    bar.close()
    rows = [{'format': 'tokens', **over,
             'node_fresh': min(r, key=lambda x: x['work_cpu_s']),
             'rounds': [x['work_cpu_s'] for x in r],
             'steps_cpu_s': r[-1].get('steps_cpu_s')} for over, r in zip(settings, rounds)]
    return {'recipe': args.recipe, 'loader': loader, 'node': NODE, 'shapes': shapes,
            'text_scale': 1.0, 'rows': rows, 'compare': True}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog='python -m scripts.bench.start', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--recipe', default='yamls/c4_zstd.yaml',
                   help="the recipe whose train_loader is measured (default yamls/c4_zstd.yaml)")
    p.add_argument('--formats', default='tokens,text',
                   help='tokens (the recipes\' data: 2048-token samples), text (documents)')
    p.add_argument('--quick', action='store_true',
                   help="only the recipe's setting and the one it replaced (py1e over 1 "
                        "canonical node), no other algorithm or setting")
    p.add_argument('--compare', metavar='SETTINGS',
                   help="node work only (tokens, fresh), side by side in interleaved rounds: "
                        "settings separated by ';', each ALGO[:ncn=N][:block=N]")
    p.add_argument('--rounds', type=int, default=2, help='rounds for --compare (default 2)')
    p.add_argument('--text-scale', type=float, default=0.25,
                   help='text runs at this fraction of C4 (365 M samples need ~15 GB at once; '
                        'times and memory are then scaled up: default 0.25)')
    p.add_argument('--samples', type=int, help='samples in the index instead of C4\'s (tests)')
    p.add_argument('--shards', type=int, help='shards in the index instead of C4\'s (tests)')
    p.add_argument('--tokenizer', default='build/tokenizer',
                   help='tokenizer folder (default build/tokenizer; make tokenizer)')
    p.add_argument('--work', default='build/bench-start',
                   help='index and cache (default build/bench-start)')
    p.add_argument('--out', default='results/bench-start', help='reports go to OUT/<timestamp>/')
    args = p.parse_args(argv)
    if bool(args.samples) != bool(args.shards):
        p.error('--samples and --shards go together')
    if not (Path(args.tokenizer) / 'tokenizer.json').exists():
        p.error(f'no tokenizer in {args.tokenizer}: run `make tokenizer` first')
    os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
    # DataLoader warnings (pin_memory without a GPU, 8 workers on few cores) and streaming's
    # shared memory at every worker's exit: noise that hides the progress bar.
    os.environ['PYTHONWARNINGS'] = 'ignore::UserWarning'  # the resource tracker's process
    warnings.filterwarnings('ignore', category=UserWarning)
    started = time.time()
    out = results_folder(args.out)
    print(f'bench-start -> {out}', flush=True)
    if args.compare:
        args.formats = 'tokens'
    results = run(args)
    from scripts.bench.start_report import write_start_report
    report = write_start_report(out, results, seconds=time.time() - started)
    latest = link_latest(out)
    print('\n' + report)
    print(f'\nreport: {out / "report.md"} (also {latest}/), {time.time() - started:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())

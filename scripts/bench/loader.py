"""`make bench`'s loader-only stages: can the data path feed an 8xH100 node, and where does
zstd stop paying? No model: each dataset is streamed through the GPU recipes' own dataloader
(llm-foundry's text loader with yamls/c4_<variant>.yaml's train_loader: 8 workers,
predownload, prefetch, 2048-token samples), one rank, from the local OCI store.

  - headroom: text (tokenized on the fly, as the CPU recipes read it) and tokens
    (pre-tokenized, concatenated to 2048, as the GPU recipes read it), uncompressed and zstd,
    cold cache then warm: samples/s, tokens/s and MB/s per loader CPU-second, time to the
    first batch, steady state after it;
  - link speeds: the same cold passes over the store shaped at several per-connection
    bandwidths (each worker downloads over its own connection).

Per-core rates come from CPU seconds (user + system of the loader's processes), so they hold
while other programs share the cores; wall rates on this machine are given beside them.

    python -m scripts.bench.loader --sample build/c4_sample --out loader.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from scripts.bench.lib import in_child, machine

ROOT = Path(__file__).resolve().parents[2]

BUCKET = 'c4-bench'
VARIANTS = {'uncompressed': None, 'zstd': 'zstd'}
FORMATS = ('text', 'tokens')
# MB/s per connection (0 = unshaped). One loader core turns ~3 MB/s of tokens into samples
# (text, tokenized on the fly: ~0.3), so the network binds only at the low end.
BANDWIDTHS = (1.0, 3.0, 10.0, 100.0)


def dataset_url(remote: str, fmt: str, variant: str) -> str:
    """The bench's text datasets are `make bench`'s own (REMOTE/<variant>); tokens beside them."""
    return f'{remote}/{variant}' if fmt == 'text' else f'{remote}/tokens-{variant}'


def shard_limit(sample_mb: float, parts: int = 8, per_part: int = 12) -> int:
    """A shard size that gives every part of the sample ~`per_part` shards (>= 8), so a pass
    crosses shard boundaries and downloads ahead, as it does at C4 size."""
    return max(1 << 12, int(sample_mb * 1e6 / parts / per_part))


def ensure_tokens(remote: str, sample: Path, tokenizer: Path, size_limit: int) -> dict:
    """Converts the sample to tokens (2048 per sample), both variants; skipped when there.
    Their shards are larger than the text ones (~3 per part): a 2048-token sample is 8 kB, and
    tiny objects would measure the per-request cost, which 64 MiB shards make negligible."""
    from data_prep.pipeline.convert import ConvertConfig, convert
    out = {}
    for variant, compression in VARIANTS.items():
        out[variant] = convert(ConvertConfig(
            remote=dataset_url(remote, 'tokens', variant), format='tokens',
            data_files=str(sample / 'c4-train.*.json.gz'), tokenizer=str(tokenizer),
            compression=compression, size_limit=size_limit, replace=True))  # local store
    return out


def recipe_loader(variant: str) -> dict:
    """yamls/c4_<variant>.yaml's train_loader, resolved, with its per-device batch (8 GPUs)."""
    from omegaconf import OmegaConf
    cfg = OmegaConf.load(ROOT / 'yamls' / f'c4_{variant}.yaml')
    loader = OmegaConf.to_container(cfg.train_loader, resolve=True)
    loader['device_batch_size'] = int(cfg.global_train_batch_size) // 8
    return loader


# ------------------------------------------------------------------------------ one pass

def loader_pass(loader: dict, url: str, cache: Path, tokenizer: str, env: dict,
                max_batches: int = 0) -> dict:
    """(In a fresh process.) A pass through the recipe's dataloader (the whole dataset, or its
    first `max_batches`): time to the first batch, steady state after it (wall and CPU seconds
    of the loader's processes), samples, tokens and uncompressed bytes delivered."""
    from llmfoundry.data.text_data import build_text_dataloader
    from transformers import AutoTokenizer

    from scripts.bench.lib import tree_cpu
    from training.shards.shared_memory import clean_stale_shared_memory
    os.environ.update(env)
    clean_stale_shared_memory()
    tok = AutoTokenizer.from_pretrained(tokenizer)
    ds_cfg = {**loader['dataset'], 'remote': url, 'local': str(cache), 'split': 'train'}
    t0 = time.perf_counter()
    spec = build_text_dataloader(tok, loader['device_batch_size'], ds_cfg,
                                 drop_last=loader.get('drop_last', True),
                                 num_workers=loader['num_workers'],
                                 prefetch_factor=loader.get('prefetch_factor', 2),
                                 persistent_workers=loader.get('persistent_workers', True))
    ds = spec.dataloader.dataset
    raw_bytes = sum(s.get_raw_size() for s in ds.shards)
    counts = []  # (samples, tokens) per batch
    first = cpu_first = None
    it = iter(spec.dataloader)
    for batch in it:
        if first is None:
            first, cpu_first = time.perf_counter(), sum(tree_cpu().values())
        ids, mask = batch['input_ids'], batch.get('attention_mask')
        counts.append((ids.shape[0], int(mask.sum()) if mask is not None
                       else int((ids != tok.pad_token_id).sum())))
        if max_batches and len(counts) >= max_batches:
            break
    end, cpu_end = time.perf_counter(), sum(tree_cpu().values())
    del it, spec
    samples, tokens = (sum(c) for c in zip(*counts)) if counts else (0, 0)
    after = counts[1:]
    s_after, t_after = (sum(c) for c in zip(*after)) if after else (0, 0)
    steady, steady_cpu = end - first, cpu_end - cpu_first
    per_sample = raw_bytes / ds.num_samples
    return {'samples': samples, 'tokens': tokens, 'batches': len(counts),
            'dataset_samples': int(ds.num_samples), 'shards': int(ds.num_shards),
            'raw_bytes': raw_bytes, 'delivered_bytes': samples * per_sample,
            'first_batch_s': first - t0, 'wall_s': end - t0, 'cpu_s': cpu_end,
            'steady_s': steady, 'steady_cpu_s': steady_cpu, 'steady_samples': s_after,
            'steady_tokens': t_after, 'steady_bytes': s_after * per_sample,
            'workers': loader['num_workers']}




def rates(run: dict) -> dict:
    """Steady state (after the first batch): per second of wall time on this machine, and per
    CPU-second of the loader's processes (main + workers): what one loader core delivers."""
    wall, cpu = run['steady_s'] or float('nan'), run['steady_cpu_s'] or float('nan')
    out = {}
    for key, unit in (('samples', 1), ('tokens', 1), ('bytes', 1e6)):
        name = 'mb' if key == 'bytes' else key
        out[f'{name}_per_s'] = run[f'steady_{key}'] / unit / wall
        out[f'{name}_per_cpu_s'] = run[f'steady_{key}'] / unit / cpu
    return out


# ------------------------------------------------------------------------------ the stages

def downloaded(store, prefix: str) -> int:
    """Bytes the store sent for GETs of objects under `prefix` since its log was cleared."""
    return sum(r.get('bytes') or 0 for r in store.requests()
               if r.get('method') == 'GET' and f'/o/{prefix}' in r.get('path', ''))


def one_pass(args, store, remote: str, fmt: str, variant: str, state: str, bw: float) -> dict:
    cache = Path(args.cache) / f'{fmt}-{variant}-{bw:g}'
    if state == 'cold':
        shutil.rmtree(cache, ignore_errors=True)
    url = dataset_url(remote, fmt, variant)
    store.clear_log()
    loader = {**recipe_loader(variant), 'num_workers': args.workers}
    res = in_child(loader_pass, loader, url, cache, args.tokenizer, store.env(),
                   args.text_batches if fmt == 'text' else 0)
    res.update(rates(res))
    prefix = url.split('@local/', 1)[1] + '/'
    res.update({'format': fmt, 'variant': variant, 'cache': state, 'bandwidth_mbps': bw,
                'bytes_downloaded': downloaded(store, prefix)})
    return res


def run_all(args) -> dict:
    from tqdm import tqdm

    from local_services.oci_store import Knobs, start_store
    from training.shards import install
    install()
    import llmfoundry.data.text_data  # noqa: F401  (once: the forked passes inherit it)
    bandwidths = [float(b) for b in args.bandwidths.split(',') if b] if args.bandwidths else []
    stores = {}
    data = Path(args.store_dir)
    try:
        stores[0.0] = start_store(data, buckets=[BUCKET], log_path=data / 'run' / 'loader-0.jsonl')
        for bw in bandwidths:
            stores[bw] = start_store(data, knobs=Knobs(bandwidth_mbps=bw),
                                     log_path=data / 'run' / f'loader-{bw:g}.jsonl')
        os.environ.update(stores[0.0].env())
        remote = f'oci://{BUCKET}@local/{args.prefix}'
        formats = [f for f in FORMATS if f in args.formats.split(',')]
        stages = {'headroom': [(f, v, c, 0.0) for f in formats for v in VARIANTS
                               for c in ('cold', 'warm')],
                  'link speeds': [(f, v, 'cold', bw) for bw in bandwidths for f in formats
                                  for v in VARIANTS]}
        titles = {'headroom': 'loader only, unshaped store: what one loader core delivers, cold '
                              'and warm, text and tokens, uncompressed and zstd',
                  'link speeds': 'loader only, cold, store shaped per connection at '
                                 + ', '.join(f'{b:g}' for b in bandwidths) + ' MB/s'}
        numbers = (args.stages or '').split('/')[0].split(',')
        runs = []
        for i, (name, plan) in enumerate(stages.items()):
            if args.stages:
                print(f'\n== [{numbers[i]}/{args.stages.split("/")[1]}] {titles[name]}',
                      flush=True)
            if i == 0:
                print('  tokens datasets: the sample tokenized, 2048 tokens per sample (skipped '
                      f'when there), into {dataset_url(remote, "tokens", "*")}', flush=True)
                tokens = ensure_tokens(remote, Path(args.sample), Path(args.tokenizer),
                                       args.size_limit * 4) if 'tokens' in formats else {}
            if not plan:
                print('  no bandwidths given: skipped')
            for fmt, variant, state, bw in tqdm(plan, desc=f'  {name}', unit='pass',
                                                 dynamic_ncols=True):
                runs.append(one_pass(args, stores[bw], remote, fmt, variant, state, bw))
    finally:
        for s in stores.values():
            s.stop()
        shutil.rmtree(args.cache, ignore_errors=True)
    loader = recipe_loader('zstd')
    return {'recipe_loader': {k: loader[k] for k in ('num_workers', 'prefetch_factor',
                                                      'device_batch_size')},
            'workers': args.workers, 'text_batches': args.text_batches,
            'predownload': loader['dataset'].get('predownload'),
            'max_seq_len': loader['dataset'].get('max_seq_len'),
            'size_limit': args.size_limit, 'tokens_size_limit': args.size_limit * 4,
            'tokens_conversion': tokens,
            'bandwidths': bandwidths, 'machine': machine(), 'runs': runs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog='python -m scripts.bench.loader', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--sample', default='build/c4_sample', help='C4-format sample (make sample)')
    p.add_argument('--tokenizer', default='build/tokenizer', help='tokenizer folder')
    p.add_argument('--store-dir', default='.store/data', help='local store data')
    p.add_argument('--prefix', default='c4', help='datasets under oci://c4-bench@local/PREFIX')
    p.add_argument('--size-limit', type=int, default=shard_limit(8),
                   help="the text datasets' shard size (~12 per part of 8 MB); tokens: 4x")
    p.add_argument('--formats', default=','.join(FORMATS), help='text,tokens (default both)')
    p.add_argument('--bandwidths', default=','.join(f'{b:g}' for b in BANDWIDTHS),
                   help='per-connection MB/s to shape the store at, comma list ("" = none)')
    p.add_argument('--workers', type=int, default=1,
                   help='dataloader workers: 1 = one loader core and one connection, the unit '
                        'a node has 64 of (default 1)')
    p.add_argument('--text-batches', type=int, default=24,
                   help='batches per text pass (on-the-fly tokenization is slow; default 24)')
    p.add_argument('--cache', default='build/bench-loader-cache', help='shard caches')
    p.add_argument('--stages', help='print stage headers, e.g. 7,8/8 (make bench)')
    p.add_argument('--out', required=True, help='write the results here (JSON)')
    args = p.parse_args(argv)
    os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
    results = run_all(args)
    Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())

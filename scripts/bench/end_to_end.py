"""`make bench`: the seed walkthrough's six tests end to end, then a one-page report.

1-2. convert allenai/c4 `en` (the C4 sample, served by a local hub: the seed's hub -> bucket)
     to MDS, uncompressed and zstd, into the bucket, train and validation splits (skipped when
     the dataset is already there and verified: the conversion itself is resumable; --no-hub
     reads the sample's files);
3-4. bucket bytes, object count and listing time of each variant;
5-6. stream each variant into the CPU recipe's fine-tune: cold cache, then warm, over a
     store shaped like a bucket in another region; then a cold pair with no shaping. Every run
     reads the same samples in the same order (same shard boundaries, seed and shuffle), so the
     training losses, step for step, and the held-out losses must be equal across runs: the
     proof that compression changes nothing the model sees (checked; exit 1 if not);
7-8. loader only, no model (scripts/bench/loader.py): what one loader core delivers with the
     GPU recipes' dataloader settings, text and pre-tokenized, cold and warm, and the same
     cold passes over the store shaped at several per-connection bandwidths.
Shards are small (the sample's size / 96), so every part spans >= 8 and each pass crosses
shard boundaries as it does at C4 size. Start-up at C4 size is `make bench-start`
(scripts/bench/start.py); its latest results join this report when they exist.

Offline by default, against the local OCI store (data in .store/data, started here).
`--remote oci://bucket@namespace/prefix` or `s3://bucket/prefix` runs the same steps there
(no shaping: the network is real); `--recipes DIR` picks the yamls (DIR/c4_uncompressed.yaml
and DIR/c4_zstd.yaml), e.g. `--recipes yamls` on an 8xH100 node.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from scripts.bench.end_to_end_report import write_report
from scripts.bench.lib import link_latest, results_folder
from scripts.bench.loader import BANDWIDTHS, shard_limit

ROOT = Path(__file__).resolve().parents[2]

VARIANTS = {'uncompressed': 'none', 'zstd': 'zstd'}
LOCAL_TOKENIZER = 'build/tokenizer'  # what the CPU recipes name
BUCKET = 'c4-bench'
# A bucket in another region, as the local store's knobs (docs/oci.md, the local store): ~40 ms per
# request is a cross-region round trip in North America, 25 MB/s one TCP stream across it.
SHAPED = {'latency_ms': 40.0, 'bandwidth_mbps': 25.0}


STAGES = 8


def stage(n: int, text: str) -> None:
    print(f'\n== [{n}/{STAGES}] {text}', flush=True)


def prepare_inputs(args) -> tuple[Path, Path]:
    from data_prep.pipeline.sample import generate
    from data_prep.pipeline.tokenizer import train as train_tokenizer
    sample = Path(args.build) / 'c4_sample'
    generate(str(sample), size_mb=args.sample_mb)
    tokenizer = Path(args.build) / 'tokenizer'
    if not (tokenizer / 'tokenizer.json').exists():
        train_tokenizer(str(sample), str(tokenizer))
    return sample, tokenizer.resolve()


def start_stores(args):
    """Two store processes over one data directory: shaped (region-like) and plain."""
    from local_services.oci_store import Knobs, start_store
    data = Path(args.store_dir)
    plain = start_store(data, buckets=[BUCKET], log_path=data / 'run' / 'bench-plain.jsonl')
    shaped = start_store(data, knobs=Knobs(**SHAPED), log_path=data / 'run' / 'bench-shaped.jsonl')
    return {'plain': plain, 'shaped': shaped}


def recorded_speed(dataset: str) -> dict | None:
    """What the parts' manifests recorded when the dataset was made: input bytes and seconds
    per part, so a skipped conversion can still say how fast it went (per worker)."""
    from data_prep.storage import open_remote
    remote = open_remote(dataset)
    manifests = [json.loads(remote.read(name)) for name in remote.list('')
                 if name.endswith('/manifest.json')]
    seconds = sum(m.get('seconds') or 0 for m in manifests)
    if not seconds:
        return None
    size = sum(m['input_bytes'] for m in manifests)
    return {'parts': len(manifests), 'input_bytes': size, 'part_seconds': seconds,
            'mb_per_s_per_worker': size / 1e6 / seconds}


def conversion_input(args) -> dict:
    """The conversion's input, as the seed's first test has it: allenai/c4 `en` from the hub,
    here a local hub serving the sample (made now; the hub stops at exit); with --no-hub, the
    sample's files. Call it before anything imports huggingface_hub or datasets (the
    tokenizer's training does): they read HF_ENDPOINT when imported."""
    from data_prep.pipeline.sample import generate
    sample = Path(args.build) / 'c4_sample'
    if args.no_hub:
        return {'data_files': str(sample / 'c4-{split}.*.json.gz')}
    from local_services.hf_hub import start_hub
    generate(str(sample), size_mb=args.sample_mb)  # as prepare_inputs does; kept if there
    hub = start_hub(Path(args.build) / 'bench-hub', sample=sample)
    atexit.register(hub.stop)
    os.environ.update(hub.env())
    print(f'local Hugging Face Hub: {hub.endpoint}, allenai/c4 en = {sample}')
    return {'dataset': 'allenai/c4', 'subset': 'en'}


def convert_variants(args, source: dict, remote: str, out: Path) -> dict:
    """Converts (or finds converted and verified) both variants of `source` (data_files=...,
    or dataset=..., subset=...); returns their summaries."""
    from data_prep.convert import format_summary
    from data_prep.pipeline.convert import ConvertConfig, convert
    summaries = {}
    for n, (variant, compression) in enumerate(VARIANTS.items(), start=1):
        stage(n, f'convert the sample to MDS, {variant}, into {remote}/{variant}')
        cache = Path(args.build) / 'bench' / f'convert-{variant}.json'

        def split_of(split: str) -> ConvertConfig:
            inputs = ({'data_files': source['data_files'].format(split=split)}
                      if 'data_files' in source else {**source, 'split': split})
            return ConvertConfig(remote=f'{remote}/{variant}', **inputs,
                                 compression=None if compression == 'none' else compression,
                                 size_limit=shard_limit(args.sample_mb), out_split=split,
                                 replace=not args.remote)  # the local store: ours
        # the held-out split the recipes evaluate on (small: the sample's validation file)
        held_out = convert(split_of('validation'))
        print(f'  validation: {held_out["samples"]:,} samples, {held_out["index"]}')
        summary = convert(split_of('train'))
        if summary['parts_converted'] == 0:
            previous = json.loads(cache.read_text()) if cache.exists() else {}
            if (previous.get('dataset'), previous.get('bytes')) == (
                summary['dataset'],
                summary['bytes'],
            ):
                # the same dataset, found complete: report the speed it was converted at
                summary = {**previous, 'reused': True}
                print(f'  already converted and verified; conversion speed from {cache}')
            else:  # not converted here: the speed its parts recorded when they were made
                summary['recorded'] = recorded_speed(summary['dataset'])
        else:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(summary))
        print(format_summary(summary))
        summaries[variant] = summary
    (out / 'conversion.json').write_text(json.dumps(summaries, indent=1))
    return summaries


def bucket_stats(remote: str) -> dict:
    from data_prep.pipeline.stats import bucket_stats as stats
    rows = {}
    for n, variant in enumerate(VARIANTS, start=3):
        stage(n, f'bucket bytes and objects, {variant}')
        rows[variant] = stats(f'{remote}/{variant}')
        s = rows[variant]
        print(
            f'  {s["bytes"]:,} bytes in {s["objects"]} objects, listed in {s["list_seconds"]:.3f} s'
        )
    return rows


def train_run(args, recipe: Path, remote: str, env: dict, name: str, cache: Path, out: Path,
              tokenizer: Path) -> dict:
    """One fine-tune through train.py (`composer -n NPROC train.py` for more than one process),
    progress from its console; returns run_metrics."""
    from omegaconf import OmegaConf
    run_dir = out / 'runs' / name
    # One process needs no launcher (Composer's costs a second import of composer).
    launcher = ([str(Path(sys.executable).parent / 'composer'), '-n', str(args.nproc)]
                if args.nproc > 1 else [sys.executable])
    cmd = [
        *launcher,
        'train.py',
        str(recipe),
        f'variables.data_remote={remote}',
        f'variables.data_local={cache}',
        f'variables.run_name={name}',
        f'callbacks.run_report.folder={run_dir}',
        'console_log_interval=1ba',
        'save_folder=null',
        'autoresume=false',
        *args.override,
    ]
    if 'hf_checkpointer' in (OmegaConf.load(recipe).get('callbacks') or {}):
        # (it follows save_folder, null here) the model each run exports at its end, beside
        # the shard caches: data, not results
        cmd.append(f'callbacks.hf_checkpointer.save_folder={Path(args.build) / "bench-models"}'
                   f'/{name}')
    if (
        OmegaConf.load(recipe).tokenizer.name == LOCAL_TOKENIZER
    ):  # CPU recipes: ours, wherever built
        cmd.append(f'tokenizer.name={tokenizer}')
    if args.steps:
        cmd.append(f'max_duration={args.steps}ba')
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / 'train.log', 'w') as log, tqdm(desc=f'  {name}', unit='step') as bar:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log.write(line)
            if m := re.match(r'\[batch=(\d+)/(\d+)\]', line):
                bar.total = int(m[2])
                bar.update(int(m[1]) - bar.n)
        proc.wait()
    if proc.returncode != 0:
        tail = ''.join(open(run_dir / 'train.log').readlines()[-15:])
        raise SystemExit(f'error: run {name} failed (exit {proc.returncode}); log: '
                         f'{run_dir / "train.log"}\n{tail}')
    return json.loads((run_dir / 'run_metrics.json').read_text())


def loader_stages(args, out: Path) -> dict | None:
    """Stages 7-8 (scripts/bench/loader.py, its own process: it imports llm-foundry)."""
    path = out / 'loader.json'
    build = Path(args.build)
    cmd = [sys.executable, '-m', 'scripts.bench.loader', '--sample', str(build / 'c4_sample'),
           '--tokenizer', str(build / 'tokenizer'), '--store-dir', args.store_dir,
           '--size-limit', str(shard_limit(args.sample_mb)), '--bandwidths', args.bandwidths,
           '--cache', str(build / 'bench-loader-cache'), '--stages', f'7,8/{STAGES}',
           '--formats', args.loader_formats,
           '--out', str(path)]
    # Its DataLoaders warn about pin_memory without a GPU and 8 workers on few cores, and
    # streaming's shared memory at every worker's exit: noise that hides the progress bars.
    quiet = {**os.environ, 'PYTHONWARNINGS': 'ignore::UserWarning'}
    proc = subprocess.run(cmd, cwd=ROOT, env=quiet)
    if proc.returncode != 0:
        raise SystemExit(f'error: the loader stages failed (exit {proc.returncode})')
    return json.loads(path.read_text())


def latest_startup(folder: str) -> dict | None:
    """`make bench-start`'s latest results (it takes longer than this bench), if any."""
    path = Path(folder) / 'results.json'
    if not path.exists():
        return None
    return {**json.loads(path.read_text()), 'path': str(path.resolve())}


def plan_runs(shaping: bool, plain_pair: bool = True) -> list[tuple[str, str, str]]:
    """(store, variant, cache state): cold then warm per variant, then a plain cold pair."""
    stores = ['shaped', 'plain'] if shaping else ['direct']
    runs = [(stores[0], v, c) for v in VARIANTS for c in ('cold', 'warm')]
    if shaping and plain_pair:
        runs += [('plain', v, 'cold') for v in VARIANTS]
    return runs


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(prog='python -m scripts.bench.end_to_end', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        '--remote',
        help='real bucket: oci://bucket@namespace/prefix or s3://bucket/prefix '
        '(default: the local OCI store, shaped)',
    )
    p.add_argument('--recipes', default='yamls/cpu',
                   help='folder with c4_uncompressed.yaml and c4_zstd.yaml (default yamls/cpu)')
    p.add_argument('--sample-mb', type=float, default=8, help='MB of sample text (default 8)')
    p.add_argument('--steps', type=int, default=0, help='steps per run (default: the recipe\'s)')
    p.add_argument(
        '--nproc', type=int, default=1, help='processes per run: composer -n (default 1)'
    )
    p.add_argument('--no-plain-pair', action='store_true',
                   help='skip the cold pair over the unshaped store (4 runs instead of 6)')
    p.add_argument('--no-hub', action='store_true',
                   help='convert the sample\'s files directly, not allenai/c4 from a local hub')
    p.add_argument('--bandwidths', default=','.join(f'{b:g}' for b in BANDWIDTHS),
                   help='per-connection MB/s for the loader-only link-speed stage (comma list)')
    p.add_argument('--loader-formats', default='text,tokens',
                   help='data formats of the loader-only stages (default text,tokens)')
    p.add_argument('--no-loader', action='store_true',
                   help='skip the loader-only stages (7-8: headroom, link speeds)')
    p.add_argument('--build', default='build', help='sample and tokenizer folder (default build)')
    p.add_argument(
        '--store-dir', default='.store/data', help='local store data (default .store/data)'
    )
    p.add_argument('--out', default='results/bench', help='reports go to OUT/<timestamp>/')
    p.add_argument('--startup', default='results/bench-start/latest',
                   help="make bench-start's results to include in the report, if there")
    p.add_argument('override', nargs='*', help='extra key=value overrides for every run')
    args = p.parse_args(argv)
    missing = [v for v in VARIANTS if not (Path(args.recipes) / f'c4_{v}.yaml').exists()]
    if missing:
        p.error(f'no recipe {Path(args.recipes) / f"c4_{missing[0]}.yaml"} (--recipes must hold '
                f'c4_uncompressed.yaml and c4_zstd.yaml)')
    return args


def fine_tunes(args, remote: str, envs: dict, shaping: bool, tokenizer: Path,
               out: Path) -> list[dict]:
    """Stages 5-6: every run of the plan, cold then warm per variant; their metrics."""
    recipes = {v: Path(args.recipes) / f'c4_{v}.yaml' for v in VARIANTS}
    plan = plan_runs(shaping=shaping, plain_pair=not args.no_plain_pair)
    caches = Path(args.build) / 'bench-cache'  # shard caches are data, not results
    runs = []
    for n, variant in enumerate(VARIANTS, start=5):
        mine = [(s, c) for s, v, c in plan if v == variant]
        stage(n, f'fine-tune on {variant}: ' + ', '.join(f'{c} cache ({s} store)' for s, c in mine))
        for store, cache_state in mine:
            cache = caches / f'{store}-{variant}'
            if cache_state == 'cold':
                shutil.rmtree(cache, ignore_errors=True)
            name = f'{variant}-{cache_state}-{store}'
            metrics = train_run(args, recipes[variant], f'{remote}/{variant}', envs[store], name,
                                cache, out, tokenizer)
            runs.append({'name': name, 'variant': variant, 'cache': cache_state, 'store': store,
                         'metrics': metrics,
                         'steps_file': str(out / 'runs' / name / 'steps.jsonl')})
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    out = results_folder(args.out)
    print(f'bench -> {out}')
    from data_prep.storage import RemoteError, check_url
    stores = {}
    try:
        if args.remote:
            check_url(args.remote)
            remote, envs = args.remote.rstrip('/'), {'direct': {}}
        else:
            stores = start_stores(args)
            remote = f'oci://{BUCKET}@local/c4'
            envs = {name: s.env() for name, s in stores.items()}
            os.environ.update(envs['plain'])  # conversion and listing talk to the plain store
            print(
                f'local OCI store: {stores["plain"].endpoint} (plain), '
                f'{stores["shaped"].endpoint} (shaped: {SHAPED["latency_ms"]:.0f} ms per '
                f'request, {SHAPED["bandwidth_mbps"]:.0f} MB/s)'
            )
        source = conversion_input(args)
        sample, tokenizer = prepare_inputs(args)
        conversions = convert_variants(args, source, remote, out)
        buckets = bucket_stats(remote)
        if stores:  # listing as seen from "another region"
            os.environ.update(envs['shaped'])
            from data_prep.pipeline.stats import bucket_stats as stats
            for v in VARIANTS:
                buckets[v]['list_seconds_shaped'] = stats(f'{remote}/{v}')['list_seconds']

        runs = fine_tunes(args, remote, envs, bool(stores), tokenizer, out)
        loader = None
        if stores and not args.no_loader:
            for s in stores.values():  # the loader stages start their own, shaped per stage
                s.stop()
            loader = loader_stages(args, out)
        elif not args.no_loader:
            print('loader-only stages 7-8 run against the local store only; skipped')
    except RemoteError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    finally:
        for s in stores.values():
            s.stop()

    for r in runs:  # the per-step training losses, for the check that they agree
        r['losses'] = [json.loads(line).get('loss') for line in open(r['steps_file'])]
    report = write_report(out, conversions=conversions, buckets=buckets, runs=runs,
                          shaping=SHAPED if stores else None, remote=remote,
                          recipes=str(args.recipes), seconds=time.time() - started,
                          loader=loader, startup=latest_startup(args.startup))
    latest = link_latest(out)
    print('\n' + report)
    print(f'\nreport: {out / "report.md"} (also {latest}/), {len(runs)} runs, '
          f'{time.time() - started:.0f} s')
    same = json.loads((out / 'results.json').read_text())['losses']
    if not same['equal']:
        print(f'error: the runs\' losses differ: {same["first_difference"]}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())

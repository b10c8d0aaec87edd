"""How long until a checkpoint is resumable, with Composer's uploader processes started at the
first save (Composer's way) and at the start of the run (bucket_keep's `start_uploaders`, the
default): the CPU twin with FSDP over 2 processes, the same command twice but for that switch,
on the offline sample in the local OCI store. Prints, per run, each checkpoint's
`resumable_after_s` from run_metrics.json (the time from its local save to the bucket's pointer
naming it) and the ratio for the first one, which waits for the uploaders to start.

    python -m scripts.bench.checkpoints [--steps 12] [--every 4] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from scripts.bench.lib import fmt, machine, run_timed, save_json

ROOT = Path(__file__).resolve().parents[2]
BUCKET = 'c4-bench'


def prepare(build: Path) -> tuple[Path, Path]:
    """The sample converted (train and validation, zstd) and the tokenizer, in `build`."""
    sample, mds, tokenizer = build / 'sample', build / 'mds', build / 'tokenizer'
    if not (mds / 'train' / 'index.json').exists():
        py = sys.executable
        subprocess.run([py, '-m', 'data_prep.sample', '--out', str(sample), '--size-mb', '4'],
                       cwd=ROOT, check=True)
        for split in ('train', 'validation'):
            subprocess.run([py, '-m', 'data_prep.convert', '--split', split, '--no-progress',
                            '--data-files', f'{sample}/c4-{split}.*.json.gz', '--remote',
                            str(mds), '--compression', 'zstd'], cwd=ROOT, check=True)
    if not (tokenizer / 'tokenizer.json').exists():
        subprocess.run([sys.executable, '-m', 'data_prep.tokenizer', '--data-dir', str(sample),
                        '--out', str(tokenizer)], cwd=ROOT, check=True)
    return mds, tokenizer


def run(name: str, start_uploaders: bool, args, mds: Path, tokenizer: Path, env: dict) -> dict:
    build = Path(args.build)
    cmd = [str(Path(sys.executable).parent / 'composer'), '-n', '2', 'train.py',
           'yamls/cpu/c4_zstd.yaml', f'variables.data_remote={mds}',
           f'variables.data_local={build}/cache-{name}', f'tokenizer.name={tokenizer}',
           f'variables.run_name={name}', f'save_folder=oci://{BUCKET}@local/ckpt/{{run_name}}',
           f'save_interval={args.every}ba', f'max_duration={args.steps}ba', 'autoresume=false',
           f'callbacks.bucket_keep.start_uploaders={str(start_uploaders).lower()}',
           f'callbacks.run_report.folder={build}/runs/{name}']
    timed = run_timed(cmd, env=env)
    if timed.returncode:
        raise SystemExit(f'{name}: exit {timed.returncode}\n{timed.stderr[-3000:]}')
    report = json.loads((build / 'runs' / name / 'run_metrics.json').read_text())
    return {'name': name, 'start_uploaders': start_uploaders, 'wall_s': timed.wall_s,
            'cpu_s': timed.cpu_s, 'checkpoints': report['checkpoints']}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog='python -m scripts.bench.checkpoints', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--steps', type=int, default=12, help='steps per run')
    p.add_argument('--every', type=int, default=4, help='a checkpoint every this many steps')
    p.add_argument('--build', default='build/bench_checkpoints', help='work folder')
    p.add_argument('--json', default='results/bench_checkpoints.json', help='figures')
    args = p.parse_args(argv)
    from local_services.oci_store import start_store
    build = Path(args.build)
    mds, tokenizer = prepare(build)
    for old in ('store', 'runs'):  # each run starts with no checkpoint of its name
        shutil.rmtree(build / old, ignore_errors=True)
    store = start_store(build / 'store', buckets=[BUCKET])
    try:
        env = {**os.environ, **store.env()}
        runs = [run('uploaders-at-first-save', False, args, mds, tokenizer, env),
                run('uploaders-at-start', True, args, mds, tokenizer, env)]
    finally:
        store.stop()
    print(f'{"run":<26} {"wall s":>7} {"CPU s":>7}  resumable after s, per checkpoint')
    for r in runs:
        each = ', '.join(f'ba{c["batch"]} {fmt(c["resumable_after_s"], ".1f")}'
                         for c in r['checkpoints'])
        print(f'{r["name"]:<26} {r["wall_s"]:7.1f} {r["cpu_s"]:7.1f}  {each}')
    first = [r['checkpoints'][0]['resumable_after_s'] for r in runs]
    ratio = first[0] / first[1] if first[1] else None
    print(f'first checkpoint resumable {fmt(ratio, ".2f")}x sooner with the uploaders started '
          f'with the run')
    save_json(args.json, {'machine': machine(), 'runs': runs, 'first_ratio': ratio})
    return 0


if __name__ == '__main__':
    sys.exit(main())

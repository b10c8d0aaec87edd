"""The GPU check's checks and its closing table (scripts/gpu_check/run.sh calls each mode).

  --check-site SITE [--need-gpu]   the unpacked archive holds every package pinned in
                                   gpu-constraints.txt and our entry points; on Python 3.12 the
                                   stack is imported from it, llm-foundry finds our callbacks
                                   and MPT's attn_impl sdpa
  --check-store URL                a file goes to URL (oci://) and back through the object store
                                   Composer builds for it; exit 1 if that is not ours
  --check-recipes FILE             train.py's checks on each line's recipe and overrides
                                   (`YAML KEY=VALUE ...`, shell-quoted)
  --runs DIR --out OUT [--logs DIR] [--store-log FILE] [--checkpoints URL] [--dry-run]
                                   one table of the runs in DIR beside llm-foundry's published
                                   rows, the checkpoint and resume lines above it; reports to OUT
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

from scripts.bench.lib import fmt

ROOT = Path(__file__).resolve().parents[2]

# GPU_PINS: another pins file (the tests pack and check a few packages, not all 102)
PINS = Path(os.environ.get('GPU_PINS') or ROOT / 'gpu-constraints.txt')
CALLBACKS = ('data_wait', 'cache_stats', 'throughput', 'run_report')
# entry points besides the callbacks: (group, name)
ENTRY_POINTS = [('llmfoundry_callbacks', c) for c in CALLBACKS] + [
    ('llmfoundry_callbacks', 'bucket_keep'),  # train.py adds it for an oci:// save_folder
    ('llmfoundry_attention_implementations', 'sdpa')]
# run folder -> what it is; the order of the table
RUNS = {
    'qwen2_fsdp_to_30ba': 'Qwen2 shape, 8 layers, 7B recipe FSDP settings, steps 1-30, '
                          'checkpoints at 20 and 30',
    'qwen2_resume_from_20ba': 'the same, resumed from the step-20 checkpoint, steps 21-30',
    'mpt_1b_mb8': 'MPT-1B shape, SDPA, no act. ckpt, microbatch 8',
    'mpt_1b_mb12': 'MPT-1B shape, SDPA, no act. ckpt, microbatch 12',
    'mpt_1b_mb4': 'MPT-1B shape, SDPA, no act. ckpt, microbatch 4',
    'qwen2_28l_fsdp2': 'Qwen2.5-1.5B shape (28 layers), SDPA, no act. ckpt, FSDP2',
    'qwen2_28l_fsdp1': 'the same with FSDP1 (fsdp_config.version=1)',
}
REFERENCES = [  # llm-foundry's published benchmarks: 8x H100 80GB, bf16, seq 2048, flash-attn
    ('8x H100 80GB (llm-foundry, published)', 'MPT-1B, flash-attn, microbatch 14',
     '45,455', '41.8%'),
    ('8x H100 80GB (llm-foundry, published)', 'MPT-7B, flash-attn, microbatch 6',
     '10,643', '46.4%'),
]
REFERENCE = REFERENCES[0]
# losses after resume: equal to the uninterrupted run's within this (bf16 on a GPU; the console
# prints 4 decimals)
LOSS_TOLERANCE = 1e-3
RESUMED_FROM = 20


def _norm(name: str) -> str:
    return re.sub(r'[-_.]+', '-', name).lower()


def pins(path: Path = PINS) -> dict[str, str]:
    """{normalised name: version} of every `name==version` line."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            name, _, version = line.partition('==')
            out[_norm(name)] = version.strip()
    return out


def site_dists(site: Path) -> dict[str, str]:
    """{normalised name: version} of the dist-info folders in `site`."""
    found = {}
    for info in site.glob('*.dist-info'):
        meta = (info / 'METADATA').read_text(errors='replace')
        name = re.search(r'^Name: (.+)$', meta, re.M).group(1).strip()
        found[_norm(name)] = re.search(r'^Version: (.+)$', meta, re.M).group(1).strip()
    return found


def check_site(site: Path, need_gpu: bool, pins_path: Path = PINS) -> list[str]:
    """Problems with the unpacked archive (none: an empty list); prints what it found."""
    problems = []
    have = site_dists(site)
    pinned = pins(pins_path)
    for name, version in pinned.items():
        if have.get(name) != version:
            problems.append(f'{name}=={version} not in {site} (found {have.get(name)})')
    ours = [p for p in site.glob('oci_c4_recipes-*.dist-info/entry_points.txt')]
    text = ours[0].read_text() if ours else ''
    missing = [name for group, name in ENTRY_POINTS
               if not re.search(rf'^\[{group}\][^[]*^{name}\s*=', text, re.M)]
    if missing:
        problems.append(f'entry points for {missing} not in {site}/oci_c4_recipes-*.dist-info')
    print(f'gpu-check: archive holds {len(have)} distributions, '
          f'{len(pinned) - len([p for p in problems if "==" in p])}/{len(pinned)} pins matched')
    if sys.version_info[:2] == (3, 12):
        problems += _check_stack(site.resolve(), need_gpu)
    return problems


def _check_stack(site: Path, need_gpu: bool) -> list[str]:
    """Imports the training stack: carried packages from `site`, torch from the machine."""
    problems = []
    import composer
    import llmfoundry
    import streaming
    import torch
    import transformers
    from llmfoundry.registry import callbacks
    for mod in (composer, llmfoundry, streaming, transformers):
        if not Path(mod.__file__).resolve().is_relative_to(site):
            problems.append(f'{mod.__name__} {mod.__version__} comes from {mod.__file__}, '
                            f'not from the carried packages in {site}')
    from llmfoundry.layers_registry import attention_implementations
    for name in CALLBACKS + ('bucket_keep',):
        try:
            callbacks.get(name)
        except Exception as err:  # catalogue raises its own RegistryError
            problems.append(f'llm-foundry does not find our callback {name!r}: {err}')
    try:
        attention_implementations.get('sdpa')
    except Exception as err:
        problems.append(f"llm-foundry does not find MPT's attn_impl sdpa: {err}")
    try:
        import oci  # noqa: F401  (the checkpoints' oci:// client)
    except ImportError as err:
        problems.append(f'the oci SDK is not importable: {err}')
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else 'no GPU'
    print(f'gpu-check: torch {torch.__version__} (CUDA {torch.version.cuda}, {device}); '
          f'carried: transformers {transformers.__version__}, composer {composer.__version__}, '
          f'llm-foundry {llmfoundry.__version__}, streaming {streaming.__version__}')
    if need_gpu and not cuda:
        problems.append('torch sees no GPU')
    return problems


def check_recipes(planned: Path) -> list[str]:
    """train.py's checks on each planned run: one line `YAML KEY=VALUE ...`, shell-quoted."""
    from training import checks
    from training.config import ConfigError, load_config
    problems = []
    for line in planned.read_text().splitlines():
        yaml, *overrides = shlex.split(line)
        try:
            cfg = load_config(yaml, overrides)
            checks.check_recipe(cfg, yaml)
            checks.check_remotes(cfg, yaml)
        except ConfigError as err:
            problems.append(str(err))
            continue
        print(f'gpu-check: {yaml} with the run\'s overrides passes train.py\'s checks')
    return problems


def check_store(url: str) -> list[str]:
    """1 MiB up to `url` and back through the object store Composer builds for it, with our
    Composer extension installed as train.py installs it: the checkpoints' path. A problem if
    train.py does not install it (then Composer would use its own OCI store, which ignores the
    endpoint: the runs could not reach the local store)."""
    import tempfile
    import time
    from urllib.parse import urlparse
    try:
        from training import checkpoints
    except ImportError:
        return [f'{url}: no training.checkpoints (our Composer object store for oci://)']
    if 'checkpoints.install(' not in (ROOT / 'train.py').read_text():
        return [f'{url}: train.py does not install training.checkpoints, so Composer would '
                f'use its own OCI store']
    from training.shards import install
    install()
    try:
        checkpoints.install([url])
        store = checkpoints.store_for(url)
    except Exception as err:  # one line whatever it is: the check falls back to a folder
        return [f'{url}: no object store: {str(err).splitlines()[0][:200]}']
    kind = f'{type(store).__module__}.{type(store).__qualname__}'
    if not kind.startswith('training.'):
        return [f'{url}: Composer would use its own {kind}, not our OCI client']
    name = urlparse(url).path.strip('/') + '/probe.bin'
    with tempfile.TemporaryDirectory() as tmp:
        src, back = Path(tmp) / 'up.bin', Path(tmp) / 'back.bin'
        src.write_bytes(os.urandom(1 << 20))
        t0 = time.monotonic()
        try:
            store.upload_object(name, str(src))
            store.download_object(name, str(back))
        except Exception as err:
            return [f'{url}: {kind} failed to send and read back 1 MiB: {err}']
        if back.read_bytes() != src.read_bytes():
            return [f'{url}: {kind} read back other bytes than it sent']
        print(f'gpu-check: checkpoints to {url.rsplit("/", 1)[0]} through {kind}: 1 MiB up '
              f'and back in {time.monotonic() - t0:.2f} s')
    return []


def console_losses(log: Path) -> dict[int, float]:
    """{batch: training loss} from Composer's console log (`[batch=N/M]:` then
    `Train loss/train/total: X`, 4 decimals)."""
    out, batch = {}, None
    if not log.is_file():
        return out
    for line in log.read_text(errors='replace').splitlines():
        m = re.match(r'\s*\[batch=(\d+)/\d+\]', line)
        if m:
            batch = int(m.group(1))
            continue
        m = re.search(r'loss/train/total: (\S+)', line)
        if m and batch is not None:
            out[batch] = float(m.group(1))
    return out


def fsdp_seen(log: Path) -> str:
    """What the run's log says about FSDP: Composer's FSDP2 set-up, its FSDP1 `FSDP: Using
    sharding_strategy=` line, or llm-foundry's revert to DDP."""
    text = log.read_text(errors='replace') if log.is_file() else ''
    if 'Prepare FSDP2' in text:
        return 'FSDP2'
    m = re.search(r'FSDP: Using sharding_strategy=(\S+)', text)
    if m:
        # torch's own warning when it runs a world of 1 unsharded
        no_shard = ' -> NO_SHARD' if re.search(r'switching to use `?NO_SHARD', text) else ''
        return f'on ({m.group(1).rsplit(".", 1)[-1]}{no_shard})'
    if 'Reverting to DDP' in text:
        return 'off (DDP)'
    return '-'


def checkpoint_io(store_log: Path, prefix: str) -> dict[str, dict]:
    """Per checkpoint folder under `prefix` (object names), from the local store's request log:
    objects written, bytes and seconds from the first request's start to the last one's end,
    for writes (PUT, multipart parts) and for reads (GET)."""
    from urllib.parse import unquote
    found: dict[str, dict] = {}
    if not store_log.is_file():
        return found
    for line in store_log.read_text().splitlines():
        r = json.loads(line)
        m = re.match(r'/n/[^/]+/b/[^/]+/[ou]/(.+)', unquote(r.get('path', '')))
        if not m or not m.group(1).startswith(prefix.rstrip('/') + '/'):
            continue
        rest = m.group(1)[len(prefix.rstrip('/')) + 1:]
        if '/' not in rest or r.get('status', 500) >= 300:
            continue
        folder, obj = rest.split('/', 1)
        io = 'write' if r['method'] in ('PUT', 'POST') else 'read' if r['method'] == 'GET' else ''
        if not io:
            continue
        d = found.setdefault(folder, {}).setdefault(io, {'objects': set(), 'bytes': 0,
                                                         'start': None, 'end': None})
        d['objects'].add(obj)
        d['bytes'] += r.get('in', 0) if io == 'write' else r.get('bytes', 0)
        start, end = r['t'] - r.get('ms', 0) / 1000, r['t']
        d['start'] = start if d['start'] is None else min(d['start'], start)
        d['end'] = end if d['end'] is None else max(d['end'], end)
    for ios in found.values():
        for d in ios.values():
            d['seconds'] = max(d['end'] - d['start'], 1e-6)
            d['mb_per_s'] = d['bytes'] / 1e6 / d['seconds']
            d['objects'] = sorted(d['objects'])
    return found


def local_checkpoints(folder: Path) -> dict[str, dict]:
    """Per checkpoint folder in a local save_folder: its files and bytes (no timing)."""
    found = {}
    for sub in sorted(p for p in folder.glob('*') if p.is_dir()):
        files = [f for f in sub.rglob('*') if f.is_file()]
        found[sub.name] = {'write': {'objects': sorted(str(f.relative_to(sub)) for f in files),
                                     'bytes': sum(f.stat().st_size for f in files),
                                     'seconds': None, 'mb_per_s': None}}
    return found


def notes(logs: Path, store_log: Path | None, checkpoints: str | None) -> list[str]:
    """The checkpoint and resume lines printed above the table."""
    lines = []
    if checkpoints:
        run = 'gpu-check-qwen2'
        if '://' in checkpoints:
            from urllib.parse import urlparse
            prefix = urlparse(checkpoints).path.strip('/') + f'/{run}'
            io = checkpoint_io(store_log, prefix) if store_log else {}
        else:
            io = local_checkpoints(Path(checkpoints) / run)
        for folder, d in sorted(io.items()):
            w, rd = d.get('write'), d.get('read')
            if w:
                kind = ('a distributed checkpoint (.metadata, .distcp)'
                        if any(o.endswith('.distcp') for o in w['objects']) else
                        'not a distributed checkpoint: ' + ', '.join(w['objects'][:3]))
                lines.append(f'checkpoint {checkpoints}/{run}/{folder}: {kind}, '
                             f'{len(w["objects"])} files, {w["bytes"] / 1e9:.2f} GB; saved in '
                             f'{fmt(w["seconds"], ".1f")} s ({fmt(w["mb_per_s"], ",.0f")} MB/s)')
            if rd:
                lines.append(f'checkpoint {checkpoints}/{run}/{folder}: loaded '
                             f'{rd["bytes"] / 1e9:.2f} GB in {rd["seconds"]:.1f} s '
                             f'({rd["mb_per_s"]:,.0f} MB/s)')
    ref = console_losses(logs / 'qwen2_fsdp_to_30ba.log')
    res = console_losses(logs / 'qwen2_resume_from_20ba.log')
    steps = sorted(b for b in res if b > RESUMED_FROM)
    if steps and all(b in ref for b in steps):
        worst = max(abs(res[b] - ref[b]) for b in steps)
        verdict = 'equal' if worst <= LOSS_TOLERANCE else 'NOT equal'
        lines.append(f'resume: losses of steps {steps[0]}-{steps[-1]} {verdict} to the '
                     f'uninterrupted run\'s (max |difference| {worst:.4f}, tolerance '
                     f'{LOSS_TOLERANCE}); first step {steps[0]}: {res[steps[0]]:.4f} vs '
                     f'{ref[steps[0]]:.4f}')
    elif (logs / 'qwen2_resume_from_20ba.log').is_file():
        lines.append(f'resume: no losses to compare (steps after {RESUMED_FROM}: resumed run '
                     f'{sorted(res)[:3]}..., uninterrupted run {sorted(ref)[-3:]})')
    return lines


def table(runs: Path, out: Path, dry_run: bool, logs: Path | None = None) -> tuple[str, list[dict]]:
    """The closing table (markdown) and the rows; copies each run's report files to `out`."""
    rows = []
    for name, what in RUNS.items():
        report = runs / name / 'run_metrics.json'
        m = json.loads(report.read_text()) if report.is_file() else {}
        if report.is_file():
            dest = out / name
            dest.mkdir(parents=True, exist_ok=True)
            for f in ('run_metrics.json', 'steps.jsonl'):
                if (runs / name / f).is_file():
                    shutil.copy2(runs / name / f, dest / f)
        fsdp = fsdp_seen(logs / f'{name}.log') if logs else '-'
        rows.append({'run': name, 'model': what, **m, 'fsdp': fsdp,
                     'status': m.get('status') or ('dry run' if dry_run else 'no report')})
    head = ('| device | model | status | FSDP | steps | tokens/s/GPU | MFU | data wait | '
            'first batch s | peak GPU GiB |')
    lines = [head, '|' + '---|' * (head.count('|') - 1)]
    for r in rows:
        lines.append(' | '.join([
            '', r.get('device') or '-', r['model'], r['status'], r['fsdp'],
            fmt(r.get('steps'), 'd'), fmt(r.get('throughput_tokens_per_s_per_device'), ',.0f'),
            fmt(r.get('mfu'), '.1%'), fmt(r.get('data_wait_fraction'), '.1%'),
            fmt(r.get('time_to_first_batch_s'), '.2f'), fmt(r.get('peak_gpu_memory_gib'), '.1f'),
            '']).strip())
    for ref_device, ref_model, ref_tps, ref_mfu in REFERENCES:
        lines.append(f'| {ref_device} | {ref_model} | reference | FSDP | - | {ref_tps} | '
                     f'{ref_mfu} | - | - | - |')
    return '\n'.join(lines), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m scripts.gpu_check.report', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument('--check-site', metavar='SITE', help='the unpacked archive')
    mode.add_argument('--check-store', metavar='URL', help='oci:// URL for the checkpoints')
    mode.add_argument('--check-recipes', metavar='FILE', help='planned runs, one a line')
    mode.add_argument('--runs', metavar='DIR', help='folder of run folders (run_metrics.json)')
    parser.add_argument('--need-gpu', action='store_true',
                        help='--check-site: torch must see a GPU')
    parser.add_argument('--out', help='--runs: where the table and report files go')
    parser.add_argument('--logs', help='--runs: folder of the runs\' logs (NAME.log)')
    parser.add_argument('--store-log', help='--runs: the local OCI store\'s requests.jsonl')
    parser.add_argument('--checkpoints', help='--runs: where the checkpoints went (URL or folder)')
    parser.add_argument('--dry-run', action='store_true', help='--runs: no run was meant to run')
    args = parser.parse_args(argv)
    if args.check_site:
        problems = check_site(Path(args.check_site), args.need_gpu)
    elif args.check_store:
        problems = check_store(args.check_store)
    elif args.check_recipes:
        problems = check_recipes(Path(args.check_recipes))
    else:
        if not args.out:
            parser.error('--runs needs --out')
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        logs = Path(args.logs) if args.logs else None
        text, rows = table(Path(args.runs), out, args.dry_run, logs)
        extra = notes(logs, Path(args.store_log) if args.store_log else None,
                      args.checkpoints) if logs else []
        text = '\n'.join(extra + ([''] if extra else []) + [text])
        (out / 'summary.md').write_text(text + '\n')
        (out / 'summary.json').write_text(json.dumps({'runs': rows, 'notes': extra}, indent=1)
                                          + '\n')
        print(text)
        return 0
    for p in problems:  # for --check-store, the reason the check falls back to a folder
        print(f'gpu_check: {"" if args.check_store else "error: "}{p}', file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())

"""The GPU check's checks and its closing table (scripts/gpu_check.sh calls each mode).

  --check-site SITE [--need-gpu]   the unpacked archive holds every package pinned in
                                   gpu-constraints.txt and our entry points; on Python 3.12 the
                                   stack is imported from it and llm-foundry finds our callbacks
  --check-recipes FILE             train.py's checks on each line's recipe and overrides
                                   (`YAML KEY=VALUE ...`, shell-quoted)
  --runs DIR --out OUT [--dry-run]      one table of the runs in DIR; reports copied to OUT
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

ROOT = Path(__file__).resolve().parent.parent
# GPU_PINS: another pins file (the tests pack and check a few packages, not all 102)
PINS = Path(os.environ.get('GPU_PINS') or ROOT / 'gpu-constraints.txt')
CALLBACKS = ('data_wait', 'cache_stats', 'throughput', 'run_report')
# run folder -> what it is; the order of the table
RUNS = {
    # (FSDP on 2+ GPUs only: llm-foundry runs a world of 1 without it)
    'mpt_1b': 'MPT-1B shape, amp_bf16, torch attention',
    'qwen2_to_20ba': 'Qwen2 shape, 7B recipe settings, steps 1-20, checkpoint',
    'qwen2_resume_to_30ba': 'Qwen2 shape, resumed from the checkpoint, steps 21-30',
}
REFERENCE = ('8x H100 80GB (llm-foundry, published)', 'MPT-1B, flash-attn, microbatch 14',
             '45,455', '41.8%')


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
    missing = [c for c in CALLBACKS if not re.search(rf'^{c}\s*=\s*callbacks\.', text, re.M)]
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
    for name in CALLBACKS:
        try:
            callbacks.get(name)
        except Exception as err:  # catalogue raises its own RegistryError
            problems.append(f'llm-foundry does not find our callback {name!r}: {err}')
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
    sys.path.insert(0, str(ROOT))
    import train
    problems = []
    for line in planned.read_text().splitlines():
        yaml, *overrides = shlex.split(line)
        try:
            train.check_config(train.load_config(yaml, overrides), yaml)
        except train.ConfigError as err:
            problems.append(str(err))
            continue
        print(f'gpu-check: {yaml} with the run\'s overrides passes train.py\'s checks')
    return problems


def _fmt(value, spec: str) -> str:
    return '-' if value is None else format(value, spec)


def table(runs: Path, out: Path, dry_run: bool) -> tuple[str, list[dict]]:
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
        rows.append({'run': name, 'model': what, **m,
                     'status': m.get('status') or ('dry run' if dry_run else 'no report')})
    head = ('| device | model | status | steps | tokens/s/GPU | MFU | data wait | '
            'first batch s | peak GPU GiB |')
    lines = [head, '|' + '---|' * (head.count('|') - 1)]
    for r in rows:
        lines.append(' | '.join([
            '', r.get('device') or '-', r['model'], r['status'], _fmt(r.get('steps'), 'd'),
            _fmt(r.get('throughput_tokens_per_s_per_device'), ',.0f'),
            _fmt(r.get('mfu'), '.1%'), _fmt(r.get('data_wait_fraction'), '.1%'),
            _fmt(r.get('time_to_first_batch_s'), '.2f'), _fmt(r.get('peak_gpu_memory_gib'), '.1f'),
            '']).strip())
    ref_device, ref_model, ref_tps, ref_mfu = REFERENCE
    lines.append(f'| {ref_device} | {ref_model} | reference | - | {ref_tps} | {ref_mfu} '
                 f'| - | - | - |')
    return '\n'.join(lines), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='scripts/gpu_check_report.py', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument('--check-site', metavar='SITE', help='the unpacked archive')
    mode.add_argument('--check-recipes', metavar='FILE', help='planned runs, one a line')
    mode.add_argument('--runs', metavar='DIR', help='folder of run folders (run_metrics.json)')
    parser.add_argument('--need-gpu', action='store_true',
                        help='--check-site: torch must see a GPU')
    parser.add_argument('--out', help='--runs: where the table and report files go')
    parser.add_argument('--dry-run', action='store_true', help='--runs: no run was meant to run')
    args = parser.parse_args(argv)
    if args.check_site:
        problems = check_site(Path(args.check_site), args.need_gpu)
    elif args.check_recipes:
        problems = check_recipes(Path(args.check_recipes))
    else:
        if not args.out:
            parser.error('--runs needs --out')
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        text, rows = table(Path(args.runs), out, args.dry_run)
        (out / 'summary.md').write_text(text + '\n')
        (out / 'summary.json').write_text(json.dumps(rows, indent=1) + '\n')
        print(text)
        return 0
    for p in problems:
        print(f'gpu_check: error: {p}', file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())

"""`make dataflow-archive`: the dependency archive OCI Data Flow installs on every node of a run
(docs: "Providing a Dependency Archive"): archive.zip holding python/lib/python3.11/site-packages
with what converting needs, for Data Flow's Spark 3.5.0 / Python 3.11 on x86_64 Linux.

1. Measure what a conversion imports: a conversion of a small sample into the local OCI store
   (the driver's path, then one part as an executor converts it), run here in a child process;
   its modules' distributions are the archive's, each at its version in constraints.txt.
   Left out: what Data Flow has (pyspark, py4j), and the CUDA build of torch with its nvidia
   and triton libraries: streaming imports torch (streaming.base.util), converting never runs
   it, so the CPU build goes in (--torch, default torch==2.7.0+cpu from the PyTorch index).
2. Install them with pip for Python 3.11 manylinux x86_64 (--platform/--target, wheels only,
   no dependency resolution: the measured set is the whole set), plus our data_prep package.
3. Zip, and check: unpack into a temporary folder and convert the sample into the store again
   with a Python that sees only the standard library and the archive (python -S).

    python -m scripts.dataflow.archive [--out build/dataflow] [--torch SPEC_OR_WHEEL] [--no-check]

The registries it needs: PyPI (or its mirror in pip's configuration) and, for the default
torch, https://download.pytorch.org/whl/cpu; a wheel file can be given instead (--torch).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SITE = 'python/lib/python3.11/site-packages'
TORCH_INDEX = 'https://download.pytorch.org/whl/cpu'
DATAFLOW_HAS = {'pyspark', 'py4j'}
CUDA_ONLY = re.compile(r'^(nvidia-.*|triton)$')
OURS = 'oci-c4-recipes'
# Distributions that check, when imported, that their requirements are installed (by their
# metadata, not by importing them): their requirements go in as well.
CHECKS_REQUIREMENTS = {'transformers'}
PLATFORMS = ('manylinux2014_x86_64', 'manylinux_2_17_x86_64', 'manylinux_2_28_x86_64',
             'manylinux1_x86_64', 'linux_x86_64')


def norm(name: str) -> str:
    return re.sub(r'[-_.]+', '-', name).lower()


def pins() -> dict[str, str]:
    """constraints.txt: normalized name -> 'name==version'."""
    out = {}
    for line in (ROOT / 'constraints.txt').read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if '==' in line:
            out[norm(line.split('==', 1)[0])] = line
    return out


# ----------------------------------------------------------------------------- 1. measure

def convert_sample(work: Path, url: str) -> None:
    """A small conversion into `url`: the driver's path, then one part in this process as a
    Spark executor converts it. Used to measure, and to check the archive."""
    from data_prep.pipeline.convert import ConvertConfig, convert
    from data_prep.pipeline.identity import input_identity
    from data_prep.pipeline.part import convert_part, init_worker
    from data_prep.pipeline.sample import generate
    from data_prep.pipeline.task import PartTask
    from data_prep.pipeline.verify import verify
    files = generate(str(work / 'sample'), size_mb=0.3, train_files=2, val_files=0, workers=1)
    cfg = ConvertConfig(remote=url, data_files=str(work / 'sample' / 'c4-train.*.json.gz'),
                        compression='zstd', workers=1, progress=False)
    summary = convert(cfg)
    report = verify(url)
    if not (summary['published'] and report['ok']):
        raise SystemExit(f'conversion failed: {report["problems"][:3]}')
    init_worker(None)
    convert_part(PartTask(ConvertConfig(remote=url, compression='zstd'), 'part-00000',
                          'executor', files[0], limit=50, digest='x',
                          identity=input_identity(files[0]), upload_threads=2,
                          tmp_root=str(work)))
    print(f'converted {summary["samples"]:,} samples into {url}, verified', file=sys.stderr)


def measure(work: Path) -> list[str]:
    """The distributions a conversion imports (this child process's modules)."""
    import importlib.metadata as md

    from local_services.oci_store import start_store
    store = start_store(work / 'store', buckets=['c4-bench'])
    try:
        os.environ.update(store.env())
        convert_sample(work, 'oci://c4-bench@local/measure')
    finally:
        store.stop()
    from packaging.requirements import Requirement
    owners = md.packages_distributions()
    tops = {m.split('.')[0] for m in list(sys.modules)}
    used = {norm(d) for t in tops for d in owners.get(t, [])}
    for dist in used & CHECKS_REQUIREMENTS:
        for spec in md.requires(dist) or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({'extra': ''}):
                used.add(norm(req.name))
    return sorted(used)


# ----------------------------------------------------------------------------- 2. build

def build(out: Path, torch: str, check: bool) -> int:
    work = Path(tempfile.mkdtemp(prefix='dataflow-archive-'))
    try:
        proc = subprocess.run([sys.executable, __file__, '--measure-into', str(work)], cwd=ROOT,
                              capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            print('error: the measuring conversion failed (above)', file=sys.stderr)
            return 1
        used = json.loads(proc.stdout.strip().splitlines()[-1])
        pinned = pins()
        leave = {d for d in used if d in DATAFLOW_HAS or CUDA_ONLY.match(d) or d == OURS}
        wanted = sorted(set(used) - leave - {'torch'})
        unpinned = [d for d in wanted if d not in pinned]
        if unpinned:
            print(f'error: not in constraints.txt: {", ".join(unpinned)}', file=sys.stderr)
            return 1
        stage = out / 'stage'
        shutil.rmtree(stage, ignore_errors=True)
        site = stage / SITE
        site.mkdir(parents=True)
        pip = [sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--only-binary=:all:',
               '--target', str(site), '--python-version', '3.11', '--implementation', 'cp',
               '--abi', 'cp311', '--abi', 'abi3', '--abi', 'none',
               *[x for p in PLATFORMS for x in ('--platform', p)]]
        print(f'{len(wanted)} distributions from constraints.txt (+ torch: {torch}); left out: '
              f'{", ".join(sorted(leave | {"torch (CUDA build)"}))}', file=sys.stderr)
        if subprocess.run(pip + [pinned[d] for d in wanted]).returncode:
            print('error: pip could not fetch the wheels above (a registry unreachable?)',
                  file=sys.stderr)
            return 1
        torch_cmd = pip + ([torch] if torch.endswith('.whl') else
                           ['--index-url', TORCH_INDEX, torch])
        if subprocess.run(torch_cmd).returncode:
            print(f'error: cannot fetch {torch} (from {TORCH_INDEX} unless a .whl is given): '
                  f'pass a CPU torch wheel with --torch', file=sys.stderr)
            return 1
        shutil.copytree(ROOT / 'data_prep', site / 'data_prep',
                        ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        for extra in site.glob('bin'):  # console scripts: not used, and their shebangs are ours
            shutil.rmtree(extra)
        final = out / 'archive.zip'
        final.unlink(missing_ok=True)
        archive = out / 'archive.zip.tmp'  # named archive.zip only once it is checked
        with zipfile.ZipFile(archive, 'w', zipfile.ZIP_DEFLATED, compresslevel=6) as z:
            for path in sorted(stage.rglob('*')):
                if path.is_file() and '__pycache__' not in path.parts:
                    z.write(path, path.relative_to(stage).as_posix())
        sizes = {}
        for path in site.iterdir():
            n = sum(f.stat().st_size for f in path.rglob('*') if f.is_file()) \
                if path.is_dir() else path.stat().st_size
            key = path.name.split('-')[0] if path.name.endswith('.dist-info') else path.name
            sizes[key] = sizes.get(key, 0) + n
        unpacked = sum(sizes.values())
        print(f'{final}: {archive.stat().st_size / 1e6:.1f} MB ({unpacked / 1e6:.0f} MB '
              f'unpacked); largest: ' + ', '.join(
                  f'{k} {v / 1e6:.0f} MB' for k, v in
                  sorted(sizes.items(), key=lambda kv: -kv[1])[:6]))
        shutil.rmtree(stage)
        if check and check_archive(archive, work):
            archive.unlink()  # nothing that looks like a usable archive is left
            return 1
        archive.replace(final)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------- 3. check

def check_archive(archive: Path, work: Path) -> int:
    """Unpacks the archive and converts the sample with nothing but it and the stdlib."""
    from local_services.oci_store import start_store
    unpacked = work / 'unpacked'
    with zipfile.ZipFile(archive) as z:
        z.extractall(unpacked)
    store = start_store(work / 'check-store', buckets=['c4-bench'])
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith('PYTHON')}
        env.update(store.env(), PYTHONPATH=str(unpacked / SITE), PYTHONNOUSERSITE='1')
        code = ('import sys, pathlib; sys.argv[0] = "check"; '
                'assert not any("site-packages" in p and "unpacked" not in p for p in sys.path), '
                'sys.path; '
                'from dataflow_check import convert_sample; '
                f'convert_sample(pathlib.Path({str(work / "check")!r}), '
                '"oci://c4-bench@local/check")')
        (work / 'check').mkdir()
        shutil.copy(__file__, work / 'check' / 'dataflow_check.py')
        proc = subprocess.run([sys.executable, '-S', '-c', code], cwd=work / 'check', env=env,
                              capture_output=True, text=True)
    finally:
        store.stop()
    if proc.returncode:
        print(proc.stderr[-3000:], file=sys.stderr)
        print('CHECK FAILED: the archive alone cannot convert (above)', file=sys.stderr)
        return 1
    print(f'check: {proc.stderr.strip().splitlines()[-1]} with only the archive and the '
          f'standard library on sys.path', file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', default='build/dataflow', help='folder for archive.zip')
    p.add_argument('--torch', default='torch==2.7.0+cpu',
                   help=f'torch for the archive: a requirement (fetched from {TORCH_INDEX}) or '
                   f'a wheel file (default torch==2.7.0+cpu)')
    p.add_argument('--no-check', action='store_true', help='skip converting with the archive')
    p.add_argument('--measure-into', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure_into:
        print(json.dumps(measure(Path(args.measure_into))))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return build(out, args.torch, not args.no_check)


if __name__ == '__main__':
    sys.exit(main())

"""What the benches share, so that each measures and reports the same way.

- `run_timed`: a whole process, from its start to its exit: wall seconds and the CPU it used.
- `tree_cpu`, `tree_memory`, `TreeSampler`: CPU and memory of a live process tree (this
  process and its DataLoader workers), with psutil; `process_cpu` for one process (a server).
- `in_child`: a function in a forked process of its own (its own tree, peak memory, streaming
  state).
- `results_folder` / `link_latest`: OUT/<timestamp>/ and the OUT/latest link to the newest;
  `save_json` for a bench's --json figures.
- `machine`: the machine and the stack's versions, recorded beside every result.
- `fmt`, `pct`: numbers in tables, '-' where there is none.

Memory is PSS (a page shared by n processes counts 1/n in each), so forked workers that share
their parent's pages, and shared memory mapped by several of them, are not counted n times.
CPU is user + system seconds, which do not grow when other programs share the cores: the
benches turn them into per-core rates.
"""
from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import re
import subprocess
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    import psutil
except ImportError:  # gpu_check_report imports fmt on the device's bare Python, before its site
    psutil = None

ROOT = Path(__file__).resolve().parents[2]
STACK = ['llm-foundry', 'mosaicml', 'mosaicml-streaming', 'torch', 'transformers', 'datasets',
         'oci']


# ----------------------------------------------------------------------------- a whole process

@dataclass
class Timed:
    stdout: str
    stderr: str
    returncode: int
    start: float  # time.monotonic() at the start and at the exit
    end: float
    cpu_s: float  # user + system of the process and every process it waited for

    @property
    def wall_s(self) -> float:
        return self.end - self.start


def run_timed(cmd: list[str], cwd: Path = ROOT, env: dict | None = None) -> Timed:
    """Runs `cmd` to its end. Its CPU comes from the kernel when it is reaped (os.wait4: the
    process and all it waited for, its pool workers included), the one count that sees the
    whole life of a process that has exited (psutil reads only live ones) and, unlike
    getrusage(RUSAGE_CHILDREN), nothing of the caller's other children (the benches' servers)."""
    with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        end = time.monotonic()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Timed(out.read(), err.read(), proc.returncode, start, end,
                     usage.ru_utime + usage.ru_stime)


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process so far (0 once it is gone)."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return t.user + t.system


# ----------------------------------------------------------------------------- results

def results_folder(root: str | Path) -> Path:
    """A new ROOT/<timestamp>/ for one run of a bench."""
    out = Path(root) / dt.datetime.now().strftime('%Y%m%d-%H%M%S')
    out.mkdir(parents=True)
    return out


def link_latest(out: Path) -> Path:
    """Points OUT's sibling `latest` at OUT (the newest results, for reports and people)."""
    latest = out.parent / 'latest'
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(out.name)
    return latest


def save_json(path: str | Path, figures: dict) -> None:
    """Writes a bench's figures (the --json file) and says where."""
    os.makedirs(os.path.dirname(str(path)) or '.', exist_ok=True)
    Path(path).write_text(json.dumps(figures, indent=1))
    print(f'figures saved to {path}')


def _gpus() -> tuple[str | None, int]:
    """The first GPU's name and how many there are, from nvidia-smi: importing torch to ask
    costs a bench driver seconds of start-up."""
    try:
        out = subprocess.run(['nvidia-smi', '--query-gpu=name', '--format=csv,noheader'],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):  # no driver, no GPU
        return None, 0
    names = [line.strip() for line in out.splitlines() if line.strip()]
    return (names[0] if names else None), len(names)


def machine() -> dict:
    """Where a figure was measured: cores, GPU, load, platform, Python, the stack's versions."""
    gpu, gpus = _gpus()
    versions = {}
    for name in STACK:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {'cores': os.cpu_count(), 'gpu': gpu, 'gpus': gpus,
            'load': ', '.join(f'{x:.1f}' for x in os.getloadavg()),
            'platform': platform.platform(), 'python': platform.python_version(),
            'versions': versions}


def fmt(x, spec: str) -> str:
    """x in `spec`; '-' where there is none, as wide as the spec asks (columns stay aligned)."""
    if x is not None:
        return format(x, spec)
    width = re.match(r'[^.\d]*(\d*)', spec).group(1)
    return format('-', f'>{width}')


def pct(x) -> str:
    return '-' if x is None else f'{100 * x:.1f}%'


# ----------------------------------------------------------------------------- a process tree

def _procs(root: psutil.Process | None) -> list[psutil.Process]:
    root = root or psutil.Process()
    try:
        return [root] + root.children(recursive=True)
    except psutil.Error:
        return [root]



def tree_cpu(root: psutil.Process | None = None) -> dict[int, float]:
    """{pid: CPU seconds} for a process and its living children."""
    out = {}
    for p in _procs(root):
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def tree_memory(root: psutil.Process | None = None) -> dict[int, dict]:
    """{pid: {'pss', 'uss'}} in bytes for a process and its living children."""
    out = {}
    for p in _procs(root):
        try:
            m = p.memory_full_info()
            out[p.pid] = {'pss': m.pss, 'uss': m.uss}
        except psutil.Error:
            pass
    return out


class TreeSampler:
    """Polls the tree's memory in a thread; `peak_pss` is the largest sum seen, `peak_uss_by_pid`
    each process's largest USS (its private memory). Use as a context manager."""

    def __init__(self, interval: float = 0.25):
        self.interval, self.peak_pss, self.peak_uss_by_pid = interval, 0, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._root = psutil.Process()

    def sample(self) -> dict[int, dict]:
        mem = tree_memory(self._root)
        self.peak_pss = max(self.peak_pss, sum(m['pss'] for m in mem.values()))
        for pid, m in mem.items():
            self.peak_uss_by_pid[pid] = max(self.peak_uss_by_pid.get(pid, 0), m['uss'])
        return mem

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


# ----------------------------------------------------------------------------- a forked child

def _child_main(conn, fn, args):
    try:
        conn.send(('ok', fn(*args)))
    except BaseException:
        conn.send(('error', traceback.format_exc()))
    finally:
        conn.close()


def in_child(fn, *args):
    """Runs fn(*args) in a forked process (its own process tree, peak memory and streaming
    state) and returns its result; raises RuntimeError with the child's traceback."""
    ctx = mp.get_context('fork')
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(child, fn, args))
    proc.start()
    child.close()
    try:
        status, value = parent.recv()
    except EOFError:
        status, value = 'error', f'process died (exit code {proc.join() or proc.exitcode})'
    proc.join()
    if status != 'ok':
        raise RuntimeError(f'{fn.__name__} failed:\n{value}')
    return value

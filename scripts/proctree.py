"""Memory and CPU of a process and its children (DataLoader workers), for the benches.

Memory is PSS (a page shared by n processes counts 1/n in each), so forked workers that share
their parent's pages, and shared memory mapped by several of them, are not counted n times.
CPU is user + system seconds, which do not grow when other programs share the cores: the
benches turn them into per-core rates.
"""
from __future__ import annotations

import multiprocessing as mp
import threading
import traceback

import psutil


def _procs(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root] + root.children(recursive=True)
    except psutil.Error:
        return [root]


def tree_cpu(root: psutil.Process | None = None) -> dict[int, float]:
    """{pid: CPU seconds} for a process and its living children."""
    out = {}
    for p in _procs(root or psutil.Process()):
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def tree_memory(root: psutil.Process | None = None) -> dict[int, dict]:
    """{pid: {'pss', 'uss'}} in bytes for a process and its living children."""
    out = {}
    for p in _procs(root or psutil.Process()):
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

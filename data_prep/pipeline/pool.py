"""The local engine: one machine, N forked worker processes, one part per task.

A small pool of our own rather than multiprocessing.Pool, whose failure path cannot be bounded:
`Pool.terminate()` takes the task queue's read lock for good, sends each worker one SIGTERM and
then joins every worker without a time limit. A process that has imported Composer (a notebook,
a launch script, a test run) has a Python SIGTERM handler (`sys.exit`), which forked workers
inherit; such a worker does not reliably die on SIGTERM and can end up waiting on the lock the
parent holds, so the command waited forever. Pool also loses the task of a worker killed from
outside (the OOM killer) and waits for its result forever. Here:

- each worker has its own pipe: no lock is shared between the parent and the workers, and the
  parent never waits on a lock a dead or stuck worker holds;
- workers put SIGTERM back to the default action when they start (it kills them at once,
  whatever handler their parent had) and ignore SIGINT (the parent handles Ctrl-C);
- the parent waits on the pipes and the processes' sentinels together: a worker that dies in
  a part is a one-line error naming the part, never a wait;
- stopping is SIGTERM, at most STOP_GRACE_S for the workers to go, then SIGKILL.

What a stop leaves of each part is what any failure leaves (convert.py): committed parts are
kept and reused by the next run, a part in progress leaves an attempt folder that the next run
deletes before it publishes.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import sys
import time
from multiprocessing.connection import wait

from data_prep.pipeline.part import convert_part, init_worker
from data_prep.pipeline.records import iter_lines
from data_prep.pipeline.task import PartResult, PartTask

STOP_GRACE_S = 5.0  # SIGTERM, then this long for the workers to go, then SIGKILL


class WorkerDied(RuntimeError):
    """A worker process ended while converting a part (killed from outside, out of memory)."""


def _warm_up_reading(url: str) -> None:
    """Read the first lines of one local input here, before forking: datasets' first streaming
    read in a process imports what it patches for streaming (scipy.io, pandas' readers...) and
    torch (its IterableDataset subclasses torch's when torch is installed); forked workers
    inherit all of that instead of each paying it. A problem with the file is left to its
    worker to report. Hub files are not read twice for this."""
    if not os.path.isfile(url):
        return
    lines = iter_lines(url, exact=False)
    try:
        next(lines, None)
    except Exception:
        pass
    finally:
        lines.close()


def _picklable(exc: BaseException) -> BaseException:
    """The exception itself if it crosses a pipe, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f'{type(exc).__name__}: {exc}')


def _worker(conn, counters, slot: int) -> None:
    """A worker's life: tasks from its pipe until None (or the parent's end closes)."""
    init_worker((counters, slot))  # SIGTERM back to its default action, SIGINT ignored
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        try:
            reply = (True, convert_part(task))
        except BaseException as exc:  # to the parent, which stops the pool and raises it
            reply = (False, _picklable(exc))
        conn.send(reply)


def _died(proc, task: PartTask | None) -> WorkerDied:
    """The error for a worker that ended while `task` was its part."""
    proc.join(STOP_GRACE_S)  # its exit status, once the pipe says it is gone
    code = proc.exitcode
    if code is not None and code < 0:
        try:
            how = f'killed by {signal.Signals(-code).name}'
        except ValueError:
            how = f'killed by signal {-code}'
    else:
        how = f'exit code {code}'
    where = f'{task.url} (part {task.part})' if task else 'no part'
    return WorkerDied(f'a conversion worker (pid {proc.pid}) ended while converting {where}: '
                      f'{how}; run the same command again to redo that part')


def _stop(procs: list, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM every live worker, wait at most `grace` for them, SIGKILL the rest. Bounded."""
    for p in procs:
        if p.exitcode is None:
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.exitcode is None:
            p.kill()  # cannot be caught or ignored
            p.join(grace)


def run_pool(tasks: list[PartTask], workers: int, progress: bool) -> list[PartResult]:
    """Runs `convert_part` on every task in `workers` forked processes, with a progress bar;
    returns their results (in completion order). The first failure stops the pool and is
    raised; a worker that dies raises WorkerDied naming its part."""
    if not tasks:
        return []
    # Import the heavy libraries once here: forked workers inherit them.
    import datasets  # noqa: F401

    from data_prep.pipeline.part import import_writer
    from data_prep.pipeline.records import _quiet_datasets
    _quiet_datasets()
    import_writer()
    _warm_up_reading(tasks[0].url)
    ctx = mp.get_context('fork')
    n = max(1, min(workers, len(tasks)))
    # Documents and bytes read, one pair per worker: each slot has one writer, so no lock
    # (a worker killed while holding a lock would stop the parent's progress bar for good).
    counters = ctx.RawArray('q', 2 * n)
    todo = list(reversed(tasks))
    results: list[PartResult] = []
    procs, conns, current = [], {}, {}
    bar = None
    try:
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(tasks), unit='part', desc='convert', dynamic_ncols=True,
                       file=sys.stderr)
        for slot in range(n):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(theirs, counters, slot),
                               name=f'convert-worker-{slot}', daemon=True)
            proc.start()
            theirs.close()
            procs.append(proc)
            conns[ours] = proc
            current[proc] = todo.pop()
            ours.send(current[proc])
        t0 = time.perf_counter()
        while len(results) < len(tasks):
            busy = {c: p for c, p in conns.items() if current[p] is not None}
            ready = wait(list(busy) + [p.sentinel for p in busy.values()], timeout=0.5)
            for conn in [c for c in busy if c in ready]:
                proc = conns[conn]
                try:
                    ok, value = conn.recv()
                except EOFError:  # it died; its sentinel says how
                    raise _died(proc, current[proc]) from None
                if not ok:
                    raise value
                results.append(value)
                current[proc] = todo.pop() if todo else None
                try:
                    conn.send(current[proc])
                except OSError:
                    raise _died(proc, current[proc]) from None
                if bar:
                    bar.update(1)
            for conn, proc in busy.items():
                if proc.sentinel in ready and conn not in ready:
                    raise _died(proc, current[proc])
            if bar:
                dt = max(time.perf_counter() - t0, 1e-9)
                docs, nbytes = sum(counters[0::2]), sum(counters[1::2])
                bar.set_postfix_str(f'{docs / dt:,.0f} docs/s {nbytes / 1e6 / dt:.1f} MB/s '
                                    f'{docs:,} docs', refresh=False)
        deadline = time.monotonic() + STOP_GRACE_S  # each was sent None: it is ending
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
    finally:
        if bar:
            bar.close()
        for conn in conns:
            conn.close()  # a worker waiting for a task sees EOF and returns
        _stop(procs)
    return results

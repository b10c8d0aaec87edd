"""The local engine: one machine, a pool of forked worker processes, one part per task."""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time

from data_prep.pipeline.part import convert_part, init_worker
from data_prep.pipeline.records import iter_lines


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


def run_pool(tasks: list[dict], workers: int, progress: bool) -> list[dict]:
    """Runs `convert_part` on every task in `workers` forked processes, with a progress bar;
    returns their results (in completion order). The first failure stops the pool."""
    if not tasks:
        return []
    # Import the heavy libraries once here: forked workers inherit them.
    import datasets  # noqa: F401

    from data_prep.pipeline.part import import_writer
    from data_prep.pipeline.records import _quiet_datasets
    _quiet_datasets()
    import_writer()
    _warm_up_reading(tasks[0]['url'])
    ctx = mp.get_context('fork')
    counters = (ctx.Value('q', 0), ctx.Value('q', 0))
    results: list[dict] = []
    pool = ctx.Pool(workers, initializer=init_worker, initargs=(counters,))
    bar = None
    try:
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(tasks), unit='part', desc='convert', dynamic_ncols=True,
                       file=sys.stderr)
        it = pool.imap_unordered(convert_part, tasks)
        t0 = time.perf_counter()
        while len(results) < len(tasks):
            try:
                results.append(it.next(timeout=0.5))
                if bar:
                    bar.update(1)
            except mp.TimeoutError:
                pass
            if bar:
                dt = max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix_str(f'{counters[0].value / dt:,.0f} docs/s '
                                    f'{counters[1].value / 1e6 / dt:.1f} MB/s '
                                    f'{counters[0].value:,} docs', refresh=False)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        if bar:
            bar.close()
        pool.join()
    return results



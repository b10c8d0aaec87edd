"""Small helpers shared by the metric callbacks: clocks, ranks, percentiles, the run folder."""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Iterable, Optional

from composer.utils import dist

now = time.monotonic  # every duration in this package is measured on this clock

DEFAULT_FOLDER = 'results/runs/{run_name}'


def percentile(values: Iterable[float], q: float) -> Optional[float]:
    """Linear-interpolated percentile (numpy's default method); None for no values."""
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def is_rank_zero() -> bool:
    return dist.get_global_rank() == 0


def find_callback(state, cls):
    """The first callback of type `cls` on the trainer, or None."""
    for cb in state.callbacks:
        if isinstance(cb, cls):
            return cb
    return None


def run_folder(template: str, run_name: str) -> str:
    return template.format(run_name=run_name)


def write_json(path: str, obj: Any) -> None:
    """Writes atomically (temp file + rename): a reader never sees half a report."""
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    tmp = f'{path}.tmp.{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write('\n')
    os.replace(tmp, path)


def write_jsonl(path: str, rows: Iterable[dict]) -> None:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    tmp = f'{path}.tmp.{os.getpid()}'
    with open(tmp, 'w') as f:
        for row in rows:
            f.write(json.dumps(row) + '\n')
    os.replace(tmp, path)


def r(x: Optional[float], nd: int = 4) -> Optional[float]:
    return None if x is None else round(float(x), nd)

"""Small helpers shared by the metric callbacks: clocks, ranks, percentiles, the run folder."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Iterable, Optional

import numpy as np
from composer.utils import dist

now = time.monotonic  # every duration in this package is measured on this clock

DEFAULT_FOLDER = 'results/runs/{run_name}'


def percentile(values: Iterable[float], q: float) -> Optional[float]:
    """numpy's percentile (linear interpolation); None for no values."""
    xs = list(values)
    return float(np.percentile(xs, q)) if xs else None


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


def _write_atomic(path: str, text: str) -> None:
    """Temp file + rename: a reader never sees half a report."""
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    tmp = f'{path}.tmp.{os.getpid()}'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str, obj: Any) -> None:
    _write_atomic(path, json.dumps(obj, indent=2) + '\n')


def write_jsonl(path: str, rows: Iterable[dict]) -> None:
    _write_atomic(path, ''.join(json.dumps(row) + '\n' for row in rows))


def r(x: Optional[float], nd: int = 4) -> Optional[float]:
    return None if x is None else round(float(x), nd)

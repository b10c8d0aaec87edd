"""One line for an exception, as our one-line errors quote it (every layer may use it)."""
from __future__ import annotations


def first_line(exc: BaseException, with_type: bool = True) -> str:
    """`Type: first line of the message` (with_type=False: the line alone), or the type's
    name when the message is empty: tracebacks and multi-line server answers stay out."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return f'{type(exc).__name__}: {lines[0].strip()}' if with_type else lines[0].strip()

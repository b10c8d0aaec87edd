"""The one reader of our environment variables: unset or empty means the default; a value
that does not parse is an error naming the variable (never silently ignored)."""
from __future__ import annotations

import os
from typing import Callable, TypeVar

T = TypeVar('T')


class EnvError(ValueError):
    """An environment variable whose value does not parse; one line naming it."""


def env_value(name: str, default: T, cast: Callable[[str], T]) -> T:
    value = os.environ.get(name)
    if value is None or value == '':
        return default
    try:
        return cast(value)
    except ValueError:
        kind = getattr(cast, '__name__', 'value')
        raise EnvError(f'{name}={value!r} is not a valid {kind}') from None

"""The one version check behind every module that reaches into a library's internals.

Each such module (a `compat` module, or a hook module that wraps a private function) was read
from one version of the library and calls `require(PIN, 'path/to/module.py')` before it
patches anything: another version fails in one line instead of turning a loud error back into
a hang, or a patch into a silent no-op. setup.py pins the same versions.
"""
from __future__ import annotations

import importlib

STREAMING = ('mosaicml-streaming', 'streaming', '0.12.0')  # (PyPI name, module, version)
COMPOSER = ('mosaicml', 'composer', '0.32.1')
LLMFOUNDRY = ('llm-foundry', 'llmfoundry', '0.22.0')


class UnsupportedVersion(RuntimeError):
    """An installed library is not the version our hooks into it were written for."""


def require(pin: tuple[str, str, str], hooks: str) -> None:
    """Raises UnsupportedVersion unless the pinned library is installed at its version;
    `hooks` names the module whose hooks depend on it."""
    dist, module, supported = pin
    installed = importlib.import_module(module).__version__
    if installed != supported:
        raise UnsupportedVersion(
            f'{hooks} was written for {dist} {supported}, and {installed} is installed: '
            f'install {dist}=={supported} (setup.py pins it), or port {hooks} to {installed}')

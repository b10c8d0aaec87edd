"""A converter imports streaming's writer modules without its package __init__s, which pull in
transformers, scikit-learn and torchvision (`defer_package_inits`): reaches into how streaming
0.12.0's packages initialise (data_prep.versions checks the version)."""
from __future__ import annotations

import importlib.util
import sys
import threading
import types

from data_prep import versions

_PACKAGES = ('streaming', 'streaming.base', 'streaming.base.format')
_finish_lock = threading.RLock()


class _DeferredPackage(types.ModuleType):
    """A package module whose __init__ has not run yet: it runs on the first lookup of a name
    the module does not have (`from streaming import StreamingDataset`, `streaming.text`...)."""

    def __getattr__(self, name: str):
        with _finish_lock:
            if isinstance(self, _DeferredPackage):  # not finished by another thread meanwhile
                self.__class__ = types.ModuleType
                self.__spec__.loader.exec_module(self)
        return getattr(self, name)


def defer_package_inits() -> bool:
    """Let `import streaming.base.X` import X and what X imports, not streaming's package
    __init__s. Those import every dataset class, StreamingDataLoader and the vision, text and
    multimodal datasets, and with them transformers, scikit-learn and torchvision: ~2.5 s of a
    converter's start-up, for MDSWriter, compression and merge_index, which need none of it
    (streaming.base.util still imports torch). Nothing else changes: each deferred package
    runs its __init__ the first time anyone asks it for a name it does not have (streaming
    0.12.0's three only import, re-export, and define reader_from_json; checked by
    data_prep.versions). streaming.base.format is deferred too: its __init__ imports util,
    which imports format.index, so util imported first would be a circular import.

    Cheap: imports nothing heavy. Returns False (and does nothing) when streaming is imported
    already."""
    if any(name in sys.modules for name in _PACKAGES):
        return False
    with _finish_lock:
        for name in _PACKAGES:  # parents first: find_spec of a child reads its __path__
            module = importlib.util.module_from_spec(importlib.util.find_spec(name))
            module.__class__ = _DeferredPackage
            sys.modules[name] = module
            parent, _, child = name.rpartition('.')
            if parent:
                setattr(sys.modules[parent], child, module)  # as the import system binds it
        from streaming._version import __version__
        sys.modules['streaming'].__version__ = __version__  # as its __init__ sets it
    versions.require(versions.STREAMING, 'data_prep/streaming_ext/writer.py')
    return True


def import_writer_modules() -> None:
    """What a converter uses of streaming: MDSWriter, storage (uploaders, downloaders), util
    (merge_index); compression comes with the writer."""
    import streaming.base.format.mds.writer  # noqa: F401
    import streaming.base.storage  # noqa: F401
    import streaming.base.util  # noqa: F401

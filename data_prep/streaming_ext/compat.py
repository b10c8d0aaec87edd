"""The one place that touches mosaicml-streaming's private internals, for one version only.

`require_supported()` fails loudly, in one line, on any other streaming version than
`SUPPORTED`: everything below was read from (and `_ready_thread` copied from) that version's
source, and a silent mismatch would turn a loud shard error back into a hang or a silently
short epoch. tests/streaming_ext/test_compat.py is pinned to it.

Four users:

1. A shard that cannot be prepared must fail the pass loudly (`patch_dataset`). streaming
   0.12 downloads in background threads of each DataLoader worker; when one raises, it sets an
   event, its yield loop sees the event and simply stops: the epoch ends early as if the data
   were exhausted, the error is only logged, and only the *next* pass raises "Background
   thread failed". The shard also stays PREPARING, so a worker of another process waiting for
   it waits forever. None of that is reachable from a Stream or a downloader (they can only
   raise, which is what starts the silent ending), and llm-foundry 0.22 builds its
   StreamingTextDataset itself (no registry for the dataset class), so three methods of
   StreamingDataset are wrapped, process-wide:
   - `prepare_shard`: a failure puts the shard back to REMOTE (so nobody waits on it forever)
     and is remembered as a ShardUnavailable naming the shard;
   - `__iter__`: a pass that ended because of such a failure raises it instead of returning;
     the next pass raises it too (not streaming's vague message);
   - `_ready_thread`: a worker waiting for a shard that went back to REMOTE (another worker
     or rank failed to prepare it, or it was evicted) prepares it itself, and so fails loudly
     as well, or succeeds if the store is back.
2. `callbacks/cache_stats.py` reads the node's shard states, access times and cache usage,
   and wraps each stream's downloader to count what it really downloads (the accessors below).
3. train.py clears the shared memory a crashed run left (it makes the next run fail with
   FileExistsError), but only what no live process holds: streaming's own
   `clean_stale_shared_memory()` removes every dataset's, that of a training still running on
   this machine included, and with it streaming's check against two runs sharing one cache
   folder. `live_users()` gives that check in one line, before anything starts. Which run is
   alive is known from a marker each dataset's processes lock (`patch_shm_prefix`), which
   also makes choosing a prefix atomic: streaming's scan-then-create gave two datasets built
   at once on one machine the same one.
4. A converter imports streaming's writer modules without its package __init__s, which pull
   in transformers, scikit-learn and torchvision (`defer_package_inits`).
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import re
import sys
import threading
import types
from tempfile import gettempdir
from time import sleep
from typing import Callable, Iterable, Optional

import numpy as np

SUPPORTED = '0.12.0'


class UnsupportedStreaming(RuntimeError):
    """The installed mosaicml-streaming is not the version this module was written for."""


def require_supported() -> None:
    import streaming
    if streaming.__version__ != SUPPORTED:
        raise UnsupportedStreaming(
            f'mosaicml-streaming {streaming.__version__} is installed; data_prep.streaming_ext '
            f'supports {SUPPORTED} only (pinned in setup.py): install {SUPPORTED}, or port '
            f'data_prep/streaming_ext/compat.py')


# ----------------------------------------------------------------------------- writer imports

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
    require_supported()). streaming.base.format is deferred too: its __init__ imports util,
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
    require_supported()
    return True


def import_writer_modules() -> None:
    """What a converter uses of streaming: MDSWriter, storage (uploaders, downloaders), util
    (merge_index); compression comes with the writer."""
    import streaming.base.format.mds.writer  # noqa: F401
    import streaming.base.storage  # noqa: F401
    import streaming.base.util  # noqa: F401


# ----------------------------------------------------------------------------- loud shard errors

def patch_dataset() -> None:
    """Make a shard that cannot be prepared end the pass with ShardUnavailable (idempotent)."""
    require_supported()
    from streaming.base.dataset import TICK, StreamingDataset, _ShardState

    from data_prep.streaming_ext.stream import ShardUnavailable, unavailable
    if getattr(StreamingDataset, '_loud_shard_errors', False):
        return
    dataset_prepare = StreamingDataset.prepare_shard
    dataset_iter = StreamingDataset.__iter__

    def prepare_shard(self, shard_id, blocking=True):
        try:
            return dataset_prepare(self, shard_id, blocking)
        except Exception as exc:
            stream = self.streams[self.stream_per_shard[shard_id]]
            err = unavailable(stream, self.shards[shard_id], exc)
            # Only this thread moves a PREPARING shard on; nobody else may touch it.
            if self._shard_states[shard_id] == _ShardState.PREPARING:
                self._shard_states[shard_id] = _ShardState.REMOTE
            self._shard_error = err
            raise err from exc

    def iterate(self):
        try:
            yield from dataset_iter(self)
        except RuntimeError as exc:  # a later pass: 'Background thread failed'
            err = getattr(self, '_shard_error', None)
            if err is None or isinstance(exc, ShardUnavailable):
                raise
            raise ShardUnavailable(str(err)) from exc
        err = getattr(self, '_shard_error', None)
        event = getattr(self, '_event', None)
        if err is not None and event is not None and event.is_set():
            raise ShardUnavailable(f'{err}; the pass stopped there')

    def ready_thread(self, it) -> None:
        # streaming 0.12.0's _ready_thread, with two changes: a shard that went back to REMOTE
        # while we wait for it is prepared here, not waited for forever; and the thread counts
        # as exited however it ends. __iter__ ends by waiting for two of its three loops to
        # say so; the prepare thread does not when its download fails, and when this one
        # failed too (the same shard, both trying) the pass waited forever instead of raising.
        try:
            while True:
                if it.should_exit() or it.ready_index == it.total or self._event.is_set():
                    break
                if (self.predownload is not None
                        and self.predownload < it.ready_index - it.yield_index):
                    sleep(TICK)
                    continue
                sample_id = it.sample_ids[it.ready_index]
                if sample_id == -1:
                    it.ready_index += 1
                    continue
                shard_id, _ = self.spanner[sample_id]
                while self._shard_states[shard_id] != _ShardState.LOCAL:
                    if self._event.is_set():
                        break
                    if self._shard_states[shard_id] == _ShardState.REMOTE:
                        self.prepare_shard(shard_id, False)
                        continue
                    sleep(TICK)
                it.ready_index += 1
        finally:
            it.on_exit()

    StreamingDataset.prepare_shard = prepare_shard
    StreamingDataset.__iter__ = iterate
    StreamingDataset._ready_thread = ready_thread
    StreamingDataset._loud_shard_errors = True


# ----------------------------------------------------------------------------- cache accessors

def local_shards(ds) -> np.ndarray:
    """Bool per shard: in this node's cache now (streaming's node-wide shared states)."""
    from streaming.base.dataset import _ShardState
    return ds._shard_states.numpy() == _ShardState.LOCAL


def accessed_since(ds, t0_ns: int) -> np.ndarray:
    """Bool per shard: read or prepared on this node after `t0_ns` (time.time_ns())."""
    from streaming.base.dataset import NEVER
    times = ds._shard_access_times.numpy()
    return (times > t0_ns) & (times != NEVER)


def cache_bytes(ds) -> int:
    return int(ds.cache_usage)


def wrap_downloaders(ds, wrap: Callable) -> None:
    """stream._downloader = wrap(stream._downloader) for every stream of `ds`: the object
    each Stream downloads its shard files through (made from DOWNLOADER_MAPPINGS)."""
    for stream in ds.streams:
        stream._downloader = wrap(stream._downloader)


# ----------------------------------------------------------------------------- shared memory
#
# streaming names each dataset's shared memory `<6-digit prefix>_<name>` in /dev/shm. Two
# things it leaves to chance are fixed here:
#
# - Choosing a prefix: every rank scans for the first free one, then, after a barrier, the
#   node leader creates `<prefix>_locals`. Two processes that build a dataset at once (two
#   runs, parallel tests, two "nodes" on one machine) find the same prefix and the second
#   fails with FileExistsError (tests/streaming_ext/test_shared_memory.py). Here the node
#   leader chooses *and reserves* the prefix under one machine-wide lock, and the node's other
#   ranks take the leader's (all_gather) instead of scanning on their own. The lock is never
#   held across a barrier: two nodes of one run on one machine would deadlock.
# - Knowing which prefixes are live: it cannot be read from /proc alone, since every process
#   that builds a StreamingDataset attaches to the shared memory of every prefix below its own
#   while choosing one and keeps it mapped until it exits, a crashed run's included. So each
#   process that takes a prefix holds a shared flock on a marker file for as long as it lives
#   (the kernel drops it when the process dies; forked dataloader workers share it). A prefix
#   is live while its marker is locked; a prefix without a marker (a dataset built without
#   install()) counts as live while any process maps it. The reservation is that lock.

SHM_DIR = '/dev/shm'  # where POSIX shared memory (shm_open) lives on Linux
_marker_fds: dict[int, int] = {}  # prefix -> this process's open marker, until it exits


def _marker(prefix: str) -> str:
    # Beside the shared memory it marks, not in TMPDIR: every process on the machine must find
    # the same marker (a run with its own TMPDIR had its live memory removed by another run's
    # clean-up, which found a stale marker of the same prefix in /tmp).
    return os.path.join(SHM_DIR, f'streaming_ext.{prefix}.users')


def _mark_user(prefix_int: int) -> None:
    if prefix_int in _marker_fds:
        return
    fd = os.open(_marker(f'{prefix_int:06}'), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _marker_fds[prefix_int] = fd


@contextlib.contextmanager
def _machine_lock():
    """Held while a prefix is chosen and reserved and while leftovers are removed: by one
    process of this user at a time (other users' shared memory is theirs to manage)."""
    fd = os.open(os.path.join(SHM_DIR, f'streaming_ext.{os.getuid()}.lock'),
                 os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the lock


def _lock_names() -> tuple[str, str]:
    """streaming's lock files of a prefix `P`, named `P_<name>` in TMPDIR (it never removes
    them)."""
    from streaming.base.constant import BARRIER_FILELOCK, CACHE_FILELOCK
    return BARRIER_FILELOCK, CACHE_FILELOCK


def _taken(prefix_int: int) -> bool:
    """In use by streaming's rule (any of its shared memory, or a lock file in TMPDIR) or by
    ours (a live marker: reserved by a leader that has not created its memory yet)."""
    from streaming.base.constant import SHM_TO_CLEAN
    prefix = f'{prefix_int:06}'
    return (any(os.path.exists(os.path.join(SHM_DIR, f'{prefix}_{n}')) for n in SHM_TO_CLEAN)
            or any(os.path.exists(os.path.join(gettempdir(), f'{prefix}_{n}'))
                   for n in _lock_names())
            or _marker_locked(prefix) is True)


def _agreed_prefix(find: Callable, streams_local, streams_remote, world, retry) -> Optional[int]:
    """The prefix every rank of this node uses: the node leader reserves the first free one
    (streaming's scan, which also refuses a cache folder a live dataset uses, then the next
    prefix nobody holds); the other ranks take their leader's. None: a rank without
    torch.distributed, which scans streaming's way."""
    import torch.distributed as dist
    from streaming.base.constant import SHM_TO_CLEAN
    mine = None
    if world.is_local_leader:
        try:
            with _machine_lock():
                mine = max(find(streams_local, streams_remote, name, retry)
                           for name in SHM_TO_CLEAN)
                while _taken(mine):
                    mine += 1
                _mark_user(mine)
        except ValueError as e:  # "Reused local directory": every rank raises it, as before
            mine = e
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, mine)
        mine = everyone[dist.get_rank() - world.rank_of_node]
    if isinstance(mine, Exception):
        raise mine
    return mine


def patch_shm_prefix() -> None:
    """Reserve each dataset's shared-memory prefix atomically (see above) and mark this process
    as its user for as long as it lives (idempotent)."""
    require_supported()
    import streaming.base.dataset as dataset_module
    import streaming.base.shared.prefix as prefix_module
    if getattr(dataset_module.get_shm_prefix, '_reserves', False):
        return
    get_shm_prefix = dataset_module.get_shm_prefix
    find = prefix_module._check_and_find_retrying
    agreed = threading.local()

    def find_agreed(*args, **kwargs):  # get_shm_prefix's scan, once per name
        prefix_int = getattr(agreed, 'prefix_int', None)
        return find(*args, **kwargs) if prefix_int is None else prefix_int

    def reserving(streams_local, streams_remote, world, retry=100):
        agreed.prefix_int = _agreed_prefix(find, streams_local, streams_remote, world, retry)
        try:
            prefix_int, shm = get_shm_prefix(streams_local, streams_remote, world, retry)
        finally:
            agreed.prefix_int = None
        _mark_user(prefix_int)
        return prefix_int, shm

    reserving._reserves = True
    dataset_module.get_shm_prefix = reserving
    prefix_module._check_and_find_retrying = find_agreed


def _shm_groups() -> dict[str, list[str]]:
    """streaming's shared memory by prefix: '000003' -> ['000003_locals', ...]."""
    from streaming.base.constant import SHM_TO_CLEAN
    pattern = re.compile(r'(\d{6})_(?:%s)' % '|'.join(map(re.escape, SHM_TO_CLEAN)))
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return {}
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        m = pattern.fullmatch(name)
        if m:
            groups.setdefault(m.group(1), []).append(name)
    return groups


def _holders(paths: Iterable[str]) -> dict[str, set[int]]:
    """Path -> pids of the live processes that map it or hold it open (what fuser reads from
    /proc). Processes of other users cannot hold these files (streaming and we use mode 0600)."""
    wanted: dict[str, set[int]] = {p: set() for p in paths}
    if not wanted:
        return wanted
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f'/proc/{pid}/maps') as f:
                for line in f:
                    i = line.find('/')
                    path = line[i:].rstrip('\n') if i >= 0 else ''
                    if path in wanted:
                        wanted[path].add(pid)
            fds = os.listdir(f'/proc/{pid}/fd')
        except OSError:  # gone meanwhile, or not ours
            continue
        for fd in fds:
            try:
                target = os.readlink(f'/proc/{pid}/fd/{fd}')
            except OSError:
                continue
            if target in wanted:
                wanted[target].add(pid)
    return wanted


def _marker_locked(prefix: str) -> Optional[bool]:
    """True: a live process holds the prefix's marker (or another user's, which we cannot
    open); False: it has none (its users are dead); None: no marker."""
    try:
        fd = os.open(_marker(prefix), os.O_RDWR)
    except FileNotFoundError:
        return None
    except PermissionError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # drops our lock too


def _prefixes() -> list[tuple[str, list[str], set[int]]]:
    """(prefix, its shared-memory names, pids of its live users; empty when it is stale)."""
    groups = _shm_groups()
    marked = {p: _marker_locked(p) for p in groups}
    unmarked = [os.path.join(SHM_DIR, n) for p, names in groups.items() if marked[p] is None
                for n in names]
    markers = [_marker(p) for p in groups if marked[p]]
    held = _holders(unmarked + markers)
    out = []
    for prefix, names in groups.items():
        if marked[prefix] is None:
            pids = set().union(*(held[os.path.join(SHM_DIR, n)] for n in names))
        elif marked[prefix]:
            pids = held[_marker(prefix)] or {-1}  # locked by someone we cannot see: live
        else:
            pids = set()
        out.append((prefix, names, pids))
    return out


def clean_stale_shared_memory() -> list[str]:
    """Unlink the shared memory of datasets whose processes are all gone (a crashed or killed
    run's leftovers, which make the next run fail); a live run's stays. Also removes the
    markers and streaming's lock files in TMPDIR of prefixes nobody uses (a run that exited
    normally leaves both; prefixes with lock files are skipped forever). Returns the shared
    memory names removed. Replaces streaming's clean_stale_shared_memory(), which removes
    everything."""
    require_supported()
    removed = []
    with _machine_lock():  # not while a leader reserves a prefix it has not created yet
        groups = _prefixes()
        for prefix, names, pids in groups:
            if pids:
                continue
            for name in names:
                with contextlib.suppress(FileNotFoundError):  # another rank got there first
                    os.unlink(os.path.join(SHM_DIR, name))
                    removed.append(name)
        live = {prefix for prefix, _, pids in groups if pids}
        pattern = re.compile(r'streaming_ext\.(\d{6})\.users|(\d{6})_(?:%s)'
                             % '|'.join(map(re.escape, _lock_names())))
        leftovers: dict[str, list[str]] = {}  # prefix -> its marker and lock files
        for folder in (SHM_DIR, gettempdir()):
            for name in os.listdir(folder):
                m = pattern.fullmatch(name)
                if m:
                    leftovers.setdefault(m.group(1) or m.group(2), []).append(
                        os.path.join(folder, name))
        for prefix, paths in leftovers.items():
            if prefix in live or _marker_locked(prefix):  # in use, or reserved
                continue
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
    return removed


def live_users(folders: Iterable[str]) -> dict[str, list[int]]:
    """Cache folder -> pids of the other live processes whose StreamingDataset uses it (what
    streaming records in its `<prefix>_locals` shared memory: abspath(local/split))."""
    require_supported()
    from streaming.base.constant import LOCALS
    from streaming.base.shared.prefix import _unpack_locals
    wanted = {os.path.abspath(f) for f in folders}
    users: dict[str, set[int]] = {}
    for prefix, names, pids in _prefixes():
        others = pids - {os.getpid()}
        name = f'{prefix}_{LOCALS}'
        if not others or name not in names:
            continue
        try:
            with open(os.path.join(SHM_DIR, name), 'rb') as f:
                their_locals, _ = _unpack_locals(f.read())
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        for folder in wanted.intersection(their_locals):
            users.setdefault(folder, set()).update(others)
    return {folder: sorted(p) for folder, p in users.items()}

"""Which shared memory of streaming's is a live run's, and prefixes chosen without races.

A crashed run's shared memory makes the next run fail (FileExistsError); train.py clears it,
but only what no live process holds: streaming's own `clean_stale_shared_memory()` removes
every dataset's, that of a training still running on this machine included, and with it
streaming's check against two runs sharing one cache folder. `live_users()` gives that check
in one line, before anything starts. Reaches into streaming 0.12.0's prefix scan
(data_prep.versions checks the version).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
from tempfile import gettempdir
from typing import Callable, Iterable, Optional

from data_prep import versions

HOOKS = 'training/shards/shared_memory.py'

# streaming names each dataset's shared memory `<6-digit prefix>_<name>` in /dev/shm. Two
# things it leaves to chance are fixed here:
#
# - Choosing a prefix: every rank scans for the first free one, then, after a barrier, the
#   node leader creates `<prefix>_locals`. Two processes that build a dataset at once (two
#   runs, parallel tests, two "nodes" on one machine) find the same prefix and the second
#   fails with FileExistsError (tests/training/shards/test_shared_memory.py). Here the node
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
    versions.require(versions.STREAMING, HOOKS)
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
    versions.require(versions.STREAMING, HOOKS)
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
    versions.require(versions.STREAMING, HOOKS)
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

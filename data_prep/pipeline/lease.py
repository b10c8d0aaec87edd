"""One conversion at a time per dataset: a lease object in the remote, REMOTE/SPLIT/.lock.json.

Two runs into the same remote would each decide what to redo from their own listing and
delete parts the other wrote or published. So a run first creates the lease object with the
remote's conditional create (`Remote.create`: O_EXCL locally, If-None-Match: * on S3 and
OCI): of two runs starting at once, exactly one gets it; the other stops in one line naming
the holder (run id, host, pid, start time, last heartbeat). The holder rewrites its heartbeat
every HEARTBEAT_S seconds from a thread, and removes the lease when it ends, also on failure.

A lease left by a run that cannot end it (kill -9, a lost machine) is taken over, with one
line saying so, when its process is gone from this very host (pid and process start time),
or when its heartbeat is older than `stale_after` (default STALE_AFTER_S; any host).
Taking over re-reads the lease, deletes it only if it is still the stale one and creates a
new one; a run that finds its lease gone or replaced (`check`) stops before it deletes or
publishes anything more.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone

from data_prep.storage import Remote

LOCK = '.lock.json'
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0   # no heartbeat for 10 minutes: the holder is gone
SETTLE_S = 2.0          # after a takeover: the lease must still be ours this much later


# The heartbeat talks to the remote from a thread while the driver forks its workers: a fork
# in the middle of a request would hand the child a client lock held forever. Forks wait
# for the beat in progress.
_BEAT_LOCK = threading.Lock()
os.register_at_fork(before=_BEAT_LOCK.acquire, after_in_parent=_BEAT_LOCK.release,
                    after_in_child=_BEAT_LOCK.release)


class LeaseError(RuntimeError):
    """The dataset is being converted by another run, or this run lost its lease. One line."""


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _describe(holder: dict, now: float) -> str:
    beat = now - holder.get('heartbeat_unix', 0)
    return (f"run {holder.get('run_id')} on host {holder.get('host')} (pid {holder.get('pid')}), "
            f"started {_utc(holder.get('started_unix', 0))}, last heartbeat {beat:.0f} s ago")


class Lease:
    """The lease on REMOTE/SPLIT: `acquire()`, then `check()` before destructive steps;
    `release()` at the end. Also a context manager."""

    def __init__(self, remote: Remote, split: str, stale_after: float = STALE_AFTER_S,
                 heartbeat: float = HEARTBEAT_S):
        self.remote, self.name = remote, f'{split}/{LOCK}'
        self.url = remote.join(self.name)
        self.stale_after, self.heartbeat_s = stale_after, heartbeat
        now = time.time()
        self.record = {'run_id': uuid.uuid4().hex[:12], 'host': socket.gethostname(),
                       'pid': os.getpid(), 'pid_start': _proc_start(os.getpid()),
                       'started': _utc(now), 'started_unix': now, 'heartbeat_unix': now,
                       'command': ' '.join(sys.argv)[:300]}
        self.run_id = self.record['run_id']
        self.took_over: str | None = None  # the line said when a stale lease was taken over
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ reading the holder
    def _read(self) -> tuple[bytes, dict] | None:
        try:
            data = self.remote.read(self.name)
        except FileNotFoundError:
            return None
        try:
            return data, json.loads(data)
        except ValueError:
            return data, {}  # unreadable: judged by its (missing) heartbeat, i.e. stale

    def _stale_because(self, holder: dict, now: float) -> str | None:
        if holder.get('host') == socket.gethostname() and holder.get('pid'):
            pid = int(holder['pid'])
            start = _proc_start(pid)
            if start is None or (holder.get('pid_start') and start != holder['pid_start']):
                return f'its process {pid} is gone from this host'
        age = now - float(holder.get('heartbeat_unix', 0))
        if age > self.stale_after:
            return f'no heartbeat for {age / 60:.0f} min'
        return None

    # ------------------------------------------------------------------ the life cycle
    def acquire(self) -> Lease:
        """Takes the lease, or raises LeaseError naming the run that holds it."""
        for _ in range(3):
            if self.remote.create(self.name, self._data()):
                break
            found = self._read()
            if found is None:
                continue  # released between our create and read: try again
            data, holder = found
            if holder.get('run_id') == self.run_id:
                break  # our own create, retried by the backend after a lost answer
            now = time.time()
            why = self._stale_because(holder, now)
            if why is None:
                raise LeaseError(f'{self.remote.join(self.name.rsplit("/", 1)[0])} is being '
                                 f'converted by another {_describe(holder, now)}; run again '
                                 f'once it has finished (its lease {self.url} is taken over '
                                 f'when its process is gone from this host or has no '
                                 f'heartbeat for {self.stale_after / 60:.0f} min)')
            again = self._read()
            if again is None or again[0] != data:
                continue  # someone else took it over or released it: look again
            self.remote.delete(self.name)
            if self.remote.create(self.name, self._data()):
                time.sleep(SETTLE_S)  # a second taker that raced us shows up by now
                mine = self._read()
                if mine is None or mine[1].get('run_id') != self.run_id:
                    continue
                self.took_over = (f'took over the stale lease {self.url} of '
                                  f'{_describe(holder, now)}: {why}')
                break
        else:
            raise LeaseError(f'could not take the lease {self.url}: other runs keep taking '
                             f'it; run again later')
        self._thread = threading.Thread(target=self._beat, name='lease-heartbeat', daemon=True)
        self._thread.start()
        return self

    def _data(self) -> bytes:
        return json.dumps(self.record, indent=1).encode()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                with _BEAT_LOCK:
                    found = self._read()
                    if found is None or found[1].get('run_id') != self.run_id:
                        self.lost = self._lost_line(found)
                        return
                    self.record['heartbeat_unix'] = time.time()
                    self.remote.write(self.name, self._data())
            except Exception:
                pass  # a flaky remote: the next beat tries again; check() reads for itself

    def _lost_line(self, found: tuple[bytes, dict] | None) -> str:
        if found is None:
            return f'this run lost its lease: {self.url} was removed by someone else'
        return (f'this run lost its lease {self.url} to {_describe(found[1], time.time())}; '
                f'stopped so as not to interfere with it')

    def check(self) -> None:
        """Raises LeaseError unless the lease in the remote is still this run's."""
        if self.lost is None:
            found = self._read()
            if found is None or found[1].get('run_id') != self.run_id:
                self.lost = self._lost_line(found)
        if self.lost:
            raise LeaseError(self.lost)

    def release(self) -> None:
        """Stops the heartbeat and removes the lease if it is still this run's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            try:
                found = self._read()
                if found is not None and found[1].get('run_id') == self.run_id:
                    self.remote.delete(self.name)
            except Exception:
                pass  # left behind: the next run takes it over (our pid is gone)

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

"""Dataset repositories on disk, described the way the hub describes them.

A repository is a folder, `<data>/datasets/<org>/<name>/`; its files (symlinks are followed)
are the repository's files at one commit. Ids are computed as git and git-lfs would:
a file's `oid` is its git blob id (of its LFS pointer, for LFS files), an LFS file also has
the sha256 of its bytes, and the commit sha is a hash of every path and oid, so the same
files always give the same commit (a resumed conversion finds its parts again after the hub
restarts) and changed files give a new one.

`make_c4_repo` lays out allenai/c4 from the offline sample (see its docstring for the names).
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# Stored with git-lfs on the hub (its .gitattributes): served through a redirect, like a CDN.
LFS_SUFFIXES = ('.gz', '.zst', '.bz2', '.xz', '.parquet', '.arrow', '.bin', '.tar', '.zip')
C4_TRAIN_FILES, C4_VALIDATION_FILES = 1024, 8
_SAMPLE_NAME = re.compile(r'^c4-(train|validation)\.(\d{5})-of-(\d{5})\.json\.gz$')
C4_README = """---
pretty_name: C4
language:
- en
license:
- odc-by
task_categories:
- text-generation
configs:
- config_name: en
  data_files:
  - split: train
    path: en/c4-train.*-of-01024.json.gz
  - split: validation
    path: en/c4-validation.*-of-00008.json.gz
---

# C4 (local stand-in)

The `en` subset of allenai/c4, as served by local_services.hf_hub: same repository
layout, file names and records; the files are the offline sample's (`make sample`).
"""


@dataclass(frozen=True)
class Entry:
    path: str                   # path in the repository, '/'-separated
    file: Path                  # where the bytes are
    size: int
    oid: str                    # git blob id (of the LFS pointer for LFS files)
    lfs_sha256: str | None      # sha256 of the bytes, LFS files only
    pointer_size: int = 0


@dataclass
class Snapshot:
    sha: str
    entries: dict[str, Entry]
    dirs: dict[str, str]        # folder path -> tree id
    modified: float
    by_lfs: dict[str, Entry] = field(default_factory=dict)


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return (f'version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\n'
            f'size {size}\n').encode()


class Repo:
    """One dataset repository folder. `snapshot()` re-reads it at most once a second, and
    hashes a file again only when its size, mtime or inode changed."""

    def __init__(self, repo_id: str, root: Path):
        self.repo_id, self.root = repo_id, root
        self._lock = threading.Lock()
        self._snap: Snapshot | None = None
        self._snap_t = 0.0
        self._hashes: dict[tuple, tuple[str, str]] = {}  # stat key -> (sha1 blob id, sha256)

    def snapshot(self) -> Snapshot:
        with self._lock:
            if self._snap is None or time.monotonic() - self._snap_t > 1.0:
                self._snap, self._snap_t = self._scan(), time.monotonic()
            return self._snap

    def _hash(self, path: Path, st: os.stat_result) -> tuple[str, str]:
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        if key not in self._hashes:
            sha256, blob = hashlib.sha256(), hashlib.sha1(b'blob %d\0' % st.st_size)
            with open(path, 'rb') as f:
                while chunk := f.read(1 << 22):
                    sha256.update(chunk)
                    blob.update(chunk)
            self._hashes[key] = (blob.hexdigest(), sha256.hexdigest())
        return self._hashes[key]

    def _scan(self) -> Snapshot:
        entries: dict[str, Entry] = {}
        modified = 0.0
        for dirpath, dirnames, files in os.walk(self.root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
            for name in sorted(files):
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except OSError:  # a dangling link: not part of the repository
                    continue
                rel = path.relative_to(self.root).as_posix()
                blob, sha256 = self._hash(path, st)
                modified = max(modified, st.st_mtime)
                if name.endswith(LFS_SUFFIXES):
                    pointer = _lfs_pointer(sha256, st.st_size)
                    entries[rel] = Entry(rel, path, st.st_size, _git_blob_id(pointer), sha256,
                                         len(pointer))
                else:
                    entries[rel] = Entry(rel, path, st.st_size, blob, None)
        dirs: dict[str, list[str]] = {}
        for rel, e in entries.items():
            parts = rel.split('/')
            for i in range(1, len(parts)):
                dirs.setdefault('/'.join(parts[:i]), []).append(f'{rel}\0{e.oid}')
        tree_ids = {d: hashlib.sha1('\n'.join(sorted(v)).encode()).hexdigest()
                    for d, v in dirs.items()}
        sha = hashlib.sha1('\n'.join(f'{p}\0{e.oid}' for p, e in sorted(entries.items()))
                           .encode()).hexdigest()
        return Snapshot(sha, entries, tree_ids, modified or time.time(),
                        {e.lfs_sha256: e for e in entries.values() if e.lfs_sha256})


class Repos:
    """The dataset repositories under `<data>/datasets/<org>/<name>/`."""

    def __init__(self, data_dir: Path):
        self.base = Path(data_dir).resolve() / 'datasets'
        self._repos: dict[str, Repo] = {}
        self._lock = threading.Lock()

    def get(self, repo_id: str) -> Repo | None:
        parts = repo_id.split('/')
        if len(parts) != 2 or any(p in ('', '.', '..') or p.startswith('.') for p in parts):
            return None
        root = self.base / parts[0] / parts[1]
        if not root.is_dir():
            return None
        with self._lock:
            return self._repos.setdefault(repo_id, Repo(repo_id, root))


def c4_name(sample_name: str) -> str | None:
    """The allenai/c4 path a sample file is served under, or None if it is not a sample file.

    The sample writes `c4-train.0000N-of-0000K.json.gz`; allenai/c4 names its `en` files
    `en/c4-train.0NNNN-of-01024.json.gz` and `en/c4-validation.0NNNN-of-00008.json.gz`. The
    index is kept and the total becomes the real one, so the README's `configs:` patterns are
    allenai/c4's own and the sample's K files are the first K of the real names."""
    m = _SAMPLE_NAME.match(sample_name)
    if not m:
        return None
    split, index = m[1], int(m[2])
    total = C4_TRAIN_FILES if split == 'train' else C4_VALIDATION_FILES
    if index >= total:
        raise ValueError(f'{sample_name}: allenai/c4 en has only {total} {split} files')
    return f'en/c4-{split}.{index:05d}-of-{total:05d}.json.gz'


def make_c4_repo(data_dir, sample_dir, repo_id: str = 'allenai/c4') -> Path:
    """Lays out `repo_id` under `data_dir` from the sample: its README.md (the `configs:`
    mapping) and a symlink per sample file, named as in allenai/c4 (see `c4_name`). Links
    that no longer match the sample are replaced, so re-running it after `make sample`
    changes the files brings the repository up to date."""
    sample = Path(sample_dir).resolve()
    files = sorted(p for p in sample.glob('c4-*.json.gz') if c4_name(p.name))
    if not files:
        raise FileNotFoundError(f'no C4 sample files (c4-train.*.json.gz) in {sample}: '
                                f'run `make sample` first')
    root = Path(data_dir).resolve() / 'datasets' / repo_id
    (root / 'en').mkdir(parents=True, exist_ok=True)
    readme = root / 'README.md'
    if not readme.exists() or readme.read_text() != C4_README:
        readme.write_text(C4_README)
    wanted = {c4_name(p.name): p for p in files}
    for old in (root / 'en').iterdir():  # only our links; a file put there by hand stays
        if old.is_symlink() and wanted.get(f'en/{old.name}') != old.resolve():
            old.unlink()
    for rel, src in wanted.items():
        link = root / rel
        if not link.is_symlink():
            link.symlink_to(src)
    return root

"""A local folder (or file:// URL) as a Remote: what tests, the bench and a shared disk use."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from data_prep.storage.base import Remote


class LocalRemote(Remote):

    def __init__(self, url: str):
        self.url = url
        self.root = Path(url[len('file://'):] if url.startswith('file://') else url)
        self.local_root = str(self.root)

    def list(self, prefix: str = '') -> dict[str, int]:
        # Walk only the deepest folder the prefix names, then filter on the whole prefix.
        folder, _, _ = prefix.rpartition('/')
        base = self.root / folder if folder else self.root
        if not base.is_dir():
            return {}
        out = {}
        for p in sorted(base.rglob('*')):
            name = p.relative_to(self.root).as_posix()
            if name.startswith(prefix) and p.is_file():
                out[name] = p.stat().st_size
        return out

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f'{path.name}.{os.getpid()}.tmp')
        tmp.write_bytes(data)
        os.replace(tmp, path)  # readers never see half a file

    def create(self, name: str, data: bytes) -> bool:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f'{path.name}.{os.getpid()}.{id(data):x}.tmp')
        tmp.write_bytes(data)
        try:
            os.link(tmp, path)  # fails if `path` exists; readers never see half a file
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.root / prefix, ignore_errors=True)

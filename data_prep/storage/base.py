"""The `Remote` contract: one small interface over the places a dataset can live.

streaming's uploaders and downloaders move shards; a `Remote` answers what they do not: which
objects are there and how big (verification, bucket stats, resuming a conversion), and small
reads and writes of index and manifest files. This module imports no backend; each backend is
one module beside it (local.py, s3.py, oci/), chosen by `data_prep.storage.open_remote`.

Errors, as Composer's object stores separate them:
- `RemoteError`: the remote cannot be used as given (bad URL, missing bucket, missing or
  broken credentials). Its message is one line for a person and holds no secret.
- `TransientError` (a `RemoteError`): the backend did not answer after the backend's own
  retries (endpoint down, network). Running again later may succeed.
- `FileNotFoundError` from `read`, for an object that is not there.
- `NotImplementedError` from `create` on a backend that cannot create atomically.
Anything else is a bug or an answer the backend did not expect, and propagates as is.
"""
from __future__ import annotations

from typing import Optional

from data_prep.errors import first_line


class RemoteError(RuntimeError):
    """A remote that cannot be used: bad URL, missing bucket, missing credentials. One line."""


class TransientError(RemoteError):
    """The backend did not answer after its retries; the same call may succeed later."""


class Remote:
    """A dataset location: a local folder, s3://bucket/prefix or oci://bucket@namespace/prefix.

    Names are relative to the remote's URL and use '/'. Implementations retry transient
    failures themselves and raise the errors described in the module docstring.
    """

    url: str
    #: The folder on this machine when the remote is a local path (MDSWriter writes into it
    #: directly); None for object stores, whose shards are staged locally and uploaded.
    local_root: Optional[str] = None

    def list(self, prefix: str = '') -> dict[str, int]:
        """Name -> size in bytes of every object whose name starts with `prefix`, in one
        (paged) listing."""
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        """The whole object; FileNotFoundError if there is none."""
        raise NotImplementedError

    def write(self, name: str, data: bytes) -> None:
        """Store `data` as `name`, replacing any object of that name. A reader sees the old
        object or the new one, whole, never a part."""
        raise NotImplementedError

    def create(self, name: str, data: bytes) -> bool:
        """Store `data` as `name` only if no object of that name exists, atomically: True if
        this call created it; False if an object of that name was already there (it is left
        as it was). Of concurrent creators of one name exactly one gets True, and a reader
        sees no object or the whole new one. The building block for locks and leases; put
        something unique to the caller in `data` (an owner id): after a retried request whose
        first answer was lost, an object holding exactly `data` is taken as this call's own.
        Backends: local (a hard link, which fails if the name exists), oci (If-None-Match: *),
        s3 (If-None-Match: *; the S3 server must honour it: AWS since 2024-08, moto 5)."""
        raise NotImplementedError(f'{type(self).__name__} cannot create objects atomically')

    def delete(self, name: str) -> None:
        """Remove the object; one that is already gone is not an error."""
        raise NotImplementedError

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under `prefix/`."""
        for name in self.list(prefix.rstrip('/') + '/'):
            self.delete(name)

    def join(self, *parts: str) -> str:
        """The URL of `parts` under this remote, as streaming expects it."""
        return '/'.join([self.url.rstrip('/'), *(p.strip('/') for p in parts if p)])


def list_checked(remote: Remote, prefix: str = '') -> dict[str, int]:
    """`remote.list(prefix)`; an error the backend did not translate becomes one RemoteError
    line naming the remote (backends translate credentials, bucket and endpoint errors)."""
    try:
        return remote.list(prefix)
    except RemoteError:
        raise
    except Exception as exc:
        raise RemoteError(f'cannot list {remote.url}: {first_line(exc)}') from None

"""oci:// for Composer: an ObjectStore over our OCI client (data_prep.storage.oci.client).

Composer's own OCIObjectStore reads only ~/.oci/config (no instance, resource principal or
session-token auth), ignores OCI_OBJECT_STORAGE_ENDPOINT and downloads a whole object to learn
its size. This one hands every request to the client the data path uses: every OCI_CLI_AUTH
kind and profile, the endpoint override, the size from one HEAD, uploads above
OCI_MULTIPART_THRESHOLD_MB as parallel multipart (aborted on failure), downloads to a temp
file that is renamed only when whole, and retries of 429/5xx/connection errors. Composer
builds it wherever it makes an oci:// store (see training.checkpoints.install).

The namespace: Composer strips `@namespace` from `oci://bucket@namespace/...` before it builds
a store (composer.utils.file_helpers.parse_uri), so the store gets the bucket alone and looks
its namespace up in OCI_BUCKET_NAMESPACES (`bucket@namespace,...`, set by install() from the
recipe's URLs; an environment variable so Composer's spawned upload processes see it too);
a bucket not named there is in the tenancy's own namespace (asked once per process).
"""
from __future__ import annotations

import os
import pathlib
from typing import Callable, Optional, Union

from composer.utils.object_store import ObjectStore, ObjectStoreTransientError

from data_prep.storage.base import RemoteError, TransientError
from data_prep.storage.oci.client import (
    delete_object,
    download_file,
    explain,
    is_transient,
    list_objects,
    namespace,
    object_size,
    upload_file,
)

NAMESPACES_ENV = 'OCI_BUCKET_NAMESPACES'
# A whole download (one checkpoint file) must end within this; each read has its own timeout.
DOWNLOAD_TIMEOUT_ENV = 'OCI_CHECKPOINT_DOWNLOAD_TIMEOUT_S'


def namespaces() -> dict[str, str]:
    """bucket -> namespace, from OCI_BUCKET_NAMESPACES."""
    found = {}
    for item in filter(None, (os.environ.get(NAMESPACES_ENV) or '').split(',')):
        bucket, _, ns = item.strip().partition('@')
        if bucket and ns:
            found[bucket] = ns
    return found


class OCIStore(ObjectStore):
    """Composer ObjectStore for an OCI bucket through our client. Object names are full names
    in the bucket (with `prefix` in front when one is given), as Composer's OCIObjectStore."""

    def __init__(self, bucket: str, prefix: str = '') -> None:
        bucket, _, ns = bucket.strip('/').partition('@')
        self.bucket = bucket
        self._ns = ns or namespaces().get(bucket)
        self.prefix = prefix.strip('/') + '/' if prefix.strip('/') else ''

    @property
    def namespace(self) -> str:
        return namespace(self._ns)

    def _name(self, object_name: str) -> str:
        return self.prefix + object_name

    def get_uri(self, object_name: str) -> str:
        # Composer reads the URI back with parse_uri (which drops the namespace) to build the
        # store that loads a checkpoint, so bucket@namespace here is for people and logs.
        where = f'{self.bucket}@{self._ns}' if self._ns else self.bucket
        return f'oci://{where}/{self._name(object_name)}'

    def get_object_size(self, object_name: str) -> int:
        with _translated(self):
            return object_size(self.bucket, self.namespace, self._name(object_name))

    def upload_object(self, object_name: str, filename: Union[str, pathlib.Path],
                      callback: Optional[Callable[[int, int], None]] = None, **kwargs) -> None:
        with _translated(self):
            upload_file(str(filename), self.bucket, self.namespace, self._name(object_name))
        if callback:
            size = os.path.getsize(filename)
            callback(size, size)

    def download_object(self, object_name: str, filename: Union[str, pathlib.Path],
                        overwrite: bool = False,
                        callback: Optional[Callable[[int, int], None]] = None) -> None:
        if os.path.exists(filename) and not overwrite:
            raise FileExistsError(f'The file at {filename} already exists and overwrite is '
                                  f'set to False')
        url = f'oci://{self.bucket}@{self.namespace}/{self._name(object_name)}'
        timeout = float(os.environ.get(DOWNLOAD_TIMEOUT_ENV) or 6 * 3600)
        with _translated(self):
            download_file(url, str(filename), timeout)
        if callback:
            size = os.path.getsize(filename)
            callback(size, size)

    def list_objects(self, prefix: Optional[str] = None) -> list[str]:
        with _translated(self):
            return sorted(list_objects(self.bucket, self.namespace, self._name(prefix or '')))

    def object_sizes(self, prefix: str = '') -> dict[str, int]:
        """Not in Composer's interface: name -> size of every object under `prefix` (one
        listing; bucket_keep reports each checkpoint's bytes from it)."""
        with _translated(self):
            return list_objects(self.bucket, self.namespace, self._name(prefix))

    def delete_object(self, object_name: str) -> None:
        """Not in Composer's interface: keep-N in the bucket (keep.py) deletes through it."""
        with _translated(self):
            delete_object(self.bucket, self.namespace, self._name(object_name))

    def check(self, folder: str = '') -> None:
        """One cheap listing in `folder`: the bucket exists, the credentials are accepted, the
        endpoint answers. Any failure is a RemoteError of one line."""
        probe = '/'.join(p for p in (folder.strip('/'), '.probe-') if p)
        try:
            list_objects(self.bucket, self.namespace, self._name(probe))
        except RemoteError:
            raise
        except Exception as e:
            raise explain(e, self.bucket, lambda: self.namespace) or RemoteError(
                f'cannot list {self.get_uri("")}: {type(e).__name__}: '
                f'{(str(e).strip().splitlines() or [""])[0]}') from None


class _translated:
    """Errors as Composer's callers expect them: FileNotFoundError passes; a missing bucket or
    refused credentials is a RemoteError of one line; what our client's retries could not get
    through (no answer, 429, 5xx) is ObjectStoreTransientError, which Composer retries again."""

    def __init__(self, store: OCIStore):
        self.store = store

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if e is None or isinstance(e, (FileNotFoundError, FileExistsError)):
            return False
        if isinstance(e, TransientError) or (isinstance(e, Exception) and is_transient(e)):
            raise ObjectStoreTransientError(f'{self.store.get_uri("")}: {e}') from e
        if isinstance(e, Exception) and not isinstance(e, RemoteError):
            err = explain(e, self.store.bucket, lambda: self.store.namespace)
            if err:
                raise err from e
        return False

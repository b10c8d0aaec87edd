"""oci://bucket[@namespace]/prefix as a Remote, through the shared client (client.py)."""
from __future__ import annotations

import io

from data_prep.storage.base import Remote
from data_prep.storage.oci.client import (
    client,
    delete_object,
    explain,
    fetch,
    is_not_found,
    is_transient,
    list_objects,
    md5_b64,
    namespace,
    parse_url,
    retry,
)


class OCIRemote(Remote):

    def __init__(self, url: str):
        self.url = url.rstrip('/')
        self.bucket, self._ns, self.prefix = parse_url(url)

    @property
    def namespace(self) -> str:
        return namespace(self._ns)

    def _key(self, name: str) -> str:
        return f'{self.prefix}/{name}' if self.prefix else name

    def _what(self, name: str) -> str:
        return f'oci://{self.bucket}@{self.namespace}/{self._key(name)}'

    def list(self, prefix: str = '') -> dict[str, int]:
        root = f'{self.prefix}/' if self.prefix else ''
        try:
            found = list_objects(self.bucket, self.namespace, root + prefix)
        except Exception as e:
            err = explain(e, self.bucket, lambda: self.namespace)
            if err:
                raise err from None
            raise
        return {name[len(root):]: size for name, size in found.items()}

    def read(self, name: str) -> bytes:
        what = f'read {self._what(name)}'

        def attempt():
            buf = io.BytesIO()
            fetch(self.bucket, self.namespace, self._key(name), buf, 60.0,
                   float('inf'), what)
            return buf.getvalue()
        try:
            return retry(attempt, what)
        except Exception as e:
            if is_not_found(e):
                raise FileNotFoundError(f'{self._what(name)}: object not found') from None
            raise

    def write(self, name: str, data: bytes) -> None:
        md5 = md5_b64(data)
        retry(lambda: client().put_object(self.namespace, self.bucket, self._key(name), data,
                                           content_length=len(data), content_md5=md5),
               f'write {self._what(name)}')

    def create(self, name: str, data: bytes) -> bool:
        import oci
        md5, key, landed = md5_b64(data), self._key(name), []

        def put():
            try:
                client().put_object(self.namespace, self.bucket, key, data,
                                    content_length=len(data), content_md5=md5, if_none_match='*')
            except Exception as e:
                if is_transient(e):  # no answer, or a 5xx after it: it may have landed
                    landed.append(e)
                raise
        try:
            retry(put, f'create {self._what(name)}')
        except oci.exceptions.ServiceError as e:
            if e.status != 412:
                raise
            if landed:  # an earlier attempt may be the one that created it
                try:
                    return self.read(name) == data
                except FileNotFoundError:
                    return False
            return False
        return True

    def delete(self, name: str) -> None:
        delete_object(self.bucket, self.namespace, self._key(name))

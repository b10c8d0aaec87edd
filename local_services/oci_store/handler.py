"""The local OCI store's HTTP side: the request handler and the server.

The part of the Object Storage REST API (20160918) the oci SDK uses, over `Storage`
(storage.py), with the knobs for latency, bandwidth and faults of shaped_http (shared with the
local hub). Started and driven through the
package's CLI and Python API (cli.py); this module is what runs inside the server process.
"""
from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote

from local_services.oci_store.auth import load_public_key, verify
from local_services.oci_store.storage import (
    CONTENT_HEADERS,
    LIST_FIELDS,
    MAX_USER_METADATA_BYTES,
    NAMESPACE,
    Storage,
    StoreError,
    check_write,
    etag_matches,
)
from local_services.shaped_http import (
    Buffer,
    Knobs,
    RequestError,
    ShapedHandler,
    ShapedServer,
)

_INJECTED = {503: 'ServiceUnavailable', 500: 'InternalServerError', 429: 'TooManyRequests'}


class Handler(ShapedHandler):
    server_version = 'local-oci-store'
    request_id_header = 'opc-request-id'

    def _begin(self):
        self.want_sha256 = None

    def _admit(self):
        server: StoreServer = self.server
        self.want_sha256 = verify(self.command, self.path, self.headers, server.public_key,
                                  server.fingerprint)

    def _injected(self, status: int) -> Exception:
        return StoreError(status, _INJECTED[status], f'injected fault {status}')

    def _answer_error(self, e: Exception):
        if isinstance(e, RequestError):  # StoreError, or a bad Range
            self._error(e.status, e.code, e.message)
        elif isinstance(e, OSError) and e.errno == errno.ENAMETOOLONG:
            self._error(400, 'InvalidParameter', f'name too long for the file system of '
                                                 f'this store: {e.strerror}')
        else:  # a bug in the store must not look like a network fault
            self._error(500, 'InternalServerError', repr(e))

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = ShapedHandler._dispatch

    def _error(self, status: int, code: str, message: str):
        if self.started:  # the answer is under way: all we can do is stop
            self.close_connection = True
            return
        self._discard_body()
        self._json(status, {'code': code, 'message': message})

    def _receive(self, sink, md5=None) -> int:
        """Copy the request body to `sink`; refuse a body that does not match the
        x-content-sha256 the client signed."""
        sha = hashlib.sha256() if self.want_sha256 else None
        self._read_body(sink, *[d for d in (md5, sha) if d is not None])
        if sha is not None and base64.b64encode(sha.digest()).decode() != self.want_sha256:
            raise StoreError(401, 'NotAuthenticated', 'The body does not match the signed '
                             'x-content-sha256')
        return self.received

    def _body_json(self) -> dict:
        buf = Buffer()
        self._receive(buf)
        try:
            body = json.loads(buf.data or b'{}')
        except ValueError:
            raise StoreError(400, 'InvalidParameter', 'request body is not JSON')
        if not isinstance(body, dict):
            raise StoreError(400, 'InvalidParameter', 'request body is not a JSON object')
        return body

    def _receive_file(self) -> tuple[Path, str]:
        """Store the body in a temp file; check it against Content-MD5 when the client sent one."""
        md5 = hashlib.md5()
        storage: Storage = self.server.storage
        with storage.tmp_file() as f:
            try:
                self._receive(f, md5)
            except BaseException:
                os.unlink(f.name)
                raise
        digest = base64.b64encode(md5.digest()).decode()
        want = self.headers.get('Content-MD5')
        if want and want != digest:
            os.unlink(f.name)
            raise StoreError(400, 'InvalidContentMD5', 'the body does not match Content-MD5')
        return Path(f.name), digest

    # routes ---------------------------------------------------------------
    def _route(self, path: str):
        storage: Storage = self.server.storage
        m = self.command
        parts = path.split('/')  # '', 'n', ns, 'b', bucket, kind, name...
        if len(parts) >= 2 and parts[1] == 'n' and len(parts) <= 3 and not ''.join(parts[2:]):
            return self._json(200, NAMESPACE) if m == 'GET' else self._no_route()
        if len(parts) < 4 or parts[1] != 'n' or parts[3] != 'b':
            return self._no_route()
        if unquote(parts[2]) != NAMESPACE:
            raise StoreError(404, 'NamespaceNotFound', f'namespace {unquote(parts[2])!r} not '
                             f'found; this store serves {NAMESPACE!r}')
        bucket = unquote(parts[4]) if len(parts) > 4 else ''
        if not bucket:  # /n/ns/b/
            if m == 'POST':
                body = self._body_json()
                info = storage.create_bucket(body.get('name', ''),
                                             body.get('compartmentId', 'local'))
                return self._json(200, info, {'ETag': info['etag']})
            if m == 'GET':
                return self._json(200, storage.list_buckets())
            return self._no_route()
        kind = parts[5] if len(parts) > 5 else None
        name = unquote('/'.join(parts[6:])) if len(parts) > 6 else ''
        if kind is None:
            if m in ('HEAD', 'GET'):
                info = storage.bucket_info(bucket)
                return self._json(200, info, {'ETag': info['etag']})
            if m == 'DELETE':
                storage.delete_bucket(bucket)
                return self._empty(204)
        elif kind == 'o' and not name and m == 'GET':
            return self._list(storage, bucket)
        elif kind == 'o' and name:
            return self._object(storage, m, bucket, name)
        elif kind == 'u':
            return self._multipart(storage, m, bucket, name)
        return self._no_route()

    def _no_route(self):
        action = self.route.partition('/actions/')[2]
        if action:  # renameObject, copyObject, restoreObjects, ...
            raise StoreError(404, 'NotFound', f'{action} is not served by this local OCI store '
                             f'(it serves the namespace, buckets, objects and multipart uploads)')
        raise StoreError(404, 'NotFound', f'{self.command} {self.route} is not served here')

    def _list(self, storage: Storage, bucket: str):
        q = self.query
        try:
            limit = int(q.get('limit', 1000))
        except ValueError:
            raise StoreError(400, 'InvalidParameter', f'limit must be an integer from 1 to '
                             f'1000, got {q["limit"]!r}') from None
        known = {f.lower(): f for f in LIST_FIELDS}
        fields = [f.strip().lower() for f in q.get('fields', 'name').split(',') if f.strip()]
        bad = [f for f in fields if f not in known]
        if bad:
            raise StoreError(400, 'InvalidParameter', f'unknown fields {",".join(bad)}: use '
                             f'{",".join(LIST_FIELDS)}')
        return self._json(200, storage.list_objects(
            bucket, q.get('prefix', ''), q.get('start', ''), q.get('end', ''),
            q.get('startAfter', ''), min(limit, 1000), q.get('delimiter', ''),
            tuple(known[f] for f in fields)))

    def _upload_meta(self, details: dict | None = None) -> dict:
        """Content headers and opc-meta-* user metadata to keep with the object: from the
        headers of a PUT, or the JSON details of a multipart upload."""
        if details is None:
            meta = {k: self.headers[h] for k, h in CONTENT_HEADERS.items() if self.headers.get(h)}
            user = {k.lower(): v for k, v in self.headers.items()
                    if k.lower().startswith('opc-meta-')}
        else:
            meta = {k: details[k] for k in CONTENT_HEADERS if details.get(k)}
            user = {k.lower() if k.lower().startswith('opc-meta-') else f'opc-meta-{k.lower()}':
                    str(v) for k, v in (details.get('metadata') or {}).items()}
        size = sum(len(k.encode()) + len(v.encode()) for k, v in user.items())
        if size > MAX_USER_METADATA_BYTES:
            raise StoreError(400, 'InvalidParameter', f'opc-meta-* metadata is {size} bytes, '
                             f'more than the {MAX_USER_METADATA_BYTES} OCI allows')
        if user:
            meta['metadata'] = {k[len('opc-meta-'):]: v for k, v in user.items()}
        return meta

    def _conditions(self) -> tuple[str | None, str | None]:
        return self.headers.get('If-Match'), self.headers.get('If-None-Match')

    def _object_headers(self, meta: dict) -> dict:
        headers = {'ETag': meta['etag'], 'Accept-Ranges': 'bytes',
                   'Content-MD5': meta.get('md5'), 'opc-multipart-md5': meta.get('multipartMd5'),
                   'Last-Modified': formatdate(meta['timeModified'], usegmt=True),
                   'Content-Type': meta.get('contentType') or 'application/octet-stream'}
        headers.update((h, meta.get(k)) for k, h in CONTENT_HEADERS.items() if k != 'contentType')
        headers.update((f'opc-meta-{k}', v) for k, v in (meta.get('metadata') or {}).items())
        return headers

    def _object(self, storage: Storage, m: str, bucket: str, name: str):
        if m == 'PUT':
            path = storage.object_path(bucket, name)  # refuse a bad name before the body
            meta = self._upload_meta()
            if_match, if_none_match = self._conditions()
            if if_match is not None or if_none_match is not None:  # fail early; commit rechecks
                check_write(storage.current(bucket, path, name), if_match, if_none_match)
            tmp, md5 = self._receive_file()
            try:
                meta = storage.commit_file(bucket, name, tmp, {**meta, 'md5': md5},
                                           if_match, if_none_match)
            finally:
                tmp.unlink(missing_ok=True)
            return self._empty(200, {'ETag': meta['etag'], 'opc-content-md5': md5,
                                     'last-modified': formatdate(meta['timeModified'],
                                                                 usegmt=True)})
        if m == 'DELETE':
            storage.delete_object(bucket, name, self.headers.get('If-Match'))
            return self._empty(204)
        if m not in ('GET', 'HEAD'):
            return self._no_route()
        f, meta = storage.open_object(bucket, name)
        with f:
            self._serve_object(m, f, meta)

    def _serve_object(self, m: str, f, meta: dict):
        headers = self._object_headers(meta)
        if_match, if_none_match = self._conditions()
        if if_match is not None and not etag_matches(if_match, meta['etag']):
            raise StoreError(412, 'NoEtagMatch', f'If-Match {if_match!r} does not match the '
                             f'ETag of the object')
        if if_none_match is not None:
            if if_none_match.strip() == '*':
                raise StoreError(400, 'InvalidParameter', "If-None-Match: * is not allowed on "
                                 "GET or HEAD (OCI takes an ETag there)")
            if etag_matches(if_none_match, meta['etag']):
                return self._empty(304, {'ETag': meta['etag'],
                                         'Last-Modified': headers['Last-Modified']})
        start, length, status = self._byte_range(meta['size'], headers)
        if status == 206:
            headers['Content-MD5'] = None  # the md5 is of the whole object
        self._start(status, headers, length)
        if m == 'GET' and length:
            self._send_file(f, start, length)

    def _multipart(self, storage: Storage, m: str, bucket: str, name: str):
        upload_id = self.query.get('uploadId', '')
        if_match, if_none_match = self._conditions()
        if not name:
            if m == 'POST':
                body = self._body_json()
                target = body.get('object', '')
                meta = self._upload_meta(body)
                if if_match is not None or if_none_match is not None:
                    check_write(storage.current(bucket, storage.object_path(bucket, target),
                                                 target), if_match, if_none_match)
                    meta['conditions'] = {'ifMatch': if_match, 'ifNoneMatch': if_none_match}
                return self._json(200, storage.create_upload(bucket, target, meta))
            if m == 'GET':
                return self._json(200, storage.list_uploads(bucket))
            return self._no_route()
        if m == 'PUT':
            storage.upload_dir(bucket, upload_id, name)  # refuse an unknown upload before the body
            try:
                num = int(self.query.get('uploadPartNum', 0))
            except ValueError:
                num = 0
            if not 1 <= num <= 10000:
                raise StoreError(400, 'InvalidParameter', 'uploadPartNum must be 1..10000')
            tmp, md5 = self._receive_file()
            try:
                etag = storage.put_part(bucket, name, upload_id, num, tmp, md5)
            finally:
                tmp.unlink(missing_ok=True)
            return self._empty(200, {'ETag': etag, 'opc-content-md5': md5})
        if m == 'POST':
            body = self._body_json()
            meta = storage.commit_upload(bucket, name, upload_id,
                                         body.get('partsToCommit', []), if_match, if_none_match)
            return self._empty(200, {'ETag': meta['etag'],
                                     'opc-multipart-md5': meta['multipartMd5']})
        if m == 'DELETE':
            storage.abort_upload(bucket, name, upload_id)
            return self._empty(204)
        if m == 'GET':
            return self._json(200, storage.list_parts(bucket, name, upload_id))
        return self._no_route()


class StoreServer(ShapedServer):
    def __init__(self, data_dir, port: int, knobs: Knobs, log_path=None):
        super().__init__(port, Handler, knobs, log_path)
        self.storage = Storage(Path(data_dir))
        self.public_key, self.fingerprint = load_public_key(data_dir)

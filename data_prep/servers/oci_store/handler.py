"""The local OCI store's HTTP side: the request handler, the server and its knobs.

The part of the Object Storage REST API (20160918) the oci SDK uses, over `Storage`
(storage.py), with knobs for latency, bandwidth and faults. Started and driven through the
package's CLI and Python API (cli.py); this module is what runs inside the server process.
"""
from __future__ import annotations

import argparse
import base64
import errno
import hashlib
import json
import os
import random
import re
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from data_prep.env import env_value
from data_prep.servers.oci_store.auth import load_public_key, verify
from data_prep.servers.oci_store.storage import (
    CHUNK,
    CONTENT_HEADERS,
    LIST_FIELDS,
    MAX_USER_METADATA_BYTES,
    NAMESPACE,
    Storage,
    StoreError,
    check_write,
    etag_matches,
)

FAULT_KINDS = ('503', '500', '429', 'reset')
SETTLE_PATH = '/_local/settle'


# ----------------------------------------------------------------------------- knobs

@dataclass
class Knobs:
    """Network shaping and faults; each one also has an OCI_STORE_* environment variable."""
    latency_ms: float = 0.0       # added before every response (a bucket in another region)
    bandwidth_mbps: float = 0.0   # MB/s per connection, both directions; 0 = unlimited
    fault_rate: float = 0.0       # fraction of requests that fail
    fault_kinds: tuple = FAULT_KINDS
    seed: int | None = None       # makes the fault sequence repeatable
    fault_match: str = ''         # regex on "METHOD /path": only matching requests may fail
    idle_timeout_s: float = 60.0  # a client silent this long is dropped (its temp file too)
    shape_match: str = ''         # regex on "METHOD /path": only matching requests are shaped

    @classmethod
    def from_env(cls) -> 'Knobs':
        return cls(latency_ms=env_value('OCI_STORE_LATENCY_MS', 0.0, float),
                   bandwidth_mbps=env_value('OCI_STORE_BANDWIDTH_MBPS', 0.0, float),
                   fault_rate=env_value('OCI_STORE_FAULT_RATE', 0.0, float),
                   fault_kinds=env_value('OCI_STORE_FAULT_KINDS', FAULT_KINDS, _kinds),
                   seed=env_value('OCI_STORE_SEED', None, int),
                   fault_match=os.environ.get('OCI_STORE_FAULT_MATCH', ''),
                   idle_timeout_s=env_value('OCI_STORE_IDLE_TIMEOUT_S', 60.0, float),
                   shape_match=os.environ.get('OCI_STORE_SHAPE_MATCH', ''))

    def check(self) -> 'Knobs':
        if self.latency_ms < 0 or self.bandwidth_mbps < 0:
            raise ValueError('latency and bandwidth must be >= 0')
        if self.idle_timeout_s <= 0:
            raise ValueError(f'idle timeout must be > 0 seconds, got {self.idle_timeout_s}')
        if not 0 <= self.fault_rate <= 1:
            raise ValueError(f'fault rate must be between 0 and 1, got {self.fault_rate}')
        self.fault_kinds = _kinds(self.fault_kinds)
        for what, pattern in (('fault', self.fault_match), ('shape', self.shape_match)):
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f'{what} match {pattern!r} is not a regex: {e}')
        return self


def _kinds_arg(value: str) -> tuple:
    try:
        return _kinds(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def _kinds(value) -> tuple:
    kinds = tuple(k.strip() for k in (value.split(',') if isinstance(value, str) else value)
                  if k.strip())
    bad = [k for k in kinds if k not in FAULT_KINDS]
    if bad or not kinds:
        raise ValueError(f'fault kinds must be a comma list of {",".join(FAULT_KINDS)}, '
                         f'got {",".join(kinds) or "nothing"}')
    return kinds


# ----------------------------------------------------------------------------- HTTP

# A body left unread by an early answer is read off the connection up to this size (so it is
# not parsed as the next request); a larger one closes the connection instead.
DRAIN_LIMIT = 1 << 30


class _Reset(Exception):
    """Raised inside a handler to drop the connection with a TCP reset."""


class _TooBig(Exception):
    pass


class _Discard:
    """A sink that drops what it is given, up to DRAIN_LIMIT bytes."""

    def __init__(self):
        self.n = 0

    def write(self, b):
        self.n += len(b)
        if self.n > DRAIN_LIMIT:
            raise _TooBig()


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'  # keep-alive, as the SDK's connection pool expects
    server_version = 'local-oci-store'
    # Headers and body go out in separate writes: with Nagle's algorithm the body waits for
    # the client's delayed ACK of the headers, ~40 ms on every small answer.
    disable_nagle_algorithm = True

    def setup(self):
        # Socket timeout: a client that stops sending (or reading) is dropped, not waited on.
        self.timeout = self.server.knobs.idle_timeout_s
        super().setup()

    def log_message(self, fmt, *args):  # the JSON request log replaces stderr noise
        pass

    # plumbing -------------------------------------------------------------
    def _dispatch(self):
        self.t0, self.sent, self.received, self.fault = time.monotonic(), 0, 0, None
        self.status, self.shaped, self.started = 0, 0, False
        self.rate = self.server.knobs.bandwidth_mbps * 1e6  # bytes/s, 0 = unshaped
        self.body_started, self.body_done, self.want_sha256 = False, False, None
        server: StoreServer = self.server
        if self.path == SETTLE_PATH:  # not a store request: see RunningStore.requests
            server.settle()
            return self._empty(204)
        with server.busy:
            server.inflight += 1
        try:
            split = urlsplit(self.path)
            self.query = {k: v[0] for k, v in parse_qs(split.query).items()}
            self.route = split.path
            if server.knobs.shape_match and not re.search(
                    server.knobs.shape_match, f'{self.command} {unquote(split.path)}'):
                self.rate = 0
            if server.knobs.latency_ms:
                time.sleep(server.knobs.latency_ms / 1000)
            self.want_sha256 = verify(self.command, self.path, self.headers, server.public_key,
                                      server.fingerprint)
            self.fault = server.draw_fault(f'{self.command} {unquote(split.path)}')
            if self.fault in ('503', '500', '429'):
                code = {'503': 'ServiceUnavailable', '500': 'InternalServerError',
                        '429': 'TooManyRequests'}[self.fault]
                raise StoreError(int(self.fault), code, f'injected fault {self.fault}')
            if self.fault == 'reset' and self.command != 'GET':
                raise _Reset()
            self._route(split.path)
        except StoreError as e:
            self._error(e.status, e.code, e.message)
        except _Reset:
            self._reset()
        except (ConnectionError, BrokenPipeError, socket.timeout):
            self.close_connection = True
            self.status = self.status or 499
        except OSError as e:
            if e.errno == errno.ENAMETOOLONG:
                self._error(400, 'InvalidParameter', f'name too long for the file system of '
                                                     f'this store: {e.strerror}')
            else:
                self._error(500, 'InternalServerError', repr(e))
        except Exception as e:  # a bug in the store must not look like a network fault
            self._error(500, 'InternalServerError', repr(e))
        finally:
            server.log_request_line(self)
            with server.busy:
                server.inflight -= 1
                server.busy.notify_all()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _dispatch

    def _error(self, status: int, code: str, message: str):
        if self.started:  # the answer is under way: all we can do is stop
            self.close_connection = True
            return
        self._discard_body()
        self._json(status, {'code': code, 'message': message})

    def _discard_body(self):
        """An answer given before the body was read: read the body off the connection first,
        so that it is not taken for the next request, or close the connection."""
        if self.body_done:
            return
        length = self.headers.get('Content-Length')
        chunked = 'chunked' in (self.headers.get('Transfer-Encoding') or '').lower()
        if not chunked and (length is None or length.strip() == '0'):
            return
        if self.body_started or (not chunked and not (length.strip().isdigit()
                                                      and int(length) <= DRAIN_LIMIT)):
            self.close_connection = True  # part read, unreadable length, or too big
            return
        try:
            self._receive(_Discard(), check=False)
        except (OSError, ValueError, _TooBig):
            self.close_connection = True

    def _reset(self):
        self.status = self.status or 0
        self.close_connection = True
        try:  # SO_LINGER 0 makes close() send RST instead of FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack('ii', 1, 0))
            self.connection.close()
        except OSError:
            pass

    def _start(self, status: int, headers: dict, length: int):
        self.status, self.started = status, True
        self.send_response(status)
        self.send_header('opc-request-id', uuid.uuid4().hex)
        for k, v in headers.items():
            if v is not None:
                self.send_header(k, str(v))
        self.send_header('Content-Length', str(length))
        if self.close_connection:
            self.send_header('Connection', 'close')
        self.end_headers()

    def _json(self, status: int, obj, headers: dict | None = None):
        body = json.dumps(obj).encode()
        self._start(status, {'Content-Type': 'application/json', **(headers or {})}, len(body))
        if self.command != 'HEAD':
            self._send_bytes(body)

    def _empty(self, status: int, headers: dict | None = None):
        self._start(status, headers or {}, 0)

    def _throttle(self, nbytes: int):
        """Sleep so this connection stays under the configured MB/s."""
        rate = self.rate
        if rate:  # the clock starts with the body, so latency does not count as transfer
            if not self.shaped:
                self.shape_t0 = time.monotonic()
            self.shaped += nbytes
            ahead = self.shaped / rate - (time.monotonic() - self.shape_t0)
            if ahead > 0:
                time.sleep(ahead)

    def _step(self) -> int:
        """Write size: about 10 ms of transfer when shaped, so sleeps stay coarse."""
        rate = self.rate
        return CHUNK if not rate else int(min(max(rate / 100, 16 << 10), CHUNK))

    def _send_bytes(self, data: bytes):
        step = self._step()
        for i in range(0, len(data), step):
            self.wfile.write(data[i:i + step])
            self.sent += len(data[i:i + step])
            self._throttle(len(data[i:i + step]))

    def _send_file(self, f, offset: int, count: int):
        """`count` bytes from `offset` of an open file (the version whose size was sent)."""
        if self.fault == 'reset':  # half the body, then a reset: a truncated transfer
            count = count // 2
        if not self.rate:
            while count > 0:  # sendfile: the store must not be the bottleneck
                n = self.connection.sendfile(f, offset, count)
                if not n:
                    break
                offset, count, self.sent = offset + n, count - n, self.sent + n
        else:
            f.seek(offset)
            while count > 0:
                chunk = f.read(min(self._step(), count))
                if not chunk:
                    break
                self.wfile.write(chunk)
                count -= len(chunk)
                self.sent += len(chunk)
                self._throttle(len(chunk))
        if self.fault == 'reset':
            raise _Reset()
        if count:  # cannot happen with one open version; never send less than announced
            raise ConnectionError(f'{count} bytes short')

    def _receive(self, sink, md5=None, check: bool = True) -> int:
        """Copy the request body to `sink` (Content-Length or chunked); with `check`, refuse a
        body that does not match the x-content-sha256 the client signed."""
        self.body_started = True
        sha = hashlib.sha256() if (check and self.want_sha256) else None

        def take(n):
            data = self.rfile.read(n)
            if len(data) < n:
                raise ConnectionError('client went away mid-body')
            self.received += n
            sink.write(data)
            if md5 is not None:
                md5.update(data)
            if sha is not None:
                sha.update(data)
            self._throttle(n)

        if 'chunked' in (self.headers.get('Transfer-Encoding') or '').lower():
            while True:
                size = int(self.rfile.readline().split(b';')[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                while size:
                    n = min(size, CHUNK)
                    take(n)
                    size -= n
                self.rfile.readline()
        else:
            left = int(self.headers.get('Content-Length') or 0)
            while left:
                n = min(left, CHUNK)
                take(n)
                left -= n
        self.body_done = True
        if sha is not None and base64.b64encode(sha.digest()).decode() != self.want_sha256:
            raise StoreError(401, 'NotAuthenticated', 'The body does not match the signed '
                             'x-content-sha256')
        return self.received

    def _body_json(self) -> dict:
        buf = _Buffer()
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
        size = meta['size']
        start, end, status = 0, size - 1, 200
        rng = self.headers.get('Range')
        if rng:
            start, end = _parse_range(rng, size)
            status = 206
            headers['Content-Range'] = f'bytes {start}-{end}/{size}'
            headers['Content-MD5'] = None  # the md5 is of the whole object
        length = max(end - start + 1, 0)
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
            path = storage.upload_dir(bucket, upload_id, name)
            try:
                num = int(self.query.get('uploadPartNum', 0))
            except ValueError:
                num = 0
            if not 1 <= num <= 10000:
                raise StoreError(400, 'InvalidParameter', 'uploadPartNum must be 1..10000')
            tmp, md5 = self._receive_file()
            etag = uuid.uuid4().hex
            os.replace(tmp, path / f'{num}.part')
            (path / f'{num}.tmp').write_text(json.dumps(
                {'part': num, 'etag': etag, 'md5': md5, 'size': self.received}))
            os.replace(path / f'{num}.tmp', path / f'{num}.json')  # listings see it whole
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


class _Buffer:
    def __init__(self):
        self.data = b''

    def write(self, b):
        self.data += b


def _parse_range(header: str, size: int) -> tuple[int, int]:
    try:
        unit, spec = header.split('=', 1)
        first, last = spec.split(',')[0].strip().split('-')
        if unit.strip() != 'bytes':
            raise ValueError
        if first == '':
            start, end = max(size - int(last), 0), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
    except ValueError:
        raise StoreError(400, 'InvalidRange', f'bad Range header {header!r}')
    if start >= size or start > end:
        raise StoreError(416, 'InvalidRange', f'range {header!r} outside 0..{size}')
    return start, end


class StoreServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, data_dir, port: int, knobs: Knobs, log_path=None):
        super().__init__(('127.0.0.1', port), Handler)  # loopback only, always
        self.storage = Storage(Path(data_dir))
        self.public_key, self.fingerprint = load_public_key(data_dir)
        self.knobs = knobs.check()
        self.rng = random.Random(knobs.seed)
        self.rng_lock = threading.Lock()
        self.log_file = open(log_path, 'a', buffering=1) if log_path else None
        self.log_lock = threading.Lock()
        self.busy, self.inflight = threading.Condition(), 0

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until no request is being handled, so each one answered is also logged."""
        with self.busy:
            self.busy.wait_for(lambda: self.inflight == 0, timeout)

    def draw_fault(self, request: str):
        k = self.knobs
        if not k.fault_rate or (k.fault_match and not re.search(k.fault_match, request)):
            return None
        with self.rng_lock:
            if self.rng.random() < k.fault_rate:
                return self.rng.choice(k.fault_kinds)
        return None

    def log_request_line(self, h: Handler):
        if not self.log_file:
            return
        line = json.dumps({'t': round(time.time(), 6), 'method': h.command,
                           'path': unquote(getattr(h, 'route', h.path)),
                           'query': getattr(h, 'query', {}), 'status': h.status,
                           'bytes': h.sent, 'in': h.received, 'fault': h.fault,
                           'ms': round((time.monotonic() - h.t0) * 1000, 2)})
        with self.log_lock:
            self.log_file.write(line + '\n')

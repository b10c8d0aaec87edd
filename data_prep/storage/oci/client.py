"""The OCI Object Storage client our transport and OCIRemote share: one SDK client per process,
retries, and whole-object transfers that never leave a partial file behind.

- one GET per download: the namespace comes from oci://bucket@namespace/prefix, or is asked
  for once per process and cached (oci://bucket/prefix);
- downloads stream to a temp file next to the target, honour the download timeout, check the
  byte count (and the object's Content-MD5 when it has one), then rename atomically;
- every call retries 429, 5xx and connection errors with jittered exponential backoff (the
  SDK's own retries and circuit breaker are off, so one call = one request in the store log);
- uploads above a threshold go multipart with parts in parallel; a failed multipart upload
  is aborted so no orphan parts are left behind.

Tuning (environment): OCI_MULTIPART_THRESHOLD_MB (100), OCI_MULTIPART_PART_MB (32),
OCI_MULTIPART_PARALLEL (4 parts in flight per file), OCI_TRANSPORT_ATTEMPTS (8 tries per
request). Credentials and endpoint: see data_prep.storage.oci.auth.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import random
import re
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from data_prep.env import env_value
from data_prep.storage.base import RemoteError, TransientError
from data_prep.storage.oci.auth import ENDPOINT_ENV, CredentialsError, make_signer, settings

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
BACKOFF_BASE_S, BACKOFF_MAX_S = 0.1, 5.0


class IncompleteDownload(IOError):
    """Fewer bytes arrived than the object has: a cut connection, never data."""


class CorruptObject(IOError):
    """The bytes do not match the MD5 the object was stored with."""


# ----------------------------------------------------------------------------- URLs

def parse_url(url: str) -> tuple[str, Optional[str], str]:
    """oci://bucket[@namespace]/prefix -> (bucket, namespace or None, prefix)."""
    if not url.startswith('oci://'):
        raise RemoteError(f'not an oci:// URL: {url!r}')
    netloc, _, path = url[len('oci://'):].partition('/')
    bucket, _, ns = netloc.partition('@')
    if not bucket or '@' in ns:
        raise RemoteError(f'bad OCI URL {url!r}: use oci://bucket@namespace/prefix '
                          f'or oci://bucket/prefix')
    return bucket, ns or None, path.strip('/')



# ----------------------------------------------------------------------------- clients

_lock = threading.Lock()
_signers: dict = {}     # settings -> (config, signer)
_clients: dict = {}     # (pid, settings, timeout) -> client; a forked child makes its own
_namespaces: dict = {}  # settings -> namespace; safe to inherit across fork


def _after_fork_in_child() -> None:
    # A DataLoader worker forked while a parent thread held the lock would deadlock on it,
    # and must not share the parent's pooled connections.
    global _lock
    _lock = threading.Lock()
    _clients.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def client(read_timeout: float = 60.0):
    """The process's ObjectStorageClient for the current environment and read timeout."""
    import oci
    s = settings()
    key = (os.getpid(), s, float(read_timeout))
    with _lock:
        if key in _clients:
            return _clients[key]
        if s not in _signers:
            _signers[s] = make_signer(s)
        config, signer = _signers[s]
        config = dict(config)
        if s.region:
            config['region'] = s.region
        kwargs = dict(signer=signer, timeout=(min(10.0, read_timeout), read_timeout),
                      # our _retry is the only retry, so the request log counts requests
                      retry_strategy=oci.retry.NoneRetryStrategy(),
                      circuit_breaker_strategy=oci.circuit_breaker.NoCircuitBreakerStrategy())
        if s.endpoint:
            kwargs['service_endpoint'] = s.endpoint
        elif not config.get('region'):
            raise CredentialsError(f'OCI credentials: no region (set region in [{s.profile}], '
                                   f'OCI_CLI_REGION, or {ENDPOINT_ENV})')
        _clients[key] = oci.object_storage.ObjectStorageClient(config, **kwargs)
        return _clients[key]


def namespace(from_url: Optional[str] = None) -> str:
    """The namespace: from the URL, else asked once per process (and settings) and cached."""
    if from_url:
        return from_url
    s = settings()
    with _lock:
        if s in _namespaces:
            return _namespaces[s]
    ns = retry(lambda: client().get_namespace().data, 'get namespace')
    with _lock:
        _namespaces[s] = ns
    return ns


# ----------------------------------------------------------------------------- retries

def is_transient(e: BaseException) -> bool:
    """429, 5xx, or no (complete) answer: worth retrying."""
    import oci
    import urllib3
    if isinstance(e, oci.exceptions.ServiceError):
        return e.status == 429 or e.status >= 500
    return isinstance(e, (oci.exceptions.RequestException, oci.exceptions.ConnectTimeout,
                          urllib3.exceptions.HTTPError, ConnectionError, IncompleteDownload,
                          TimeoutError))  # socket.timeout is TimeoutError


class StoreUnreachable(TransientError, ConnectionError):
    """No answer from the endpoint after every attempt (down, wrong address, network)."""


def _where() -> str:
    return settings().endpoint or 'the OCI Object Storage endpoint'


def retry(fn: Callable, what: str, deadline: Optional[float] = None):
    """Call fn until it succeeds, backing off on transient errors."""
    import oci
    attempts = env_value('OCI_TRANSPORT_ATTEMPTS', 8, int)
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as e:
            if not is_transient(e):
                raise
            if attempt == attempts:
                if isinstance(e, (oci.exceptions.ServiceError, IncompleteDownload)):
                    raise
                # The SDK's message is a paragraph of urllib3 internals: say it in one line.
                raise StoreUnreachable(f'{what}: {_where()} unreachable after {attempt} '
                                       f'attempts ({_brief(e)})') from e
            delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1)) * random.uniform(.5, 1)
            if deadline is not None and time.monotonic() + delay > deadline:
                raise TimeoutError(f'{what}: timed out after {attempt} attempts '
                                   f'({_brief(e)} from {_where()})') from e
            logger.info('%s: attempt %d failed (%s), retrying in %.2fs', what, attempt,
                        _brief(e), delay)
            time.sleep(delay)


def _brief(e: BaseException) -> str:
    status = getattr(e, 'status', None)
    if status:
        return f'HTTP {status} {getattr(e, "code", "")}'
    errno = re.search(r'\[Errno -?\d+\] ([^"\'()]+)', str(e))  # e.g. Connection refused
    return f'{type(e).__name__}: {errno.group(1).strip()}' if errno else type(e).__name__


def is_not_found(e: BaseException) -> bool:
    import oci
    return isinstance(e, oci.exceptions.ServiceError) and e.status == 404


# ----------------------------------------------------------------------------- transfers

def fetch(bucket: str, ns: str, name: str, sink, read_timeout: float, deadline: float,
           what: str) -> int:
    """One GET of the whole object into `sink`; raises unless every byte arrived intact."""
    resp = client(read_timeout).get_object(ns, bucket, name)
    raw = resp.data.raw
    try:
        expected = int(resp.headers['Content-Length'])
        want_md5 = resp.headers.get('Content-MD5')  # absent for multipart objects
        md5 = hashlib.md5() if want_md5 else None
        got = 0
        for chunk in raw.stream(CHUNK, decode_content=False):
            sink.write(chunk)
            got += len(chunk)
            if md5:
                md5.update(chunk)
            if time.monotonic() > deadline:
                raise TimeoutError(f'{what}: not done within the download timeout')
    finally:
        resp.data.close()
    if got != expected:
        raise IncompleteDownload(f'{what}: {got} of {expected} bytes arrived')
    if md5 and base64.b64encode(md5.digest()).decode() != want_md5:
        raise CorruptObject(f'{what}: the {got} bytes do not match the MD5 the object was '
                            f'stored with (truncated or damaged in the bucket)')
    return got


def download_file(url: str, local: str, timeout: float = 60.0) -> None:
    """oci:// object -> local file: temp file, size + MD5 check, atomic rename."""
    bucket, ns, name = parse_url(url)
    deadline = time.monotonic() + timeout
    ns = namespace(ns)
    directory = os.path.dirname(local) or '.'
    os.makedirs(directory, exist_ok=True)

    def attempt():
        if time.monotonic() >= deadline:
            raise TimeoutError(f'download {url}: not done within the download timeout')
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(local) + '.',
                                   suffix='.part')
        try:
            with os.fdopen(fd, 'wb') as f:
                fetch(bucket, ns, name, f, max(1.0, min(timeout, 60.0)), deadline,
                       f'download {url}')
            os.replace(tmp, local)
        except BaseException:
            os.unlink(tmp)
            raise

    try:
        retry(attempt, f'download {url}', deadline)
    except Exception as e:
        if is_not_found(e):
            raise FileNotFoundError(f'{url}: object not found') from None
        raise


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _file_md5(path: str) -> str:
    md5 = hashlib.md5()
    with open(path, 'rb') as f:
        while chunk := f.read(CHUNK):
            md5.update(chunk)
    return base64.b64encode(md5.digest()).decode()


def upload_file(path: str, bucket: str, ns: str, name: str) -> None:
    """Local file -> object: one PUT up to the threshold, parallel multipart above it."""
    size = os.path.getsize(path)
    what = f'upload oci://{bucket}@{ns}/{name}'
    if size > env_value('OCI_MULTIPART_THRESHOLD_MB', 100, int) << 20:
        return _multipart(path, size, bucket, ns, name, what)
    md5 = _file_md5(path)  # the store checks it, so a damaged upload is refused

    def put():
        with open(path, 'rb') as f:
            client().put_object(ns, bucket, name, f, content_length=size, content_md5=md5)
    retry(put, what)


def _multipart(path: str, size: int, bucket: str, ns: str, name: str, what: str) -> None:
    from oci.object_storage import models
    c = client()
    part = max(1, env_value('OCI_MULTIPART_PART_MB', 32, int)) << 20
    count = (size + part - 1) // part
    upload_id = retry(lambda: c.create_multipart_upload(
        ns, bucket, models.CreateMultipartUploadDetails(object=name)).data.upload_id, what)

    def send(i: int) -> str:
        with open(path, 'rb') as f:
            f.seek(i * part)
            data = f.read(part)
        md5 = md5_b64(data)
        return retry(lambda: c.upload_part(ns, bucket, name, upload_id, i + 1, data,
                                            content_md5=md5).headers['etag'],
                      f'{what} part {i + 1}/{count}')

    pool = ThreadPoolExecutor(max(1, env_value('OCI_MULTIPART_PARALLEL', 4, int)))
    try:
        etags = list(pool.map(send, range(count)))
        pool.shutdown()
        details = models.CommitMultipartUploadDetails(parts_to_commit=[
            models.CommitMultipartUploadPartDetails(part_num=i + 1, etag=etag)
            for i, etag in enumerate(etags)])
        retry(lambda: c.commit_multipart_upload(ns, bucket, name, upload_id, details), what)
    except BaseException:
        pool.shutdown(cancel_futures=True)
        try:  # no orphan parts: they cost storage and never show in a listing
            retry(lambda: c.abort_multipart_upload(ns, bucket, name, upload_id),
                   f'abort {what}')
        except Exception as e:
            logger.warning('%s: could not abort multipart upload %s (%s); its parts stay '
                           'until a lifecycle rule removes them', what, upload_id, _brief(e))
        raise


def object_size(bucket: str, ns: str, name: str) -> int:
    """The object's size from one HEAD; FileNotFoundError if there is none."""
    what = f'oci://{bucket}@{ns}/{name}'
    try:
        resp = retry(lambda: client().head_object(ns, bucket, name), f'head {what}')
    except Exception as e:
        if is_not_found(e):
            raise FileNotFoundError(f'{what}: object not found') from None
        raise
    return int(resp.headers['Content-Length'])


def delete_object(bucket: str, ns: str, name: str) -> None:
    """Remove the object; one that is already gone is not an error."""
    try:
        retry(lambda: client().delete_object(ns, bucket, name),
               f'delete oci://{bucket}@{ns}/{name}')
    except Exception as e:
        if not is_not_found(e):
            raise


def explain(e: BaseException, bucket: str, ns: Callable[[], str]) -> Optional[RemoteError]:
    """The one-line error for a failed request that a person must fix (a missing bucket,
    refused credentials), or None for any other failure. `ns` gives the namespace, asked only
    for a 404 (by then the failed request has looked it up)."""
    if is_not_found(e):
        return RemoteError(f'bucket {bucket!r} not found in namespace {ns()!r}')
    if getattr(e, 'status', None) == 401:
        s = settings()
        return CredentialsError(
            f'OCI credentials: {s.endpoint or "the endpoint"} refused the request '
            f'signature (401 NotAuthenticated): check the key_file and fingerprint '
            f'of [{s.profile}] in {s.config_file} ({s.auth} auth)')
    return None


def check_bucket(bucket: str, ns: str) -> None:
    try:
        retry(lambda: client().head_bucket(ns, bucket), f'head bucket {bucket}')
    except Exception as e:
        if is_not_found(e):
            where = settings().endpoint or 'the OCI region endpoint'
            raise RemoteError(f'bucket {bucket!r} not found in namespace {ns!r} at {where} '
                              f'(create it, or check the policy allows reading it)') from None
        raise


def list_objects(bucket: str, ns: str, prefix: str) -> dict[str, int]:
    """Every object under prefix -> size, following nextStartWith pages."""
    out, start = {}, None
    while True:
        page = retry(lambda: client().list_objects(ns, bucket, prefix=prefix or None,
                                                    start=start, fields='name,size').data,
                      f'list oci://{bucket}@{ns}/{prefix}')
        out.update((o.name, o.size) for o in page.objects)
        start = page.next_start_with
        if not start:
            return out

"""Native OCI Object Storage transport for streaming (replaces its OCIDownloader/OCIUploader).

streaming's own OCI code makes three requests per shard (two get_namespace calls), ignores
the download timeout, reads only ~/.oci/config [DEFAULT] and cannot change endpoint.
`register()` installs the classes below in streaming's maps, so MDSWriter,
StreamingDataset and llm-foundry use them unchanged. What they do differently:

- one GET per shard: the namespace comes from oci://bucket@namespace/prefix, or is asked
  for once per process and cached (oci://bucket/prefix);
- downloads stream to a temp file next to the target, honour the download timeout, check
  the byte count (and the object's Content-MD5 when it has one), then rename atomically;
- every call retries 429, 5xx and connection errors with jittered exponential backoff
  (the SDK's own retries and circuit breaker are off, so one call = one request);
- uploads above a threshold go multipart with parts in parallel; a failed multipart
  upload is aborted so no orphan parts are left behind.

Environment (as the OCI CLI reads it, plus our endpoint override and tuning):
  OCI_CLI_AUTH                 api_key (default) | instance_principal | resource_principal
                               | security_token
  OCI_CONFIG_FILE              config file for api_key / security_token (~/.oci/config)
  OCI_CLI_PROFILE              profile in that file (DEFAULT)
  OCI_CLI_REGION               region, overriding the profile's or the principal's
  OCI_OBJECT_STORAGE_ENDPOINT  e.g. a private endpoint, or http://127.0.0.1:9300 for
                               the local store (data_prep.local_store)
  OCI_MULTIPART_THRESHOLD_MB   multipart above this size (100)
  OCI_MULTIPART_PART_MB        part size (32)
  OCI_MULTIPART_PARALLEL       parts in flight per file (4)
  OCI_TRANSPORT_ATTEMPTS       tries per request before giving up (8)
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
from typing import Callable, NamedTuple, Optional, Union

from data_prep.remote import Remote, RemoteError

logger = logging.getLogger(__name__)

ENDPOINT_ENV = 'OCI_OBJECT_STORAGE_ENDPOINT'
AUTH_MODES = ('api_key', 'instance_principal', 'resource_principal', 'security_token')
CHUNK = 1 << 20
BACKOFF_BASE_S, BACKOFF_MAX_S = 0.1, 5.0


class CredentialsError(RemoteError):
    """Missing or broken OCI credentials; the message is one line and holds no secret."""


class IncompleteDownload(IOError):
    """Fewer bytes arrived than the object has: a cut connection, never data."""


class CorruptObject(IOError):
    """The bytes do not match the MD5 the object was stored with."""


def _int_env(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name) or default)
    except ValueError:
        raise RemoteError(f'{name} must be an integer, got {os.environ[name]!r}')


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


# ----------------------------------------------------------------------------- auth and clients

class _Settings(NamedTuple):
    auth: str
    config_file: str
    profile: str
    region: str
    endpoint: str


def _settings() -> _Settings:
    return _Settings(os.environ.get('OCI_CLI_AUTH') or 'api_key',
                     os.path.expanduser(os.environ.get('OCI_CONFIG_FILE') or '~/.oci/config'),
                     os.environ.get('OCI_CLI_PROFILE') or 'DEFAULT',
                     os.environ.get('OCI_CLI_REGION') or '',
                     (os.environ.get(ENDPOINT_ENV) or '').rstrip('/'))


def _config_file(s: _Settings) -> dict:
    import oci
    if not os.path.isfile(s.config_file):
        raise CredentialsError(
            f'OCI credentials: config file {s.config_file} not found (set OCI_CONFIG_FILE, '
            f'or OCI_CLI_AUTH=instance_principal on an OCI instance)')
    try:
        return oci.config.from_file(s.config_file, s.profile)
    except oci.exceptions.ProfileNotFound:
        raise CredentialsError(f'OCI credentials: profile [{s.profile}] not found in '
                               f'{s.config_file} (set OCI_CLI_PROFILE)')
    except oci.exceptions.InvalidKeyFilePath as e:  # its message names the file, no secret
        raise CredentialsError('OCI credentials: ' + str(e).split('. For more info')[0])
    except Exception as e:  # parse errors: name the file, never echo its contents
        raise CredentialsError(f'OCI credentials: cannot read {s.config_file}: '
                               f'{type(e).__name__}')


def _key_file(s: _Settings, config: dict) -> str:
    path = os.path.expanduser(config.get('key_file') or '')
    if not path:
        raise CredentialsError(f'OCI credentials: key_file missing in profile [{s.profile}] '
                               f'of {s.config_file}')
    if not os.path.isfile(path):
        raise CredentialsError(f'OCI credentials: key_file {path} (profile [{s.profile}] of '
                               f'{s.config_file}) does not exist')
    return path


def _signer(s: _Settings) -> tuple[dict, object]:
    """(config, signer) for the auth mode, the way the OCI CLI picks it."""
    import oci
    if s.auth == 'api_key':
        config = _config_file(s)
        try:
            oci.config.validate_config(config)
        except oci.exceptions.InvalidConfig as e:
            problems = e.args[0] if e.args and isinstance(e.args[0], dict) else {}
            what = ', '.join(f'{k} {v}' for k, v in sorted(problems.items())) or 'invalid'
            raise CredentialsError(f'OCI credentials: profile [{s.profile}] of {s.config_file}: '
                                   f'{what}')
        key = _key_file(s, config)
        try:
            signer = oci.signer.Signer(config['tenancy'], config['user'], config['fingerprint'],
                                       key, config.get('pass_phrase'))
        except Exception as e:
            raise CredentialsError(f'OCI credentials: cannot load the API key {key} '
                                   f'(wrong pass_phrase or not a PEM key): {type(e).__name__}')
        return config, signer
    if s.auth == 'security_token':
        config = _config_file(s)
        token_file = os.path.expanduser(config.get('security_token_file') or '')
        if not token_file or not os.path.isfile(token_file):
            raise CredentialsError(
                f'OCI credentials: security_token_file {token_file or "(not set)"} of profile '
                f'[{s.profile}] in {s.config_file} missing (run `oci session authenticate`)')
        key = _key_file(s, config)
        try:
            private_key = oci.signer.load_private_key_from_file(key, config.get('pass_phrase'))
        except Exception as e:
            raise CredentialsError(f'OCI credentials: cannot load the session key {key}: '
                                   f'{type(e).__name__}')
        with open(token_file) as f:
            token = f.read().strip()
        return config, oci.auth.signers.SecurityTokenSigner(token, private_key)
    if s.auth == 'instance_principal':
        try:
            signer = oci.auth.signers.InstancePrincipalsSecurityTokenSigner()
        except Exception as e:
            raise CredentialsError(
                f'OCI credentials: OCI_CLI_AUTH=instance_principal but no instance principal '
                f'token (not on an OCI instance, or not in a dynamic group): {type(e).__name__}')
        return {'region': signer.region}, signer
    if s.auth == 'resource_principal':
        if not os.environ.get('OCI_RESOURCE_PRINCIPAL_VERSION'):
            raise CredentialsError('OCI credentials: OCI_CLI_AUTH=resource_principal but '
                                   'OCI_RESOURCE_PRINCIPAL_VERSION is not set')
        try:
            signer = oci.auth.signers.get_resource_principals_signer()
        except Exception as e:
            raise CredentialsError(f'OCI credentials: resource principal unusable '
                                   f'(check the OCI_RESOURCE_PRINCIPAL_* variables): '
                                   f'{type(e).__name__}')
        return {'region': signer.region}, signer
    raise CredentialsError(f'OCI credentials: OCI_CLI_AUTH={s.auth!r} is not one of '
                           f'{", ".join(AUTH_MODES)}')


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
    s = _settings()
    key = (os.getpid(), s, float(read_timeout))
    with _lock:
        if key in _clients:
            return _clients[key]
        if s not in _signers:
            _signers[s] = _signer(s)
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
    s = _settings()
    with _lock:
        if s in _namespaces:
            return _namespaces[s]
    ns = _retry(lambda: client().get_namespace().data, 'get namespace')
    with _lock:
        _namespaces[s] = ns
    return ns


# ----------------------------------------------------------------------------- retries

def _transient(e: BaseException) -> bool:
    import oci
    import urllib3
    if isinstance(e, oci.exceptions.ServiceError):
        return e.status == 429 or e.status >= 500
    return isinstance(e, (oci.exceptions.RequestException, oci.exceptions.ConnectTimeout,
                          urllib3.exceptions.HTTPError, ConnectionError, IncompleteDownload,
                          TimeoutError))  # socket.timeout is TimeoutError


class StoreUnreachable(ConnectionError):
    """No answer from the endpoint after every attempt (down, wrong address, network)."""


def _where() -> str:
    return _settings().endpoint or 'the OCI Object Storage endpoint'


def _retry(fn: Callable, what: str, deadline: Optional[float] = None):
    """Call fn until it succeeds, backing off on transient errors."""
    import oci
    attempts = _int_env('OCI_TRANSPORT_ATTEMPTS', 8)
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as e:
            if not _transient(e):
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


def _not_found(e: BaseException) -> bool:
    import oci
    return isinstance(e, oci.exceptions.ServiceError) and e.status == 404


# ----------------------------------------------------------------------------- transfers

def _fetch(bucket: str, ns: str, name: str, sink, read_timeout: float, deadline: float,
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
                _fetch(bucket, ns, name, f, max(1.0, min(timeout, 60.0)), deadline,
                       f'download {url}')
            os.replace(tmp, local)
        except BaseException:
            os.unlink(tmp)
            raise

    try:
        _retry(attempt, f'download {url}', deadline)
    except Exception as e:
        if _not_found(e):
            raise FileNotFoundError(f'{url}: object not found') from None
        raise


def _md5_b64(data: bytes) -> str:
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
    if size > _int_env('OCI_MULTIPART_THRESHOLD_MB', 100) << 20:
        return _multipart(path, size, bucket, ns, name, what)
    md5 = _file_md5(path)  # the store checks it, so a damaged upload is refused

    def put():
        with open(path, 'rb') as f:
            client().put_object(ns, bucket, name, f, content_length=size, content_md5=md5)
    _retry(put, what)


def _multipart(path: str, size: int, bucket: str, ns: str, name: str, what: str) -> None:
    from oci.object_storage import models
    c = client()
    part = max(1, _int_env('OCI_MULTIPART_PART_MB', 32)) << 20
    count = (size + part - 1) // part
    upload_id = _retry(lambda: c.create_multipart_upload(
        ns, bucket, models.CreateMultipartUploadDetails(object=name)).data.upload_id, what)

    def send(i: int) -> str:
        with open(path, 'rb') as f:
            f.seek(i * part)
            data = f.read(part)
        md5 = _md5_b64(data)
        return _retry(lambda: c.upload_part(ns, bucket, name, upload_id, i + 1, data,
                                            content_md5=md5).headers['etag'],
                      f'{what} part {i + 1}/{count}')

    pool = ThreadPoolExecutor(max(1, _int_env('OCI_MULTIPART_PARALLEL', 4)))
    try:
        etags = list(pool.map(send, range(count)))
        pool.shutdown()
        details = models.CommitMultipartUploadDetails(parts_to_commit=[
            models.CommitMultipartUploadPartDetails(part_num=i + 1, etag=etag)
            for i, etag in enumerate(etags)])
        _retry(lambda: c.commit_multipart_upload(ns, bucket, name, upload_id, details), what)
    except BaseException:
        pool.shutdown(cancel_futures=True)
        try:  # no orphan parts: they cost storage and never show in a listing
            _retry(lambda: c.abort_multipart_upload(ns, bucket, name, upload_id),
                   f'abort {what}')
        except Exception as e:
            logger.warning('%s: could not abort multipart upload %s (%s); its parts stay '
                           'until a lifecycle rule removes them', what, upload_id, _brief(e))
        raise


def _check_bucket(bucket: str, ns: str) -> None:
    try:
        _retry(lambda: client().head_bucket(ns, bucket), f'head bucket {bucket}')
    except Exception as e:
        if _not_found(e):
            where = _settings().endpoint or 'the OCI region endpoint'
            raise RemoteError(f'bucket {bucket!r} not found in namespace {ns!r} at {where} '
                              f'(create it, or check the policy allows reading it)') from None
        raise


# ----------------------------------------------------------------------------- streaming plugs

from streaming.base.storage.download import CloudDownloader  # noqa: E402
from streaming.base.storage.upload import CloudUploader  # noqa: E402


class OCIDownloader(CloudDownloader):
    """streaming downloader for oci://: one GET per shard, timeout, size check, retries."""

    @staticmethod
    def _client_identifier() -> str:
        return 'oci'

    def clean_up(self) -> None:
        pass  # clients are per process and shared; nothing per download to drop

    def _download_file_impl(self, remote: str, local: str, timeout: float) -> None:
        download_file(remote, local, timeout)


class OCIUploader(CloudUploader):
    """streaming uploader for oci:// (MDSWriter, merge_index)."""

    def __init__(self, out: Union[str, tuple[str, str]], keep_local: bool = False,
                 progress_bar: bool = False, retry: int = 2, exist_ok: bool = False) -> None:
        super().__init__(out, keep_local, progress_bar, retry, exist_ok)
        self.bucket, ns, self.prefix = parse_url(self.remote)
        self.namespace = namespace(ns)
        _check_bucket(self.bucket, self.namespace)  # fail before writing any shard

    def upload_file(self, filename: str) -> None:
        local = os.path.join(self.local, filename)
        name = '/'.join(p for p in (self.prefix, filename.replace(os.sep, '/')) if p)
        upload_file(local, self.bucket, self.namespace, name)
        self.clear_local(local)

    def list_objects(self, prefix: Optional[str] = None) -> list[str]:
        full = '/'.join(p for p in (self.prefix, prefix or '') if p)
        return sorted(_list(self.bucket, self.namespace, full))


def _list(bucket: str, ns: str, prefix: str) -> dict[str, int]:
    """Every object under prefix -> size, following nextStartWith pages."""
    out, start = {}, None
    while True:
        page = _retry(lambda: client().list_objects(ns, bucket, prefix=prefix or None,
                                                    start=start, fields='name,size').data,
                      f'list oci://{bucket}@{ns}/{prefix}')
        out.update((o.name, o.size) for o in page.objects)
        start = page.next_start_with
        if not start:
            return out


def register() -> None:
    """Point streaming's oci:// downloader and uploader at ours, and make a shard that cannot
    be prepared fail the pass loudly (data_prep.shard_errors). Idempotent."""
    from streaming.base.storage import download, upload
    download.DOWNLOADER_MAPPINGS['oci'] = OCIDownloader
    # CloudUploader.get looks the class name up in its own module, so put ours there.
    upload.OCITransportUploader = OCIUploader
    upload.UPLOADERS['oci'] = 'OCITransportUploader'
    from data_prep.shard_errors import loud_shard_errors
    loud_shard_errors()


# ----------------------------------------------------------------------------- Remote

class OCIRemote(Remote):
    """data_prep.remote interface over oci://bucket[@namespace]/prefix."""

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
            found = _list(self.bucket, self.namespace, root + prefix)
        except Exception as e:
            if _not_found(e):
                raise RemoteError(f'bucket {self.bucket!r} not found in namespace '
                                  f'{self.namespace!r}') from None
            raise
        return {name[len(root):]: size for name, size in found.items()}

    def read(self, name: str) -> bytes:
        import io
        what = f'read {self._what(name)}'

        def attempt():
            buf = io.BytesIO()
            _fetch(self.bucket, self.namespace, self._key(name), buf, 60.0,
                   float('inf'), what)
            return buf.getvalue()
        try:
            return _retry(attempt, what)
        except Exception as e:
            if _not_found(e):
                raise FileNotFoundError(f'{self._what(name)}: object not found') from None
            raise

    def write(self, name: str, data: bytes) -> None:
        md5 = _md5_b64(data)
        _retry(lambda: client().put_object(self.namespace, self.bucket, self._key(name), data,
                                           content_length=len(data), content_md5=md5),
               f'write {self._what(name)}')

    def delete(self, name: str) -> None:
        try:
            _retry(lambda: client().delete_object(self.namespace, self.bucket, self._key(name)),
                   f'delete {self._what(name)}')
        except Exception as e:
            if not _not_found(e):  # already gone is what we wanted
                raise

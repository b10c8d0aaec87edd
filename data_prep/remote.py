"""One small interface over the places a dataset can live: a local path, s3://, oci://.

streaming's uploaders move shards; this module answers the questions they do not:
which objects are there and how big (verification, bucket stats), and small reads and
writes of index files. Every backend lists with sizes in one paged call.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse


class RemoteError(RuntimeError):
    """A remote that cannot be used: bad URL, missing bucket, missing credentials."""


class Remote:
    url: str

    def list(self, prefix: str = '') -> dict[str, int]:
        """Relative object name -> size in bytes, for every object under `prefix`."""
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def write(self, name: str, data: bytes) -> None:
        raise NotImplementedError

    def delete(self, name: str) -> None:
        raise NotImplementedError

    def join(self, *parts: str) -> str:
        """The URL of `parts` under this remote, as streaming expects it."""
        return '/'.join([self.url.rstrip('/'), *(p.strip('/') for p in parts if p)])


class LocalRemote(Remote):
    def __init__(self, url: str):
        self.url = url
        self.root = Path(url[len('file://'):] if url.startswith('file://') else url)

    def list(self, prefix: str = '') -> dict[str, int]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return {}
        return {p.relative_to(self.root).as_posix(): p.stat().st_size
                for p in sorted(base.rglob('*')) if p.is_file()}

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + '.tmp')
        tmp.write_bytes(data)
        os.replace(tmp, path)  # readers never see half a file

    def delete(self, name: str) -> None:
        path = self.root / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


class S3Remote(Remote):
    """s3://bucket/prefix; `S3_ENDPOINT_URL` points it at OCI's S3 compatibility API."""

    def __init__(self, url: str):
        import boto3
        parsed = urlparse(url)
        self.url, self.bucket, self.prefix = url, parsed.netloc, parsed.path.strip('/')
        self.client = boto3.session.Session().client(
            's3', endpoint_url=os.environ.get('S3_ENDPOINT_URL') or None)

    def _key(self, name: str) -> str:
        return f'{self.prefix}/{name}' if self.prefix else name

    def list(self, prefix: str = '') -> dict[str, int]:
        root = f'{self.prefix}/' if self.prefix else ''
        out = {}
        for page in self.client.get_paginator('list_objects_v2').paginate(
                Bucket=self.bucket, Prefix=root + prefix):
            for obj in page.get('Contents', []):
                out[obj['Key'][len(root):]] = obj['Size']
        return out

    def read(self, name: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(name))['Body'].read()

    def write(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(name))


def open_remote(url: str) -> Remote:
    """The Remote for `url`: a local path (or file://), s3://bucket/prefix, oci://bucket[@ns]/prefix."""
    scheme = urlparse(url).scheme
    if scheme in ('', 'file'):
        return LocalRemote(url)
    if scheme == 's3':
        return S3Remote(url)
    if scheme == 'oci':
        from data_prep.oci_transport import OCIRemote
        return OCIRemote(url)
    raise RemoteError(f'unsupported remote {url!r}: use a local path, s3://bucket/prefix '
                      f'or oci://bucket@namespace/prefix')


# Schemes Composer and streaming also accept (checkpoints to gs://, azure://, ...): passed through.
_OTHER_SCHEMES = {'gs', 'azure', 'dbfs', 'hf', 'wandb', 'sftp'}


def list_checked(remote: Remote, prefix: str = '') -> dict[str, int]:
    """`remote.list(prefix)`, with a backend's error (botocore, oci) turned into one RemoteError
    line that says what is wrong: credentials, a missing bucket, an unreachable endpoint."""
    try:
        return remote.list(prefix)
    except RemoteError:
        raise
    except Exception as exc:
        name = type(exc).__name__
        first = (str(exc).strip().splitlines() or [name])[0]
        resp = getattr(exc, 'response', None)
        code = resp.get('Error', {}).get('Code', '') if isinstance(resp, dict) else ''
        if name in ('NoCredentialsError', 'PartialCredentialsError', 'ConfigNotFound',
                    'InvalidConfig') or code in ('InvalidAccessKeyId', 'SignatureDoesNotMatch'):
            raise RemoteError(f'missing or invalid credentials for {remote.url}: {first}') from None
        if code in ('NoSuchBucket', 'BucketNotFound', '404') or 'NoSuchBucket' in str(exc):
            raise RemoteError(f'bucket of {remote.url} does not exist (create it first)') from None
        if name in ('EndpointConnectionError', 'ConnectionError', 'ConnectTimeoutError'):
            raise RemoteError(f'cannot connect to the endpoint of {remote.url}: {first}') from None
        raise RemoteError(f'cannot list {remote.url}: {name}: {first}') from None


def check_url(url: str) -> None:
    """Fails fast, in one line, on a URL we cannot use: unknown scheme, missing bucket,
    missing or broken credentials. Local paths need not exist yet (outputs)."""
    scheme = urlparse(url).scheme
    if scheme in _OTHER_SCHEMES:
        return
    remote = open_remote(url)
    if not isinstance(remote, LocalRemote):
        list_checked(remote, '.probe-')  # one cheap list call: bucket exists, credentials work

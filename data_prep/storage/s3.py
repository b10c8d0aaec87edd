"""s3://bucket/prefix as a Remote, through boto3; `S3_ENDPOINT_URL` points it at OCI's S3
compatibility API (or any S3 server, such as moto in the tests)."""
from __future__ import annotations

import os
import time
from urllib.parse import urlparse

from data_prep.errors import first_line
from data_prep.storage.base import Remote, RemoteError, TransientError


class S3Remote(Remote):

    def __init__(self, url: str):
        import boto3
        parsed = urlparse(url)
        self.url, self.bucket, self.prefix = url, parsed.netloc, parsed.path.strip('/')
        if not self.bucket:
            raise RemoteError(f'bad S3 URL {url!r}: use s3://bucket/prefix')
        self.client = boto3.session.Session().client(
            's3', endpoint_url=os.environ.get('S3_ENDPOINT_URL') or None)

    def _key(self, name: str) -> str:
        return f'{self.prefix}/{name}' if self.prefix else name

    def list(self, prefix: str = '') -> dict[str, int]:
        root = f'{self.prefix}/' if self.prefix else ''
        out = {}
        try:
            for page in self.client.get_paginator('list_objects_v2').paginate(
                    Bucket=self.bucket, Prefix=root + prefix):
                for obj in page.get('Contents', []):
                    out[obj['Key'][len(root):]] = obj['Size']
        except Exception as exc:
            raise self._translate(exc) from None
        return out

    def read(self, name: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(name))['Body'].read()
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(f'{self.join(name)}: object not found') from None

    def write(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)

    def create(self, name: str, data: bytes) -> bool:
        key = self._key(name)
        try:  # a first look: also keeps a server that ignores If-None-Match from overwriting
            self.client.head_object(Bucket=self.bucket, Key=key)
            return False
        except self.client.exceptions.ClientError as exc:
            if exc.response.get('Error', {}).get('Code') not in ('404', 'NoSuchKey', 'NotFound'):
                raise self._translate(exc) from None
        for _ in range(5):
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch='*')
                return True
            except self.client.exceptions.ClientError as exc:
                resp = exc.response
                code = resp.get('Error', {}).get('Code')
                if code == 'ConditionalRequestConflict':  # another conditional write in flight
                    time.sleep(0.2)
                    continue
                if code in ('NotImplemented', '501'):  # a server without conditional writes:
                    self.write(name, data)  # we looked first; the best that can be done
                    return True
                if code != 'PreconditionFailed':
                    raise self._translate(exc) from None
                # botocore retried: the first attempt may have landed with its answer lost
                if resp.get('ResponseMetadata', {}).get('RetryAttempts'):
                    return self._holds(name, data)
                return False
        raise TransientError(f'create {self.join(name)}: conditional writes kept conflicting')

    def _holds(self, name: str, data: bytes) -> bool:
        try:
            return self.read(name) == data
        except FileNotFoundError:
            return False

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(name))

    def _translate(self, exc: Exception) -> Exception:
        """botocore's errors as one line that says what to fix."""
        name = type(exc).__name__
        first = first_line(exc, with_type=False)
        resp = getattr(exc, 'response', None)
        code = resp.get('Error', {}).get('Code', '') if isinstance(resp, dict) else ''
        if name in ('NoCredentialsError', 'PartialCredentialsError') or code in (
                'InvalidAccessKeyId', 'SignatureDoesNotMatch'):
            return RemoteError(f'missing or invalid credentials for {self.url}: {first}')
        if code in ('NoSuchBucket', '404'):
            return RemoteError(f'bucket of {self.url} does not exist (create it first)')
        if name in ('EndpointConnectionError', 'ConnectionError', 'ConnectTimeoutError'):
            return TransientError(f'cannot connect to the endpoint of {self.url}: {first}')
        return exc

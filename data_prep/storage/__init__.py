"""Where datasets live: the `Remote` contract (base.py) and one module per backend.

    open_remote('build/mds')                       -> local.LocalRemote
    open_remote('s3://bucket/prefix')              -> s3.S3Remote (S3_ENDPOINT_URL for OCI's S3 API)
    open_remote('oci://bucket@namespace/prefix')   -> oci.remote.OCIRemote (native OCI SDK)

Backends are imported only when a URL of theirs is opened.
"""
from __future__ import annotations

from urllib.parse import urlparse

from data_prep.storage.base import Remote, RemoteError, TransientError, list_checked

__all__ = ['Remote', 'RemoteError', 'TransientError', 'list_checked', 'open_remote',
           'check_url', 'OTHER_SCHEMES']

# Schemes streaming or Composer also accept (datasets or checkpoints in gs://, azure://, ...).
# We have no Remote for them, so nothing could check their bucket and credentials before a run
# (a gs:// remote without Google credentials failed minutes later, in a traceback): check_url
# refuses them in one line rather than let them through unchecked.
OTHER_SCHEMES = {'gs', 'azure', 'azure-dl', 'dbfs', 'hf', 'sftp', 'alipan', 'wandb'}


def open_remote(url: str) -> Remote:
    """The Remote for `url`: a local path (or file://), s3://bucket/prefix, oci://bucket[@ns]/prefix."""
    scheme = urlparse(url).scheme
    if scheme in ('', 'file'):
        from data_prep.storage.local import LocalRemote
        return LocalRemote(url)
    if scheme == 's3':
        from data_prep.storage.s3 import S3Remote
        return S3Remote(url)
    if scheme == 'oci':
        from data_prep.storage.oci.remote import OCIRemote
        return OCIRemote(url)
    raise RemoteError(f'unsupported remote {url!r}: use a local path, s3://bucket/prefix '
                      f'or oci://bucket@namespace/prefix')


def check_url(url: str) -> None:
    """Fails fast, in one line, on a URL we cannot use: a scheme we cannot check, missing
    bucket, missing or broken credentials. Local paths need not exist yet (outputs)."""
    scheme = urlparse(url).scheme
    if scheme in OTHER_SCHEMES:
        raise RemoteError(f'{url!r}: {scheme}:// is not supported here (nothing checks its '
                          f'credentials or tests it): use oci://bucket@namespace/prefix, '
                          f's3://bucket/prefix (S3_ENDPOINT_URL for OCI) or a local path')
    remote = open_remote(url)
    if remote.local_root is None:
        list_checked(remote, '.probe-')  # one cheap list call: bucket exists, credentials work

"""oci:// in streaming: our downloader and uploader, put in streaming's own maps.

streaming's OCIDownloader makes three requests per shard (two get_namespace calls), ignores
the download timeout, reads only ~/.oci/config [DEFAULT] and cannot change endpoint. The
classes below hand every transfer to data_prep.storage.oci.client instead (one GET per shard,
timeout, size and MD5 checks, retries, every OCI auth mode, endpoint override), so MDSWriter,
merge_index, StreamingDataset and llm-foundry use them unchanged.
"""
from __future__ import annotations

import os
from typing import Optional, Union

from streaming.base.storage.download import CloudDownloader
from streaming.base.storage.upload import CloudUploader

from data_prep.storage.oci.client import (
    check_bucket,
    download_file,
    list_objects,
    namespace,
    parse_url,
    upload_file,
)


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
        check_bucket(self.bucket, self.namespace)  # fail before writing any shard

    def upload_file(self, filename: str) -> None:
        local = os.path.join(self.local, filename)
        name = '/'.join(p for p in (self.prefix, filename.replace(os.sep, '/')) if p)
        upload_file(local, self.bucket, self.namespace, name)
        self.clear_local(local)

    def list_objects(self, prefix: Optional[str] = None) -> list[str]:
        full = '/'.join(p for p in (self.prefix, prefix or '') if p)
        return sorted(list_objects(self.bucket, self.namespace, full))


def register() -> None:
    """Point streaming's oci:// downloader and uploader at ours (idempotent)."""
    from streaming.base.storage import download, upload
    download.DOWNLOADER_MAPPINGS['oci'] = OCIDownloader
    # CloudUploader.get looks the class name up in its own module, so ours goes there too.
    upload.OCITransportUploader = OCIUploader
    upload.UPLOADERS['oci'] = 'OCITransportUploader'

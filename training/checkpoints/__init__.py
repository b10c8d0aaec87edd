"""Our extensions of Composer: oci:// checkpoints through our OCI client, in one place.

- object_store.py  OCIStore: Composer's ObjectStore over data_prep.storage.oci.client (every
                   OCI_CLI_AUTH kind, profiles, OCI_OBJECT_STORAGE_ENDPOINT, bucket@namespace,
                   size by HEAD, parallel multipart, retries, listing, delete)
- compat.py        the hooks into Composer's internals (Composer 0.32.1)

The callback that keeps save_num_checkpoints_to_keep in the bucket (Composer prunes local copies
only) is callbacks/bucket_keep.py.

`install()` makes Composer build OCIStore for every oci:// URL: checkpoint upload
(RemoteUploader), logger uploads (RemoteUploaderDownloader: llm-foundry's hf_checkpointer),
autoresume, load_path, get_file. train.py calls it on every rank before llm-foundry builds the
trainer, and again in Composer's spawned upload processes (they import train.py as
__mp_main__).
"""
from __future__ import annotations

import os
from typing import Iterable

from data_prep.storage.base import RemoteError

_installed = False


def record_namespaces(urls: Iterable[str]) -> None:
    """Remember the namespace of every oci://bucket@namespace/... URL for the stores Composer
    builds from the bucket name alone (see object_store.py); in the environment, so spawned
    processes inherit it. One bucket named with two namespaces is an error."""
    from data_prep.storage.oci.client import parse_url
    from training.checkpoints.object_store import NAMESPACES_ENV, namespaces
    known = namespaces()
    for url in urls:
        if not isinstance(url, str) or not url.startswith('oci://'):
            continue
        bucket, ns, _ = parse_url(url)
        if ns is None:
            continue
        if known.get(bucket, ns) != ns:
            raise RemoteError(f'{url}: bucket {bucket!r} is named with namespace {ns!r} here '
                              f'and {known[bucket]!r} elsewhere (Composer keys its stores by '
                              f'bucket name alone): use one namespace per bucket')
        known[bucket] = ns
    if known:
        os.environ[NAMESPACES_ENV] = ','.join(f'{b}@{n}' for b, n in sorted(known.items()))


def install(urls: Iterable[str] = ()) -> None:
    """Make every oci:// object store Composer builds ours (idempotent); `urls`: the oci://
    URLs the run names, for their namespaces. Fails in one line (UnsupportedVersion) on a
    Composer version compat.py was not written for."""
    global _installed
    record_namespaces(urls)
    if _installed:
        return
    from training.checkpoints import compat
    from training.checkpoints.object_store import OCIStore
    compat.use_store_for_oci(OCIStore)
    _installed = True


def store_for(url: str):
    """The object store Composer builds for `url` (ours for oci:// once installed)."""
    from composer.utils.file_helpers import maybe_create_object_store_from_uri
    return maybe_create_object_store_from_uri(url)


def check_folder(url: str, run_name: str) -> None:
    """Fails in one line (RemoteError) unless the store Composer builds for the save_folder
    `url` can list that folder: the bucket exists, the credentials are accepted, the endpoint
    answers."""
    from composer.utils.file_helpers import format_name_with_dist, parse_uri
    store_for(url).check(parse_uri(format_name_with_dist(url, run_name))[2])


def forget_autoresume_copy(save_folder: str, run_name: str) -> list[str]:
    """Delete the copy of the latest checkpoint that Composer's autoresume downloaded from a
    bucket on an earlier start, and return what was deleted.

    For a non-sharded checkpoint Composer downloads `latest-rank{rank}.pt` into the save_folder
    URL read as a local path (./oci:/bucket@namespace/...), and on the next start it loads that
    copy without asking the bucket: a run resumed once, then saved newer checkpoints, then
    restarted, would go back to the old copy. Call on local rank 0 before the trainer starts."""
    if '://' not in save_folder:
        return []
    from composer.utils.file_helpers import format_name_with_dist
    folder = os.path.abspath(format_name_with_dist(save_folder, run_name))
    if not os.path.isdir(folder):
        return []
    gone = []
    for name in sorted(os.listdir(folder)):
        if name.startswith('latest-rank') and name.endswith('.pt'):
            os.remove(os.path.join(folder, name))
            gone.append(os.path.join(folder, name))
    return gone

"""OCIStore, the Composer ObjectStore over our OCI client, against the local OCI store: Composer
builds it for every oci:// URL once installed, and it does each transfer the way the data path
does (HEAD for sizes, multipart above the threshold, retries, namespace from the URL)."""
import os
from collections import Counter
from pathlib import Path

import pytest
from composer.loggers import RemoteUploaderDownloader
from composer.utils import build_remote_backend, get_file, maybe_create_object_store_from_uri

from data_prep.storage.base import RemoteError
from local_services.oci_store import Knobs, start_store
from tests.helpers import session_token_config
from training import checkpoints
from training.checkpoints.object_store import NAMESPACES_ENV, OCIStore


@pytest.fixture(autouse=True)
def _namespaces(monkeypatch):
    monkeypatch.setenv(NAMESPACES_ENV, '')  # install() sets it: restored after each test


def test_composer_builds_ours_and_it_round_trips(oci_store, tmp_path):
    checkpoints.install(['oci://c4-bench@local/ckpt/run'])
    # every way Composer makes an oci:// store: URI factory, backend map (checkpoint uploads
    # and their spawned processes), the logger destination hf_checkpointer uses
    made = [maybe_create_object_store_from_uri('oci://c4-bench@local/ckpt/run'),
            build_remote_backend('oci', {'bucket': 'c4-bench'}),
            RemoteUploaderDownloader('oci://c4-bench').remote_backend]
    assert all(type(s) is OCIStore for s in made)
    store = made[0]
    assert store.get_uri('ckpt/run/a.pt') == 'oci://c4-bench@local/ckpt/run/a.pt'

    src = tmp_path / 'a.pt'
    src.write_bytes(os.urandom(300_000))
    oci_store.clear_log()
    store.upload_object('ckpt/run/a.pt', src)
    assert store.get_object_size('ckpt/run/a.pt') == 300_000
    assert store.list_objects('ckpt/') == ['ckpt/run/a.pt']
    store.download_object('ckpt/run/a.pt', tmp_path / 'b.pt')
    assert (tmp_path / 'b.pt').read_bytes() == src.read_bytes()
    with pytest.raises(FileExistsError):
        store.download_object('ckpt/run/a.pt', tmp_path / 'b.pt')
    # Composer's get_file (autoresume, load_path) from a URI: HEAD for the size, one GET
    get_file('oci://c4-bench@local/ckpt/run/a.pt', str(tmp_path / 'c.pt'), progress_bar=False)
    assert (tmp_path / 'c.pt').read_bytes() == src.read_bytes()
    store.delete_object('ckpt/run/a.pt')
    store.delete_object('ckpt/run/a.pt')  # gone already: not an error
    assert store.list_objects('ckpt/') == []
    with pytest.raises(FileNotFoundError):
        store.get_object_size('ckpt/run/a.pt')
    with pytest.raises(FileNotFoundError):
        store.download_object('ckpt/run/a.pt', tmp_path / 'd.pt')
    assert not (tmp_path / 'd.pt').exists() and not list(tmp_path.glob('d.pt*'))

    calls = Counter((r['method'], r['path'].split('/o')[-1]) for r in oci_store.requests())
    assert calls == Counter({('PUT', '/ckpt/run/a.pt'): 1, ('HEAD', '/ckpt/run/a.pt'): 3,
                             ('GET', ''): 2, ('GET', '/ckpt/run/a.pt'): 3,
                             ('DELETE', '/ckpt/run/a.pt'): 2})  # a size never costs a GET


def test_multipart_upload_with_transient_errors_retried(tmp_path, monkeypatch):
    """Above the threshold a file goes as parallel parts; 30% of part uploads and commits
    answer 503 and are retried; the object is whole."""
    knobs = Knobs(fault_rate=0.3, fault_kinds=('503',), seed=3, fault_match=r'^(PUT|POST) .*/u/')
    with start_store(tmp_path / 'store', knobs=knobs, buckets=['c4-bench']) as store:
        for k, v in store.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv('OCI_MULTIPART_THRESHOLD_MB', '1')
        monkeypatch.setenv('OCI_MULTIPART_PART_MB', '1')
        checkpoints.install(['oci://c4-bench@local/ckpt'])
        store_ = maybe_create_object_store_from_uri('oci://c4-bench@local/ckpt')
        src = tmp_path / 'big.pt'
        src.write_bytes(os.urandom((3 << 20) + 12345))
        store_.upload_object('ckpt/big.pt', src)
        log = store.requests()
        store_.download_object('ckpt/big.pt', tmp_path / 'back.pt')
    assert (tmp_path / 'back.pt').read_bytes() == src.read_bytes()
    parts = [r for r in log if r['method'] == 'PUT' and '/u/' in r['path']]
    ok = {r['query']['uploadPartNum'] for r in parts if r['status'] == 200}
    assert ok == {'1', '2', '3', '4'}
    assert [r['status'] for r in log if r['fault']] and all(
        r['status'] == 503 for r in log if r['fault'])
    assert not [r for r in log if r['method'] == 'PUT' and r['path'].endswith('/o/ckpt/big.pt')]


def test_namespace_from_the_url_reaches_every_request(oci_store, tmp_path):
    """Composer drops `@namespace` before it builds a store; ours gets it back from the URLs
    install() saw (the local store serves namespace `local` only, so another one is refused)."""
    checkpoints.install(['oci://c4-bench@elsewhere/ckpt'])
    oci_store.clear_log()
    store = maybe_create_object_store_from_uri('oci://c4-bench@elsewhere/ckpt')
    with pytest.raises(RemoteError, match="bucket 'c4-bench' not found in namespace 'elsewhere'"):
        store.check('ckpt')
    src = tmp_path / 'x'
    src.write_bytes(b'x')
    with pytest.raises(RemoteError, match="namespace 'elsewhere'"):
        store.upload_object('ckpt/x', src)
    assert {r['path'].split('/')[2] for r in oci_store.requests()} == {'elsewhere'}
    with pytest.raises(RemoteError, match="'c4-bench' is named with namespace 'other'"):
        checkpoints.install(['oci://c4-bench@other/y'])


def test_security_token_auth_for_checkpoints(oci_store, tmp_path, monkeypatch):
    """Auth kinds are the client's (data_prep.storage.oci.auth): a session token signs too."""
    session = session_token_config(tmp_path, Path(oci_store.env()['OCI_CONFIG_FILE']))
    monkeypatch.setenv('OCI_CLI_AUTH', 'security_token')
    monkeypatch.setenv('OCI_CONFIG_FILE', str(session))
    checkpoints.install(['oci://c4-bench@local/tok'])
    store = build_remote_backend('oci', {'bucket': 'c4-bench'})
    src = tmp_path / 'a'
    src.write_bytes(b'signed with a session key')
    store.upload_object('tok/a', src)
    assert store.get_object_size('tok/a') == len(src.read_bytes())

"""The OCI backend for real: the oci SDK against the local store on 127.0.0.1, directly and
through streaming's MDSWriter and StreamingDataset with our transport installed."""
import os
import time
from collections import Counter
from pathlib import Path

import oci
import pytest
from streaming import StreamingDataset

from data_prep.storage.oci import client as oci_client
from data_prep.storage.oci.auth import CredentialsError
from data_prep.storage.oci.client import CorruptObject
from data_prep.storage.oci.remote import OCIRemote
from local_services.oci_store import Knobs, start_store
from tests.helpers import other_key_config, read_ids, session_token_config, write_mds
from training.shards import install
from training.shards.shared_memory import clean_stale_shared_memory
from training.shards.stream import ShardUnavailable


def shard_gets(log: list[dict]) -> Counter:
    return Counter(r['path'] for r in log if r['method'] == 'GET' and '/shard.' in r['path'])


def test_one_request_per_shard_download(oci_store, tmp_path):
    write_mds('oci://c4-bench@local/one/train', 600, compression='zstd')
    oci_store.clear_log()
    assert sorted(read_ids('oci://c4-bench@local/one/train', tmp_path / 'c1')) == list(range(600))
    log = oci_store.requests()
    gets = shard_gets(log)
    shards = [n for n in OCIRemote('oci://c4-bench@local/one/train').list() if 'shard.' in n]
    assert len(shards) > 5 and len(gets) == len(shards) and set(gets.values()) == {1}
    # with the namespace in the URL nothing but the index and the shards is asked for
    assert len(log) == len(shards) + 1 and all(r['status'] == 200 for r in log)

    # without it, the namespace is asked for once in this process, then cached
    oci_client._namespaces.clear()
    oci_store.clear_log()
    assert sorted(read_ids('oci://c4-bench/one/train', tmp_path / 'c2')) == list(range(600))
    log = oci_store.requests()
    assert [r['path'] for r in log].count('/n') == 1
    assert len(log) == len(shards) + 2 and set(shard_gets(log).values()) == {1}


def test_flaky_store_conversion_and_streaming_lose_nothing(tmp_path, monkeypatch):
    """10% of requests fail (503, 500, 429, or a connection reset, mid-body for GETs)."""
    knobs = Knobs(fault_rate=0.1, seed=6)  # its first faults: every kind
    with start_store(tmp_path / 'store', knobs=knobs, buckets=['c4-bench']) as store:
        for k, v in store.env().items():
            monkeypatch.setenv(k, v)
        write_mds('oci://c4-bench/flaky/train', 3000, compression='zstd', size_limit=1 << 13)
        remote = OCIRemote('oci://c4-bench/flaky/train')
        assert 'index.json' in remote.list()
        # a full pass in two DataLoader workers (forked: each makes its own client)
        ids = read_ids('oci://c4-bench/flaky/train', tmp_path / 'cache', workers=2)
        assert sorted(ids) == list(range(3000))
        faults = Counter(r['fault'] for r in store.requests() if r['fault'])
    assert sum(faults.values()) >= 10 and set(faults) == {'503', '500', '429', 'reset'}, faults


def test_flaky_store_real_conversion_then_streaming(tmp_path, monkeypatch):
    """`python -m data_prep.convert` into a store failing 10% of requests, then a full pass."""
    from data_prep.pipeline.sample import generate
    from tests.helpers import PY, run, sample_texts
    generate(str(tmp_path / 'in'), size_mb=1, train_files=2, val_files=1, seed=5, workers=1)
    with start_store(tmp_path / 'store', knobs=Knobs(fault_rate=0.1, seed=6),
                     buckets=['c4-bench']) as store:
        for k, v in store.env().items():
            monkeypatch.setenv(k, v)
        run([PY, '-m', 'data_prep.convert',
             '--data-files', str(tmp_path / 'in' / 'c4-train.*.json.gz'),
             '--remote', 'oci://c4-bench/conv', '--compression', 'zstd', '--workers', '1',
             '--size-limit', '32768', '--no-progress'], timeout=240)
        install()
        clean_stale_shared_memory()
        ds = StreamingDataset(remote='oci://c4-bench/conv', split='train',
                              local=str(tmp_path / 'cache'), shuffle=False, batch_size=8)
        assert Counter(s['text'] for s in ds) == Counter(sample_texts(tmp_path / 'in'))
        assert sum(1 for r in store.requests() if r['fault']) >= 5


def test_truncated_transfer_is_retried_then_refused(tmp_path, monkeypatch):
    knobs = Knobs(fault_rate=1.0, fault_kinds=('reset',), fault_match=r'^GET .*/o/')
    with start_store(tmp_path / 'store', knobs=knobs, buckets=['b']) as store:
        for k, v in store.env().items():
            monkeypatch.setenv(k, v)
        OCIRemote('oci://b@local/x').write('blob', os.urandom(300_000))
        monkeypatch.setenv('OCI_TRANSPORT_ATTEMPTS', '3')
        local = tmp_path / 'dl' / 'blob'
        with pytest.raises(Exception) as e:
            oci_client.download_file('oci://b@local/x/blob', str(local), timeout=30)
        assert not isinstance(e.value, AssertionError)
        assert not local.exists() and list(local.parent.iterdir()) == []  # no temp left over
        gets = [r for r in store.requests() if r['method'] == 'GET']
        assert len(gets) == 3 and all(r['fault'] == 'reset' and r['bytes'] < 300_000 for r in gets)


def test_object_damaged_in_the_bucket_is_detected(oci_store, tmp_path):
    write_mds('oci://c4-bench@local/dmg/train', 300)
    shard = oci_store.data_dir / 'buckets' / 'c4-bench' / 'dmg' / 'train' / 'shard.00000.mds'
    with open(shard, 'r+b') as f:
        f.truncate(shard.stat().st_size // 2)
    local = tmp_path / 'cache' / 'shard.00000.mds'
    with pytest.raises(CorruptObject):
        oci_client.download_file('oci://c4-bench@local/dmg/train/shard.00000.mds', str(local))
    assert not local.exists()
    with pytest.raises(CorruptObject):
        OCIRemote('oci://c4-bench@local/dmg/train').read('shard.00000.mds')
    # streaming: no sample of the damaged shard is read, and the pass fails naming it
    # (StreamingDataset alone would end the pass early in silence; see loud_shard_errors).
    clean_stale_shared_memory()
    ds = StreamingDataset(remote='oci://c4-bench@local/dmg/train', local=str(tmp_path / 'c2'),
                          shuffle=False, batch_size=8)
    with pytest.raises(ShardUnavailable, match='shard.00000.mds'):
        list(ds)
    assert not (tmp_path / 'c2' / 'shard.00000.mds').exists()
    with pytest.raises(ShardUnavailable, match='shard.00000.mds'):
        next(iter(ds))


def test_download_timeout_is_honoured(tmp_path, monkeypatch):
    with start_store(tmp_path / 'store', knobs=Knobs(latency_ms=6000), buckets=['b']) as store:
        for k, v in store.env().items():
            monkeypatch.setenv(k, v)
        (store.data_dir / 'buckets' / 'b' / 'obj').write_bytes(b'x' * 10)
        oci_client.client(read_timeout=1.0)  # made once per process: not part of the timing
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            oci_client.download_file('oci://b@local/obj', str(tmp_path / 'obj'), timeout=1)
        elapsed = time.monotonic() - t0
        # the store answers after 6 s: a socket timeout ignored would still end in a
        # TimeoutError (the late deadline check), but only after those 6 s
        assert elapsed < 4.0, elapsed
        assert not (tmp_path / 'obj').exists()


def test_multipart_upload_and_abort(tmp_path, monkeypatch):
    monkeypatch.setenv('OCI_MULTIPART_THRESHOLD_MB', '1')
    monkeypatch.setenv('OCI_MULTIPART_PART_MB', '1')
    data = os.urandom(3 * (1 << 20) + 12345)
    src = tmp_path / 'big.bin'
    src.write_bytes(data)
    with start_store(tmp_path / 'store', buckets=['b']) as store:
        for k, v in store.env().items():
            monkeypatch.setenv(k, v)
        oci_client.upload_file(str(src), 'b', 'local', 'mp/big.bin')
        assert OCIRemote('oci://b@local/mp').read('big.bin') == data
        parts = [r for r in store.requests() if r['method'] == 'PUT' and '/u/' in r['path']]
        assert len(parts) == 4
    # every part upload fails: the upload is aborted, no parts stay behind
    knobs = Knobs(fault_rate=1.0, fault_kinds=('503',), fault_match=r'^PUT .*/u/')
    with start_store(tmp_path / 'store', knobs=knobs) as store:
        for k, v in store.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv('OCI_TRANSPORT_ATTEMPTS', '2')
        with pytest.raises(oci.exceptions.ServiceError):
            oci_client.upload_file(str(src), 'b', 'local', 'mp/failed.bin')
        assert [r['status'] for r in store.requests() if r['method'] == 'DELETE'] == [204]
        assert oci_client.client().list_multipart_uploads('local', 'b').data == []
        assert 'failed.bin' not in OCIRemote('oci://b@local/mp').list()


def test_remote_lists_every_page_and_round_trips(oci_store):
    bucket_dir = oci_store.data_dir / 'buckets' / 'c4-bench' / 'many'
    bucket_dir.mkdir(parents=True)
    for i in range(1005):  # objects are files: make them without 1005 PUTs
        (bucket_dir / f'o{i:05d}').write_bytes(b'x' * (i % 7))
    remote = OCIRemote('oci://c4-bench/many')
    oci_store.clear_log()
    listing = remote.list()
    assert len(listing) == 1005 and listing['o00006'] == 6
    assert sum('/o' in r['path'] and r['method'] == 'GET' for r in oci_store.requests()) == 2
    remote.write('sub/index.json', b'{"a": 1}')
    assert remote.read('sub/index.json') == b'{"a": 1}'
    assert remote.list('sub/') == {'sub/index.json': 8}
    remote.delete('sub/index.json')
    remote.delete('sub/index.json')  # deleting what is gone is fine
    assert remote.list('sub/') == {}
    assert remote.join('a', 'b') == 'oci://c4-bench/many/a/b'
    from data_prep.storage import open_remote
    assert isinstance(open_remote('oci://c4-bench@local/x'), OCIRemote)


def one_line_error(monkeypatch, **env) -> str:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(CredentialsError) as e:
        OCIRemote('oci://c4-bench/x').list()
    msg = str(e.value)
    assert '\n' not in msg and 'PRIVATE KEY' not in msg and 'hunter2' not in msg
    return msg


def test_credentials_errors_are_one_clear_line(oci_store, tmp_path, monkeypatch):
    cfg = Path(oci_store.env()['OCI_CONFIG_FILE'])
    key = next(line.split('=', 1)[1] for line in cfg.read_text().splitlines()
               if line.startswith('key_file'))
    assert 'config file' in one_line_error(monkeypatch, OCI_CONFIG_FILE=str(tmp_path / 'nope'))
    assert '[OTHER]' in one_line_error(monkeypatch, OCI_CONFIG_FILE=str(cfg),
                                       OCI_CLI_PROFILE='OTHER')
    bad = tmp_path / 'bad_config'
    bad.write_text(cfg.read_text().replace(key, str(tmp_path / 'gone.pem'))
                   + 'pass_phrase=hunter2\n')
    assert 'gone.pem' in one_line_error(monkeypatch, OCI_CONFIG_FILE=str(bad),
                                        OCI_CLI_PROFILE='DEFAULT')
    bad.write_text('[DEFAULT]\nuser=ocid1.user.oc1..x\nfingerprint=nope\nkey_file=' + key + '\n')
    msg = one_line_error(monkeypatch, OCI_CONFIG_FILE=str(bad))
    assert 'fingerprint malformed' in msg and 'tenancy missing' in msg
    assert 'not one of' in one_line_error(monkeypatch, OCI_CLI_AUTH='password')
    monkeypatch.delenv('OCI_RESOURCE_PRINCIPAL_VERSION', raising=False)
    assert 'OCI_RESOURCE_PRINCIPAL_VERSION' in one_line_error(
        monkeypatch, OCI_CLI_AUTH='resource_principal')
    assert 'security_token_file' in one_line_error(monkeypatch, OCI_CLI_AUTH='security_token',
                                                   OCI_CONFIG_FILE=str(cfg))


def test_security_token_auth_signs_requests(oci_store, tmp_path, monkeypatch):
    """The store verifies every signature with its key pair (the token itself is not
    inspected): signed with that key the session works; with another key it is refused."""
    session = session_token_config(tmp_path, Path(oci_store.env()['OCI_CONFIG_FILE']))
    monkeypatch.setenv('OCI_CLI_AUTH', 'security_token')
    monkeypatch.setenv('OCI_CONFIG_FILE', str(session))
    OCIRemote('oci://c4-bench/tok').write('a', b'signed')
    assert OCIRemote('oci://c4-bench/tok').read('a') == b'signed'
    forged = other_key_config(tmp_path, session)  # a new path: signers are cached per config
    monkeypatch.setenv('OCI_CONFIG_FILE', str(forged))
    with pytest.raises(CredentialsError, match='401 NotAuthenticated'):
        OCIRemote('oci://c4-bench/tok').list()
    with pytest.raises(oci.exceptions.ServiceError) as e:
        OCIRemote('oci://c4-bench/tok').write('b', b'x')
    assert e.value.status == 401
    assert not (oci_store.data_dir / 'buckets' / 'c4-bench' / 'tok' / 'b').exists()


def test_a_key_the_store_did_not_make_is_refused(oci_store, tmp_path, monkeypatch):
    """api_key auth with another key (the config's fingerprint left as it was, so only the
    signature can tell): one line from a listing, and 401 for every request."""
    wrong = other_key_config(tmp_path, Path(oci_store.env()['OCI_CONFIG_FILE']))
    monkeypatch.setenv('OCI_CONFIG_FILE', str(wrong))
    with pytest.raises(CredentialsError, match='401 NotAuthenticated') as e:
        OCIRemote('oci://c4-bench/x').list()
    assert '\n' not in str(e.value) and str(wrong) in str(e.value)
    with pytest.raises(oci.exceptions.ServiceError) as e:
        OCIRemote('oci://c4-bench/x').write('intruder', b'x')
    assert e.value.status == 401
    assert not (oci_store.data_dir / 'buckets' / 'c4-bench' / 'x').exists()

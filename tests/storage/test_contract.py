"""One contract (data_prep.storage.base.Remote), one test body, every backend for real: a local
folder, s3:// against moto's S3 server, oci:// against the local OCI store, both on 127.0.0.1."""
from concurrent.futures import ThreadPoolExecutor

import pytest

from data_prep.storage import Remote, RemoteError, list_checked, open_remote
from tests.helpers import read_ids, write_mds


@pytest.fixture(params=['local', 's3', 'oci'])
def remote_url(request, tmp_path):
    """The URL of an empty prefix in a real store of each kind."""
    if request.param == 'local':
        return str(tmp_path / 'remote')
    if request.param == 's3':
        request.getfixturevalue('s3_server')
        return 's3://c4-bench/contract'
    request.getfixturevalue('oci_store')
    return 'oci://c4-bench@local/contract'


def test_remote_contract(remote_url):
    remote = open_remote(remote_url)
    assert isinstance(remote, Remote)
    assert (remote.local_root is not None) == ('://' not in remote_url)
    assert remote.list() == {} and list_checked(remote, 'a/') == {}

    remote.write('a/one.json', b'{"n": 1}')
    remote.write('a/b/two.bin', b'x' * 1000)
    remote.write('ab.txt', b'')
    assert remote.list() == {'a/one.json': 8, 'a/b/two.bin': 1000, 'ab.txt': 0}
    assert remote.list('a/') == {'a/one.json': 8, 'a/b/two.bin': 1000}
    assert set(remote.list('a')) == {'a/one.json', 'a/b/two.bin', 'ab.txt'}  # a name prefix
    assert remote.list('a/b/') == {'a/b/two.bin': 1000}
    assert remote.read('a/one.json') == b'{"n": 1}' and remote.read('ab.txt') == b''

    remote.write('a/one.json', b'{"n": 22}')  # replaced whole
    assert remote.read('a/one.json') == b'{"n": 22}' and remote.list('a/')['a/one.json'] == 9
    with pytest.raises(FileNotFoundError):
        remote.read('a/missing')

    # create: only if absent, atomically (the building block of a lease)
    assert remote.create('lock/owner', b'me') is True
    assert remote.create('lock/owner', b'you') is False
    assert remote.read('lock/owner') == b'me' and remote.list('lock/') == {'lock/owner': 2}
    if not remote_url.startswith('s3://'):  # for s3 that atomicity is the server's (moto's)
        with ThreadPoolExecutor(6) as pool:
            won = list(pool.map(lambda i: remote.create('lock/race', b'%d' % i), range(6)))
        assert won.count(True) == 1 and remote.read('lock/race') == b'%d' % won.index(True)
    remote.delete_prefix('lock')

    remote.delete('a/one.json')
    remote.delete('a/one.json')  # already gone: fine
    assert 'a/one.json' not in remote.list()
    remote.delete_prefix('a')
    assert remote.list() == {'ab.txt': 0}
    assert remote.join('x', '/y/') == remote_url.rstrip('/') + '/x/y'


def test_streaming_reads_what_was_written_through_each_remote(remote_url, tmp_path):
    """MDSWriter (streaming's uploaders, ours for oci://) then a full pass of StreamingDataset
    (streaming's downloaders, ours for oci://): every sample once; the Remote sees the shards."""
    write_mds(remote_url + '/train', 500, compression='zstd')
    assert sorted(read_ids(remote_url + '/train', tmp_path / 'cache')) == list(range(500))
    listing = open_remote(remote_url).list('train/')
    assert 'train/index.json' in listing and sum('shard.' in n for n in listing) > 3


@pytest.mark.parametrize('kind', ['s3', 'oci'])
def test_missing_bucket_is_one_remote_error(kind, request):
    request.getfixturevalue('s3_server' if kind == 's3' else 'oci_store')
    url = 's3://no-such-bucket/x' if kind == 's3' else 'oci://no-such-bucket@local/x'
    with pytest.raises(RemoteError) as err:
        list_checked(open_remote(url))
    message = str(err.value)
    assert '\n' not in message and 'no-such-bucket' in message


def test_unknown_scheme_is_one_remote_error():
    with pytest.raises(RemoteError, match="unsupported remote 'oic://b/x'"):
        open_remote('oic://b/x')

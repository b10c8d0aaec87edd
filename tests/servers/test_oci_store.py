"""The local OCI-compatible store: real HTTP on 127.0.0.1, real oci SDK calls, real files."""
import http.client
import json
import os
import subprocess
import sys

import oci
import pytest

from data_prep.servers.oci_store import NAMESPACE, Knobs, start_store
from tests.helpers import ROOT

NS = NAMESPACE


def sdk(store):
    config = oci.config.from_file(store.env()['OCI_CONFIG_FILE'])
    return oci.object_storage.ObjectStorageClient(
        config, service_endpoint=store.endpoint, retry_strategy=oci.retry.NoneRetryStrategy(),
        circuit_breaker_strategy=oci.circuit_breaker.NoCircuitBreakerStrategy())


def raw(store, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection('127.0.0.1', store.port, timeout=10)
    conn.request(method, path, body=body, headers={'Authorization': 'Signature x', **(headers or {})})
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_sdk_round_trip(oci_store):
    from oci.object_storage import models as m
    c = sdk(oci_store)
    assert c.get_namespace().data == NS
    c.create_bucket(NS, m.CreateBucketDetails(name='other', compartment_id='ocid1.compartment.oc1..x'))
    assert c.head_bucket(NS, 'other').status == 200
    assert {b.name for b in c.list_buckets(NS, 'ocid1.compartment.oc1..x').data} == {'c4-bench', 'other'}
    with pytest.raises(oci.exceptions.ServiceError) as e:
        c.head_bucket(NS, 'missing')
    assert e.value.status == 404

    c.put_object(NS, 'c4-bench', 'a/b/hello.txt', b'hello world')
    got = c.get_object(NS, 'c4-bench', 'a/b/hello.txt')
    assert got.data.content == b'hello world' and got.headers['Content-MD5']
    part = c.get_object(NS, 'c4-bench', 'a/b/hello.txt', range='bytes=6-')
    assert (part.status, part.data.content) == (206, b'world')
    assert c.head_object(NS, 'c4-bench', 'a/b/hello.txt').headers['Content-Length'] == '11'

    for i in range(5):
        c.put_object(NS, 'c4-bench', f'p/{i}', b'x' * i)
    page = c.list_objects(NS, 'c4-bench', prefix='p/', limit=2, fields='name,size').data
    assert [o.name for o in page.objects] == ['p/0', 'p/1'] and page.next_start_with == 'p/2'
    page = c.list_objects(NS, 'c4-bench', prefix='p/', start='p/2', fields='name,size').data
    assert [(o.name, o.size) for o in page.objects] == [('p/2', 2), ('p/3', 3), ('p/4', 4)]
    assert page.next_start_with is None
    top = c.list_objects(NS, 'c4-bench', delimiter='/').data
    assert top.prefixes == ['a/', 'p/'] and top.objects == []

    up = c.create_multipart_upload(NS, 'c4-bench', m.CreateMultipartUploadDetails(object='mp/big')).data
    etags = [c.upload_part(NS, 'c4-bench', 'mp/big', up.upload_id, i + 1, bytes([65 + i]) * 1000)
             .headers['etag'] for i in range(3)]
    assert [p.size for p in c.list_multipart_upload_parts(NS, 'c4-bench', 'mp/big', up.upload_id).data] == [1000] * 3
    assert [u.upload_id for u in c.list_multipart_uploads(NS, 'c4-bench').data] == [up.upload_id]
    done = c.commit_multipart_upload(NS, 'c4-bench', 'mp/big', up.upload_id, m.CommitMultipartUploadDetails(
        parts_to_commit=[m.CommitMultipartUploadPartDetails(part_num=i + 1, etag=e) for i, e in enumerate(etags)]))
    assert done.headers['opc-multipart-md5'].endswith('-3')
    assert c.get_object(NS, 'c4-bench', 'mp/big').data.content == b'A' * 1000 + b'B' * 1000 + b'C' * 1000
    gone = c.create_multipart_upload(NS, 'c4-bench', m.CreateMultipartUploadDetails(object='mp/x')).data
    c.upload_part(NS, 'c4-bench', 'mp/x', gone.upload_id, 1, b'junk')
    c.abort_multipart_upload(NS, 'c4-bench', 'mp/x', gone.upload_id)
    assert c.list_multipart_uploads(NS, 'c4-bench').data == []

    c.delete_object(NS, 'c4-bench', 'a/b/hello.txt')
    with pytest.raises(oci.exceptions.ServiceError) as e:
        c.get_object(NS, 'c4-bench', 'a/b/hello.txt')
    assert (e.value.status, e.value.code) == (404, 'ObjectNotFound')
    log = oci_store.requests()
    assert log and {'method', 'path', 'status', 'bytes'} <= set(log[0])


def test_objects_survive_a_restart(tmp_path):
    with start_store(tmp_path / 'data', buckets=['keep']) as store:
        sdk(store).put_object(NS, 'keep', 'x/y', b'persist me')
    with start_store(tmp_path / 'data') as store:  # same data dir, another process and port
        assert sdk(store).get_object(NS, 'keep', 'x/y').data.content == b'persist me'


def test_refuses_escapes_and_unsigned_requests(oci_store, tmp_path):
    outside = tmp_path / 'escaped'
    for path in ('/n/local/b/c4-bench/o/../../../escaped', '/n/local/b/c4-bench/o/%2e%2e/%2e%2e/escaped',
                 '/n/local/b/c4-bench/o/a//b', '/n/local/b/c4-bench/o/%2Fabs', '/n/local/b/..%2F..%2F/o/x'):
        status, _ = raw(oci_store, 'PUT', path, body=b'evil')
        assert status in (400, 404), path
    assert not outside.exists()
    assert not any(p.name == 'escaped' for p in tmp_path.rglob('*'))
    conn = http.client.HTTPConnection('127.0.0.1', oci_store.port, timeout=10)
    conn.request('GET', '/n/')
    assert conn.getresponse().status == 401
    assert raw(oci_store, 'GET', '/n/')[1] == b'"local"'


def test_faults_latency_and_bandwidth(tmp_path):
    knobs = Knobs(fault_rate=1.0, fault_kinds=('503',), fault_match='^PUT ')
    with start_store(tmp_path / 'd', buckets=['b'], knobs=knobs) as store:
        c = sdk(store)
        with pytest.raises(oci.exceptions.ServiceError) as e:
            c.put_object(NS, 'b', 'o', b'data')
        assert e.value.status == 503
        assert c.get_namespace().data == NS  # unmatched requests are not faulted
    with start_store(tmp_path / 'd', knobs=Knobs(fault_rate=1.0, fault_kinds=('reset',))) as store:
        # a reset mid-body: the headers promise the whole object, half of it arrives
        (tmp_path / 'd' / 'buckets' / 'b' / 'big').write_bytes(b'z' * 100_000)
        conn = http.client.HTTPConnection('127.0.0.1', store.port, timeout=10)
        conn.request('GET', '/n/local/b/b/o/big', headers={'Authorization': 'x'})
        resp = conn.getresponse()
        assert resp.getheader('Content-Length') == '100000'
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            resp.read()
        assert store.requests()[-1]['fault'] == 'reset'
    with start_store(tmp_path / 'd', knobs=Knobs(latency_ms=50, bandwidth_mbps=2)) as store:
        assert len(raw(store, 'GET', '/n/local/b/b/o/big')[1]) == 100_000
        entry = store.requests()[-1]
        # lower bounds only: 50 ms latency, then 0.1 MB at 2 MB/s takes at least 50 ms more
        assert entry['ms'] >= 95 and entry['bytes'] == 100_000


def test_cli_start_status_stop(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, '-m', 'data_prep.servers.oci_store', *args,
                               '--data-dir', str(tmp_path / 'data')],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    for sub in ('serve', 'start', 'stop', 'status'):
        out = subprocess.run([sys.executable, '-m', 'data_prep.servers.oci_store', sub, '--help'],
                             cwd=ROOT, capture_output=True, text=True).stdout
        assert '--data-dir' in out
    first = cli('start', '--port', '0')
    assert first.returncode == 0, first.stderr
    assert 'export OCI_OBJECT_STORAGE_ENDPOINT=http://127.0.0.1:' in first.stdout
    pid = json.loads((tmp_path / 'data' / 'run' / 'store.json').read_text())['pid']
    try:
        again = cli('start', '--port', '0')
        assert 'already running' in again.stdout and f'pid {pid}' in again.stdout
        assert cli('status').returncode == 0
        assert (tmp_path / 'data' / 'buckets' / 'c4-bench').is_dir()  # the default bucket
    finally:
        assert 'stopped' in cli('stop').stdout
    assert cli('status').returncode == 1
    bad = subprocess.run([sys.executable, '-m', 'data_prep.servers.oci_store', 'serve',
                          '--fault-rate', '2'], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    with pytest.raises(OSError):
        os.kill(pid, 0)

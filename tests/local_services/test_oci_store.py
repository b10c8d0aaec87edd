"""The local OCI-compatible store: real HTTP on 127.0.0.1, real oci SDK calls, real files."""
import base64
import hashlib
import http.client
import json
import os
import socket
import stat
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from pathlib import Path

import oci
import pytest

from local_services.oci_store import NAMESPACE, Knobs, start_store
from local_services.oci_store.auth import sign
from tests.helpers import ROOT, other_key_config

NS = NAMESPACE


def sdk(store):
    config = oci.config.from_file(store.env()['OCI_CONFIG_FILE'])
    return oci.object_storage.ObjectStorageClient(
        config, service_endpoint=store.endpoint, retry_strategy=oci.retry.NoneRetryStrategy(),
        circuit_breaker_strategy=oci.circuit_breaker.NoCircuitBreakerStrategy())


def signed(store, method, path, body=b'', headers=None) -> dict:
    """Headers of a raw request signed by the SDK's signer with the store's client key."""
    return sign(store.env()['OCI_CONFIG_FILE'], method, store.endpoint, path, body, headers)


def raw(store, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection('127.0.0.1', store.port, timeout=10)
    conn.request(method, path, body=body, headers=signed(store, method, path, body or b'', headers))
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_sdk_round_trip(oci_store):
    from oci.object_storage import models as m
    c = sdk(oci_store)
    assert c.get_namespace().data == NS
    compartment = 'ocid1.compartment.oc1..x'
    c.create_bucket(NS, m.CreateBucketDetails(name='other', compartment_id=compartment))
    assert c.head_bucket(NS, 'other').status == 200
    assert {b.name for b in c.list_buckets(NS, compartment).data} == {'c4-bench', 'other'}
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

    up = c.create_multipart_upload(NS, 'c4-bench',
                                   m.CreateMultipartUploadDetails(object='mp/big')).data
    etags = [c.upload_part(NS, 'c4-bench', 'mp/big', up.upload_id, i + 1, bytes([65 + i]) * 1000)
             .headers['etag'] for i in range(3)]
    parts = c.list_multipart_upload_parts(NS, 'c4-bench', 'mp/big', up.upload_id).data
    assert [p.size for p in parts] == [1000] * 3
    assert [u.upload_id for u in c.list_multipart_uploads(NS, 'c4-bench').data] == [up.upload_id]
    done = c.commit_multipart_upload(
        NS, 'c4-bench', 'mp/big', up.upload_id, m.CommitMultipartUploadDetails(
            parts_to_commit=[m.CommitMultipartUploadPartDetails(part_num=i + 1, etag=e)
                             for i, e in enumerate(etags)]))
    assert done.headers['opc-multipart-md5'].endswith('-3')
    assert c.get_object(NS, 'c4-bench', 'mp/big').data.content == b'A' * 1000 + b'B' * 1000 + \
        b'C' * 1000
    gone = c.create_multipart_upload(NS, 'c4-bench',
                                     m.CreateMultipartUploadDetails(object='mp/x')).data
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
    for path in ('/n/local/b/c4-bench/o/../../../escaped',
                 '/n/local/b/c4-bench/o/%2e%2e/%2e%2e/escaped', '/n/local/b/c4-bench/o/a//b',
                 '/n/local/b/c4-bench/o/%2Fabs', '/n/local/b/..%2F..%2F/o/x'):
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
        conn.request('GET', '/n/local/b/b/o/big',
                     headers=signed(store, 'GET', '/n/local/b/b/o/big'))
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
        return subprocess.run([sys.executable, '-m', 'local_services.oci_store', *args,
                               '--data-dir', str(tmp_path / 'data')],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    for sub in ('serve', 'start', 'stop', 'status'):
        out = subprocess.run([sys.executable, '-m', 'local_services.oci_store', sub, '--help'],
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
    bad = subprocess.run([sys.executable, '-m', 'local_services.oci_store', 'serve',
                          '--fault-rate', '2'], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    with pytest.raises(OSError):
        os.kill(pid, 0)


# ----------------------------------------------------------------------------- as clients see it

def raw_request(method: str, path: str, headers: dict, body: bytes = b'') -> bytes:
    """One HTTP/1.1 request as bytes, to send as the body of another."""
    head = ''.join(f'{k}: {v}\r\n' for k, v in headers.items())
    return f'{method} {path} HTTP/1.1\r\n{head}\r\n'.encode() + body


def test_an_early_answer_leaves_no_body_on_the_connection(tmp_path):
    """Requests answered before their body is read: the body must not be taken for the next
    request on the kept-alive connection, let alone executed."""
    knobs = Knobs(fault_rate=1.0, fault_kinds=('503',), fault_match='^PUT .*/o/faulty$')
    with start_store(tmp_path / 'd', buckets=['b'], knobs=knobs) as store:
        c = sdk(store)
        with pytest.raises(oci.exceptions.ServiceError) as e:
            c.put_object(NS, 'missing', 'x', b'some bytes')
        assert e.value.status == 404
        assert c.list_objects(NS, 'b').data.objects == []  # the same pooled connection

        inner = '/n/local/b/b/o/smuggled'
        smuggled = raw_request('PUT', inner, signed(store, 'PUT', inner, b'gotcha'), b'gotcha')
        bogus = {'Authorization': 'Signature keyId="a/b/c",headers="date",signature="eA=="',
                 'Content-Length': str(len(smuggled))}
        cases = [('/n/local/b/missing/o/x', None, 404), ('/n/local/b/b/o/a//b', None, 400),
                 ('/n/local/b/b/u/x?uploadId=feed&uploadPartNum=1', None, 404),
                 ('/n/local/b/b/o/x', bogus, 401), ('/n/local/b/b/o/faulty', None, 503)]
        for path, headers, status in cases:
            conn = http.client.HTTPConnection('127.0.0.1', store.port, timeout=10)
            conn.request('PUT', path, body=smuggled,
                         headers=headers or signed(store, 'PUT', path, smuggled))
            resp = conn.getresponse()
            assert (resp.status, path) == (status, path) and resp.read()
            conn.request('GET', '/n/', headers=signed(store, 'GET', '/n/'))
            resp = conn.getresponse()
            assert (resp.status, resp.read(), path) == (200, b'"local"', path)
            conn.close()
        assert not (store.data_dir / 'buckets' / 'b' / 'smuggled').exists()
        assert not [r for r in store.requests() if 'smuggled' in r['path']]


def test_get_racing_put_serves_whole_versions(oci_store):
    """One writer alternates two versions of an object, two readers GET it: each answer is one
    version, whole, with its own length and MD5, and none hangs."""
    path = '/n/local/b/c4-bench/o/race/obj'
    versions = [b'a' * 300_000, b'b' * 700_000]
    md5 = {v: base64.b64encode(hashlib.md5(v).digest()).decode() for v in versions}
    assert raw(oci_store, 'PUT', path, body=versions[0])[0] == 200
    stop = time.monotonic() + 3
    problems, gets, puts = [], [0, 0], [0]

    def writer():
        conn = http.client.HTTPConnection('127.0.0.1', oci_store.port, timeout=10)
        while time.monotonic() < stop:
            body = versions[puts[0] % 2]
            conn.request('PUT', path, body=body, headers=signed(oci_store, 'PUT', path, body))
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
            puts[0] += 1

    def reader(k):
        conn = http.client.HTTPConnection('127.0.0.1', oci_store.port, timeout=5)
        while time.monotonic() < stop:
            conn.request('GET', path, headers=signed(oci_store, 'GET', path))
            resp = conn.getresponse()
            body = resp.read()  # a short body raises IncompleteRead; a hang, a timeout
            if body not in md5 or int(resp.getheader('Content-Length')) != len(body) \
                    or resp.getheader('Content-MD5') != md5[body]:
                problems.append((len(body), resp.getheader('Content-Length'),
                                 resp.getheader('Content-MD5')))
            gets[k] += 1

    def run(fn, *args):
        try:
            fn(*args)
        except Exception as e:  # reported below, with what the other threads saw
            problems.append(repr(e))
    threads = [threading.Thread(target=run, args=a) for a in [(writer,), (reader, 0),
                                                               (reader, 1)]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not problems, problems[:5]
    assert puts[0] > 10 and min(gets) > 10, (puts, gets)


def test_conditional_requests(oci_store):
    c, b = sdk(oci_store), 'c4-bench'

    def status(fn, *args, **kw):
        with pytest.raises(oci.exceptions.ServiceError) as e:
            fn(NS, b, *args, **kw)
        return e.value.status

    etag = c.put_object(NS, b, 'cond/x', b'one', if_none_match='*').headers['etag']
    assert status(c.put_object, 'cond/x', b'two', if_none_match='*') == 412  # create only
    assert c.get_object(NS, b, 'cond/x', if_match=etag).data.content == b'one'
    assert status(c.get_object, 'cond/x', if_match='other') == 412
    assert status(c.head_object, 'cond/x', if_match='other') == 412
    assert status(c.get_object, 'cond/x', if_none_match=etag) == 304
    assert status(c.head_object, 'cond/x', if_none_match=etag) == 304
    assert c.head_object(NS, b, 'cond/x', if_none_match='other').status == 200
    # replace exactly the version checked
    etag2 = c.put_object(NS, b, 'cond/x', b'two', if_match=etag).headers['etag']
    assert status(c.put_object, 'cond/x', b'three', if_match=etag) == 412
    assert status(c.put_object, 'cond/new', b'x', if_match=etag2) == 412  # nothing to match
    assert status(c.delete_object, 'cond/x', if_match=etag) == 412
    assert c.get_object(NS, b, 'cond/x').data.content == b'two'
    c.delete_object(NS, b, 'cond/x', if_match=etag2)
    assert status(c.head_object, 'cond/x') == 404
    # multipart: the condition holds when the upload is committed
    from oci.object_storage import models as m
    c.put_object(NS, b, 'cond/mp', b'here')
    assert status(c.create_multipart_upload, m.CreateMultipartUploadDetails(object='cond/mp'),
                  if_none_match='*') == 412
    up = c.create_multipart_upload(NS, b, m.CreateMultipartUploadDetails(object='cond/mp2'),
                                   if_none_match='*').data
    tag = c.upload_part(NS, b, 'cond/mp2', up.upload_id, 1, b'p').headers['etag']
    c.put_object(NS, b, 'cond/mp2', b'someone else')  # lands between create and commit
    details = m.CommitMultipartUploadDetails(
        parts_to_commit=[m.CommitMultipartUploadPartDetails(part_num=1, etag=tag)])
    assert status(c.commit_multipart_upload, 'cond/mp2', up.upload_id, details) == 412
    assert c.get_object(NS, b, 'cond/mp2').data.content == b'someone else'
    # of racing creators exactly one wins
    def create(i):
        try:
            sdk(oci_store).put_object(NS, b, 'cond/race', b'%d' % i, if_none_match='*')
            return True
        except oci.exceptions.ServiceError as e:
            assert e.status == 412
            return False
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(create, range(8)))
    assert won.count(True) == 1
    assert c.get_object(NS, b, 'cond/race').data.content == b'%d' % won.index(True)


def test_names_and_limits_clients_can_use(oci_store):
    c = sdk(oci_store)
    for name in ('x' * 300, 'a/' + 'y' * 256 + '/z'):  # longer than a file name may be
        with pytest.raises(oci.exceptions.ServiceError) as e:
            c.put_object(NS, 'c4-bench', name, b'data')
        assert (e.value.status, e.value.code) == (400, 'InvalidParameter')  # not retried
        assert '255 bytes' in e.value.message
    for i in range(3):
        c.put_object(NS, 'c4-bench', f'l/{i}', b'x')
    for limit in ('x', '0', '-1', '1.5'):
        status, body = raw(oci_store, 'GET', f'/n/local/b/c4-bench/o?prefix=l/&limit={limit}')
        assert status == 400 and b'limit' in body, limit
    pages = list(oci.pagination.list_call_get_all_results_generator(
        c.list_objects, 'response', NS, 'c4-bench', prefix='l/', limit=1))
    assert [[o.name for o in p.data.objects] for p in pages] == [['l/0'], ['l/1'], ['l/2']]
    page = c.list_objects(NS, 'c4-bench', prefix='l/').data  # name only, as OCI by default
    assert page.objects[0].name == 'l/0' and page.objects[0].size is None


def test_metadata_and_content_headers_are_kept(oci_store):
    from oci.object_storage import models as m
    c, b = sdk(oci_store), 'c4-bench'
    c.put_object(NS, b, 'meta/a.txt', b'text', content_type='text/plain',
                 content_language='en', content_encoding='identity',
                 content_disposition='attachment', cache_control='no-cache',
                 opc_meta={'Owner': 'me', 'run': '7'})
    for resp in (c.head_object(NS, b, 'meta/a.txt'), c.get_object(NS, b, 'meta/a.txt')):
        h = resp.headers
        assert (h['Content-Type'], h['Content-Language'], h['Content-Encoding'],
                h['Content-Disposition'], h['Cache-Control']) == (
                    'text/plain', 'en', 'identity', 'attachment', 'no-cache')
        assert (h['opc-meta-owner'], h['opc-meta-run']) == ('me', '7')
    assert c.get_object(NS, b, 'meta/a.txt').data.content == b'text'
    up = c.create_multipart_upload(NS, b, m.CreateMultipartUploadDetails(
        object='meta/mp', content_type='application/x-mds', metadata={'opc-meta-shard': '3'})).data
    tag = c.upload_part(NS, b, 'meta/mp', up.upload_id, 1, b'part').headers['etag']
    c.commit_multipart_upload(NS, b, 'meta/mp', up.upload_id, m.CommitMultipartUploadDetails(
        parts_to_commit=[m.CommitMultipartUploadPartDetails(part_num=1, etag=tag)]))
    h = c.head_object(NS, b, 'meta/mp').headers
    assert (h['Content-Type'], h['opc-meta-shard']) == ('application/x-mds', '3')
    assert c.put_object(NS, b, 'meta/b', b'x').status == 200  # no metadata: none returned
    assert not [k for k in c.head_object(NS, b, 'meta/b').headers if k.startswith('opc-meta-')]
    with pytest.raises(oci.exceptions.ServiceError) as e:
        c.put_object(NS, b, 'meta/big', b'x', opc_meta={'k': 'v' * 3000})
    assert e.value.status == 400


def test_client_config_is_private_and_idle_clients_are_dropped(tmp_path):
    with start_store(tmp_path / 'd', buckets=['b'], knobs=Knobs(idle_timeout_s=1)) as store:
        cfg = Path(store.env()['OCI_CONFIG_FILE'])
        assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
        assert stat.S_IMODE((cfg.parent / 'key.pem').stat().st_mode) == 0o600
        path = '/n/local/b/b/o/stalled'
        headers = signed(store, 'PUT', path, b'x' * 1_000_000)
        sock = socket.create_connection(('127.0.0.1', store.port), timeout=10)
        sock.sendall(raw_request('PUT', path, headers, b'only the first bytes'))
        time.sleep(1.5)
        assert list((store.data_dir / 'tmp').iterdir()) == []  # the temp file is gone
        assert sock.recv(100) == b''  # and the connection closed
        sock.close()
        entry = store.requests()[-1]
        assert (entry['path'], entry['status'], entry['in']) == (path, 499, 0)
        assert not (store.data_dir / 'buckets' / 'b' / 'stalled').exists()
    cfg.chmod(0o644)  # as an older store left it
    with start_store(tmp_path / 'd') as store:
        assert stat.S_IMODE(cfg.stat().st_mode) == 0o600


def test_requests_must_be_signed_with_the_store_key(oci_store, tmp_path):
    cfg = Path(oci_store.env()['OCI_CONFIG_FILE'])
    for same in (False, True):  # another key; another key claiming the store's fingerprint
        config = oci.config.from_file(str(other_key_config(tmp_path, cfg, same)))
        other = oci.object_storage.ObjectStorageClient(
            config, service_endpoint=oci_store.endpoint,
            retry_strategy=oci.retry.NoneRetryStrategy())
        for call in (lambda: other.get_namespace(),
                     lambda: other.put_object(NS, 'c4-bench', 'intruder', b'x'),
                     lambda: other.list_objects(NS, 'c4-bench')):
            with pytest.raises(oci.exceptions.ServiceError) as e:
                call()
            assert (e.value.status, e.value.code) == (401, 'NotAuthenticated')
    assert not (oci_store.data_dir / 'buckets' / 'c4-bench' / 'intruder').exists()
    # a signature over another request, a stale date, a forged body, no signature at all
    path = '/n/local/b/c4-bench/o'
    good = signed(oci_store, 'GET', path)
    assert raw(oci_store, 'GET', path)[0] == 200
    for headers, target in [(good, path + '?prefix=a'),
                            ({**signed(oci_store, 'GET', path, headers={
                                'date': formatdate(time.time() - 600, usegmt=True)})}, path),
                            ({k: v for k, v in good.items() if k.lower() != 'authorization'},
                             path)]:
        conn = http.client.HTTPConnection('127.0.0.1', oci_store.port, timeout=10)
        conn.request('GET', target, headers=headers)
        assert conn.getresponse().status == 401
    body = b'{"name": "forged"}'
    headers = signed(oci_store, 'POST', '/n/local/b/', body)
    conn = http.client.HTTPConnection('127.0.0.1', oci_store.port, timeout=10)
    conn.request('POST', '/n/local/b/', body=b'{"name": "forgex"}', headers=headers)
    assert conn.getresponse().status == 401
    assert not (oci_store.data_dir / 'buckets' / 'forgex').exists()
    assert raw(oci_store, 'POST', '/n/local/b/', body=body)[0] == 200


def test_small_answers_are_not_held_back(oci_store):
    """Headers and body leave in two writes; with Nagle's algorithm on, the body of every small
    answer waits for the client's delayed ACK (40 ms on Linux): every GET would take >= 40 ms.
    The median of 40 is what is checked: a busy machine stalls a few of them, not half."""
    path = '/n/local/b/c4-bench/o/small'
    assert raw(oci_store, 'PUT', path, body=b'x' * 1024)[0] == 200
    headers = signed(oci_store, 'GET', path)
    conn = http.client.HTTPConnection('127.0.0.1', oci_store.port, timeout=10)
    took = []
    for _ in range(40):
        t0 = time.monotonic()
        conn.request('GET', path, headers=headers)
        assert len(conn.getresponse().read()) == 1024
        took.append(time.monotonic() - t0)
    assert statistics.median(took) < 0.02, sorted(took)


def test_a_request_is_in_the_log_once_its_answer_is_read(tmp_path):
    """Tests use the request log as the witness of what a client did, reading the file right
    after the client's call returns: the store writes a request's line before the last byte
    of its answer goes out. Each kind of answer: a body sent whole (sendfile), a shaped body,
    a range, headers only (HEAD), an error, a PUT; the file is read without waiting."""
    store = start_store(tmp_path / 'store', buckets=['c4-bench'],
                        knobs=Knobs(bandwidth_mbps=50, shape_match=r'/o/shaped$'))
    try:
        for name, size in (('whole', 300_000), ('shaped', 40_000)):
            assert raw(store, 'PUT', f'/n/local/b/c4-bench/o/{name}', body=b'x' * size)[0] == 200
        cases = [('GET', 'whole', {}, 200), ('GET', 'shaped', {}, 200),
                 ('GET', 'whole', {'Range': 'bytes=10-99'}, 206), ('HEAD', 'whole', {}, 200),
                 ('GET', 'missing', {}, 404), ('PUT', 'put', {}, 200)]
        for _ in range(25):
            for method, name, headers, status in cases:
                path = f'/n/local/b/c4-bench/o/{name}'
                got, _ = raw(store, method, path, body=b'y' * 10 if method == 'PUT' else None,
                             headers=headers)
                assert got == status
                last = json.loads(store.log_path.read_text().splitlines()[-1])
                assert (last['method'], last['path'], last['status']) == (method, path, status)
    finally:
        store.stop()

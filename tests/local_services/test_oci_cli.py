"""The local OCI store driven by the official OCI CLI (PyPI `oci-cli`), a client nobody here wrote.

oci-cli pins certifi, jmespath, pytz, PyYAML, click and prompt-toolkit below what our venv has,
so it lives in a venv of its own: made once under build/oci-cli-venv (OCI_CLI_VENV to put it
elsewhere; about 2 minutes) and reused; its `oci` runs as a subprocess.
"""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from local_services.oci_store import start_store
from tests.helpers import ROOT

CLI_VERSION = '3.95.1'
VENV = Path(os.environ.get('OCI_CLI_VENV') or ROOT / 'build' / 'oci-cli-venv')


@pytest.fixture(scope='module')
def oci_cli() -> str:
    exe = VENV / 'bin' / 'oci'
    if exe.exists() and list(VENV.glob(f'lib/python*/site-packages/'
                                       f'oci_cli-{CLI_VERSION}.dist-info')):
        return str(exe)
    # The venv sees ours after its own packages (a .pth line), so only what oci-cli pins
    # differently (certifi, click, PyYAML, ...) and oci-cli itself are installed: the oci SDK,
    # cryptography and the rest come from ours (about 2 minutes instead of 4).
    ours = next(p for p in sys.path if p.endswith('site-packages'))
    proc = subprocess.run([sys.executable, '-m', 'venv', '--clear', str(VENV)],
                          capture_output=True, text=True, timeout=300)
    if not proc.returncode:
        site = subprocess.run([str(VENV / 'bin' / 'python'), '-c',
                               'import site; print(site.getsitepackages()[0])'],
                              capture_output=True, text=True).stdout.strip()
        Path(site, 'zz_ours.pth').write_text(ours + '\n')
        proc = subprocess.run([str(VENV / 'bin' / 'python'), '-m', 'pip', 'install', '-q',
                               f'oci-cli=={CLI_VERSION}'], capture_output=True, text=True,
                              timeout=1200)
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ['?'])[-1]
        pytest.fail(f'cannot make the oci-cli venv at {VENV}: {last}')
    return str(exe)


@pytest.mark.slow
def test_the_oci_cli_against_the_store(oci_cli, tmp_path):
    tree = tmp_path / 'tree'  # a nested folder for bulk-upload
    files = {'a/one.txt': b'one', 'a/b/two.txt': b'two' * 100, 'c.txt': b'c',
             'd/e/f/g.bin': os.urandom(5000)}
    for name, data in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    big = tmp_path / 'big.bin'
    big.write_bytes(os.urandom(3 * (1 << 20) + 100))
    (tmp_path / 'small.txt').write_text('small')

    with start_store(tmp_path / 'store', buckets=['c4-bench']) as store:
        config = store.env()['OCI_CONFIG_FILE']
        env = {**os.environ, 'SUPPRESS_LABEL_WARNING': 'True'}

        def oci(*args, ok=True):
            proc = subprocess.run([oci_cli, *args, '--config-file', config,
                                   '--endpoint', store.endpoint], capture_output=True,
                                  text=True, timeout=180, env=env)
            assert (proc.returncode == 0) == ok, (args, proc.stdout[-2000:], proc.stderr[-2000:])
            assert 'Permissions on' not in proc.stderr  # the config file is private (0600)
            out = proc.stdout.strip()
            return json.loads(out) if ok and out.startswith('{') else proc.stdout + proc.stderr

        with ThreadPoolExecutor(2) as pool:  # independent commands, side by side
            ns = pool.submit(oci, 'os', 'ns', 'get')
            assert oci('os', 'bucket', 'create', '--name', 'cli', '--compartment-id',
                       'ocid1.compartment.oc1..x')['data']['name'] == 'cli'
            assert ns.result()['data'] == 'local'
        store.clear_log()
        with ThreadPoolExecutor(4) as pool:
            bucket = pool.submit(oci, 'os', 'bucket', 'get', '--name', 'cli')
            puts = [pool.submit(oci, 'os', 'object', 'put', '-bn', 'cli', '--file',
                                str(tmp_path / 'small.txt'), '--name', 'docs/small.txt',
                                '--content-type', 'text/plain', '--metadata', '{"owner": "cli"}'),
                    pool.submit(oci, 'os', 'object', 'put', '-bn', 'cli', '--file', str(big),
                                '--name', 'big.bin', '--part-size', '1'),
                    pool.submit(oci, 'os', 'object', 'bulk-upload', '-bn', 'cli', '--src-dir',
                                str(tree), '--prefix', 'up/'),
                    pool.submit(oci, 'os', 'object', 'put', '-bn', 'cli', '--file',
                                str(tmp_path / 'small.txt'), '--name', 'docs/gone.txt')]
            results = [f.result() for f in puts]
            assert bucket.result()['data']['namespace'] == 'local'
        assert sorted(results[2]['uploaded-objects']) == sorted(f'up/{n}' for n in files)
        log = store.requests()
        assert sum(r['method'] == 'PUT' and r['path'] == '/n/local/b/cli/u/big.bin'
                   for r in log) == 4  # multipart: 4 parts of 1 MiB
        # the CLI puts new objects with If-None-Match: *, after a HEAD that found none
        assert all(r['status'] == 200 for r in log if r['method'] in ('PUT', 'POST'))

        with ThreadPoolExecutor(4) as pool:
            jobs = {
                'delete': pool.submit(oci, 'os', 'object', 'delete', '-bn', 'cli', '--name',
                                      'docs/gone.txt', '--force'),
                'page': pool.submit(oci, 'os', 'object', 'list', '-bn', 'cli', '--prefix', 'up/',
                                    '--limit', '2'),
                'all': pool.submit(oci, 'os', 'object', 'list', '-bn', 'cli', '--prefix', 'up/',
                                   '--all', '--page-size', '1'),
                'start': pool.submit(oci, 'os', 'object', 'list', '-bn', 'cli', '--prefix',
                                     'up/', '--start', 'up/b', '--delimiter', '/'),
                'head': pool.submit(oci, 'os', 'object', 'head', '-bn', 'cli', '--name',
                                    'docs/small.txt'),
                'range': pool.submit(oci, 'os', 'object', 'get', '-bn', 'cli', '--name',
                                     'big.bin', '--file', str(tmp_path / 'part'),
                                     '--range', 'bytes=100-1099'),
                'download': pool.submit(oci, 'os', 'object', 'bulk-download', '-bn', 'cli',
                                        '--download-dir', str(tmp_path / 'dl'), '--prefix',
                                        'up/'),
                'stale': pool.submit(oci, 'os', 'object', 'put', '-bn', 'cli', '--file',
                                     str(tmp_path / 'small.txt'), '--name', 'docs/small.txt',
                                     '--force', '--if-match', 'not-the-etag', ok=False),
                'rename': pool.submit(oci, 'os', 'object', 'rename', '-bn', 'cli',
                                      '--source-name', 'big.bin', '--new-name', 'moved.bin',
                                      ok=False),
                'copy': pool.submit(oci, 'os', 'object', 'copy', '-bn', 'cli',
                                    '--source-object-name', 'big.bin', '--destination-bucket',
                                    'cli', '--destination-object-name', 'copied.bin', ok=False),
            }
            got = {k: f.result() for k, f in jobs.items()}
        names = sorted(f'up/{n}' for n in files)
        assert [o['name'] for o in got['page']['data']] == names[:2]
        assert got['page']['next-start-with'] == names[2]
        assert [(o['name'], o['size']) for o in got['all']['data']] == [
            (n, len(files[n[3:]])) for n in names]
        assert [o['name'] for o in got['start']['data']] == ['up/c.txt']
        assert got['start']['prefixes'] == ['up/d/']  # up/a/ sorts before the start
        head = got['head']
        assert (head['content-type'], head['opc-meta-owner'], head['content-length']) == (
            'text/plain', 'cli', '5')
        assert (tmp_path / 'part').read_bytes() == big.read_bytes()[100:1100]
        for name, data in files.items():
            assert (tmp_path / 'dl' / 'up' / name).read_bytes() == data
        assert '412' in got['stale'] and 'NoEtagMatch' in got['stale']
        for what, action in (('rename', 'renameObject'), ('copy', 'copyObject')):
            assert f'{action} is not served by this local OCI store' in got[what]
        assert not (store.data_dir / 'buckets' / 'cli' / 'docs' / 'gone.txt').exists()
        assert not (store.data_dir / 'buckets' / 'cli' / 'moved.bin').exists()

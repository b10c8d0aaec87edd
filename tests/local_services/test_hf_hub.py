"""The hub path end to end, offline: `--dataset allenai/c4 --subset en` against the local hub.

huggingface_hub and datasets reach the hub at HF_ENDPOINT, here local_services.hf_hub on
127.0.0.1 serving allenai/c4 laid out from the session's sample, so `python -m
data_prep.convert` runs its real hub code path, unchanged, in real subprocesses.
"""
import hashlib
import json
import os
import subprocess

import pytest
import requests

from local_services.hf_hub import Knobs, c4_name, make_c4_repo, start_hub
from tests.helpers import PY, ROOT
from tests.mds import sample_digest

HUB_ARGS = ['--dataset', 'allenai/c4', '--subset', 'en', '--no-progress']
SECOND_FILE = r'GET /_lfs/.*/c4-train\.00001-of-01024'  # fault_match: one file's bytes only


@pytest.fixture(scope='module')
def hub_dir(sample_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp('hub')
    make_c4_repo(data, sample_dir)
    return data


@pytest.fixture(scope='module')
def hub(hub_dir):
    hub = start_hub(hub_dir, page_size=2)  # so listing en/ takes several pages, as at scale
    yield hub
    hub.stop()


def convert(hub, *args) -> subprocess.Popen:
    """`python -m data_prep.convert --dataset allenai/c4 --subset en ...` against `hub`."""
    return subprocess.Popen([PY, '-m', 'data_prep.convert', *HUB_ARGS, *args], cwd=ROOT,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **hub.env()})


def finish(proc: subprocess.Popen, rc: int = 0) -> str:
    """Waits for `proc`; fails the test with its output unless it exited `rc`. Its stderr."""
    out, err = proc.communicate(timeout=300)
    if proc.returncode != rc:
        pytest.fail(f'{" ".join(proc.args)} exited {proc.returncode}\n{out[-3000:]}\n{err[-5000:]}')
    return err


def test_hub_answers_huggingface_hub(hub, sample_dir, tmp_path):
    from huggingface_hub import HfApi, HfFileSystem, get_hf_file_metadata, hf_hub_download
    from huggingface_hub import hf_hub_url as url_of
    from huggingface_hub.utils import (
        EntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    api = HfApi(endpoint=hub.endpoint)
    hub.clear_log()
    names = sorted(c4_name(p.name) for p in sample_dir.glob('c4-*.json.gz'))
    listed = sorted(f.path for f in api.list_repo_tree('allenai/c4', 'en', repo_type='dataset'))
    assert listed == names and names[0] == 'en/c4-train.00000-of-01024.json.gz'
    pages = [r for r in hub.requests() if '/tree/' in r['path']]
    assert len(pages) == (len(names) + 1) // 2 and pages[-1]['query']['cursor']

    sha = api.dataset_info('allenai/c4').sha
    readme = hf_hub_download('allenai/c4', 'README.md', repo_type='dataset',
                             endpoint=hub.endpoint, cache_dir=tmp_path)
    assert 'path: en/c4-train.*-of-01024.json.gz' in open(readme).read()
    assert os.path.basename(os.path.dirname(readme)) == sha  # from X-Repo-Commit

    data = (sample_dir / 'c4-train.00000-of-00004.json.gz').read_bytes()
    meta = get_hf_file_metadata(url_of('allenai/c4', names[0], repo_type='dataset',
                                       endpoint=hub.endpoint))
    assert (meta.size, meta.commit_hash) == (len(data), sha)
    assert meta.etag == hashlib.sha256(data).hexdigest()  # an LFS file: X-Linked-Etag
    assert '/_lfs/' in meta.location  # served through a redirect, as from the CDN
    part = requests.get(meta.location, headers={'Range': 'bytes=10-19'}, timeout=10)
    assert part.status_code == 206 and part.content == data[10:20]
    with HfFileSystem(endpoint=hub.endpoint).open(f'datasets/allenai/c4@{sha}/{names[0]}') as f:
        f.seek(1000)
        assert f.read(64) == data[1000:1064]

    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info('allenai/c5')
    with pytest.raises(RevisionNotFoundError):
        api.dataset_info('allenai/c4', revision='v2')
    with pytest.raises(EntryNotFoundError):
        get_hf_file_metadata(url_of('allenai/c4', 'en/none.json.gz', repo_type='dataset',
                                    endpoint=hub.endpoint))


@pytest.mark.slow
def test_hub_conversion_matches_data_files(hub, hub_dir, sample_dir, tmp_path):
    """The same samples from the hub as from the files, raw and zstd; the zstd run's hub
    resets the second file mid-body, then answers 503 (read again, then retried)."""
    from data_prep.pipeline.convert import ConvertConfig
    from data_prep.pipeline.convert import convert as convert_files
    hub.clear_log()
    # Seed 1 at rate 0.6 draws: reset, 503, none (only that file's requests draw).
    knobs = Knobs(fault_rate=0.6, fault_kinds=('reset', '503'), seed=1, fault_match=SECOND_FILE)
    with start_hub(hub_dir, knobs=knobs, log_path=tmp_path / 'faulty.jsonl') as faulty:
        # Both hub runs at once, and the --data-files reference meanwhile, in this process.
        raw = convert(hub, '--remote', str(tmp_path / 'raw'))
        zstd = convert(faulty, '--remote', str(tmp_path / 'zstd'), '--compression', 'zstd')
        convert_files(ConvertConfig(remote=str(tmp_path / 'files'), progress=False,
                                    data_files=str(sample_dir / 'c4-train.*.json.gz')))
        finish(raw)
        finish(zstd)
        faults = [r['fault'] for r in faulty.requests() if r['fault']]
    want = sample_digest(str(tmp_path / 'files' / 'train'))
    assert want[0] > 0
    assert sample_digest(str(tmp_path / 'raw' / 'train')) == want
    assert sample_digest(str(tmp_path / 'zstd' / 'train')) == want
    assert faults == ['reset', '503']  # so the file was read again, and its GET retried
    assert list((tmp_path / 'zstd' / 'train' / 'part-00001').glob('*/shard.*.mds.zstd'))

    manifest = json.loads((tmp_path / 'raw' / 'train' / 'part-00001' / 'manifest.json')
                          .read_text())
    assert manifest['input'].startswith('hf://datasets/allenai/c4@')
    assert manifest['input'].endswith('/en/c4-train.00001-of-01024.json.gz')
    record = json.loads((tmp_path / 'raw' / 'train' / 'dataset.json').read_text())
    assert record['source'] == {'dataset': 'allenai/c4', 'subset': 'en', 'split': 'train',
                                'max_docs': None}
    reads = {r['path'].rsplit('/', 1)[1] for r in hub.requests()
             if r['path'].startswith('/_lfs/') and r['status'] == 206}
    assert reads == {c4_name(p.name).split('/')[1] for p in sample_dir.glob('c4-train.*')}


@pytest.mark.slow
def test_hub_file_that_keeps_failing_stops_the_run_in_one_line(hub_dir, tmp_path):
    knobs = Knobs(fault_rate=1.0, fault_kinds=('reset',), fault_match=SECOND_FILE)
    with start_hub(hub_dir, knobs=knobs, log_path=tmp_path / 'bad.jsonl') as bad:
        err = finish(convert(bad, '--remote', str(tmp_path / 'out')), rc=1)
        cut = [r for r in bad.requests() if r['fault']]
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert 'cannot read hf://datasets/allenai/c4@' in lines[0]
    assert '/en/c4-train.00001-of-01024.json.gz (tried 3 times)' in lines[0]
    assert len(cut) == 3 and all(0 < r['bytes'] for r in cut)  # each cut part-way
    assert not (tmp_path / 'out' / 'train' / 'index.json').exists()  # nothing published
    assert not (tmp_path / 'out' / 'train' / 'part-00001' / 'manifest.json').exists()


def test_hub_unknown_dataset_or_subset_is_one_line(hub, tmp_path):
    cases = {('allenai/c5', 'en'): "Dataset 'allenai/c5' doesn't exist on the Hub",
             ('allenai/c4', 'xx'): "BuilderConfig 'xx' not found. Available: ['en']"}
    procs = {case: subprocess.Popen(
        [PY, '-m', 'data_prep.convert', '--dataset', case[0], '--subset', case[1],
         '--remote', str(tmp_path / 'o'), '--no-progress'], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **hub.env()})
        for case in cases}
    for (name, subset), message in cases.items():
        lines = finish(procs[(name, subset)], rc=2).strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"error: cannot load dataset '{name}' (subset '{subset}') "
                                   f"at {hub.endpoint}: ") and message in lines[0]
    assert not (tmp_path / 'o').exists() or not any((tmp_path / 'o').rglob('*.mds'))


def test_endpoint_set_after_huggingface_hub_import_is_one_line(hub):
    """datasets builds the files' URLs with huggingface_hub's endpoint and its own, each read
    at import: set in between, the files would be sought at the real hub. We say so."""
    code = ('import os, huggingface_hub.constants\n'
            f'os.environ["HF_ENDPOINT"] = "{hub.endpoint}"\n'
            'from data_prep.pipeline.records import InputError, resolve_inputs\n'
            'try:\n    resolve_inputs("allenai/c4", "en")\n'
            'except InputError as e:\n    print(e)\n')
    env = {**os.environ, **hub.env()}
    del env['HF_ENDPOINT']
    proc = subprocess.run([PY, '-c', code], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.stdout.strip() == (f'HF_ENDPOINT was set after huggingface_hub was imported (it '
                                   f'uses https://huggingface.co, datasets {hub.endpoint}): set '
                                   f'it before either is imported'), proc.stderr


def test_hub_cli_start_status_stop(sample_dir, tmp_path):
    """The command line `make hub` uses: start (idempotent, laying out allenai/c4 from the
    sample), status, stop; a bad knob is one line and exit 2."""
    def cli(*args):
        return subprocess.run([PY, '-m', 'local_services.hf_hub', *args,
                               '--data-dir', str(tmp_path / 'data')],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    first = cli('start', '--port', '0', '--sample', str(sample_dir))
    assert first.returncode == 0, first.stderr
    assert 'datasets: allenai/c4' in first.stdout
    endpoint = next(line.split('=', 1)[1] for line in first.stdout.splitlines()
                    if line.startswith('export HF_ENDPOINT='))
    pid = json.loads((tmp_path / 'data' / 'run' / 'hub.json').read_text())['pid']
    try:
        info = requests.get(f'{endpoint}/api/datasets/allenai/c4', timeout=30)
        assert info.status_code == 200 and info.headers['X-Repo-Commit'] == info.json()['sha']
        again = cli('start', '--port', '0')
        assert 'already running' in again.stdout and f'pid {pid}' in again.stdout
        status = cli('status')
        assert status.returncode == 0 and f'HF_ENDPOINT={endpoint}' in status.stdout
    finally:
        assert f'stopped pid {pid}' in cli('stop').stdout
    gone = cli('status')
    assert gone.returncode == 1 and gone.stdout.strip() == 'local Hugging Face Hub: not running'
    bad = cli('start', '--fault-kinds', 'reset', '--fault-match', '(')
    assert bad.returncode == 2 and bad.stderr.startswith('hf_hub: fault match')
    assert len(bad.stderr.strip().splitlines()) == 1
    with pytest.raises(OSError):
        os.kill(pid, 0)

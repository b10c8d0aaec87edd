"""Shared fixtures: a small C4-format sample, the tokenizer trained on it, MDS datasets.

Built once per test session in a temporary directory; every test gets real files.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # train.py and scripts/ are importable from tests
PY = sys.executable
COMPOSER = str(Path(sys.executable).parent / 'composer')  # the launcher installed beside this python


@pytest.fixture(scope='session')
def sample_dir(tmp_path_factory) -> Path:
    from data_prep.sample import generate
    out = tmp_path_factory.mktemp('c4_sample')
    generate(str(out), size_mb=3, train_files=4, val_files=1, seed=17, workers=2)
    return out


@pytest.fixture(scope='session')
def tokenizer_dir(sample_dir, tmp_path_factory) -> Path:
    from data_prep.tokenizer import train
    out = tmp_path_factory.mktemp('tokenizer')
    train(str(sample_dir), str(out), max_mb=2)
    return out


def sample_texts(sample_dir: Path, split: str = 'train') -> list[str]:
    """Every document text of the sample, in file and line order."""
    import gzip
    import json
    texts = []
    for path in sorted(sample_dir.glob(f'c4-{split}.*.json.gz')):
        with gzip.open(path, 'rt', encoding='utf-8') as f:
            texts.extend(json.loads(line)['text'] for line in f)
    return texts


@pytest.fixture(scope='session')
def mds_zstd(sample_dir, tmp_path_factory) -> Path:
    """A zstd MDS dataset of the sample's train split at <root>/train (the recipes' layout)."""
    from streaming import MDSWriter
    root = tmp_path_factory.mktemp('mds_zstd')
    with MDSWriter(out=str(root / 'train'), columns={'text': 'str'}, compression='zstd',
                   size_limit=1 << 19) as writer:
        for text in sample_texts(sample_dir):
            writer.write({'text': text})
    return root


def write_mds(url: str, n: int, size_limit: int = 1 << 14, compression=None, repeat: int = 40) -> None:
    """`n` small numbered samples ({'id', 'text'}) into any remote, through our OCI transport."""
    from streaming import MDSWriter

    from data_prep import oci_transport
    oci_transport.register()
    with MDSWriter(out=url, columns={'id': 'int', 'text': 'str'}, compression=compression,
                   size_limit=size_limit, max_workers=4) as writer:
        for i in range(n):
            writer.write({'id': i, 'text': f'document {i} ' + 'lorem ipsum ' * (i % repeat)})


def read_ids(remote: str, cache: Path, workers: int = 0, seen: list | None = None) -> list[int]:
    """Every sample id of one full pass of StreamingDataset over `remote`, through our OCI
    transport. Without DataLoader workers, ids are also appended to `seen` as they come, so a
    test can see how far a failing pass got."""
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    from data_prep import oci_transport
    oci_transport.register()
    clean_stale_shared_memory()
    ds = StreamingDataset(remote=remote, local=str(cache), shuffle=False, batch_size=8,
                          download_timeout=30)
    if not workers:
        seen = [] if seen is None else seen
        for sample in ds:
            seen.append(sample['id'])
        return seen
    from torch.utils.data import DataLoader
    loader = DataLoader(ds, batch_size=8, num_workers=workers)
    return [int(i) for batch in loader for i in batch['id']]


def run(cmd: list[str], timeout: float = 300, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """Runs a command from the repository root; fails the test with its output on error."""
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, **kw)
    if proc.returncode != 0:
        pytest.fail(f'{" ".join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
    return proc


@pytest.fixture
def oci_store(tmp_path, monkeypatch):
    """A local OCI-compatible store (data_prep.local_store) on a free 127.0.0.1 port, with
    bucket `c4-bench`, and the environment pointing the oci SDK and our transport at it.
    Use URLs like oci://c4-bench@local/prefix; `oci_store.requests()` is its request log."""
    from data_prep.local_store import start_store
    store = start_store(tmp_path / 'oci_store', buckets=['c4-bench'])
    for key, value in store.env().items():
        monkeypatch.setenv(key, value)
    yield store
    store.stop()

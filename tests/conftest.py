"""Shared fixtures: a small C4-format sample, the tokenizer trained on it, MDS datasets, and the
servers the tests talk to (the local OCI store, moto's S3). Built in temporary directories;
every test gets real files and real servers on 127.0.0.1. Helpers are in tests/helpers.py."""
from pathlib import Path

import pytest

from tests.helpers import free_port, sample_texts

# The longest test files first (seconds in a fresh-clone `make test`, docs/benchmarks.md):
# pytest-xdist's --dist loadfile hands files out in collection order, so starting the long
# ones first keeps one of them from running alone at the end (longest-first scheduling).
LONGEST_FIRST = [
    'training/checkpoints/test_checkpoints.py',  # ~455 s (four FSDP runs of 2-4 processes)
    'train/test_eval_export.py',         # ~430 s (an FSDP and a DDP run of 2 processes)
    'training/test_launch_nodes.py',     # ~370 s (two two-node runs)
    'scripts/test_bench.py',             # ~155 s
    'callbacks/test_callbacks.py',       # ~160 s in all
    'scripts/test_slurm_batch.py',       # ~75 s (+ ~30 s installing Slurm on a new machine)
    'scripts/test_gpu_check.py',
    'train/test_store_outage.py',
    'pipeline/test_pool.py',
]


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = item.path.as_posix()
        return next((i for i, name in enumerate(LONGEST_FIRST) if path.endswith(name)),
                    len(LONGEST_FIRST))
    items.sort(key=rank)  # stable: the other files, and the tests within a file, keep order


@pytest.fixture(autouse=True)
def _no_process_group_left():
    """An in-process train.main that gets as far as llm-foundry's train() has it initialize
    torch.distributed's default group, which nothing destroys: the next test of this process
    that starts one would fail ("trying to initialize the default process group twice")."""
    yield
    import sys
    dist = sys.modules.get('torch.distributed')
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@pytest.fixture(scope='session')
def sample_dir(tmp_path_factory) -> Path:
    from data_prep.pipeline.sample import generate
    out = tmp_path_factory.mktemp('c4_sample')
    generate(str(out), size_mb=3, train_files=4, val_files=1, seed=17, workers=2)
    return out


@pytest.fixture(scope='session')
def tokenizer_dir(sample_dir, tmp_path_factory) -> Path:
    from data_prep.pipeline.tokenizer import train
    out = tmp_path_factory.mktemp('tokenizer')
    train(str(sample_dir), str(out), max_mb=2)
    return out


@pytest.fixture(scope='session')
def other_tokenizer_dir(sample_dir, tmp_path_factory) -> Path:
    """A second small tokenizer, not tokenizer_dir's (another vocabulary size, less text):
    tokens made with one are not for a recipe that names the other."""
    from data_prep.pipeline.tokenizer import train
    out = tmp_path_factory.mktemp('other_tokenizer')
    train(str(sample_dir), str(out), vocab_size=3000, max_mb=1)
    return out


@pytest.fixture(scope='session')
def mds_zstd(sample_dir, tmp_path_factory) -> Path:
    """A zstd MDS dataset of the sample's train and validation splits at <root>/train and
    <root>/validation (the recipes' layout: they train on one and evaluate on the other)."""
    from streaming import MDSWriter
    root = tmp_path_factory.mktemp('mds_zstd')
    for split in ('train', 'validation'):
        with MDSWriter(out=str(root / split), columns={'text': 'str'}, compression='zstd',
                       size_limit=1 << 19) as writer:
            for text in sample_texts(sample_dir, split):
                writer.write({'text': text})
    return root


@pytest.fixture
def oci_store(tmp_path, monkeypatch):
    """A local OCI-compatible store (local_services.oci_store) on a free 127.0.0.1 port, with
    bucket `c4-bench`, and the environment pointing the oci SDK and our transport at it.
    Use URLs like oci://c4-bench@local/prefix; `oci_store.requests()` is its request log."""
    from local_services.oci_store import start_store
    store = start_store(tmp_path / 'oci_store', buckets=['c4-bench'])
    for key, value in store.env().items():
        monkeypatch.setenv(key, value)
    yield store
    store.stop()


@pytest.fixture
def s3_server(monkeypatch):
    """moto's S3 server on a free 127.0.0.1 port with bucket `c4-bench`, and the environment
    (S3_ENDPOINT_URL, test credentials) pointing boto3 and streaming at it."""
    import boto3
    from moto.server import ThreadedMotoServer
    port = free_port()
    server = ThreadedMotoServer(ip_address='127.0.0.1', port=port, verbose=False)
    server.start()
    env = {'S3_ENDPOINT_URL': f'http://127.0.0.1:{port}', 'AWS_ACCESS_KEY_ID': 'testing',
           'AWS_SECRET_ACCESS_KEY': 'testing', 'AWS_DEFAULT_REGION': 'us-east-1',
           'AWS_EC2_METADATA_DISABLED': 'true'}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    boto3.client('s3', endpoint_url=env['S3_ENDPOINT_URL']).create_bucket(Bucket='c4-bench')
    yield env
    server.stop()

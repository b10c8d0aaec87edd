"""Helpers shared by the tests: paths, running commands, small MDS datasets, reading them back."""
import hashlib
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
COMPOSER = str(Path(sys.executable).parent / 'composer')  # the launcher beside this python


def sample_texts(sample_dir: Path, split: str = 'train') -> list[str]:
    """Every document text of the sample, in file and line order."""
    import gzip
    import json
    texts = []
    for path in sorted(sample_dir.glob(f'c4-{split}.*.json.gz')):
        with gzip.open(path, 'rt', encoding='utf-8') as f:
            texts.extend(json.loads(line)['text'] for line in f)
    return texts


def expected_digest(texts: list[str]) -> tuple[int, str]:
    """tests.mds.sample_digest of a text dataset holding `texts` in this order."""
    h = hashlib.sha256()
    for t in texts:
        data = t.encode('utf-8')
        sample = len(data).to_bytes(4, 'little') + data
        h.update(len(sample).to_bytes(8, 'little'))
        h.update(sample)
    return len(texts), h.hexdigest()


def write_mds(url: str, n: int, size_limit: int = 1 << 14, compression=None,
              repeat: int = 40) -> None:
    """`n` small numbered samples ({'id', 'text'}) into any remote, through our OCI transport."""
    from streaming import MDSWriter

    from training.shards import install
    install()
    with MDSWriter(out=url, columns={'id': 'int', 'text': 'str'}, compression=compression,
                   size_limit=size_limit, max_workers=4) as writer:
        for i in range(n):
            writer.write({'id': i, 'text': f'document {i} ' + 'lorem ipsum ' * (i % repeat)})


def read_ids(remote: str, cache: Path, workers: int = 0, seen: list | None = None) -> list[int]:
    """Every sample id of one full pass of StreamingDataset over `remote`, with our streaming
    extensions (the `checked` stream, our OCI transport). Without DataLoader workers, ids are
    also appended to `seen` as they come, so a test can see how far a failing pass got."""
    from streaming import StreamingDataset

    from training.shards import install, shared_memory
    install()
    shared_memory.clean_stale_shared_memory()  # not streaming's: it also removes live datasets' own
    ds = StreamingDataset(remote=remote, local=str(cache), shuffle=False, batch_size=8,
                          download_timeout=30, stream_name='checked')
    if not workers:
        seen = [] if seen is None else seen
        for sample in ds:
            seen.append(sample['id'])
        return seen
    from torch.utils.data import DataLoader
    loader = DataLoader(ds, batch_size=8, num_workers=workers)
    return [int(i) for batch in loader for i in batch['id']]


def run(cmd: list[str], timeout: float = 300, env: dict | None = None,
        **kw) -> subprocess.CompletedProcess:
    """Runs a command from the repository root; fails the test with its output on error."""
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, **kw)
    if proc.returncode != 0:
        pytest.fail(f'{" ".join(map(str, cmd))} exited {proc.returncode}\n'
                    f'{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
    return proc


def one_error_line(stderr: str) -> str:
    """The one line a failing command printed: exactly one non-empty line, no traceback."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert 'Traceback' not in stderr, stderr[-3000:]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def other_key_config(tmp_path: Path, like: Path, same_fingerprint: bool = True) -> Path:
    """An OCI config like `like` (the local store's) but with a key the store did not make:
    claiming the store's fingerprint (only the signature can tell), or with its own."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from local_services.oci_store.auth import fingerprint
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / f'other-{same_fingerprint}.pem'
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    lines = []
    for line in like.read_text().splitlines():
        if line.startswith('key_file='):
            line = f'key_file={pem}'
        if line.startswith('fingerprint=') and not same_fingerprint:
            line = f'fingerprint={fingerprint(key.public_key())}'
        lines.append(line)
    out = tmp_path / f'config-{same_fingerprint}'
    out.write_text('\n'.join(lines) + '\n')
    return out


def session_token_config(tmp_path: Path, like: Path) -> Path:
    """An OCI config like `like` with a session token file (OCI_CLI_AUTH=security_token): the
    store checks the signature, not the token."""
    token = tmp_path / 'token'
    token.write_text('eyJhbGciOiJub25lIn0.e30.')
    session = tmp_path / 'session_config'
    session.write_text(like.read_text() + f'security_token_file={token}\n')
    return session


def use_store(store, monkeypatch) -> None:
    """This test's process talks to `store` (its OCI environment variables)."""
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)


def wait_for(cond, proc, timeout: float, what: str) -> None:
    """Polls `cond` until true; fails if `proc` ends first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f'ended before {what}: {proc.communicate()[1][-3000:]}'
        assert time.monotonic() < deadline, f'no {what} within {timeout}s'
        time.sleep(0.01)


def validate(cfg, where: str) -> None:
    """train.py's checks of a recipe that do not depend on this machine's devices and
    packages: the recipe's own and its remotes' (credentials; save_folder through the object
    store Composer saves with)."""
    from training import checks
    checks.check_recipe(cfg, where)
    checks.check_remotes(cfg, where)


def train_main(args: list[str]) -> tuple[int, list[str]]:
    """train.py's main in this process: (its exit code, the lines it printed to stderr)."""
    import train
    err = io.StringIO()
    with redirect_stderr(err):
        rc = train.main(args)
    return rc, err.getvalue().strip().splitlines()


def node_tmpdir(rank: int) -> Path:
    """A short TMPDIR for one "node" of a multi-node run on this machine, in /tmp: the
    dataloader worker's socket lives under TMPDIR, and under tmp_path of a parallel test run it
    was over Linux's 107 bytes (training.checks.check_temp_dir)."""
    return Path(tempfile.mkdtemp(prefix=f'node{rank}-', dir='/tmp'))

"""A conversion into the OCI store killed with SIGKILL while uploading and while merging the
part indexes, then run again: the same samples in order (a digest of every one) and no stray
objects in the bucket (docs/failures.md)."""
import gzip
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from data_prep.pipeline.verify import verify
from data_prep.storage.oci.remote import OCIRemote
from local_services.oci_store import Knobs, start_store
from tests.helpers import (
    PY,
    ROOT,
    expected_digest,
    run,
    use_store,
    wait_for,
)
from tests.mds import sample_digest

BUCKET = 'c4-bench'


def test_conversion_killed_while_uploading_and_while_merging(sample_dir, tmp_path, monkeypatch):
    # A thin, slow link: every request waits 40 ms and bodies move at 60 KB/s, so an upload is
    # in flight for a while and the merge's reads of the part indexes take a visible time.
    store = start_store(tmp_path / 'store', knobs=Knobs(latency_ms=40, bandwidth_mbps=0.06),
                        buckets=[BUCKET])
    try:
        use_store(store, monkeypatch)
        url = f'oci://{BUCKET}@local/killed'
        cmd = [PY, '-m', 'data_prep.convert',
               '--data-files', str(sample_dir / 'c4-train.*.json.gz'), '--remote', url,
               '--compression', 'zstd', '--size-limit', '16kb', '--max-docs', '160',
               '--workers', '2', '--no-progress', '--json']
        objects = store.data_dir / 'buckets' / BUCKET / 'killed' / 'train'
        tmp_bodies = store.data_dir / 'tmp'
        log = store.log_path

        def launch():
            return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ}, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)

        def kill(proc):
            os.kill(proc.pid, signal.SIGKILL)  # its workers die with it (PR_SET_PDEATHSIG)
            proc.communicate()
            time.sleep(0.3)
            assert not (objects / 'index.json').exists(), 'published by a killed run'

        # 1. killed while a shard's body is on its way to the bucket
        proc = launch()
        # (the store takes a body into a temp file, and commits it only once it is complete;
        # the run's first body is its lease, .lock.json: shards come after it is committed)
        wait_for(lambda: (objects / '.lock.json').exists() and any(tmp_bodies.iterdir()), proc,
                 120, 'a shard upload in flight')
        kill(proc)
        assert not verify(url)['ok']

        # 2. run again, killed once the root index is being made (the second read of part 0's
        #    index: the worker's check, then the verification before the merge; the merge
        #    reads the part indexes again, then writes the root index)
        store.clear_log()
        proc = launch()

        def merging():
            with open(log) as f:
                return sum('/part-00000/' in line and '/index.json' in line and '"GET"' in line
                           for line in f) >= 2
        wait_for(merging, proc, 120, 'the merge of the part indexes')
        kill(proc)
        assert len(list(objects.glob('part-*/manifest.json'))) == 4  # every part was done

        # 3. the third run only publishes
        s = json.loads(run(cmd, timeout=180).stdout)
        assert s['published'] and s['parts_already_complete'] == 4 and s['parts_converted'] == 0
    finally:
        store.stop()

    per_file = [sample_texts_of(p)[:40] for p in sorted(sample_dir.glob('c4-train.*.json.gz'))]
    with start_store(store.data_dir, port=store.port) as again:  # plain, no shaping
        use_store(again, monkeypatch)
        assert sample_digest(url, 'train') == expected_digest([t for f in per_file for t in f])
        report = verify(url)
        assert report['ok'], report['problems']
        # no stray objects: exactly the root index and the split's record, and per part its
        # index, manifest, shards
        index = json.loads((objects / 'index.json').read_text())
        named = {sh['zip_data']['basename'] for sh in index['shards']}
        listed = set(OCIRemote(url).list())
        manifests = [json.loads(p.read_text()) for p in objects.glob('part-*/manifest.json')]
        assert len(manifests) == 4
        parts = {f'{m["part"]}/{n}' for m in manifests
                 for n in ('manifest.json', f'{m["attempt"]}/index.json')}
        assert listed == ({'train/index.json', 'train/dataset.json'} |
                          {f'train/{n}' for n in named | parts})
    assert list(tmp_bodies.iterdir()) == []  # no half-received body left in the store


def sample_texts_of(path: Path) -> list[str]:
    with gzip.open(path, 'rt', encoding='utf-8') as f:
        return [json.loads(line)['text'] for line in f]

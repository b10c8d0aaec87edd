"""bucket_keep's rule against the local store: keep the N newest checkpoints at or before the one
the `latest` pointer names, delete older ones, never touch newer ones; on a resume from the
pointer, drop the newer leftovers. (The whole callback in a run: test_checkpoints.py.)"""
import pytest

from callbacks.bucket_keep import BucketKeep, checkpoints
from data_prep.storage.oci.remote import OCIRemote
from training.checkpoints import install
from training.checkpoints.object_store import NAMESPACES_ENV, OCIStore

FOLDER = 'ckpt/run'
OBJECTS = ['ep0-ba4-rank0.pt', 'ep0-ba8/__0_0.distcp', 'ep0-ba8/.metadata',
           'ep0-ba12-rank0.pt', 'ep0-ba16-rank0.pt', 'huggingface/ba8/model.safetensors',
           'latest-rank0.pt.symlink']


@pytest.fixture(autouse=True)
def _namespaces(monkeypatch):
    monkeypatch.setenv(NAMESPACES_ENV, '')


def test_checkpoints_are_grouped_by_batch():
    names = [f'{FOLDER}/{n}' for n in OBJECTS] + ['ckpt/run2/ep0-ba4-rank0.pt']
    assert checkpoints(names, FOLDER) == {
        4: [f'{FOLDER}/ep0-ba4-rank0.pt'],
        8: [f'{FOLDER}/ep0-ba8/__0_0.distcp', f'{FOLDER}/ep0-ba8/.metadata'],
        12: [f'{FOLDER}/ep0-ba12-rank0.pt'], 16: [f'{FOLDER}/ep0-ba16-rank0.pt']}


def test_prune_keeps_n_behind_the_pointer(oci_store):
    install(['oci://c4-bench@local/ckpt'])
    remote = OCIRemote(f'oci://c4-bench@local/{FOLDER}')
    for name in OBJECTS:
        remote.write(name, b'x')
    remote.write('latest-rank0.pt.symlink', f'{FOLDER}/ep0-ba12-rank0.pt'.encode())
    keep = BucketKeep()
    keep.store, keep.keep = OCIStore('c4-bench'), 2
    keep._pointer_name, keep._folder = f'{FOLDER}/latest-rank0.pt.symlink', FOLDER
    assert keep.prune() == [4]  # 8 and 12 kept; 16 is newer than the pointer: untouched
    assert sorted(remote.list()) == sorted(OBJECTS[1:])
    keep.keep = 1
    assert keep.prune() == [8]
    # a run resumed from the pointer's checkpoint (12) drops the newer leftover (16)
    keep._drop_newer_than_resumed(12)
    assert sorted(remote.list()) == ['ep0-ba12-rank0.pt', 'huggingface/ba8/model.safetensors',
                                     'latest-rank0.pt.symlink']
    remote.delete('latest-rank0.pt.symlink')
    assert keep.prune() == []  # no pointer: nothing is known complete, nothing is deleted
    assert 'ep0-ba12-rank0.pt' in remote.list()

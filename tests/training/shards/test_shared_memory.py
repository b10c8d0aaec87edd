"""Shared-memory prefixes (training/shards/shared_memory.py).

1. Datasets built at once by several processes on one machine, one of them a job of two
   ranks, all get a prefix of their own (streaming's scan-then-create gave two of them the same
   one and the second failed with FileExistsError: CI, tests/storage/test_oci.py).
2. Another run's clean-up never removes a live dataset's shared memory, even in the window of
   get_shm_prefix between reserving a prefix and returning: a barrier of all ranks (of all
   nodes: seconds). A run that exited normally leaves its marker behind unlocked (streaming
   unlinks the memory, not our marker); a new dataset that took that prefix used to be
   unmarked in that window, and a clean-up then removed its memory as the old run's leftovers.
3. The clean-up removes what a run that exited normally leaves: markers and streaming's lock
   files in TMPDIR (with those, streaming skips the prefix forever)."""
import itertools
import os
import subprocess
import time

import torch.distributed as dist
from streaming import MDSWriter
from streaming.base.constant import LOCALS
from streaming.base.world import World

from tests.helpers import PY, ROOT, free_port
from training.shards import install, shared_memory

CLEAN = ('from training.shards.shared_memory import clean_stale_shared_memory as c; '
         'print(c())')
BUILD = str(ROOT / 'tests/programs/build_datasets.py')


def _mds(folder) -> str:
    with MDSWriter(out=str(folder), columns={'id': 'int'}) as writer:
        for i in range(8):
            writer.write({'id': i})
    return str(folder)


def test_datasets_built_at_once_by_many_processes_and_a_two_rank_job_get_their_own_prefix(
        tmp_path):
    folder, n = _mds(tmp_path / 'mds'), 10
    start = time.time() + 12  # every process imported and waiting by then, on a busy machine
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    alone = [subprocess.Popen([PY, BUILD, folder, str(start), str(n)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    port = free_port()
    job = [subprocess.Popen([PY, BUILD, folder, str(start), str(n)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**env, 'WORLD_SIZE': '2', 'RANK': str(r), 'LOCAL_RANK': str(r),
                                 'LOCAL_WORLD_SIZE': '2', 'MASTER_ADDR': '127.0.0.1',
                                 'MASTER_PORT': str(port)}) for r in (0, 1)]
    out = {}
    for p in alone + job:
        stdout, stderr = p.communicate(timeout=180)
        assert p.returncode == 0, stderr[-2000:]
        out[p] = [int(line) for line in stdout.split()]
        assert len(out[p]) == n
    assert out[job[0]] == out[job[1]]  # the job's second rank took its leader's prefixes
    taken = [prefix for p in alone + job[:1] for prefix in out[p]]
    assert len(set(taken)) == len(taken), sorted(taken)


def test_clean_up_during_get_shm_prefix_barriers_spares_the_new_prefix(tmp_path, monkeypatch):
    install()
    local = str(tmp_path / 'cache')
    free = list(itertools.islice((p for p in itertools.count() if not shared_memory._taken(p)), 3))
    # Another process may take the lowest of these meanwhile (the suite's other workers): a
    # leftover that none of them reaches shows the clean-up's removal without that race.
    far = next(p for p in range(999_999, 0, -1) if not shared_memory._taken(p))
    for prefix in free + [far]:  # left unlocked by runs that used them and exited normally
        with open(shared_memory._marker(f'{prefix:06}'), 'a'):
            pass
    removed = []
    real_barrier = dist.barrier

    def barrier(*args, **kwargs):  # what the machine does while this rank waits on the others
        real_barrier(*args, **kwargs)
        out = subprocess.run([PY, '-c', CLEAN], cwd=ROOT, capture_output=True, text=True,
                             check=True)  # another run starts
        removed.append(out.stdout.strip())

    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{free_port()}', rank=0,
                            world_size=1)
    try:
        monkeypatch.setattr(dist, 'barrier', barrier)
        from streaming.base import dataset as dataset_module
        prefix_int, shm = dataset_module.get_shm_prefix([local], [None], World.detect())
    finally:
        monkeypatch.undo()
        dist.destroy_process_group()
    name = f'{prefix_int:06}_{LOCALS}'
    try:
        assert prefix_int in free  # a leftover marker does not keep a prefix from use
        assert len(removed) == 2 and not any(name in r for r in removed), removed
        assert os.path.exists(os.path.join(shared_memory.SHM_DIR, name))
        assert shared_memory._marker_locked(f'{prefix_int:06}') is True
        assert shared_memory._marker_locked(f'{far:06}') is None  # a leftover: removed
    finally:
        shm.cleanup()


def _exit_then_clean_up(work) -> dict:
    """Builds a dataset in a process that exits normally, then runs the clean-up in another:
    its prefix, and what of it was there before (streaming's lock files, our marker, the
    shared memory) and after."""
    env = {**os.environ, 'TMPDIR': str(work)}
    build = subprocess.run([PY, BUILD, _mds(work / 'mds'), '0', '1'], cwd=ROOT, text=True,
                           capture_output=True, check=True, env=env)
    prefix = f'{int(build.stdout):06}'
    state = {'prefix': prefix,
             'lock_files': sorted(n for n in os.listdir(work) if n.startswith(prefix)),
             'marker': shared_memory._marker_locked(prefix),
             'memory': [n for n in os.listdir(shared_memory.SHM_DIR) if n.startswith(f'{prefix}_')]}
    subprocess.run([PY, '-c', CLEAN], cwd=ROOT, check=True, capture_output=True, env=env)
    state['marker_after'] = shared_memory._marker_locked(prefix)
    state['lock_files_after'] = [n for n in os.listdir(work) if n.startswith(prefix)]
    return state


def test_clean_up_removes_what_a_normal_exit_leaves(tmp_path):
    # Other processes on the machine (the suite's other workers) take the lowest free prefix
    # too: one may take this one once the build has exited, and the clean-up then rightly
    # spares it (its marker is locked by a live process). Another try gets another window.
    for attempt in range(5):
        work = tmp_path / str(attempt)
        work.mkdir()
        state = _exit_then_clean_up(work)
        if True not in (state['marker'], state['marker_after']):
            break
    else:
        raise AssertionError(f'5 tries: another process took the prefix each time: {state}')
    assert len(state['lock_files']) == 2, state  # streaming's, never removed by it
    assert state['marker'] is False, state  # ours, unlocked when the process ended
    assert state['memory'] == [], state  # streaming unlinked its memory
    assert state['marker_after'] is None, state  # the clean-up removed the marker
    assert state['lock_files_after'] == [], state  # and the lock files

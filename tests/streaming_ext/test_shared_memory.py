"""Another run's clean-up never removes a live dataset's shared memory, even in the window of
streaming's get_shm_prefix between the node leader creating `<prefix>_locals` and returning:
a barrier of all ranks (of all nodes: seconds). A run that exited normally leaves its marker
behind unlocked (streaming unlinks the memory, not our marker); the next dataset to take that
prefix used to be unmarked for the whole window, and a clean-up then took its memory for the
old run's leftovers and removed it, and the next dataset could take the same prefix and
attach to the first one's barrier."""
import os
import subprocess

import torch.distributed as dist
from streaming.base.constant import LOCALS, SHM_TO_CLEAN
from streaming.base.shared import prefix as prefix_module
from streaming.base.world import World

from data_prep.streaming_ext import compat, install
from tests.helpers import PY, ROOT, free_port

CLEAN = ('from data_prep.streaming_ext.compat import clean_stale_shared_memory as c; '
         'print(c())')


def test_clean_up_during_get_shm_prefix_barrier_spares_the_new_prefix(tmp_path, monkeypatch):
    install()
    local = str(tmp_path / 'cache')
    seen = {}
    real_barrier = dist.barrier

    def barrier(*args, **kwargs):  # what the machine does while this rank waits on the others
        real_barrier(*args, **kwargs)
        if 'prefix' not in seen:  # 1st barrier: prefix chosen, nothing created yet
            seen['prefix'] = max(prefix_module._check_and_find([local], [None], name)
                                 for name in SHM_TO_CLEAN)
            with open(compat._marker(f"{seen['prefix']:06}"), 'a'):
                pass  # left unlocked by a run that used this prefix and exited normally
        else:  # 2nd barrier: the leader created <prefix>_locals; another run starts
            out = subprocess.run([PY, '-c', CLEAN], cwd=ROOT, capture_output=True, text=True,
                                 check=True)
            seen['removed'] = out.stdout.strip()

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
        assert prefix_int == seen['prefix']
        assert name not in seen['removed'], seen['removed']
        assert os.path.exists(os.path.join(compat.SHM_DIR, name))
        assert compat._marker_locked(f'{prefix_int:06}') is True
    finally:
        shm.cleanup()

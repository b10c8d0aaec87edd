"""Test program: at wall time START, builds N StreamingDatasets over one local MDS folder
(with our streaming extensions), reads its first sample and prints its shared-memory prefix,
one per line; it keeps them all alive until every one is built. With WORLD_SIZE > 1 in the
environment it is one rank of a job on this machine and joins a gloo group first
(MASTER_ADDR, MASTER_PORT, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE), as Composer's launcher sets
them.

usage: build_datasets.py FOLDER START N"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from streaming import StreamingDataset  # noqa: E402

from training.shards import install  # noqa: E402

folder, start, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
install()
if int(os.environ.get('WORLD_SIZE', '1')) > 1:
    import torch.distributed as dist
    dist.init_process_group('gloo')
while time.time() < start:
    time.sleep(0.001)
datasets = []
for _ in range(n):
    datasets.append(StreamingDataset(local=folder, shuffle=False, batch_size=1))
    next(iter(datasets[-1]))
    print(datasets[-1]._shm_prefix_int, flush=True)

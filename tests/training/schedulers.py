"""Each scheduler's variables as it gives them to one node, for training.launch's tests."""


def slurm_step(nodes: int, rank: int, nodelist: str, **extra: str) -> dict:
    """What srun gives each task of a step with one task per node (as Slurm 22.05 sets them:
    tests/scripts/test_slurm_batch.py runs the real one)."""
    env = {'SLURM_JOB_ID': '4242', 'SLURM_JOB_NODELIST': nodelist, 'SLURM_NNODES': str(nodes),
           'SLURM_STEP_ID': '0', 'SLURM_STEP_NODELIST': nodelist,
           'SLURM_STEP_NUM_NODES': str(nodes), 'SLURM_STEP_NUM_TASKS': str(nodes),
           'SLURM_NODEID': str(rank), 'SLURM_PROCID': str(rank), 'SLURM_LOCALID': '0'}
    return {**env, **extra}


def pytorchjob_pod(pods: int, rank: int, world: int | None = None, **extra: str) -> dict:
    """What training-operator v1.9 gives a pod's container (pkg/controller.v1/pytorch/envvar.go):
    WORLD_SIZE = pods x nprocPerNode (1 while nprocPerNode is its default, auto); MASTER_ADDR is
    the Master pod's service, <job name>-master-0, and MASTER_PORT its port (23456 unless set)."""
    env = {'WORLD_SIZE': str(world or pods), 'RANK': str(rank), 'PET_NODE_RANK': str(rank),
           'PET_NNODES': str(pods), 'PET_NPROC_PER_NODE': 'auto',
           'MASTER_ADDR': 'c4-zstd-master-0', 'MASTER_PORT': '23456', 'PYTHONUNBUFFERED': '1'}
    return {**env, **extra}


def scheduler_free(env: dict) -> dict:
    """`env` without any scheduler's or launcher's variables (a plain machine)."""
    return {k: v for k, v in env.items() if not k.startswith(('SLURM', 'PET_', 'MASTER_',
                                                               'LOCAL_', 'NCCL_'))
            and k not in ('RANK', 'WORLD_SIZE', 'NODE_RANK')}

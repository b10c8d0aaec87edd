"""training.launch, the translation from a scheduler's environment to Composer's launcher: Slurm
hostlists, each scheduler's variables as they set them, the OCI NCCL settings, and every
refusal (one line, exit status 2, nothing started). In this process, with --dry-run: the
command it would become is printed instead of run."""
import os
import shlex

import pytest

from tests.helpers import ROOT, one_error_line
from tests.training.schedulers import pytorchjob_pod, scheduler_free, slurm_step
from training import launch

CPU, GPU = 'yamls/cpu/c4_zstd.yaml', 'yamls/c4_zstd.yaml'
H100_HCAS = ('=mlx5_0,mlx5_1,mlx5_3,mlx5_4,mlx5_5,mlx5_6,mlx5_7,mlx5_8,mlx5_9,mlx5_10,mlx5_12,'
             'mlx5_13,mlx5_14,mlx5_15,mlx5_16,mlx5_17')


@pytest.mark.parametrize('expr, hosts', [
    ('gpu-[001-004,010]', ['gpu-001', 'gpu-002', 'gpu-003', 'gpu-004', 'gpu-010']),
    ('a[1-2],b3', ['a1', 'a2', 'b3']),
    ('n[08-10]', ['n08', 'n09', 'n10']),  # the width of the first number
    ('node[9-11]', ['node9', 'node10', 'node11']),
    ('h[0010-0012]', ['h0010', 'h0011', 'h0012']),
    ('rack[1-2]-n[01-02]', ['rack1-n01', 'rack1-n02', 'rack2-n01', 'rack2-n02']),
    ('node1,node[2-3],node10', ['node1', 'node2', 'node3', 'node10']),
    ('localhost,gpu-[002]', ['localhost', 'gpu-002']),
    ('gpu-7', ['gpu-7']),
])
def test_hostlist_expands_in_slurms_order(expr, hosts):
    assert launch.expand_hostlist(expr) == hosts


@pytest.mark.parametrize('expr', ['gpu-[1-', 'gpu-[3-1]', 'gpu-[a-b]', 'a,,b', 'x]', 'n[[1]]',
                                  'n[1-2', '', 'n[]'])
def test_hostlist_errors_name_the_expression(expr):
    with pytest.raises(ValueError, match='is not a Slurm hostlist'):
        launch.expand_hostlist(expr)


@pytest.fixture
def launched(monkeypatch, capsys, tmp_path):
    """Runs launch.main in an environment holding only the given scheduler variables; returns
    (exit status, stdout lines, stderr)."""
    clean = scheduler_free(dict(os.environ))
    for name in set(os.environ) - set(clean):
        monkeypatch.delenv(name)
    monkeypatch.setenv('HOME', str(tmp_path))  # no ~/.nccl.conf of this machine's
    monkeypatch.chdir(ROOT)

    def run(env: dict, args: list[str]) -> tuple[int, list[str], str]:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        rc = launch.main(args)
        out, err = capsys.readouterr()
        return rc, out.splitlines(), err
    return run


def command_of(lines: list[str]) -> dict:
    """Composer's launcher flags and the script arguments from a --dry-run's last line."""
    cmd = shlex.split(lines[-1])
    assert cmd[1:3] == ['-m', 'composer.cli.launcher'], cmd
    script = cmd.index(str(ROOT / 'train.py'))
    flags = dict(zip(cmd[3:script:2], cmd[4:script:2]))
    return {**flags, 'args': cmd[script + 1:]}


def test_a_slurm_node_of_four_takes_its_rank_gpus_and_the_first_host(launched, tmp_path,
                                                                      monkeypatch):
    conf = tmp_path / 'nccl.conf'
    conf.write_text('NCCL_IB_GID_INDEX=5\n')  # a cluster's own tuning, read by NCCL itself
    env = slurm_step(4, 3, 'gpu-[001-003,010]', SLURMD_NODENAME='gpu-010',
                     SLURM_GPUS_ON_NODE='8', NCCL_SOCKET_IFNAME='bond0',
                     NCCL_CONF_FILE=str(conf))
    rc, lines, err = launched(env, ['--shape', 'BM.GPU.H100.8', '--dry-run', GPU,
                                    'variables.bucket=oci://b@ns'])
    assert rc == 0, err
    assert lines[0] == ('launch: Slurm: node 3 of 4 (SLURM_NODEID, SLURM_STEP_NUM_NODES), 8 '
                        'process(es) here (SLURM_GPUS_ON_NODE), world size 32')
    assert lines[1] == ("launch: master gpu-001:29500 (first host of "
                        "SLURM_STEP_NODELIST='gpu-[001-003,010]'; port: default)")
    assert lines[2] == (f'launch: NCCL for BM.GPU.H100.8: set NCCL_IB_HCA={H100_HCAS} '
                        'NCCL_IB_TC=41 NCCL_IB_SL=0 NCCL_IB_TIMEOUT=22 '
                        'NCCL_IB_SPLIT_DATA_ON_QPS=0 NCCL_CUMEM_ENABLE=0 '
                        'NCCL_IGNORE_CPU_AFFINITY=1; kept as set: NCCL_IB_GID_INDEX '
                        'NCCL_SOCKET_IFNAME')
    cmd = command_of(lines)
    assert {k: cmd[k] for k in ('--world_size', '--nproc', '--node_rank', '--master_addr',
                                '--master_port')} == {
        '--world_size': '32', '--nproc': '8', '--node_rank': '3', '--master_addr': 'gpu-001',
        '--master_port': '29500'}
    assert cmd['--stdout'] == str(ROOT / 'logs/c4-zstd-qwen7b/rank{rank}.stdout.txt')
    assert cmd['args'] == [str(ROOT / GPU), 'variables.bucket=oci://b@ns']


def test_a_requeued_slurm_job_says_it_autoresumes(launched):
    env = slurm_step(2, 0, 'gpu-[1-2]', SLURM_GPUS_PER_NODE='h100:8', SLURM_RESTART_COUNT='1')
    rc, lines, err = launched(env, ['--dry-run', GPU])
    assert rc == 0, err
    assert '8 process(es) here (SLURM_GPUS_PER_NODE)' in lines[0]
    assert ('launch: restart 1 of this job (SLURM_RESTART_COUNT): autoresume continues from '
            'the newest checkpoint in oci://c4-bench@mynamespace/checkpoints/c4-zstd-qwen7b'
            ) in lines


def test_a_pytorchjob_pod_takes_its_index_and_the_master_service(launched):
    rc, lines, err = launched(pytorchjob_pod(2, 1), ['--nproc', '2', '--dry-run', CPU])
    assert rc == 0, err
    assert lines[:2] == [
        'launch: PyTorchJob: node 1 of 2 (PET_NODE_RANK, PET_NNODES), 2 process(es) here '
        '(--nproc), world size 4',
        'launch: master c4-zstd-master-0:23456 (MASTER_ADDR; port: MASTER_PORT)']
    cmd = command_of(lines)
    assert (cmd['--world_size'], cmd['--nproc'], cmd['--node_rank']) == ('4', '2', '1')
    assert (cmd['--master_addr'], cmd['--master_port']) == ('c4-zstd-master-0', '23456')


def test_a_pytorchjob_with_nproc_per_node_counts_processes_in_world_size(launched):
    env = pytorchjob_pod(2, 0, world=16, PET_NPROC_PER_NODE='8')
    rc, lines, err = launched(env, ['--dry-run', CPU])
    assert rc == 0, err
    cmd = command_of(lines)
    assert (cmd['--world_size'], cmd['--nproc'], cmd['--node_rank']) == ('16', '8', '0')


def test_without_a_scheduler_it_is_one_node_or_the_flags_say_which(launched):
    rc, lines, err = launched({}, ['--dry-run', CPU])
    assert rc == 0, err
    cmd = command_of(lines)
    assert (cmd['--world_size'], cmd['--nproc'], cmd['--node_rank']) == ('1', '1', '0')
    assert '--master_addr' not in cmd  # Composer's own single-node defaults
    rc, lines, err = launched({}, ['--nodes', '2', '--node-rank', '1', '--master-addr',
                                   '10.0.0.5', '--dry-run', CPU])
    assert rc == 0, err
    cmd = command_of(lines)
    assert (cmd['--world_size'], cmd['--node_rank'], cmd['--master_addr'],
            cmd['--master_port']) == ('2', '1', '10.0.0.5', '29500')


REFUSALS = {
    'a GPU recipe where Slurm gave no GPU': (
        slurm_step(2, 0, 'gpu-[1-2]', SLURM_GPUS_ON_NODE='0'), [GPU],
        'precision amp_bf16 (Composer trains in fp32 on a CPU); model.init_device mixed need '
        'CUDA GPUs, one per process, but node 0 has no GPU (SLURM_GPUS_ON_NODE)'),
    'a GPU recipe on this machine (no CUDA)': (
        {}, [GPU], 'node 0 has no GPU (CUDA); on CPUs use its twin in yamls/cpu/'),
    'more processes than GPUs': (
        slurm_step(2, 0, 'gpu-[1-2]', SLURM_GPUS_ON_NODE='8'), ['--nproc', '16', GPU],
        '16 processes per node but node 0 has 8 GPU(s) (SLURM_GPUS_ON_NODE)'),
    'a node count incompatible with num_canonical_nodes': (
        slurm_step(3, 0, 'gpu-[1-3]', SLURM_GPUS_ON_NODE='8'), [GPU],
        'train_loader.dataset.num_canonical_nodes is 64 and this job has 3 nodes: neither '
        'divides the other'),
    'a global batch the processes cannot split': (
        slurm_step(2, 0, 'gpu-[1-2]'), ['--nproc', '3', CPU],
        'global_train_batch_size 16 does not split over 6 processes (2 nodes)'),
    'a rank beyond the nodes': (
        slurm_step(2, 2, 'gpu-[1-2]'), [CPU],
        'SLURM_NODEID=2 but the step has 2 node(s) (SLURM_STEP_NUM_NODES)'),
    'the batch script of a multi-node job': (
        {'SLURM_JOB_ID': '1', 'SLURM_NNODES': '2', 'SLURM_JOB_NODELIST': 'gpu-[1-2]',
         'SLURM_NODEID': '0'}, [CPU],
        'this is the batch script of a 2-node Slurm job, not a job step'),
    'one task per GPU instead of one per node': (
        slurm_step(2, 0, 'gpu-[1-2]', SLURM_STEP_NUM_TASKS='16'), [CPU],
        'srun started 16 tasks on 2 nodes'),
    'a hostlist of the wrong length': (
        slurm_step(3, 0, 'gpu-[1-2]'), [CPU],
        "SLURM_STEP_NODELIST='gpu-[1-2]' names 2 hosts but SLURM_STEP_NUM_NODES=3"),
    'a hostlist that is not one': (
        slurm_step(2, 0, 'gpu-[1-'), [CPU],
        "SLURM_STEP_NODELIST: 'gpu-[1-' is not a Slurm hostlist"),
    'a node that is not the host at its rank': (
        slurm_step(2, 0, 'gpu-[1-2]', SLURMD_NODENAME='gpu-2'), [CPU],
        "host 0 of SLURM_STEP_NODELIST is 'gpu-1', not this node ('gpu-2')"),
    '--node-rank inside a Slurm job': (
        slurm_step(2, 0, 'gpu-[1-2]'), ['--node-rank', '1', CPU],
        '--node-rank given inside a Slurm job, which sets them'),
    'a PyTorchJob WORLD_SIZE counting processes': (
        pytorchjob_pod(2, 1, world=16), [CPU],
        'WORLD_SIZE=16 but PET_NNODES=2 pods: WORLD_SIZE counts neither the pods nor their '
        'processes'),
    'a rank beyond a WORLD_SIZE of pods (operator before v1.8)': (
        {'WORLD_SIZE': '2', 'RANK': '5', 'MASTER_ADDR': 'm'}, [CPU],
        'RANK=5 but the job has 2 pod(s) (WORLD_SIZE): WORLD_SIZE must count pods'),
    'an elastic PyTorchJob': (
        pytorchjob_pod(2, 0, PET_NNODES='1:4'), [CPU], "PET_NNODES='1:4': an elastic PyTorchJob"),
    'a multi-node job without a master address': (
        {'WORLD_SIZE': '2', 'RANK': '1'}, [CPU], 'a 2-node job without a master address'),
    'RANK and WORLD_SIZE of an existing launcher': (
        {'WORLD_SIZE': '16', 'RANK': '3', 'LOCAL_RANK': '3', 'LOCAL_WORLD_SIZE': '8'}, [CPU],
        'runs inside a launcher (torchrun, composer) whose RANK and WORLD_SIZE count processes'),
    '--nproc other than the PyTorchJob\'s nprocPerNode': (
        pytorchjob_pod(2, 0, world=16, PET_NPROC_PER_NODE='8'), ['--nproc', '2', CPU],
        '--nproc 2 but PET_NPROC_PER_NODE=8'),
    '--nodes without --node-rank': (
        {}, ['--nodes', '2', '--master-addr', 'h', CPU],
        '--nodes 2 without --node-rank: every node would take itself for node 0'),
    'a shape without known NCCL settings': (
        {}, ['--shape', 'BM.GPU.A10.4', CPU], '--shape BM.GPU.A10.4: no NCCL settings known'),
    'a recipe that is not there': ({}, ['yamls/nope.yaml'], 'no such recipe file'),
}


@pytest.mark.parametrize('case', REFUSALS)
def test_each_refusal_is_one_line_and_starts_nothing(launched, case):
    env, args, expected = REFUSALS[case]
    rc, lines, err = launched(env, args)
    assert rc == 2 and lines == []  # no launch line, no command: nothing went on
    line = one_error_line(err)
    assert line.startswith('error: ') and expected in line, line


def test_help_names_the_flags_and_where_the_details_are(capsys):
    with pytest.raises(SystemExit) as stop:
        launch.main(['--help'])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    for flag in ('--nproc', '--nodes', '--node-rank', '--master-addr', '--master-port',
                 '--shape', '--logs', '--dry-run'):
        assert flag in out
    assert 'docs/training.md, "Many nodes"' in out

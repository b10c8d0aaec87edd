"""Two "nodes" on this machine started as each scheduler starts them, each running
`python -m training.launch` with only that scheduler's variables: as srun starts one task per
node of a Slurm step (SLURM_NODEID, SLURM_STEP_NODELIST as a hostlist expression whose first
host, `localhost`, is the master), and as the Kubeflow training-operator starts the pods of a
PyTorchJob (RANK, WORLD_SIZE and PET_NNODES in pods, MASTER_ADDR, MASTER_PORT). Each node's
launch starts its process through Composer's launcher; both train one model together (the CPU
twin, DDP over gloo, 4 steps from the local OCI store) and finish, and the run report counts
both nodes.

One machine stands in for two as in tests/train/test_two_nodes.py, which checks the data split
itself: each node has its own working folder, cache and TMPDIR; no checkpoints."""
import json
import os
import shutil
import subprocess

import pytest

from tests.helpers import PY, ROOT, free_port, node_tmpdir, write_mds
from tests.training.schedulers import pytorchjob_pod, scheduler_free, slurm_step

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

RECIPE = ROOT / 'yamls/cpu/c4_zstd.yaml'
SAMPLES, BATCH = 64, 16  # 4 steps of 8 samples per node


def train_on_two_nodes(schedulers: list[dict], flags: list[str], tmp_path,
                       tokenizer_dir) -> tuple[list[str], dict]:
    """Starts `python -m training.launch` once per node with its scheduler's variables; both
    must end 0. Returns each node's output and the run's report."""
    remote = 'oci://c4-bench@local/launch-nodes'
    write_mds(f'{remote}/train', SAMPLES, size_limit=1 << 12, compression='zstd')
    report = tmp_path / 'report'
    same = [f'variables.data_remote={remote}', f'tokenizer.name={tokenizer_dir}',
            'train_loader.dataset.num_canonical_nodes=2', 'max_duration=1ep',
            f'global_train_batch_size={BATCH}', 'variables.run_name=launch-nodes',
            'save_folder=null', 'autoresume=false', 'eval_loader=null',
            f'callbacks.hf_checkpointer.save_folder={tmp_path}/hf',
            f'callbacks.run_report.folder={report}']
    nodes, tmpdirs = [], []
    try:
        for rank, variables in enumerate(schedulers):
            work = tmp_path / f'node{rank}'
            work.mkdir()
            tmpdirs.append(node_tmpdir(rank))
            env = {**scheduler_free(dict(os.environ)), **variables,
                   'TMPDIR': str(tmpdirs[-1]), 'PYTHONPATH': str(ROOT)}
            cmd = [PY, '-m', 'training.launch', *flags, '--logs', str(tmp_path / 'logs'),
                   str(RECIPE), *same, f'variables.data_local={work}/cache']
            nodes.append(subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
        outs = [node.communicate(timeout=400)[0] for node in nodes]
    finally:
        for node in nodes:
            node.kill()
        for d in tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
    assert [node.returncode for node in nodes] == [0, 0], \
        '\n'.join(f'node {rank}:\n{out[-4000:]}' for rank, out in enumerate(outs))

    metrics = json.loads((report / 'run_metrics.json').read_text())
    assert metrics['status'] == 'completed' and metrics['world_size'] == 2, metrics
    steps = SAMPLES // BATCH
    assert metrics['steps'] == steps and metrics['samples'] == SAMPLES
    assert [(w['rank'], w['steps']) for w in metrics['data_wait_per_rank']] == \
        [(0, steps), (1, steps)]
    rows = [json.loads(line) for line in open(report / 'steps.jsonl')]
    assert len(rows) == steps and all(len(r['data_wait_ms_per_rank']) == 2 for r in rows)
    # Each node downloaded the shards of its own half into its own cache.
    assert metrics['cache_stats_all_ranks'] is True
    assert all(any((tmp_path / f'node{r}/cache/train').glob('shard.*.mds*')) for r in (0, 1))
    return outs, metrics


def launch_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith('launch: ')]


def test_two_slurm_nodes_train_one_model(oci_store, tokenizer_dir, tmp_path):
    port, hostlist = free_port(), 'localhost,gpu-[002]'
    nodes = [slurm_step(2, rank, hostlist, SLURMD_NODENAME=host)
             for rank, host in enumerate(['localhost', 'gpu-002'])]
    outs, _ = train_on_two_nodes(nodes, ['--master-port', str(port)], tmp_path, tokenizer_dir)
    for rank, out in enumerate(outs):
        assert launch_lines(out)[:2] == [
            f'launch: Slurm: node {rank} of 2 (SLURM_NODEID, SLURM_STEP_NUM_NODES), 1 '
            f'process(es) here (a CPU recipe), world size 2',
            f"launch: master localhost:{port} (first host of SLURM_STEP_NODELIST="
            f"'{hostlist}'; port: --master-port)"], out[-3000:]


def test_two_pytorchjob_pods_train_one_model(oci_store, tokenizer_dir, tmp_path):
    port = free_port()  # the Master pod's service is this machine
    pods = [pytorchjob_pod(2, rank, MASTER_ADDR='localhost', MASTER_PORT=str(port))
            for rank in (0, 1)]
    outs, _ = train_on_two_nodes(pods, [], tmp_path, tokenizer_dir)
    for rank, out in enumerate(outs):
        assert launch_lines(out)[:2] == [
            f'launch: PyTorchJob: node {rank} of 2 (PET_NODE_RANK, PET_NNODES), 1 process(es) '
            f'here (a CPU recipe), world size 2',
            f'launch: master localhost:{port} (MASTER_ADDR; port: MASTER_PORT)'], out[-3000:]

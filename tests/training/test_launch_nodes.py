"""Two "nodes" on this machine started as each scheduler starts them, each running
`python -m training.launch` with only that scheduler's variables: as srun starts one task per
node of a Slurm step (SLURM_NODEID, SLURM_STEP_NODELIST as a hostlist expression whose first
host, `localhost`, is the master), and as the Kubeflow training-operator starts the pods of a
PyTorchJob (RANK, WORLD_SIZE and PET_NNODES in pods, MASTER_ADDR, MASTER_PORT). Each node's
launch starts its processes through Composer's launcher (as the README's form for N nodes by
hand); both train one FSDP model together (the CPU twin over gloo, 4 steps from the local OCI
store) and finish, and the run report counts every rank and both nodes' caches. The Slurm
nodes run 2 processes each (one model sharded over 4 ranks), and the data split is checked
there: the ranks' samples are disjoint and, step by step, together are the global batch one
node reads alone (computed here with llm-foundry's own loader, world size 1).

One machine stands in for two: each node has its own working folder (llm-foundry's ranks on a
node signal each other with files in it, named alike on every node), cache folder and TMPDIR
(the dataloader worker's socket lives under it), as two machines have. No checkpoints: with a
local save_folder Composer's autoresume signals between ranks with files in it too, and two
nodes' checkpoints go to a bucket anyway. /dev/shm stays shared: streaming would give both node
leaders the same shared-memory prefix; ours reserve one each (training/shards/shared_memory.py).
"""
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf as om

from tests.helpers import PY, ROOT, free_port, node_tmpdir, write_mds
from tests.training.schedulers import pytorchjob_pod, scheduler_free, slurm_step

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

RECIPE = ROOT / 'yamls/cpu/c4_zstd.yaml'
SAMPLES, BATCH = 64, 16  # 4 steps of 8 samples per node


def train_on_two_nodes(schedulers: list[dict], flags: list[str], tmp_path, tokenizer_dir,
                       per_node: int = 1) -> tuple[list[str], dict, list[str]]:
    """Starts `python -m training.launch` once per node with its scheduler's variables, with
    `per_node` processes each; both must end 0. Returns each node's output, the run's report and
    the overrides every node had."""
    remote = 'oci://c4-bench@local/launch-nodes'
    write_mds(f'{remote}/train', SAMPLES, size_limit=1 << 12, compression='zstd')
    report = tmp_path / 'report'
    same = [f'variables.data_remote={remote}', f'tokenizer.name={tokenizer_dir}',
            'train_loader.dataset.num_canonical_nodes=2', 'max_duration=1ep',
            f'global_train_batch_size={BATCH}', 'variables.run_name=launch-nodes',
            'save_folder=null', 'autoresume=false', 'eval_loader=null',
            f'callbacks.hf_checkpointer.save_folder={tmp_path}/hf',
            f'callbacks.run_report.folder={report}',
            f'code_paths=[{ROOT}/tests/programs/sample_log.py]',
            f'callbacks.sample_log.path={tmp_path}/samples']
    nodes, tmpdirs = [], []
    try:
        for rank, variables in enumerate(schedulers):
            work = tmp_path / f'node{rank}'
            work.mkdir()
            tmpdirs.append(node_tmpdir(rank))
            env = {**scheduler_free(dict(os.environ)), **variables,
                   'TMPDIR': str(tmpdirs[-1]), 'PYTHONPATH': str(ROOT)}
            cmd = [PY, '-m', 'training.launch', *flags, '--logs', str(tmp_path / 'logs'),
                   str(RECIPE), *same, f'variables.data_local={work}/cache',
                   f'callbacks.sample_log.cache={work}/cache/train']
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

    # One FSDP model over every rank of both nodes (the recipe's fsdp_config, FSDP2).
    assert all('Prepare FSDP2' in out for out in outs), outs[0][-3000:]
    world = 2 * per_node
    metrics = json.loads((report / 'run_metrics.json').read_text())
    assert metrics['status'] == 'completed' and metrics['world_size'] == world, metrics
    steps = SAMPLES // BATCH
    assert metrics['steps'] == steps and metrics['samples'] == SAMPLES
    assert [(w['rank'], w['steps']) for w in metrics['data_wait_per_rank']] == \
        [(r, steps) for r in range(world)]
    total = sum(w['data_wait_s'] for w in metrics['data_wait_per_rank']) / world
    assert abs(metrics['data_wait_s'] - total) < 1e-3, metrics['data_wait_per_rank']
    rows = [json.loads(line) for line in open(report / 'steps.jsonl')]
    assert len(rows) == steps and all(len(r['data_wait_ms_per_rank']) == world for r in rows)
    # Each node downloaded its own part of the shards into its own cache; the report sums them
    # (each node's local rank 0 listed its cache at FIT_END).
    index = json.loads((tmp_path / 'node0/cache/train/index.json').read_text())
    sizes = {sh['raw_data']['basename']: sh['zip_data']['bytes'] for sh in index['shards']}
    cached = [[n for n in json.loads(Path(f'{tmp_path}/samples.fit_end.{r}').read_text())
               ['cached'] if n in sizes] for r in range(0, world, per_node)]
    assert all(cached), cached
    assert metrics['cache_stats_all_ranks'] is True
    assert metrics['cache_misses'] == sum(len(c) for c in cached), (metrics, cached)
    assert metrics['bytes_downloaded'] == sum(sizes[n] for c in cached for n in c)
    return outs, metrics, same


def one_node_batches(overrides: list[str], cache: Path) -> list[list[str]]:
    """Digests of the rows of every batch one node of one process reads (as sample_log)."""
    from llmfoundry.data.text_data import build_text_dataloader
    from transformers import AutoTokenizer

    from training.shards import install
    install()
    cfg = om.merge(om.load(RECIPE), om.from_cli(overrides))
    loader_cfg = om.to_container(cfg.train_loader, resolve=True)
    loader_cfg.pop('name')
    loader_cfg['dataset']['local'] = str(cache)
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer.name)
    loader = build_text_dataloader(tokenizer=tokenizer, device_batch_size=BATCH,
                                   **loader_cfg).dataloader
    return [[hashlib.sha1(r.numpy().tobytes()).hexdigest() for r in batch['input_ids']]
            for batch in loader]


def launch_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith('launch: ')]


def test_two_slurm_nodes_of_two_processes_train_one_model(oci_store, tokenizer_dir,
                                                         tmp_path):
    port, hostlist = free_port(), 'localhost,gpu-[002]'
    nodes = [slurm_step(2, rank, hostlist, SLURMD_NODENAME=host)
             for rank, host in enumerate(['localhost', 'gpu-002'])]
    outs, _, same = train_on_two_nodes(nodes, ['--master-port', str(port), '--nproc', '2'],
                                       tmp_path, tokenizer_dir, per_node=2)
    for rank, out in enumerate(outs):
        assert launch_lines(out)[:2] == [
            f'launch: Slurm: node {rank} of 2 (SLURM_NODEID, SLURM_STEP_NUM_NODES), 2 '
            f'process(es) here (--nproc), world size 4',
            f"launch: master localhost:{port} (first host of SLURM_STEP_NODELIST="
            f"'{hostlist}'; port: --master-port)"], out[-3000:]

    # The data split: each step's four parts are disjoint and make the batch one node reads.
    ranks = [[json.loads(line) for line in open(f'{tmp_path}/samples.{r}')] for r in range(4)]
    steps = SAMPLES // BATCH
    assert [[row['batch'] for row in rows] for rows in ranks] == [list(range(steps))] * 4
    one = one_node_batches(same, tmp_path / 'one-node-cache')
    assert len(one) == steps
    for step in range(steps):
        parts = [set(rows[step]['samples']) for rows in ranks]
        assert all(len(p) == BATCH // 4 for p in parts), step
        assert len(set().union(*parts)) == BATCH, f'step {step}: ranks overlap'
        assert set().union(*parts) == set(one[step]), f'step {step} differs from one node\'s'
    seen = [s for rows in ranks for row in rows for s in row['samples']]
    assert len(seen) == len(set(seen)) == SAMPLES


def test_two_pytorchjob_pods_train_one_model(oci_store, tokenizer_dir, tmp_path):
    port = free_port()  # the Master pod's service is this machine
    pods = [pytorchjob_pod(2, rank, MASTER_ADDR='localhost', MASTER_PORT=str(port))
            for rank in (0, 1)]
    outs, _, _ = train_on_two_nodes(pods, [], tmp_path, tokenizer_dir)
    for rank, out in enumerate(outs):
        assert launch_lines(out)[:2] == [
            f'launch: PyTorchJob: node {rank} of 2 (PET_NODE_RANK, PET_NNODES), 1 process(es) '
            f'here (a CPU recipe), world size 2',
            f'launch: master localhost:{port} (MASTER_ADDR; port: MASTER_PORT)'], out[-3000:]

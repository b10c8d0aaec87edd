"""Two nodes through Composer's launcher (README "On N nodes"): two
`composer --world_size 4 --node_rank R --master_addr 127.0.0.1 --master_port P --nproc 2
train.py ...` processes on this machine, one FSDP model over the four ranks (gloo), reading one
dataset from the local OCI store. Both finish; the ranks' samples are disjoint and, step by
step, together are the global batch one node reads (computed here with llm-foundry's own
loader, world size 1); the run report (rank 0's) counts every rank's data wait and both nodes'
shard downloads.

One machine stands in for two: each node has its own working directory (llm-foundry's ranks
on a node signal each other with files in it, named alike on every node), cache folder and
TMPDIR, as two machines have. No checkpoints: with a local save_folder, Composer's autoresume
signals between ranks with files in it, named alike too, and two nodes' checkpoints go to a
bucket (save_folder: oci://...) anyway. /dev/shm stays shared: streaming would give both
node leaders the same shared-memory prefix; ours reserve one each
(training/shards/shared_memory.py)."""
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf as om

from tests.helpers import COMPOSER, ROOT, free_port, node_tmpdir, write_mds

RECIPE = 'yamls/cpu/c4_zstd.yaml'
SAMPLES, BATCH, NCN = 192, 16, 8   # 12 global batches of 16: 8 per node, 4 per rank
NODES, PER_NODE = 2, 2               # one FSDP model over 4 ranks


def _one_node_batches(overrides: list[str], cache: Path) -> list[list[str]]:
    """Digests of the rows of every batch one node of one process reads (as sample_log)."""
    from llmfoundry.data.text_data import build_text_dataloader
    from transformers import AutoTokenizer

    from training.shards import install
    install()
    cfg = om.merge(om.load(ROOT / RECIPE), om.from_cli(overrides))
    loader_cfg = om.to_container(cfg.train_loader, resolve=True)
    loader_cfg.pop('name')
    loader_cfg['dataset']['local'] = str(cache)
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer.name)
    loader = build_text_dataloader(tokenizer=tokenizer, device_batch_size=BATCH,
                                   **loader_cfg).dataloader
    return [[hashlib.sha1(r.numpy().tobytes()).hexdigest() for r in batch['input_ids']]
            for batch in loader]


@pytest.mark.slow
def test_two_launcher_nodes_read_disjoint_halves_and_report_together(oci_store, tokenizer_dir,
                                                                     tmp_path):
    remote = 'oci://c4-bench@local/two-nodes'
    write_mds(f'{remote}/train', SAMPLES, size_limit=1 << 12, compression='zstd')
    log, report = tmp_path / 'samples', tmp_path / 'report'
    same = [f'variables.data_remote={remote}', f'tokenizer.name={tokenizer_dir}',
            f'train_loader.dataset.num_canonical_nodes={NCN}', 'max_duration=1ep',
            'variables.run_name=two-nodes', 'save_folder=null', 'autoresume=false',
            'eval_loader=null',  # the train split only: this test is about its samples
            f'callbacks.hf_checkpointer.save_folder={tmp_path}/hf',
            f'global_train_batch_size={BATCH}', f'callbacks.run_report.folder={report}',
            f'code_paths=[{ROOT}/tests/programs/sample_log.py]',
            f'callbacks.sample_log.path={log}']
    port, nodes, tmpdirs = free_port(), [], []
    try:
        for rank in (0, 1):
            cache = tmp_path / f'node{rank}' / 'cache'
            cmd = [COMPOSER, '--world_size', str(NODES * PER_NODE), '--node_rank', str(rank),
                   '--master_addr', '127.0.0.1', '--master_port', str(port),
                   '--nproc', str(PER_NODE),
                   f'{ROOT}/train.py', f'{ROOT}/{RECIPE}', *same,
                   f'variables.data_local={cache}', f'callbacks.sample_log.cache={cache}/train']
            tmpdirs.append(node_tmpdir(rank))
            env = {**os.environ, 'TMPDIR': str(tmpdirs[-1])}
            work = tmp_path / f'node{rank}' / 'work'
            work.mkdir(parents=True)
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

    # FSDP over the four ranks of both nodes (the recipe's fsdp_config, Composer's FSDP2).
    assert all('Prepare FSDP2' in out for out in outs), outs[0][-3000:]
    # Disjoint, and each step's four parts are the batch one node reads at that step.
    world = NODES * PER_NODE
    ranks = [[json.loads(line) for line in open(f'{log}.{r}')] for r in range(world)]
    steps = SAMPLES // BATCH
    assert [[row['batch'] for row in rows] for rows in ranks] == [list(range(steps))] * world
    one = _one_node_batches(same, tmp_path / 'one-node-cache')
    assert len(one) == steps
    for step in range(steps):
        parts = [set(rows[step]['samples']) for rows in ranks]
        assert all(len(p) == BATCH // world for p in parts), step
        assert len(set().union(*parts)) == BATCH, f'step {step}: ranks overlap'
        assert set().union(*parts) == set(one[step]), f'step {step} differs from one node\'s'
    seen = [s for rows in ranks for row in rows for s in row['samples']]
    assert len(seen) == len(set(seen)) == SAMPLES

    # The report: both ranks' data wait, both nodes' downloads and caches.
    metrics = json.loads((report / 'run_metrics.json').read_text())
    assert metrics['status'] == 'completed' and metrics['world_size'] == world, metrics
    assert metrics['steps'] == steps and metrics['samples'] == SAMPLES
    per_rank = metrics['data_wait_per_rank']
    assert [w['rank'] for w in per_rank] == list(range(world))
    assert all(w['steps'] == steps for w in per_rank)
    total = sum(w['data_wait_s'] for w in per_rank) / world
    assert abs(metrics['data_wait_s'] - total) < 1e-3, (metrics['data_wait_s'], per_rank)
    rows = [json.loads(line) for line in open(report / 'steps.jsonl')]
    assert len(rows) == steps and all(len(r['data_wait_ms_per_rank']) == world for r in rows)
    index = json.loads((tmp_path / 'node0' / 'cache' / 'train' / 'index.json').read_text())
    sizes = {sh['raw_data']['basename']: sh['zip_data']['bytes'] for sh in index['shards']}
    leaders = range(0, world, PER_NODE)  # each node's local rank 0 lists its node's cache
    cached = [json.loads(Path(f'{log}.fit_end.{r}').read_text())['cached'] for r in leaders]
    shards = [[name for name in c if name in sizes] for c in cached]
    assert all(shards), cached  # each node downloaded its own part of the dataset
    assert metrics['cache_stats_all_ranks'] is True
    assert metrics['cache_misses'] == len(shards[0]) + len(shards[1]), (metrics, shards)
    assert metrics['bytes_downloaded'] == sum(sizes[n] for s in shards for n in s)
    assert metrics['cache_shards_at_end'] == len(shards[0]) + len(shards[1])

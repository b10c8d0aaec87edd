"""scripts/slurm/train.sbatch submitted for real: a one-host Slurm on this machine
(scripts/slurm/local_cluster.sh: munge, slurmctld and slurmd on 127.0.0.1, Debian's slurm-wlm
installed by the script when missing), `sbatch --wait` of the batch script as a user types it,
with one node and the CPU twin: sbatch -> srun (one task) -> python -m training.launch ->
Composer's launcher -> train.py. The job ends 0, its log has the launch's lines, the run report
is complete. Slurm's own hostlist expansion (`scontrol show hostnames`) is the oracle for
training.launch's. Two nodes cannot run on one host with Debian's build (a second slurmd for a
second node name on 127.0.0.1 stops: "Duplicated NodeHostName"; Slurm needs to be built with
multiple-slurmd support for it): tests/training/test_launch_nodes.py runs two with the variables
srun gives."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT, node_tmpdir, write_mds
from tests.training.schedulers import scheduler_free
from training import launch

pytestmark = pytest.mark.e2e


@pytest.fixture(scope='module')
def slurm(tmp_path_factory):
    """The one-host cluster, started by the project's script; the variables that reach it."""
    folder = tmp_path_factory.mktemp('slurm')
    script = str(ROOT / 'scripts/slurm/local_cluster.sh')
    started = subprocess.run([script, 'start', str(folder)], capture_output=True, text=True,
                             timeout=300)
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == f'export SLURM_CONF={folder}/slurm.conf'
    yield {'SLURM_CONF': f'{folder}/slurm.conf'}
    subprocess.run([script, 'stop', str(folder)], capture_output=True, timeout=60)


def test_hostlists_expand_as_slurm_expands_them(slurm):
    exprs = ['gpu-[001-004,010]', 'a[1-2],b3', 'n[08-10]', 'node[9-11]', 'h[0010-0012]',
             'rack[1-2]-n[01-02]', 'node1,node[2-3],node10', 'localhost,gpu-[002]',
             'n[1-3,5]x[2-3]']
    for expr in exprs:
        slurms = subprocess.run(['scontrol', 'show', 'hostnames', expr], capture_output=True,
                                text=True, env={**os.environ, **slurm}, check=True).stdout
        assert launch.expand_hostlist(expr) == slurms.split(), expr


@pytest.mark.slow
def test_sbatch_trains_the_cpu_twin_through_srun_and_the_launch(slurm, oci_store,
                                                                tokenizer_dir, tmp_path):
    remote = 'oci://c4-bench@local/slurm-job'
    write_mds(f'{remote}/train', 64, size_limit=1 << 12, compression='zstd')
    report, run_dir, tmp = tmp_path / 'report', tmp_path / 'node', node_tmpdir(0)
    overrides = [f'variables.data_remote={remote}', f'tokenizer.name={tokenizer_dir}',
                 f'variables.data_local={tmp_path}/cache', 'variables.run_name=slurm-job',
                 'max_duration=4ba', 'save_folder=null', 'autoresume=false', 'eval_loader=null',
                 f'callbacks.hf_checkpointer.save_folder={tmp_path}/hf',
                 f'callbacks.run_report.folder={report}']
    # The job's environment is sbatch's (--export=ALL): the local store's credentials, and
    # the batch script's knobs. On the command line, what this machine lacks: GPUs.
    env = {**scheduler_free(dict(os.environ)), **slurm, 'TMPDIR': str(tmp), 'PY': sys.executable,
           'RECIPE': 'yamls/cpu/c4_zstd.yaml', 'RUN_DIR': str(run_dir),
           'LOGS': str(tmp_path / 'logs'), 'MAX_RESTARTS': '0'}
    out = tmp_path / 'job.out'
    try:
        job = subprocess.run(['sbatch', '--wait', '--nodes=1', '--gpus-per-node=0',
                              f'--output={out}', str(ROOT / 'scripts/slurm/train.sbatch'),
                              *overrides], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=500)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log = out.read_text() if out.exists() else ''
    assert job.returncode == 0, f'{job.stdout}{job.stderr}\n{log[-5000:]}'
    lines = [line for line in log.splitlines() if line.startswith('launch: ')]
    assert lines[0] == ('launch: Slurm: node 0 of 1 (SLURM_NODEID, SLURM_STEP_NUM_NODES), 1 '
                        'process(es) here (a CPU recipe), world size 1'), log[-5000:]
    hca = launch.NCCL_BY_SHAPE['BM.GPU.H100.8']['NCCL_IB_HCA']
    assert lines[1].startswith(f'launch: NCCL for BM.GPU.H100.8: set NCCL_IB_HCA={hca} ')
    assert run_dir.is_dir()  # srun made the node's working folder and ran there
    metrics = json.loads((report / 'run_metrics.json').read_text())
    assert metrics['status'] == 'completed' and metrics['world_size'] == 1, metrics
    assert metrics['steps'] == 4 and metrics['samples'] == 64

"""Start a recipe on every node of a job: `python -m training.launch RECIPE [key=value ...]`.

Run once per node. It reads the node's place in the job from what started it: Slurm (`srun`
with one task per node: SLURM_NODEID, SLURM_STEP_NODELIST/SLURM_JOB_NODELIST, SLURM_NNODES,
SLURM_GPUS_ON_NODE), a Kubeflow PyTorchJob (one pod per node: RANK, WORLD_SIZE, PET_NNODES,
MASTER_ADDR, MASTER_PORT), or neither (one node; or --nodes, --node-rank and --master-addr
given by hand). It checks that against the recipe, then becomes Composer's launcher:

    composer --world_size W --nproc P --node_rank R --master_addr A --master_port M \\
        train.py RECIPE [key=value ...]

What cannot work is refused in one line (exit status 2) before any process starts: a GPU
recipe on a node without GPUs, a node count that neither divides the recipe's
num_canonical_nodes nor is a multiple of it, a global batch that the processes cannot split
evenly, a rank outside the job, a multi-node job without a master address, a WORLD_SIZE that
counts processes where pods are meant. --shape BM.GPU.H100.8 sets OCI's NCCL settings for
that shape's RDMA network, each only where neither the environment nor an nccl.conf sets it.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from omegaconf import DictConfig
from omegaconf import OmegaConf as om

from training.config import ConfigError, gpu_settings, load_config

TRAIN_PY = Path(__file__).resolve().parent.parent / 'train.py'
DEFAULT_PORT = 29500  # torch's usual rendezvous port, when the scheduler names none

# NCCL over OCI's RDMA cluster network, as Oracle's own set-ups configure it on a BM.GPU.H100.8:
# the HPC stack (Slurm) writes these into every node's /etc/nccl.conf (oracle-quickstart/oci-hpc,
# playbooks/roles/nccl-conf/templates/h100, commit b2843c4f), and OKE's H100 manifests pass the
# same to every rank (oracle-quickstart/oci-hpc-oke, manifests/nccl-tests/kueue/BM.GPU.H100.8.yaml,
# commit 2df6a45). Only values both name are here; docs/training.md says what each one is.
NCCL_BY_SHAPE = {
    'BM.GPU.H100.8': {
        'NCCL_IB_HCA': '=mlx5_0,mlx5_1,mlx5_3,mlx5_4,mlx5_5,mlx5_6,mlx5_7,mlx5_8,mlx5_9,'
                       'mlx5_10,mlx5_12,mlx5_13,mlx5_14,mlx5_15,mlx5_16,mlx5_17',
        'NCCL_IB_GID_INDEX': '3',
        'NCCL_IB_TC': '41',
        'NCCL_IB_SL': '0',
        'NCCL_IB_TIMEOUT': '22',
        'NCCL_IB_SPLIT_DATA_ON_QPS': '0',
        'NCCL_CUMEM_ENABLE': '0',
        'NCCL_SOCKET_IFNAME': 'eth0',
        'NCCL_IGNORE_CPU_AFFINITY': '1',
    },
}


class LaunchError(ValueError):
    """A job that cannot work as started; the message says what and where."""


# ---------------------------------------------------------------------------------------------
# Slurm hostlists


def expand_hostlist(expr: str) -> list[str]:
    """The hosts of a Slurm hostlist expression, in Slurm's order: 'gpu-[001-003,010]' ->
    gpu-001 gpu-002 gpu-003 gpu-010; 'a[1-2],b3' -> a1 a2 b3; several bracket groups in one
    name give every combination ('r[1-2]-n[1-2]' -> r1-n1 r1-n2 r2-n1 r2-n2). A range keeps
    the width of its first number (zero padding)."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(expr):
        if ch == '[':
            depth += 1
        elif ch == ']':
            depth -= 1
        elif ch == ',' and depth == 0:
            items.append(expr[start:i])
            start = i + 1
        if depth not in (0, 1):
            raise ValueError(f'{expr!r} is not a Slurm hostlist (unbalanced brackets)')
    items.append(expr[start:])
    if depth or not all(items):
        raise ValueError(f'{expr!r} is not a Slurm hostlist (unbalanced brackets or an empty '
                         f'name)')
    return [host for item in items for host in _expand_name(item, expr)]


def _expand_name(name: str, expr: str) -> list[str]:
    m = re.fullmatch(r'([^\[\]]*)\[([^\[\]]*)\](.*)', name)
    if not m:
        return [name]
    prefix, ranges, rest = m.groups()
    tails = _expand_name(rest, expr)
    hosts = []
    for part in ranges.split(','):
        lo, dash, hi = part.partition('-')
        hi = hi if dash else lo
        if not (lo.isdigit() and hi.isdigit() and int(lo) <= int(hi)):
            raise ValueError(f'{expr!r} is not a Slurm hostlist (bad range {part!r})')
        for n in range(int(lo), int(hi) + 1):
            hosts.extend(f'{prefix}{n:0{len(lo)}d}{tail}' for tail in tails)
    return hosts


# ---------------------------------------------------------------------------------------------
# The node's place in the job, per scheduler


@dataclass
class Node:
    """This node's place in the job, and where each value came from (for the log line)."""
    scheduler: str  # Slurm, PyTorchJob, plain
    nodes: int
    rank: int
    master_addr: Optional[str]
    master_port: Optional[int]
    gpus: Optional[int] = None  # GPUs the scheduler gave this node; None: ask CUDA
    nproc: Optional[int] = None  # processes per node the scheduler fixed (PET_NPROC_PER_NODE)
    sources: dict[str, str] = field(default_factory=dict)


def _int(env: Mapping[str, str], name: str, minimum: int = 0) -> int:
    value = env.get(name, '')
    if not value.strip().isdigit() or int(value) < minimum:
        raise LaunchError(f'{name}={value!r} is not a whole number >= {minimum}')
    return int(value)


def _port(value: str, where: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise LaunchError(f'{where}={value!r} is not a TCP port')
    return int(value)


def scheduler_of(env: Mapping[str, str]) -> str:
    if 'SLURM_JOB_ID' in env:
        return 'Slurm'
    if 'RANK' in env or 'WORLD_SIZE' in env or 'PET_NNODES' in env:
        return 'PyTorchJob'
    return 'plain'


def from_slurm(env: Mapping[str, str]) -> Node:
    """One task per node started by srun. The step's variables (inside srun) win over the
    job's (the batch script): a step may run on some of the job's nodes only."""
    in_step = 'SLURM_STEP_ID' in env
    nodes_var = 'SLURM_STEP_NUM_NODES' if in_step else 'SLURM_NNODES'
    list_var = 'SLURM_STEP_NODELIST' if in_step else 'SLURM_JOB_NODELIST'
    nodes = _int(env, nodes_var, 1)
    if not in_step and nodes > 1:
        raise LaunchError(f'this is the batch script of a {nodes}-node Slurm job, not a job '
                          f'step: only this node would start; run it on every node with '
                          f'`srun --ntasks-per-node=1 python -m training.launch ...`')
    if in_step:
        tasks = _int(env, 'SLURM_STEP_NUM_TASKS', 1)
        if tasks != nodes:
            raise LaunchError(f'srun started {tasks} tasks on {nodes} nodes '
                              f'(SLURM_STEP_NUM_TASKS, SLURM_STEP_NUM_NODES): start one per node '
                              f'(srun --ntasks-per-node=1); each starts all of its node\'s '
                              f'processes')
    rank = _int(env, 'SLURM_NODEID')
    try:
        hosts = expand_hostlist(env.get(list_var, ''))
    except ValueError as err:
        raise LaunchError(f'{list_var}: {err}') from None
    if len(hosts) != nodes:
        raise LaunchError(f'{list_var}={env[list_var]!r} names {len(hosts)} hosts but '
                          f'{nodes_var}={nodes}')
    if rank >= nodes:
        raise LaunchError(f'SLURM_NODEID={rank} but the step has {nodes} node(s) ({nodes_var})')
    me = env.get('SLURMD_NODENAME')
    if me and hosts[rank] != me:  # node 0 must be the first host, which becomes the master
        raise LaunchError(f'SLURM_NODEID={rank} but host {rank} of {list_var} is '
                          f'{hosts[rank]!r}, not this node ({me!r}): the master address would '
                          f'be wrong; give --master-addr')
    node = Node('Slurm', nodes, rank, hosts[0], None)
    node.sources.update(rank='SLURM_NODEID', nodes=nodes_var,
                        master_addr=f'first host of {list_var}={env[list_var]!r}')
    var = next((v for v in ('SLURM_GPUS_ON_NODE', 'SLURM_GPUS_PER_NODE') if env.get(v)), None)
    if var:
        count = env[var].rsplit(':', 1)[-1]  # '8', or 'h100:8'
        if not count.isdigit():
            raise LaunchError(f'{var}={env[var]!r}: no GPU count in it')
        node.gpus, node.sources['gpus'] = int(count), var
    if env.get('MASTER_PORT'):
        node.master_port = _port(env['MASTER_PORT'], 'MASTER_PORT')
        node.sources['master_port'] = 'MASTER_PORT'
    return node


def from_pytorchjob(env: Mapping[str, str]) -> Node:
    """A Kubeflow PyTorchJob pod (training-operator v1). The operator sets RANK to the pod's
    index and, since v1.8, PET_NNODES to the number of pods; WORLD_SIZE is the number of pods,
    or pods x nprocPerNode when the job sets a number there (then it counts processes)."""
    if 'PET_NNODES' in env:
        if ':' in env['PET_NNODES']:
            raise LaunchError(f'PET_NNODES={env["PET_NNODES"]!r}: an elastic PyTorchJob '
                              f'(elasticPolicy); these recipes need a fixed node count '
                              f'(num_canonical_nodes, global batch): drop elasticPolicy')
        nodes, nodes_var = _int(env, 'PET_NNODES', 1), 'PET_NNODES'
    else:
        nodes, nodes_var = _int(env, 'WORLD_SIZE', 1), 'WORLD_SIZE'
    rank_var = 'PET_NODE_RANK' if 'PET_NODE_RANK' in env else 'RANK'
    rank = _int(env, rank_var)
    if 'RANK' in env and rank_var != 'RANK' and _int(env, 'RANK') != rank:
        raise LaunchError(f'RANK={env["RANK"]} but PET_NODE_RANK={rank}: which node is this?')
    nproc = None
    if env.get('PET_NPROC_PER_NODE', 'auto') != 'auto':
        nproc = _int(env, 'PET_NPROC_PER_NODE', 1)
    if 'WORLD_SIZE' in env and nodes_var != 'WORLD_SIZE':
        world = _int(env, 'WORLD_SIZE', 1)
        if world != nodes and world != nodes * (nproc or 1):
            raise LaunchError(f'WORLD_SIZE={world} but PET_NNODES={nodes} pods'
                              + (f' x PET_NPROC_PER_NODE={nproc}' if nproc else '')
                              + ': WORLD_SIZE counts neither the pods nor their processes')
    if rank >= nodes:
        raise LaunchError(f'{rank_var}={rank} but the job has {nodes} pod(s) ({nodes_var}): '
                          f'WORLD_SIZE must count pods, not processes')
    node = Node('PyTorchJob', nodes, rank, env.get('MASTER_ADDR') or None, None, nproc=nproc)
    node.sources.update(rank=rank_var, nodes=nodes_var, master_addr='MASTER_ADDR')
    if env.get('MASTER_PORT'):
        node.master_port = _port(env['MASTER_PORT'], 'MASTER_PORT')
        node.sources['master_port'] = 'MASTER_PORT'
    return node


def find_node(args: argparse.Namespace, env: Mapping[str, str]) -> Node:
    """This node's place: from its scheduler, or from the flags in a plain environment."""
    if env.get('LOCAL_WORLD_SIZE') or env.get('LOCAL_RANK'):
        raise LaunchError('LOCAL_RANK/LOCAL_WORLD_SIZE are set: this runs inside a launcher '
                          '(torchrun, composer) whose RANK and WORLD_SIZE count processes; run '
                          'training.launch once per node, outside any launcher')
    scheduler = scheduler_of(env)
    if scheduler != 'plain':
        given = [f for f, v in (('--nodes', args.nodes), ('--node-rank', args.node_rank)) if
                 v is not None]
        if given:
            raise LaunchError(f'{" and ".join(given)} given inside a {scheduler} job, which '
                              f'sets them: leave them out')
        node = from_slurm(env) if scheduler == 'Slurm' else from_pytorchjob(env)
    else:
        nodes = 1 if args.nodes is None else args.nodes
        if nodes > 1 and args.node_rank is None:
            raise LaunchError(f'--nodes {nodes} without --node-rank: every node would take '
                              f'itself for node 0')
        rank = args.node_rank or 0
        if nodes < 1 or not 0 <= rank < nodes:
            raise LaunchError(f'--node-rank {rank} is not a node of --nodes {nodes} '
                              f'(0..{nodes - 1})')
        node = Node('plain', nodes, rank, None, None)
        node.sources.update(rank='--node-rank', nodes='--nodes')
    if args.master_addr:
        node.master_addr = args.master_addr
        node.sources['master_addr'] = '--master-addr'
    if args.master_port:
        node.master_port = args.master_port
        node.sources['master_port'] = '--master-port'
    if node.nodes > 1:
        if not node.master_addr:
            raise LaunchError(f'a {node.nodes}-node job without a master address (node 0\'s '
                              f'host): set MASTER_ADDR or give --master-addr')
        if node.master_port is None:
            node.master_port = DEFAULT_PORT
            node.sources['master_port'] = 'default'
    return node


# ---------------------------------------------------------------------------------------------
# The recipe against the job


def processes_per_node(cfg: DictConfig, node: Node, nproc: Optional[int],
                       where: str) -> tuple[int, str]:
    """(processes on this node, where that number comes from): the node's GPUs for a GPU
    recipe (one process each), else 1; --nproc, or the PyTorchJob's nprocPerNode, sets it."""
    source = '--nproc'
    if node.nproc is not None:  # the PyTorchJob's nprocPerNode: its WORLD_SIZE counts them
        if nproc not in (None, node.nproc):
            raise LaunchError(f'--nproc {nproc} but PET_NPROC_PER_NODE={node.nproc} (the '
                              f'PyTorchJob\'s nprocPerNode): give one number in both places')
        nproc, source = node.nproc, 'PET_NPROC_PER_NODE'
    need = gpu_settings(cfg)
    if not need:
        return (nproc, source) if nproc else (1, 'a CPU recipe')
    gpus, gpus_source = node.gpus, node.sources.get('gpus')
    if gpus is None:
        import torch
        gpus, gpus_source = torch.cuda.device_count(), 'CUDA'
    if gpus == 0:
        raise LaunchError(f'{where}: {"; ".join(need)} need CUDA GPUs, one per process, but '
                          f'node {node.rank} has no GPU ({gpus_source}); on CPUs use its twin '
                          f'in yamls/cpu/ with --nproc')
    if nproc is not None and nproc > gpus:
        raise LaunchError(f'{nproc} processes per node but node {node.rank} has {gpus} GPU(s) '
                          f'({gpus_source}): one GPU per process')
    return (nproc, source) if nproc else (gpus, gpus_source)


def check_recipe(cfg: DictConfig, nodes: int, world: int, where: str) -> None:
    for loader in ('train_loader', 'eval_loader'):
        key = f'{loader}.dataset.num_canonical_nodes'
        ncn = om.select(cfg, key)
        if not isinstance(ncn, int) or ncn < 1:
            continue  # unset: streaming derives it from the node count
        if nodes % ncn and ncn % nodes:
            fits = [n for n in range(1, ncn + 1) if ncn % n == 0]
            raise LaunchError(f'{where}: {key} is {ncn} and this job has {nodes} nodes: '
                              f'neither divides the other, which streaming refuses deep in '
                              f'set-up; use {", ".join(map(str, fits))} nodes or a multiple of '
                              f'{ncn}')
    batch = om.select(cfg, 'global_train_batch_size')
    if isinstance(batch, int) and batch % world:
        raise LaunchError(f'{where}: global_train_batch_size {batch} does not split over '
                          f'{world} processes ({nodes} nodes): use a multiple of {world}')


def nccl_settings(shape: Optional[str], env: Mapping[str, str]) -> tuple[dict, list[str]]:
    """(the variables to add, the names kept as already set) for the shape's RDMA network.
    Kept: what the environment sets, and what an nccl.conf NCCL reads sets (the OCI HPC
    stack writes /etc/nccl.conf on its GPU nodes: a cluster's own tuning stays)."""
    if not shape:
        return {}, []
    if shape not in NCCL_BY_SHAPE:
        raise LaunchError(f'--shape {shape}: no NCCL settings known for it (known: '
                          f'{", ".join(NCCL_BY_SHAPE)})')
    in_files = set()
    for conf in (env.get('NCCL_CONF_FILE'), os.path.expanduser('~/.nccl.conf'),
                 '/etc/nccl.conf'):
        if conf and os.path.isfile(conf):
            in_files |= {line.split('=', 1)[0].strip() for line in open(conf) if '=' in line}
    add, kept = {}, []
    for name, value in NCCL_BY_SHAPE[shape].items():
        if name in env or name in in_files:
            kept.append(name)
        else:
            add[name] = value
    return add, kept


# ---------------------------------------------------------------------------------------------
# The command


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog='python -m training.launch',
        description=__doc__.split('\n\n')[0] + ' Run it once per node (srun, one pod per '
        'node); it starts Composer\'s launcher with the node\'s rank, the node count, its '
        'processes and the master address taken from the scheduler.',
        epilog='Details, and which value comes from where: docs/training.md, "Many nodes".')
    p.add_argument('recipe', help='the recipe, e.g. yamls/c4_zstd.yaml')
    p.add_argument('overrides', nargs='*', help='key=value overrides, the same on every node')
    p.add_argument('--nproc', type=int, help='processes on this node (default: one per GPU '
                   'for a GPU recipe, 1 for a CPU one)')
    p.add_argument('--nodes', type=int, help='node count, without a scheduler (default 1)')
    p.add_argument('--node-rank', type=int, help='this node\'s rank, without a scheduler')
    p.add_argument('--master-addr', help='node 0\'s address (default: from the scheduler)')
    p.add_argument('--master-port', type=int, help=f'the rendezvous port on node 0 (default: '
                   f'MASTER_PORT, else {DEFAULT_PORT})')
    p.add_argument('--shape', help=f'set OCI\'s NCCL settings for this shape\'s RDMA network, '
                   f'where not set already ({", ".join(NCCL_BY_SHAPE)})')
    p.add_argument('--logs', help='folder for the other ranks\' output (local rank 0 prints '
                   'to the console; default: logs/<run_name>)')
    p.add_argument('--dry-run', action='store_true', help='print the command, start nothing')
    args = p.parse_args(argv)
    if args.nproc is not None and args.nproc < 1:
        p.error('--nproc must be 1 or more')
    return args


def plan(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[list[str], dict, list[str]]:
    """(Composer's command, the variables it adds to the environment, lines to print)."""
    try:
        cfg = load_config(args.recipe, args.overrides)
    except ConfigError as err:
        raise LaunchError(str(err)) from None
    node = find_node(args, env)
    nproc, nproc_source = processes_per_node(cfg, node, args.nproc, args.recipe)
    world = node.nodes * nproc
    check_recipe(cfg, node.nodes, world, args.recipe)
    add, kept = nccl_settings(args.shape, env)

    run_name = om.select(cfg, 'run_name') or 'run'
    logs = Path(args.logs or f'logs/{run_name}').resolve()
    cmd = [sys.executable, '-m', 'composer.cli.launcher', '--world_size', str(world),
           '--nproc', str(nproc), '--node_rank', str(node.rank),
           '--stdout', str(logs / 'rank{rank}.stdout.txt'),
           '--stderr', str(logs / 'rank{rank}.stderr.txt')]
    if node.master_addr:
        cmd += ['--master_addr', node.master_addr]
    if node.master_port:
        cmd += ['--master_port', str(node.master_port)]
    cmd += [str(TRAIN_PY), str(Path(args.recipe).resolve()), *args.overrides]

    src = node.sources
    lines = [f'{node.scheduler}: node {node.rank} of {node.nodes} ({src["rank"]}, '
             f'{src["nodes"]}), {nproc} process(es) here ({nproc_source}), world size {world}']
    if node.nodes > 1:
        lines.append(f'master {node.master_addr}:{node.master_port} ({src["master_addr"]}; '
                     f'port: {src["master_port"]})')
    if args.shape:
        lines.append(f'NCCL for {args.shape}: set '
                     + (' '.join(f'{k}={v}' for k, v in add.items()) or 'nothing')
                     + (f'; kept as set: {" ".join(kept)}' if kept else ''))
    restarts = env.get('SLURM_RESTART_COUNT')
    if restarts and restarts != '0':
        lines.append(f'restart {restarts} of this job (SLURM_RESTART_COUNT): '
                     + ('autoresume continues from the newest checkpoint in '
                        f'{om.select(cfg, "save_folder")}' if om.select(cfg, 'autoresume')
                        else 'the recipe has no autoresume: it starts over'))
    lines.append(f'other ranks\' output: {logs}/rank<N>.stdout.txt, .stderr.txt')
    return cmd, add, lines


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cmd, add, lines = plan(args, os.environ)
    except LaunchError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    for line in lines:
        print(f'launch: {line}', flush=True)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    Path(cmd[cmd.index('--stdout') + 1]).parent.mkdir(parents=True, exist_ok=True)
    # Replaced, not wrapped: the scheduler's signals (preemption, scancel) reach Composer's
    # launcher, which stops its processes.
    os.execve(sys.executable, cmd, {**os.environ, **add})


if __name__ == '__main__':
    sys.exit(main())

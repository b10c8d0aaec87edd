#!/usr/bin/env bash
# A one-host Slurm cluster (munge, slurmctld, slurmd on 127.0.0.1, node name `localhost`) in a
# folder of its own, to submit scripts/slurm/train.sbatch for real on this machine (`make slurm`;
# tests/scripts/test_slurm_batch.py). Needs root: it installs Debian's slurm-wlm and munge with
# apt-get when they are missing, and runs the daemons as root.
#
#   scripts/slurm/local_cluster.sh start DIR   # then: export SLURM_CONF=DIR/slurm.conf
#   scripts/slurm/local_cluster.sh stop DIR
#
# Everything lives in DIR (configuration, munge key and socket, state, logs, pid files), on
# free ports: it leaves /etc alone and can run beside another Slurm.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
dir=$(realpath -m "$2")
PACKAGES=(slurmd slurmctld slurm-client munge)

stop() {  # the daemons this folder's pid files name, all at once; up to 10 s for them to end
  local pids=()
  for daemon in slurmd slurmctld munged; do
    pid=$(cat "$dir/$daemon.pid" 2>/dev/null) || continue
    kill "$pid" 2>/dev/null && pids+=("$pid")
    rm -f "$dir/$daemon.pid"
  done
  for _ in $(seq 100); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && return
    sleep 0.1
  done
}

install() {
  [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] && [ -x /usr/sbin/munged ] &&
    command -v sbatch >/dev/null && return
  if [ "$(id -u)" -ne 0 ]; then
    echo "local_cluster.sh: Slurm is not installed; as root: apt-get install ${PACKAGES[*]}" >&2
    exit 1
  fi
  echo "local_cluster.sh: installing ${PACKAGES[*]} (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >"$dir/apt.log" 2>&1 || {
    apt-get update -qq >>"$dir/apt.log" 2>&1
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >>"$dir/apt.log" 2>&1 ||
      { echo "local_cluster.sh: apt-get install failed: $dir/apt.log" >&2; exit 1; }
  }
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "local_cluster.sh: run it as root (slurmd starts jobs as their user)" >&2
    exit 1
  fi
  mkdir -p "$dir"/{munge,state,spool,log}
  stop  # a cluster left running in DIR
  install
  chmod 700 "$dir/munge"
  [ -f "$dir/munge/munge.key" ] || { head -c 1024 /dev/urandom >"$dir/munge/munge.key"; }
  chmod 400 "$dir/munge/munge.key"
  /usr/sbin/munged --force --socket="$dir/munge/socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed"
  cat >"$dir/slurm.conf" <<EOF
ClusterName=local
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
AuthInfo=socket=$dir/munge/socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
# No cgroups (containers, sandboxes): processes are tracked by their parent pid.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  /usr/sbin/slurmctld -f "$dir/slurm.conf" -i
  /usr/sbin/slurmd -f "$dir/slurm.conf" -N localhost
  for _ in $(seq 300); do  # up to 30 s for the node to register
    if [ "$(SLURM_CONF=$dir/slurm.conf sinfo -h -n localhost -o %T 2>/dev/null)" = idle ]; then
      echo "export SLURM_CONF=$dir/slurm.conf"
      return
    fi
    sleep 0.1
  done
  echo "local_cluster.sh: the node did not come up; logs in $dir/log" >&2
  stop
  exit 1
}

case $1 in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac

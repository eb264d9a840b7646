#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, everything under one scratch directory, for tests.
#
# usage: .ci/slurm.sh up DIR      install slurm-wlm + munge if missing, start munged, slurmctld and
#                                 slurmd, wait for the node to be idle; prints `export SLURM_CONF=...`
#        .ci/slurm.sh down DIR    cancel any jobs, stop the daemons started by `up DIR` (by PID file)
#        .ci/slurm.sh status DIR  the daemons' PIDs, sinfo and squeue
#
# Runs as root (SlurmUser=root; jobs run as root). Private munge: its own key and socket in DIR,
# so a system munged, if any, is neither needed nor touched. No cgroups, no accounting.
# Only stdout's last line is meant for the caller: eval "$(bash .ci/slurm.sh up "$dir")".
# Env: SLURM_UP_TIMEOUT (seconds to wait for an idle node, default 60).
set -euo pipefail

DAEMONS=(munged slurmctld slurmd)  # started in this order, stopped in reverse

usage() { sed -n '4,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
say() { echo "slurm.sh: $*" >&2; }

[ $# -eq 2 ] || usage
COMMAND="$1"
if [ "$COMMAND" = up ]; then mkdir -p "$2"; fi
if [ ! -d "$2" ]; then say "no directory $2: nothing runs there"; [ "$COMMAND" = down ] && exit 0; exit 1; fi
DIR="$(cd "$2" && pwd)"
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"

pidfile() {
  case "$1" in
    munged) echo "$DIR/munge/munged.pid" ;;
    *) echo "$DIR/$1.pid" ;;
  esac
}

# running NAME: print the PID of DIR's daemon NAME if it runs (the PID's command must be NAME)
running() {
  local file pid
  file="$(pidfile "$1")"
  [ -s "$file" ] || return 1
  pid="$(cat "$file")"
  [[ "$pid" =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
  echo "$pid"
}

show_logs() {
  local log
  for log in "$DIR/munge/munged.log" "$DIR/slurmctld.log" "$DIR/slurmd.log"; do
    [ -f "$log" ] || continue
    echo "----- $log (last 30 lines)" >&2
    tail -n 30 "$log" >&2
  done
}

fail() { say "error: $*"; show_logs; exit 1; }

install() {
  local missing=0 cmd
  for cmd in munged munge slurmctld slurmd sinfo sbatch; do
    command -v "$cmd" >/dev/null 2>&1 || missing=1
  done
  [ "$missing" = 1 ] || return 0
  say "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >"$DIR/apt.log" 2>&1 \
    || { tail -n 30 "$DIR/apt.log" >&2; fail "apt-get install slurm-wlm munge failed"; }
}

write_conf() {
  local cpus mem_mib
  cpus="$(nproc)"
  # 95% of MemTotal: slurmd drains a node whose RealMemory is more than it measures
  mem_mib="$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.95 }' /proc/meminfo)"
  cat >"$CONF" <<EOF
# written by .ci/slurm.sh
ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mib State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munged() {
  running munged >/dev/null && return 0
  # munged wants its socket's directories searchable by all, its key private
  chmod 755 "$DIR"
  mkdir -p -m 755 "$DIR/munge"
  if [ ! -s "$DIR/munge/munge.key" ]; then
    (umask 077; head -c 128 /dev/urandom >"$DIR/munge/munge.key")
  fi
  munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" \
    || fail "munged did not start"
  munge -n -S "$DIR/munge/munge.socket" | unmunge -S "$DIR/munge/munge.socket" >/dev/null \
    || fail "munged does not answer on $DIR/munge/munge.socket"
}

start() {  # start NAME ARGS...: start a daemon that forks, then wait for its PID file
  local name="$1" i
  shift
  running "$name" >/dev/null && return 0
  rm -f "$(pidfile "$name")"
  "$name" "$@" || fail "$name did not start"
  for i in $(seq 50); do
    running "$name" >/dev/null && return 0
    sleep 0.1
  done
  fail "$name started but wrote no PID file ($(pidfile "$name"))"
}

up() {
  local timeout="${SLURM_UP_TIMEOUT:-60}" state="" t0=$SECONDS
  install
  mkdir -p "$DIR/state" "$DIR/spool"
  running slurmctld >/dev/null || write_conf
  start_munged
  start slurmctld -f "$CONF"
  start slurmd -f "$CONF" -N localhost
  while [ $((SECONDS - t0)) -lt "$timeout" ]; do
    state="$(sinfo -h -n localhost -o %T 2>/dev/null || true)"
    if [ "$state" = idle ] || [ "$state" = mixed ] || [ "$state" = allocated ]; then
      say "up in $((SECONDS - t0)) s: node localhost $state ($(sed -n 's/^NodeName=localhost //p' "$CONF"))"
      echo "export SLURM_CONF=$CONF"
      return 0
    fi
    for name in "${DAEMONS[@]}"; do running "$name" >/dev/null || fail "$name exited"; done
    sleep 0.5
  done
  sinfo -N -l >&2 || true
  fail "node not idle after $timeout s (state: ${state:-unknown})"
}

stop() {  # stop NAME: SIGTERM by PID file, wait; SIGKILL after 20 s
  local name="$1" pid i
  pid="$(running "$name")" || { rm -f "$(pidfile "$name")"; return 0; }
  kill "$pid" 2>/dev/null || true
  for i in $(seq 200); do
    [ -d "/proc/$pid" ] || { rm -f "$(pidfile "$name")"; say "stopped $name ($pid)"; return 0; }
    sleep 0.1
  done
  say "$name ($pid) ignored SIGTERM for 20 s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$(pidfile "$name")"
}

down() {
  local jobs i
  if running slurmctld >/dev/null; then
    jobs="$(squeue -h -o %i 2>/dev/null || true)"
    if [ -n "$jobs" ]; then
      say "cancelling jobs: $(echo $jobs)"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for i in $(seq 30); do
        [ -z "$(squeue -h -o %i 2>/dev/null || true)" ] && break
        sleep 1
      done
    fi
  fi
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do stop "${DAEMONS[i]}"; done
}

status() {
  local name pid rc=0
  for name in "${DAEMONS[@]}"; do
    if pid="$(running "$name")"; then echo "$name: running ($pid)"; else echo "$name: not running"; rc=1; fi
  done
  if running slurmctld >/dev/null; then
    sinfo -N -l || rc=1
    squeue || rc=1
  fi
  return "$rc"
}

case "$COMMAND" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) usage ;;
esac

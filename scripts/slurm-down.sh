#!/usr/bin/env bash
# Stop exactly the daemons scripts/slurm-up.sh started, by the PIDs it recorded under
# /tmp/slurm (a recorded pid is only signalled while it still runs the expected program).
# Jobs still on the cluster are cancelled first so that no slurmstepd is left behind.
# Logs stay in /tmp/slurm/log for post-mortems; the next slurm-up.sh wipes them.
set -euo pipefail
S=/tmp/slurm

# stop PIDFILE NAME: TERM the recorded pid if it is a NAME process, wait up to 10 s, then KILL.
stop() {
  local f=$1 name=$2 p
  [ -f "$f" ] || return 0
  p=$(cat "$f")
  if [ -n "$p" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$name" ]; then
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 100); do [ -d "/proc/$p" ] || break; sleep 0.1; done
    if [ -d "/proc/$p" ]; then
      echo "slurm-down: $name (pid $p) ignored TERM for 10 s, sending KILL" >&2
      kill -KILL "$p" 2>/dev/null || true
    fi
    echo "slurm-down: stopped $name (pid $p)"
  fi
  rm -f "$f"
}

# cancel whatever still runs (only if the controller is ours and alive)
if [ -f "$S/slurmctld.pid.bg" ] && [ "$(cat "/proc/$(cat "$S/slurmctld.pid.bg")/comm" 2>/dev/null)" = slurmctld ]; then
  mapfile -t ids < <(timeout 5 squeue -h -o '%A' -t PENDING,RUNNING,SUSPENDED,CONFIGURING 2>/dev/null || true)
  if [ "${#ids[@]}" -gt 0 ]; then
    timeout 10 scancel "${ids[@]}" 2>/dev/null || true
    for _ in $(seq 50); do
      timeout 5 squeue -h -o '%A' 2>/dev/null | grep -q . || break
      sleep 0.1
    done
    echo "slurm-down: cancelled jobs ${ids[*]}"
  fi
fi

for f in "$S"/slurmd-n*.pid.bg; do [ -e "$f" ] && stop "$f" slurmd; done
stop "$S/slurmctld.pid.bg" slurmctld
stop "$S/slurmdbd.pid" slurmdbd
stop "$S/mariadbd.pid" mariadbd
stop "$S/munged.pid" munged
exit 0

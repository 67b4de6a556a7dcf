#!/usr/bin/env bash
# Stop exactly the daemons scripts/slurm-up.sh started, by the PIDs it recorded under
# /tmp/slurm (a recorded pid is only signalled while it still runs the expected program).
# Jobs still on the cluster are cancelled first so that no slurmstepd is left behind.
# Logs stay in /tmp/slurm/log for post-mortems; the next slurm-up.sh wipes them.
set -euo pipefail
S=/tmp/slurm

# stop FILE:NAME...: TERM every recorded pid that still runs the expected program (all at once:
# each Slurm daemon takes ~2 s to exit), wait up to 10 s for them, KILL what is left.
stop() {
  local spec f name p alive pids=()
  for spec in "$@"; do
    f=${spec%%:*} name=${spec#*:}
    [ -f "$f" ] || continue
    p=$(cat "$f")
    if [ -n "$p" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$name" ]; then
      kill -TERM "$p" 2>/dev/null && pids+=("$p") && echo "slurm-down: stopping $name (pid $p)"
    fi
    rm -f "$f"
  done
  for _ in $(seq 100); do
    alive=0
    for p in "${pids[@]}"; do [ -d "/proc/$p" ] && alive=1; done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
  for p in "${pids[@]}"; do
    [ -d "/proc/$p" ] && { echo "slurm-down: pid $p ignored TERM for 10 s, sending KILL" >&2; kill -KILL "$p" 2>/dev/null || true; }
  done
  return 0
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

# all at once (each daemon needs ~2 s to exit after TERM): Slurm daemons first, then
# what they depend on (MariaDB, munged)
specs=("$S/slurmctld.pid.bg:slurmctld" "$S/slurmdbd.pid:slurmdbd")
for f in "$S"/slurmd-n*.pid.bg; do [ -e "$f" ] && specs+=("$f:slurmd"); done
stop "${specs[@]}" "$S/mariadbd.pid:mariadbd" "$S/munged.pid:munged"
echo "slurm-down: done"

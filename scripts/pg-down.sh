#!/usr/bin/env bash
# Stop the throwaway PostgreSQL started by scripts/pg-up.sh and delete its directory.
set -euo pipefail
D=/tmp/balsamctl-pg
DATA=$D/data

if [ -f "$DATA/postmaster.pid" ]; then
  PGBIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  pid=$(head -n 1 "$DATA/postmaster.pid")
  # fast = roll back open transactions, disconnect clients, shut down cleanly
  if ! runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DATA" -m fast -w -t 30 stop >/dev/null 2>&1; then
    # pg_ctl failed (e.g. stale pid file): only signal the recorded pid if it is still a postgres
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ]; then
      kill -QUIT "$pid" 2>/dev/null || true                  # immediate shutdown
      for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    fi
  fi
  echo "pg-down: stopped postgres (pid $pid)"
fi
rm -rf "$D"

#!/usr/bin/env bash
# Throwaway PostgreSQL for the tests (Debian's `postgresql` package; installed if missing).
#
#   PGPORT=55432 scripts/pg-up.sh        # default port shown; run as root
#
# initdb (as user postgres, trust auth, fsync off) into /tmp/balsamctl-pg/data, listening on
# 127.0.0.1:$PGPORT and on a unix socket in /tmp/balsamctl-pg. A server this script started
# that still answers on the same port is reused. Progress goes to stderr; the LAST line on
# stdout is the URL the tests read:
#   BALSAMCTL_TEST_PG_URL=postgresql+psycopg://postgres@127.0.0.1:55432/postgres
# Stop with scripts/pg-down.sh. Debian's own `main` cluster is left alone.
set -euo pipefail

PGPORT=${PGPORT:-55432}
D=/tmp/balsamctl-pg                            # socket dir, logs, port record
DATA=$D/data
URL="postgresql+psycopg://postgres@127.0.0.1:$PGPORT/postgres"

t0=$EPOCHREALTIME
ts() { printf '[pg-up %5.2fs] %s\n' "$(bc <<< "$EPOCHREALTIME - $t0")" "$*" >&2; }
die() { echo "pg-up: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
[[ "$PGPORT" =~ ^[0-9]+$ ]] || die "PGPORT must be a number (got '$PGPORT')"

# One bring-up at a time; the server is started with 9>&- so it does not keep this lock.
exec 9>/tmp/balsamctl-pg.lock
flock 9

pgbin() { printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1; }
PGBIN=$(pgbin)
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
  [ -x /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends postgresql >/dev/null
  PGBIN=$(pgbin)
  [ -x "$PGBIN/initdb" ] || die "postgresql installed but no initdb under /usr/lib/postgresql/*/bin"
  ts "postgresql package installed ($PGBIN)"
fi

as_pg() { runuser -u postgres -- "$@"; }
# running: our postmaster is alive. A killed postmaster can linger as a zombie here (PID 1 of
# this VM reaps slowly), which pg_ctl status still reports as running: check the state too.
running() {
  local pid st
  [ -f "$DATA/postmaster.pid" ] && pid=$(head -n 1 "$DATA/postmaster.pid") || return 1
  st=$(ps -o stat= -p "$pid" 2>/dev/null) && [ "${st:0:1}" != Z ] || return 1
  as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

# Reuse: our server is running, on the requested port, and accepts connections.
if running && [ "$(cat "$D/port" 2>/dev/null)" = "$PGPORT" ] \
   && "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PGPORT" -U postgres -t 5; then
  ts "reusing the running server (pid $(head -n 1 "$DATA/postmaster.pid"), port $PGPORT)"
  echo "BALSAMCTL_TEST_PG_URL=$URL"
  exit 0
fi

# Otherwise stop whatever we left behind and start from scratch.
if running; then
  ts "stopping the previous server (other port or not answering)"
  as_pg "$PGBIN/pg_ctl" -D "$DATA" -m immediate -w -t 30 stop >/dev/null || true
fi
if ss -Hltn "sport = :$PGPORT" | grep -q .; then
  die "TCP port $PGPORT is already in use by a process this script did not start:
$(ss -Hltnp "sport = :$PGPORT")
pick another one with PGPORT=..."
fi

# PostgreSQL refuses to run as root: everything below runs as postgres in a dir it owns.
rm -rf "$D"
mkdir -p "$D"
chown postgres:postgres "$D"
as_pg "$PGBIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync \
  >"$D/initdb.log" 2>&1 || { cat "$D/initdb.log" >&2; die "initdb failed"; }
ts "initdb done"

# -k: socket in $D (not /var/run/postgresql); durability off: this database is disposable.
# setsid + 9>&-: detached from our session and stdio, and not holding the lock.
if ! setsid -w runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DATA" -l "$D/server.log" -w -t 30 \
     -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $D -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
     start </dev/null >/dev/null 2>&1 9>&-; then
  tail -n 20 "$D/server.log" >&2 || true
  die "postgres did not start"
fi
echo "$PGPORT" > "$D/port"
ts "postgres $("$PGBIN/postgres" --version | awk '{print $3}') up: pid $(head -n 1 "$DATA/postmaster.pid"), 127.0.0.1:$PGPORT and $D/.s.PGSQL.$PGPORT"
echo "BALSAMCTL_TEST_PG_URL=$URL"

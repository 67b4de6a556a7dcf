#!/usr/bin/env bash
# The project's one test command (CI runs exactly this):   scripts/test.sh [pytest args...]
#
#   1. scripts/setup.sh          .venv with '.[dev,mpi,postgres]' (fast when already set up)
#   2. ruff check .              lint; ruff format --check . (the code is as ruff formats it)
#   3. mypy                      type check (packages and options in pyproject.toml)
#      lint-imports              the layer contracts of pyproject.toml ([tool.importlinter])
#   4. scripts/slurm-up.sh       real services the tests use: a 4-node emulated Slurm cluster
#      scripts/pg-up.sh          and a throwaway PostgreSQL (exports BALSAMCTL_TEST_PG_URL)
#      -- skipped when BALSAMCTL_SERVICES=none; both are reused when already up
#   5. pytest -q -n 3 "$@"       with .venv/bin first on PATH (balsamctl, mpiexec, python); three workers on
#                                2 cores (BALSAMCTL_TEST_WORKERS), the real-Slurm tests one at a time on one of them
#
# Exits with pytest's exit code; "no tests collected" (pytest's 5) counts as a failure.
# The services are left running: stop them with scripts/slurm-down.sh and scripts/pg-down.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

stage() { printf '==> %s\n' "$*"; }

stage "setup: .venv"
bash scripts/setup.sh

export PATH="$ROOT/.venv/bin:$PATH"

stage "lint: ruff check, ruff format --check"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

stage "types: mypy"
.venv/bin/mypy

stage "layers: lint-imports"
.venv/bin/lint-imports --no-cache

if [ "${BALSAMCTL_SERVICES:-all}" != none ]; then
  stage "services: slurm (scripts/slurm-up.sh)"
  bash scripts/slurm-up.sh

  stage "services: postgresql (scripts/pg-up.sh)"
  pg_out=$(bash scripts/pg-up.sh)
  pg_line=${pg_out##*$'\n'}                      # the last line carries the URL
  case "$pg_line" in
    BALSAMCTL_TEST_PG_URL=?*) export BALSAMCTL_TEST_PG_URL="${pg_line#BALSAMCTL_TEST_PG_URL=}" ;;
    *) echo "test.sh: scripts/pg-up.sh did not print BALSAMCTL_TEST_PG_URL=... last" >&2; exit 1 ;;
  esac
  echo "BALSAMCTL_TEST_PG_URL=$BALSAMCTL_TEST_PG_URL"
else
  stage "services: skipped (BALSAMCTL_SERVICES=none)"
fi

workers=${BALSAMCTL_TEST_WORKERS:-3}
stage "tests: pytest -q -n $workers --dist loadgroup $*"
rc=0
.venv/bin/pytest -q -n "$workers" --dist loadgroup "$@" || rc=$?
if [ "$rc" = 5 ]; then
  echo "test.sh: pytest collected no tests -- treated as a failure" >&2
fi
exit "$rc"

#!/usr/bin/env bash
# The quick-start demo: a local site (local scheduler, SQLite store), the example manifests applied, the Jobs
# run by a launcher in a local BatchJob, shown finishing.   Usage: scripts/demo.sh [SITE_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SITE=${1:-$ROOT/demo-site}
bash "$ROOT/scripts/setup.sh"
export PATH="$ROOT/.venv/bin:$PATH"
say() { printf '\n$ %s\n' "$*"; "$@"; }

if [ -d "$SITE/.balsam" ]; then
  (cd "$SITE" && balsamctl controller stop >/dev/null 2>&1 || true)
  rm -rf "$SITE"
fi
say balsamctl site init "$SITE" --name demo
cd "$SITE"
say balsamctl controller start
say balsamctl apply -f "$ROOT/manifests/examples/hello.yaml"

total=$(balsamctl get jobs -o name | wc -l)
printf '\nwaiting for %d Jobs to finish' "$total"
for _ in $(seq 600); do
  done_=$(balsamctl get jobs --state JOB_FINISHED -o name | wc -l)
  [ "$done_" -eq "$total" ] && break
  printf '.'; sleep 0.1
done
echo
say balsamctl get jobs -o wide
say balsamctl logs job hello-2
say balsamctl describe job hello-3
say balsamctl get batchjobs --site=all
say balsamctl delete batchjob laptop-1       # cancels the allocation; the controller confirms and removes it
for _ in $(seq 150); do balsamctl get batchjobs -o name 2>/dev/null | grep -q . || break; sleep 0.2; done
say balsamctl get batchjobs
say balsamctl controller stop
[ "$(balsamctl get jobs --state JOB_FINISHED -o name | wc -l)" -eq "$total" ] || { echo "demo: not every Job finished" >&2; exit 1; }
printf '\ndemo: all %d Jobs JOB_FINISHED. The site stays at %s\n' "$total" "$SITE"

#!/usr/bin/env bash
# Create or refresh the project's virtualenv (.venv at the repo root) with every extra:
#   pip install -e '.[dev,mpi,postgres]'
# Idempotent and fast when nothing changed: pip is skipped while the stamp file
# .venv/.balsamctl-installed is newer than pyproject.toml AND the set of top-level
# packages (repo-root dirs holding an __init__.py) is the one recorded in the stamp.
# The second condition matters because setuptools' editable install of a flat layout
# maps each top-level package found at install time; one added later would not import.
# Exports nothing: other scripts call .venv/bin/... by path.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=.venv
STAMP=$VENV/.balsamctl-installed

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi

# Serialise concurrent runs (several engineers / test runs may start at once).
exec 9>"$VENV/.setup.lock"
flock 9

shopt -s nullglob
inits=(*/__init__.py)
shopt -u nullglob
packages="${inits[*]%/__init__.py}"
fingerprint="packages: $packages"

if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$(cat "$STAMP")" = "$fingerprint" ]; then
  echo "setup: .venv up to date ($VENV/bin/python, packages: ${packages:-none})"
  exit 0
fi

t0=$EPOCHREALTIME
# --disable-pip-version-check: no network round trip to ask about newer pips.
"$VENV/bin/python" -m pip install -qq --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install -qq --disable-pip-version-check -e '.[dev,mpi,postgres]'
printf '%s\n' "$fingerprint" > "$STAMP"
printf 'setup: .venv installed in %.1fs (packages: %s)\n' \
  "$(bc <<< "$EPOCHREALTIME - $t0")" "${packages:-none}"

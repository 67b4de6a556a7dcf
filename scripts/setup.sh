#!/usr/bin/env bash
# Create or refresh the project's virtualenv (.venv at the repo root) with every extra:
#   pip install -e '.[dev,mpi,postgres]' --config-settings editable_mode=compat
# Idempotent and fast when nothing changed: pip is skipped while the stamp file
# .venv/.balsamctl-installed is newer than pyproject.toml and records this install mode.
# compat mode: the editable install is one static .pth line (the repo root), not setuptools'
# import-hook finder, which costs every Python process ~20 ms at start-up and which mypy
# cannot follow. balsamctl's layers are plain subpackages (balsamctl/<layer> symlinks to the
# top-level folders), so a package added later imports without reinstalling.
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

# The shells the completion tests type a TAB into (tests/cli/test_completion.py, under tmux).
APT_PKGS="tmux zsh fish"
missing=""
for pkg in $APT_PKGS; do command -v "$pkg" >/dev/null || missing="$missing $pkg"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    # shellcheck disable=SC2086
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $missing >/dev/null
    echo "setup: installed$missing"
  else
    echo "setup: not root, not installing$missing (the completion tests skip those shells outside CI)" >&2
  fi
fi

fingerprint="editable_mode=compat"

if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$(cat "$STAMP")" = "$fingerprint" ]; then
  echo "setup: .venv up to date ($VENV/bin/python)"
  exit 0
fi

t0=$EPOCHREALTIME
# --disable-pip-version-check: no network round trip to ask about newer pips.
"$VENV/bin/python" -m pip install -qq --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install -qq --disable-pip-version-check -e '.[dev,mpi,postgres]' \
  --config-settings editable_mode=compat
printf '%s\n' "$fingerprint" > "$STAMP"
printf 'setup: .venv installed in %.1fs\n' "$(bc <<< "$EPOCHREALTIME - $t0")"

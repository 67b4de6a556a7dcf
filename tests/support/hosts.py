"""Other machines, simulated on this one: each :class:`Host` runs its commands in a mount namespace of their own in
which the other hosts' directories are hidden under empty tmpfs mounts, with its own HOME, registry, XDG and
temporary directories and an environment built from nothing (nothing in it points at another host's files).

A host may also get its own hostname (a UTS namespace) and its own process ids (a PID namespace, for hosts that
start no daemon: the namespace ends with the command). Namespaces need ``unshare`` (util-linux) and root, as in
CI; without them every test of a host fails, naming what is missing (never skips).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.e2e import BALSAMCTL, VENV_BIN, E2EError, E2ESite

# Runs as ``sh -c MOUNT_SCRIPT sh N DIR1..DIRN HOSTNAME CWD ARGV...``: hides the N directories, names the host,
# enters CWD (only now: a working directory inside a hidden directory would still reach its files) and runs ARGV.
MOUNT_SCRIPT = r"""
set -eu
n=$1; shift
while [ "$n" -gt 0 ]; do mount -t tmpfs -o size=1m,mode=0755 other-host "$1"; shift; n=$((n - 1)); done
if [ -n "$1" ]; then hostname "$1"; fi
shift
cd "$1"; shift
exec "$@"
"""


@functools.cache
def check_unshare() -> None:
    """Fail the calling test (never skip it) unless ``unshare`` can make a mount namespace here."""
    if shutil.which("unshare") is None:
        pytest.fail("`unshare` (util-linux) is not installed: the tests of separate hosts cannot run")
    proc = subprocess.run(
        ["unshare", "--mount", "--uts", "--pid", "--fork", "--propagation", "private", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"`unshare` cannot make namespaces here (it needs root): {proc.stderr.strip()}")


@dataclass(frozen=True)
class Host:
    """A machine of its own under ``root`` (its HOME, registry and temporary files), that cannot see ``hidden``."""

    name: str
    root: Path
    hidden: tuple[Path, ...] = ()
    hostname: str | None = None
    own_pids: bool = False

    @property
    def home(self) -> Path:
        """Its HOME (``root/home``, as :class:`E2ESite` has it)."""
        return self.root / "home"

    @property
    def config(self) -> Path:
        """Its site registry (``root/sites.yaml``, as :class:`E2ESite` has it)."""
        return self.root / "sites.yaml"

    def make(self) -> Host:
        """Lay out its directories; itself."""
        for sub in ("home", "tmp", "home/.config", "home/.cache", "home/.local/share", "home/.local/state"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        return self

    @property
    def env(self) -> dict[str, str]:
        """Its whole environment: ``.venv/bin`` first on the system's PATH, its own HOME, registry, XDG and temporary
        directories, and nothing else (no ``BALSAM_SITE``, no variable of the test run)."""
        return {
            "PATH": f"{VENV_BIN}{os.pathsep}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(self.home),
            "TMPDIR": str(self.root / "tmp"),
            "BALSAMCTL_CONFIG": str(self.config),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "XDG_DATA_HOME": str(self.home / ".local" / "share"),
            "XDG_STATE_HOME": str(self.home / ".local" / "state"),
        }

    def command(self, argv: Sequence[str], cwd: Path | None = None) -> list[str]:
        """``argv`` wrapped to run on this host, in ``cwd`` (default: its root)."""
        flags = ["--mount", "--propagation", "private"]
        if self.hostname is not None:
            flags.append("--uts")
        if self.own_pids:
            flags += ["--pid", "--fork", "--mount-proc", "--kill-child"]
        hidden = [str(p) for p in self.hidden]
        where = [self.hostname or "", str(cwd or self.root)]
        return ["unshare", *flags, "--", "sh", "-c", MOUNT_SCRIPT, "sh", str(len(hidden)), *hidden, *where, *argv]

    def run(
        self,
        *argv: str,
        cwd: Path | None = None,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on this host (``env`` added to its environment); never raises on a non-zero exit."""
        check_unshare()
        return subprocess.run(
            self.command(argv, cwd),
            cwd="/",
            env={**self.env, **(env or {})},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def balsamctl(
        self,
        *args: str,
        check: bool = True,
        stdin: str | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """``balsamctl ARGS`` on this host; with ``check``, a non-zero exit fails the test."""
        proc = self.run(str(BALSAMCTL), *args, cwd=cwd, stdin=stdin, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise E2EError(
                f"[{self.name}] balsamctl {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc


class HostedSite(E2ESite):
    """An :class:`E2ESite` under ``host.root`` whose CLI, and so its controller, scheduler and launchers, runs on
    ``host``; the test process (the operator of every host) still reads its files to clean up."""

    def __init__(self, host: Host, name: str) -> None:
        super().__init__(host.root, name)
        self.host = host
        self.controller_pid: int | None = None

    @property
    def env(self) -> dict[str, str]:
        """Its host's environment."""
        return self.host.env

    def cli(
        self, *args: str, check: bool = True, stdin: str | None = None, cwd: Path | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """``balsamctl ARGS`` on its host, in the site directory."""
        return self.host.balsamctl(*args, check=check, stdin=stdin, cwd=cwd or self.path, timeout=timeout)

    def start_controller(self) -> int:
        """``balsamctl controller start`` on its host; its pid (kept in :attr:`controller_pid`)."""
        self.controller_pid = super().start_controller()
        return self.controller_pid

"""Starting, stopping and finding a site's controller process (pid file in ``.balsam/``, log in ``log/``)."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from balsamctl.controller.loop import Controller
from balsamctl.controller.publish import heartbeat
from balsamctl.site.directory import SiteDirectory, SiteError


def _pid_file(site: SiteDirectory) -> Path:
    return site.state_dir / "controller.pid"


def _log_file(site: SiteDirectory) -> Path:
    return site.log_dir / "controller.log"


def running_pid(site: SiteDirectory) -> int | None:
    """The pid of this site's live controller, if any (never a recycled pid)."""
    try:
        pid, created = _pid_file(site).read_text().split()
        proc = psutil.Process(int(pid))
        if abs(proc.create_time() - float(created)) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE:
            return int(pid)
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def run(site: SiteDirectory) -> None:
    """Run the controller in the foreground; refuses to start a second one for the same site."""
    lock = open(site.state_dir / "controller.lock", "w")  # noqa: SIM115 - held for the process's lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SiteError(f"a controller already runs for site {site.name} (pid {running_pid(site)})") from None
    me = psutil.Process()
    _pid_file(site).write_text(f"{me.pid} {me.create_time()}\n")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )
    stopping = threading.Event()
    _ = site.site_id  # the store opened (and migrated) once, before the heartbeat's thread shares it
    beat = threading.Thread(target=heartbeat, args=(site, stopping), name="site-heartbeat", daemon=True)
    beat.start()
    try:
        Controller(site).run()
    finally:
        stopping.set()
        beat.join(timeout=10)
        _pid_file(site).unlink(missing_ok=True)
        lock.close()


def start(site: SiteDirectory, timeout: float = 10.0) -> int:
    """Start the controller in the background; returns its pid (the running one's if already up)."""
    pid = running_pid(site)
    if pid is not None:
        return pid
    log_file = _log_file(site)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "balsamctl.controller", "run", "--site", str(site.path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=site.path,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = running_pid(site)
        if pid == proc.pid:
            return pid
        if proc.poll() is not None:
            tail = log_file.read_text(errors="replace")[-2000:]
            raise SiteError(f"the controller exited at once (code {proc.returncode}); {log_file} ends with:\n{tail}")
        time.sleep(0.05)
    raise SiteError(f"the controller did not start within {timeout:.0f} s; see {log_file}")


def stop(site: SiteDirectory, timeout: float = 15.0) -> bool:
    """Stop the controller (SIGTERM, then SIGKILL after ``timeout``); whether one was running."""
    pid = running_pid(site)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    try:
        psutil.Process(pid).wait(timeout=timeout)
    except psutil.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
    except psutil.NoSuchProcess:
        pass
    return True


def status(site: SiteDirectory) -> dict[str, Any]:
    """``running``, ``pid`` and ``log`` of this site's controller."""
    pid = running_pid(site)
    return {"running": pid is not None, "pid": pid, "log": str(_log_file(site))}

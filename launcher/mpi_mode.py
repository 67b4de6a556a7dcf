"""The ``mpi`` job mode: a launcher on the head node starts each Job with the platform's MPI launch command.

It acquires only what fits its idle resources now, runs each Job in its workdir, and writes outcomes back in
batches. At its wall time, on SIGTERM, or after ``idle_ttl_sec`` with nothing to do, it stops: running Jobs are
terminated and recorded RUN_TIMEOUT.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from balsamctl.site import Site, SiteError
from launcher.command import CommandError, job_variables, render_command
from launcher.joboutput import output_path
from launcher.mpi_command import build_mpi_command, needs_mpi
from launcher.nodes import Node
from launcher.placement import NodePool, Placement, Request, choose
from schemas import App, JobState
from schemas.objects import AppSpec, Partition
from store import JobRef

log = logging.getLogger("balsamctl.launcher")
TAIL_BYTES = 2000
HEARTBEAT_SEC = 10.0
STOP_GRACE_SEC = 10.0
DELETION_CHECK_SEC = 1.0


@dataclass
class Running:
    """A Job this launcher started."""

    ref: JobRef
    placement: Placement
    proc: subprocess.Popen[bytes]
    output: Path
    out_file: IO[bytes]


class MpiLauncher:
    """One launcher: one partition of one BatchJob's allocation."""

    def __init__(
        self, site: Site, batch_job: str, partition: Partition, nodes: list[Node], deadline: float, launcher_id: str
    ) -> None:
        self.site = site
        self.batch_job = batch_job
        self.partition = partition
        self.pool = NodePool(nodes)
        self.deadline = deadline
        self.id = launcher_id
        self.settings = site.settings.launcher
        self.flavor = "local" if site.settings.scheduler == "local" else self.settings.mpi_flavor
        self.running: dict[int, Running] = {}
        self.results: list[dict[str, Any]] = []
        self.apps: dict[str, AppSpec] = {}
        self.stopping = threading.Event()

    # ------------------------------------------------------------------ main loop
    def run(self) -> None:
        """Acquire and run Jobs until the wall time, a signal, or idleness ends the launcher."""
        store, sid = self.site.store, self.site.site_id
        store.register_launcher(
            sid,
            self.id,
            batch_job=self.batch_job,
            partition=0,
            job_mode="mpi",
            host=socket.gethostname(),
            pid=os.getpid(),
            nodes=[n.name for n in self.pool.nodes],
        )
        idle_since = time.monotonic()
        last_beat = last_deletion_check = 0.0
        reason = "idle"
        while True:
            now = time.monotonic()
            if self.stopping.is_set():
                reason = "signal"
                break
            if time.time() >= self.deadline:
                reason = "wall time"
                break
            self._reap()
            if now - last_deletion_check >= DELETION_CHECK_SEC:
                self._stop_deleted()
                last_deletion_check = now
            self._flush()
            started = self._acquire()
            if self.running or started:
                idle_since = now
            elif now - idle_since >= self.settings.idle_ttl_sec:
                break
            if now - last_beat >= HEARTBEAT_SEC:
                store.heartbeat(self.id, self._status())
                last_beat = now
            self.stopping.wait(self.settings.poll_interval_sec)
        log.info("launcher %s stopping (%s) with %d running Job(s)", self.id, reason, len(self.running))
        self._terminate_all(f"launcher stopped ({reason})")
        self._flush()
        store.heartbeat(self.id, self._status(), ended=True)

    def stop(self) -> None:
        """Ask the loop to stop (signal handlers call this)."""
        self.stopping.set()

    # ------------------------------------------------------------------ acquire and start
    def _acquire(self) -> int:
        remaining_min = (self.deadline - time.time()) / 60.0

        placements: dict[int, Placement] = {}

        def pick(refs: list[JobRef]) -> list[tuple[JobRef, Mapping[str, Any]]]:
            candidates = [(r, Request.of(r.spec), r.spec.wall_time_min) for r in refs]
            chosen = choose(self.pool, candidates, "small_first")
            placements.update({r.id: p for r, p in chosen})
            return [(r, {"placement": p.describe()}) for r, p in chosen]

        if not self.pool.has_idle():
            return 0
        claimed = self.site.store.acquire(
            self.site.site_id,
            owner=self.id,
            batch_job=self.batch_job,
            filter_tags=self.partition.filter_tags,
            choose=pick,
            max_num_nodes=len(self.pool.nodes),
            max_wall_time_min=remaining_min,
        )
        for ref, _ in claimed:
            try:
                self._start(ref, placements[ref.id])
            except (CommandError, SiteError, OSError) as exc:
                self.pool.release(ref.id)
                self.results.append(_result(ref, JobState.RUN_ERROR, None, "", f"could not start: {exc}"))
        return len(claimed)

    def _app(self, name: str) -> AppSpec:
        if name not in self.apps:
            obj = self.site.store.get_object(self.site.site_id, "App", name).manifest
            assert isinstance(obj, App)
            self.apps[name] = obj.spec
        return self.apps[name]

    def _start(self, ref: JobRef, placement: Placement) -> None:
        app = self._app(ref.app)
        workdir = self.site.workdir(ref.spec.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        output = output_path(workdir, ref.attempts)
        command = render_command(app, ref.spec.parameters)
        req = Request.of(ref.spec)
        own = job_variables(app, ref.name, workdir, placement.environment(req))
        env = {**os.environ, **own}
        if needs_mpi(req):
            argv = build_mpi_command(
                self.flavor, self.settings.mpi_command, placement, req, command, ref.spec.launch_params, own
            )
        else:
            argv = ["bash", "-c", command]
        out = open(output, "ab")  # noqa: SIM115 - closed when the Job ends
        try:
            proc = subprocess.Popen(
                argv,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError:
            out.close()
            raise
        self.running[ref.id] = Running(ref, placement, proc, output, out)

    # ------------------------------------------------------------------ finish
    def _reap(self) -> None:
        for job_id, run in list(self.running.items()):
            rc = run.proc.poll()
            if rc is None:
                continue
            self._finish(job_id)
            if rc == 0:
                self.results.append(_result(run.ref, JobState.RUN_DONE, rc, "", ""))
            else:
                tail = _tail(run.output)
                self.results.append(_result(run.ref, JobState.RUN_ERROR, rc, tail, f"exited with return code {rc}"))

    def _finish(self, job_id: int) -> Running:
        run = self.running.pop(job_id)
        run.out_file.close()
        self.pool.release(job_id)
        return run

    def _flush(self) -> None:
        if self.results:
            self.site.store.record_results(self.site.site_id, self.results)
            self.results = []
            self.site.poke()

    def _stop_deleted(self) -> None:
        if not self.running:
            return
        for job_id in self.site.store.deletion_requested(self.id):
            if job_id in self.running:
                run = self.running[job_id]
                _kill_group(run.proc, signal.SIGKILL)
                run.proc.wait()
                self._finish(job_id)
                self.results.append(_result(run.ref, JobState.RUN_TIMEOUT, None, "", "stopped: the Job was deleted"))

    def _terminate_all(self, why: str) -> None:
        for run in self.running.values():
            _kill_group(run.proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SEC
        for run in self.running.values():
            try:
                run.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(run.proc, signal.SIGKILL)
                run.proc.wait()
        for job_id in list(self.running):
            run = self._finish(job_id)
            self.results.append(_result(run.ref, JobState.RUN_TIMEOUT, run.proc.returncode, "", why))

    def _status(self) -> dict[str, Any]:
        return {
            "nodes": [n.name for n in self.pool.nodes],
            "running_jobs": len(self.running),
            "occupancy": self.pool.occupancy(),
            "job_mode": "mpi",
        }


def _result(ref: JobRef, state: JobState, rc: int | None, tail: str, message: str) -> dict[str, Any]:
    return {
        "job_id": ref.id,
        "name": ref.name,
        "state": state,
        "return_code": rc,
        "output_tail": tail or None,
        "message": message or None,
    }


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - TAIL_BYTES))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _kill_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)

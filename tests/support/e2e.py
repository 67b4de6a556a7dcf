"""End-to-end helpers: a real site driven through the real ``balsamctl`` CLI, controller and launchers.

No fixtures here: :class:`E2ESite` makes a site under a directory the test owns, runs the CLI as a subprocess
with its own site registry (``BALSAMCTL_CONFIG``), starts and stops the controller, polls states with deadlines
and cleans up every process it caused (the controller, allocation sessions of the local scheduler, stray Jobs).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psutil
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
BALSAMCTL = VENV_BIN / "balsamctl"
POLL_SEC = 0.1
DEADLINE_SEC = 30.0
FINAL_STATES = frozenset({"JOB_FINISHED", "FAILED"})
T = TypeVar("T")


def parse_time(text: str) -> datetime:
    """A timestamp of ``-o json`` output (``2025-01-02T03:04:05.123456Z``)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``extra``, nested mappings merged key by key."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def manifest(*docs: str) -> str:
    """YAML documents (each dedented) joined with ``---``."""
    return "---\n".join(textwrap.dedent(d).strip() + "\n" for d in docs)


def app_doc(name: str, command: str, **spec: Any) -> str:
    """An App document; extra ``spec`` fields are dumped as YAML."""
    body = {"command": command, **spec}
    return yaml.safe_dump(
        {"apiVersion": "balsam/v1", "kind": "App", "metadata": {"name": name}, "spec": body}, sort_keys=False
    )


def job_doc(name: str, app: str, labels: Mapping[str, str] | None = None, **spec: Any) -> str:
    """A Job document (workdir defaults to ``<app>/<name>``)."""
    body = {"app": app, "workdir": spec.pop("workdir", f"{app}/{name}"), **spec}
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = dict(labels)
    return yaml.safe_dump({"apiVersion": "balsam/v1", "kind": "Job", "metadata": meta, "spec": body}, sort_keys=False)


def batchjob_doc(
    name: str,
    num_nodes: int = 1,
    wall_time_min: int = 10,
    filter_tags: Mapping[str, str] | None = None,
    job_mode: str = "mpi",
) -> str:
    """A BatchJob document on the local queue and project."""
    spec: dict[str, Any] = {"num_nodes": num_nodes, "wall_time_min": wall_time_min, "queue": "local"}
    spec["project"] = "local"
    spec["job_mode"] = job_mode
    if filter_tags:
        spec["filter_tags"] = dict(filter_tags)
    return yaml.safe_dump(
        {"apiVersion": "balsam/v1", "kind": "BatchJob", "metadata": {"name": name}, "spec": spec}, sort_keys=False
    )


@dataclass(frozen=True)
class Event:
    """One row of ``balsamctl get events``."""

    time: str
    object: str
    from_state: str | None
    to_state: str | None
    reason: str
    message: str | None

    @property
    def kind(self) -> str:
        """``job``, ``batchjob``, ``app``, ``manifest``."""
        return self.object.partition("/")[0]

    @property
    def name(self) -> str:
        """The object's name."""
        return self.object.partition("/")[2]


def _none(cell: str) -> str | None:
    return None if cell == "<none>" else cell


def parse_events(text: str) -> list[Event]:
    """The rows of the events table (cells are two or more spaces apart; whitespace inside a cell is single)."""
    lines = text.splitlines()
    if not lines:
        return []
    assert lines[0].split()[:2] == ["TIME", "OBJECT"], text
    out = []
    for line in lines[1:]:
        cells = re.split(r" {2,}", line.strip(), maxsplit=5)
        cells += [""] * (6 - len(cells))
        t, obj, src, dst, reason, message = cells
        out.append(Event(t, obj, _none(src), _none(dst), reason, _none(message)))
    return out


class E2EError(AssertionError):
    """A CLI call or a wait that did not go as the test needed."""


class E2ESite:
    """One real site under ``root`` with its own site registry; every CLI call is a real subprocess."""

    def __init__(self, root: Path, name: str = "e2e") -> None:
        self.root = root
        self.name = name
        self.path = (root / name).resolve()
        self.config = root / "sites.yaml"
        self.home = root / "home"
        self.started_controller = False

    # ------------------------------------------------------------------ setup
    @classmethod
    @contextlib.contextmanager
    def running(
        cls, root: Path, name: str, settings: Mapping[str, Any] | None = None, files: Mapping[str, str] | None = None
    ) -> Iterator[E2ESite]:
        """A site made by :meth:`create` (with ``files`` written into its directory) whose controller runs while
        the block does; every process it caused is stopped afterwards."""
        site = cls.create(root, name, settings)
        for relative, text in (files or {}).items():
            (site.path / relative).write_text(text)
        try:
            site.start_controller()
            yield site
        finally:
            site.close()

    @classmethod
    def create(cls, root: Path, name: str = "e2e", settings: Mapping[str, Any] | None = None) -> E2ESite:
        """``balsamctl site init``, then ``settings`` merged into ``settings.yml`` (before any controller)."""
        site = cls(root, name)
        site.home.mkdir(parents=True, exist_ok=True)
        (site.home / "canary").write_text("rm -rf ~ never ran\n")
        out = site.cli("site", "init", str(site.path), "--name", name, cwd=root).stdout
        assert f"site/{name} created" in out, out
        if settings:
            site.update_settings(settings)
        return site

    def update_settings(self, settings: Mapping[str, Any]) -> None:
        """Merge ``settings`` into ``settings.yml``."""
        path = self.path / "settings.yml"
        current = yaml.safe_load(path.read_text()) or {}
        path.write_text(yaml.safe_dump(deep_merge(current, settings), sort_keys=False))

    @property
    def env(self) -> dict[str, str]:
        """The environment of every subprocess: this site's registry, ``.venv/bin`` first on PATH.

        ``HOME`` is a scratch folder with a canary file (a shell-quoting bug running ``rm -rf ~`` would remove it);
        ``PYTHONUNBUFFERED`` is dropped so that a Python App's ``print`` is one write and MPI ranks' lines do not
        interleave mid-line; ``BALSAM_SITE`` is dropped so that the CLI resolves the site from its cwd.
        """
        env = {k: v for k, v in os.environ.items() if k not in ("BALSAM_SITE", "PYTHONUNBUFFERED")}
        env["BALSAMCTL_CONFIG"] = str(self.config)
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        env["HOME"] = str(self.home)
        env.pop("VIRTUAL_ENV", None)
        return env

    # ------------------------------------------------------------------ the CLI
    def cli(
        self, *args: str, check: bool = True, stdin: str | None = None, cwd: Path | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``balsamctl ARGS`` in the site directory; with ``check``, a non-zero exit fails the test."""
        proc = subprocess.run(
            [str(BALSAMCTL), *args],
            cwd=cwd or self.path,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise E2EError(
                f"balsamctl {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def apply(self, text: str) -> list[str]:
        """``balsamctl apply -f -`` with ``text``; the output lines."""
        return self.cli("apply", "-f", "-", stdin=text).stdout.splitlines()

    def apply_file(self, path: Path) -> list[str]:
        """``balsamctl apply -f PATH``; the output lines."""
        return self.cli("apply", "-f", str(path)).stdout.splitlines()

    def get(self, kind: str, *names: str, extra: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
        """``balsamctl get KIND [NAMES] -o json`` as ``{name: object}`` (missing names are simply absent)."""
        proc = self.cli("get", kind, *names, "-o", "json", "--limit", "0", *extra, check=False)
        if proc.returncode != 0 and "NotFound" not in proc.stderr:
            raise E2EError(f"balsamctl get {kind} failed ({proc.returncode}): {proc.stderr}")
        if not proc.stdout.strip():
            return {}
        data = json.loads(proc.stdout)
        items = data.get("items", [data])
        return {o["metadata"]["name"]: o for o in items}

    def jobs(self, *names: str) -> dict[str, dict[str, Any]]:
        """Jobs by name."""
        return self.get("jobs", *names)

    def job(self, name: str) -> dict[str, Any]:
        """One Job (fails the test if it does not exist)."""
        found = self.jobs(name)
        if name not in found:
            raise E2EError(f"job/{name} not found")
        return found[name]

    def batchjobs(self, *names: str) -> dict[str, dict[str, Any]]:
        """BatchJobs by name."""
        return self.get("batchjobs", *names)

    def events(self, name: str | None = None, limit: int = 5000) -> list[Event]:
        """``balsamctl get events [NAME]``, oldest first (in the store's order)."""
        args = ["get", "events", *([name] if name else []), "--limit", str(limit)]
        return parse_events(self.cli(*args).stdout)

    def job_events(self, name: str, events: Iterable[Event] | None = None) -> list[Event]:
        """The events of ``job/NAME`` (from ``events`` if given, else from ``get events NAME``)."""
        return [e for e in (self.events(name) if events is None else events) if e.object == f"job/{name}"]

    def logs(self, name: str, *extra: str) -> str:
        """``balsamctl logs job NAME``."""
        return self.cli("logs", "job", name, *extra).stdout

    # ------------------------------------------------------------------ waiting
    def wait_for(self, what: str, probe: Callable[[], T | None], timeout: float = DEADLINE_SEC) -> T:
        """Call ``probe`` every :data:`POLL_SEC` until it returns something truthy; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        last: T | None = None
        while True:
            last = probe()
            if last:
                return last
            if time.monotonic() >= deadline:
                raise E2EError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.diagnostics()}")
            time.sleep(POLL_SEC)

    def wait_jobs(
        self, names: Iterable[str], states: Iterable[str] = FINAL_STATES, timeout: float = DEADLINE_SEC
    ) -> dict[str, dict[str, Any]]:
        """Wait until every Job of ``names`` is in one of ``states``; returns them."""
        wanted, ok = list(names), set(states)

        def probe() -> dict[str, dict[str, Any]] | None:
            found = self.jobs(*wanted)
            done = all(n in found and found[n]["status"]["state"] in ok for n in wanted)
            return found if done else None

        return self.wait_for(f"jobs {wanted} to reach {sorted(ok)}", probe, timeout)

    def wait_gone(self, kind: str, name: str, timeout: float = DEADLINE_SEC) -> None:
        """Wait until ``get KIND NAME`` finds nothing."""
        self.wait_for(f"{kind}/{name} to disappear", lambda: name not in self.get(kind, name), timeout)

    def diagnostics(self) -> str:
        """What a failing wait prints: jobs, batchjobs, recent events, the controller log's tail."""
        parts = []
        for args in (("get", "jobs", "-o", "wide"), ("get", "bj", "-o", "wide"), ("get", "events", "--limit", "60")):
            proc = self.cli(*args, check=False)
            parts.append(f"$ balsamctl {' '.join(args)}\n{proc.stdout}{proc.stderr}")
        for log in [self.path / "log" / "controller.log", *sorted((self.path / "qsubmit").glob("*.out"))]:
            if log.exists():
                parts.append(f"{log.name} (tail):\n{log.read_text(errors='replace')[-2000:]}")
        return "\n".join(parts)

    # ------------------------------------------------------------------ the controller
    def start_controller(self) -> int:
        """``balsamctl controller start``; its pid."""
        self.started_controller = True
        out = self.cli("controller", "start").stdout
        match = re.search(r"started \(pid (\d+)", out)
        assert match, out
        return int(match.group(1))

    def stop_controller(self) -> str:
        """``balsamctl controller stop``; its output."""
        return self.cli("controller", "stop").stdout

    def controller_status(self) -> tuple[str, int | None]:
        """``(running|stopped, pid)`` from ``balsamctl controller status``."""
        lines = self.cli("controller", "status").stdout.splitlines()
        assert lines[0].split()[:3] == ["SITE", "STATUS", "PID"], lines
        row = lines[1].split()
        return row[1], None if row[2] == "<none>" else int(row[2])

    # ------------------------------------------------------------------ cleanup
    def allocation_pids(self) -> list[int]:
        """Session leaders of this site's local allocations that still run."""
        pids = []
        for record_file in (self.path / "qsubmit" / ".local").glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                record = json.loads(record_file.read_text())
                pid = int(record["pid"])
                with contextlib.suppress(psutil.Error):
                    proc = psutil.Process(pid)
                    if abs(proc.create_time() - float(record["create_time"])) < 2 and proc.status() != "zombie":
                        pids.append(pid)
        return pids

    def stray_jobs(self) -> list[psutil.Process]:
        """Processes still running in this site's Job workdirs (Jobs run in sessions of their own)."""
        data = str(self.path / "data")
        found = []
        for proc in psutil.process_iter(["cwd", "uids"]):
            with contextlib.suppress(psutil.Error, TypeError):
                cwd = proc.info["cwd"] or ""
                if (cwd == data or cwd.startswith(data + os.sep)) and proc.info["uids"].real == os.getuid():
                    found.append(proc)
        return found

    def kill_allocations(self, grace: float = 12.0) -> None:
        """SIGTERM each allocation's process group (the launcher stops its Jobs), SIGKILL what remains."""
        self._signal_allocations(signal.SIGTERM)
        self._reap_allocations(grace)

    def _signal_allocations(self, sig: signal.Signals) -> None:
        for pid in self.allocation_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)

    def _reap_allocations(self, grace: float) -> None:
        """Wait up to ``grace`` for the allocations to end, then SIGKILL them and any Job still running."""
        deadline = time.monotonic() + grace
        while self.allocation_pids() and time.monotonic() < deadline:
            time.sleep(POLL_SEC)
        self._signal_allocations(signal.SIGKILL)
        for proc in self.stray_jobs():
            with contextlib.suppress(psutil.Error):
                proc.kill()

    def close(self) -> None:
        """Stop the controller (if this helper started one) and every process the site still runs.

        The allocations get SIGTERM first, so that their launchers wind down while the controller stops.
        """
        self._signal_allocations(signal.SIGTERM)
        try:
            if self.started_controller:
                self.cli("controller", "stop", check=False)
        finally:
            self._reap_allocations(12.0)


# ---------------------------------------------------------------- conditions, launcher processes, refused forks

PIDS_CGROUP = Path("/sys/fs/cgroup/pids")
INFRA_FAILURE_LIMIT = 3  # launcher.infra_failure_limit, which no e2e site sets


def condition(obj: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    """The condition of type ``type_`` of an object as ``get -o json`` shows it, or None."""
    return next((c for c in obj["status"].get("conditions") or [] if c["type"] == type_), None)


def wait_condition(site: E2ESite, kind: str, name: str, type_: str, timeout: float = DEADLINE_SEC) -> dict[str, Any]:
    """Wait until ``KIND/NAME`` carries a condition of type ``type_``; returns the condition."""

    def probe() -> dict[str, Any] | None:
        found = site.get(kind, name).get(name)
        return condition(found, type_) if found else None

    return site.wait_for(f"{kind}/{name} to carry a {type_} condition", probe, timeout)


def launcher_processes(site: E2ESite, batch_job: str) -> list[psutil.Process]:
    """The ``python -m balsamctl.launcher`` processes of ``batch_job`` at ``site`` that run on this host: the one the
    job script started and, in serial mode across nodes, every MPI rank of its relaunch (``--serial-ranks``)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        if argv[1:3] != ["-m", "balsamctl.launcher"]:
            continue
        if _option(argv, "--site") == str(site.path) and _option(argv, "--batch-job") == batch_job:
            found.append(proc)
    return found


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def serial_rank(site: E2ESite, batch_job: str, rank: int) -> psutil.Process | None:
    """MPI rank ``rank`` of ``batch_job``'s serial-mode launcher (rank 0 the launcher, the others the workers of
    the other nodes), known by the ``PMI_RANK`` its MPI launch gave it; None while it has not started."""
    for proc in launcher_processes(site, batch_job):
        with contextlib.suppress(psutil.Error):
            if "--serial-ranks" in proc.cmdline() and proc.environ().get("PMI_RANK") == str(rank):
                return proc
    return None


@contextlib.contextmanager
def forks_refused(pid: int, name: str) -> Iterator[None]:
    """While inside, process ``pid`` can start no process: it is moved into a cgroup-v1 ``pids`` cgroup of its own
    whose ``pids.max`` is what it holds now, so every fork, ``posix_spawn`` or thread it tries fails with EAGAIN,
    as on a node out of processes. Needs root and the v1 pids controller (an E2EError says so otherwise). On exit
    every process still in the cgroup goes back to the cgroup ``pid`` came from and the cgroup is removed."""
    if not (PIDS_CGROUP / "cgroup.procs").is_file() or os.geteuid() != 0:
        raise E2EError(f"refusing forks needs root and the cgroup-v1 pids controller at {PIDS_CGROUP}")
    home = _pids_cgroup_of(pid)
    group = PIDS_CGROUP / name
    group.mkdir()
    try:
        (group / "cgroup.procs").write_text(f"{pid}\n")
        (group / "pids.max").write_text((group / "pids.current").read_text())
        yield
    finally:
        _remove_cgroup(group, home)


def _pids_cgroup_of(pid: int) -> Path:
    """The v1 ``pids`` cgroup directory process ``pid`` is in."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            return PIDS_CGROUP / path.lstrip("/")
    raise E2EError(f"process {pid} is in no pids cgroup")


def _remove_cgroup(group: Path, home: Path) -> None:
    """Move every process of ``group`` back to ``home`` and remove ``group`` (a process that ends meanwhile
    leaves by itself)."""
    deadline = time.monotonic() + 10
    while True:
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                (home / "cgroup.procs").write_text(f"{pid}\n")
        try:
            group.rmdir()
            return
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(POLL_SEC)


def nap_jobs(prefix: str, count: int, labels: Mapping[str, str]) -> tuple[list[str], str]:
    """``count`` one-second Jobs of a ``nap`` App, up to four to a node: their names and their manifest."""
    names = [f"{prefix}-{i}" for i in range(count)]
    docs = (job_doc(n, "nap", labels=labels, node_packing_count=4) for n in names)
    return names, manifest(app_doc("nap", "sleep 1"), *docs)


def wait_launcher_ready(site: E2ESite, batch_job: str, timeout: float = DEADLINE_SEC) -> None:
    """Wait until ``batch_job``'s launcher passed its preflight (in serial mode its workers are up then too)."""
    ready = wait_condition(site, "batchjobs", batch_job, "LauncherReady", timeout)
    assert (ready["status"], ready["reason"]) == ("True", "PreflightPassed"), ready


def start_failures(events: Iterable[Event], names: Iterable[str]) -> list[Event]:
    """The ``StartFailed`` events (RUNNING -> RESTART_READY: a start the node refused) of the Jobs ``names``."""
    jobs = {f"job/{n}" for n in names}
    return [e for e in events if e.object in jobs and e.reason == "StartFailed" and e.to_state == "RESTART_READY"]


def worker_node(proc: psutil.Process) -> str:
    """The node a serial-mode launcher rank runs on: ``SLURMD_NODENAME`` under Slurm, else the local site's
    emulated node of its rank (``local<PMI_RANK>``)."""
    env = proc.environ()
    return env.get("SLURMD_NODENAME") or f"local{env['PMI_RANK']}"


def check_node_fencing(site: E2ESite, batch_job: str, labels: Mapping[str, str], timeout: float) -> None:
    """Black-hole protection of a serial-mode ``batch_job`` of 2 nodes (submitted, selecting ``labels``): once its
    launcher is ready, the worker of its second node (MPI rank 1) is made unable to fork, then 8 one-second Jobs
    come. The other node runs every Job, none is charged (``failures`` 0), the broken node is fenced
    (``NodesHealthy=False``, ``NodeFenced``, named with the error), the Jobs refused there show ``StartFailed``
    events naming it; ``get batchjobs -o wide`` shows the condition."""
    wait_launcher_ready(site, batch_job, timeout)
    worker = site.wait_for(f"rank 1 of {batch_job}'s launcher", lambda: serial_rank(site, batch_job, 1), timeout)
    broken = worker_node(worker)
    names, jobs = nap_jobs(batch_job, 8, labels)
    with forks_refused(worker.pid, f"balsam-e2e-{os.getpid()}-{batch_job}"):
        site.apply(jobs)
        done = site.wait_jobs(names, timeout=timeout)
    outcomes = {n: (j["status"]["state"], j["status"]["failures"]) for n, j in done.items()}
    assert outcomes == dict.fromkeys(names, ("JOB_FINISHED", 0)), outcomes

    healthy = condition(site.batchjobs(batch_job)[batch_job], "NodesHealthy")
    assert healthy is not None and (healthy["status"], healthy["reason"]) == ("False", "NodeFenced"), healthy
    fenced, _, left = healthy["message"].partition("; still running on ")
    assert f"node {broken} fenced" in fenced and "ForkRefused" in fenced, healthy
    assert left and broken not in left.split(", "), healthy
    wide = site.cli("get", "batchjobs", batch_job, "-o", "wide").stdout
    assert "NodesHealthy=NodeFenced" in wide, wide

    refused = start_failures(site.events(), names)
    assert len(refused) >= INFRA_FAILURE_LIMIT, refused
    assert all(f"on {broken} (ForkRefused" in (e.message or "") for e in refused), refused


def launchers(site: E2ESite) -> list[psutil.Process]:
    """This site's ``python -m balsamctl.launcher`` processes."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "balsamctl.launcher" in cmdline and "-m" in cmdline and str(site.path) in cmdline:
            found.append(proc)
    return found

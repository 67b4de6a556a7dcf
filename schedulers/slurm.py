"""The Slurm scheduler: ``sbatch`` submits, one ``squeue`` call reports, ``scancel`` cancels.

One id form throughout: the id ``sbatch --parsable`` prints, ``JOB`` or ``JOB;CLUSTER`` on a multi-cluster site.
The cluster is passed on with ``-M CLUSTER`` to squeue and scancel. The parts of a heterogeneous job (``5000+1``)
and the elements of a job array (``123_4``, ``123_[5-9]``) are read as the one allocation ``5000`` or ``123``: its
state is "running" while a part runs, "queued" while a part waits and none runs, "finished" once all have ended.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar

from balsamctl.schedulers.base import (
    AllocationState,
    AllocationStatus,
    Host,
    SchedulerError,
    SubmitRequest,
    program_says,
)
from balsamctl.schedulers.common import Answer, CommandScheduler, newest_called, sequence
from balsamctl.schedulers.hostlist import expand_hostlist
from balsamctl.schedulers.jsonish import Unread

if TYPE_CHECKING:
    from balsamctl.schemas.settings import LocalNodes

NO_PROJECT = "none"  # a site's placeholder project: sbatch gets no -A (the user's default account is charged)
DEFAULT_QUEUE = "default"  # sbatch gets no -p (Slurm's default partition)

# Every job state squeue knows (22.05: `squeue -t BOGUS` lists them) and what it means for the allocation.
STATES: dict[str, AllocationState] = {
    "PENDING": "queued",
    "CONFIGURING": "queued",  # nodes allocated but still booting: the job script has not started
    "REQUEUED": "queued",
    "REQUEUE_HOLD": "queued",
    "REQUEUE_FED": "queued",
    "RESV_DEL_HOLD": "queued",
    "SPECIAL_EXIT": "queued",  # requeued and held: still in the queue until released or cancelled
    "RUNNING": "running",
    "COMPLETING": "running",  # the script ended but processes or the epilog may still run on the nodes
    "SUSPENDED": "running",
    "STOPPED": "running",
    "RESIZING": "running",
    "SIGNALING": "running",
    "STAGE_OUT": "running",
    "COMPLETED": "finished",
    "CANCELLED": "finished",
    "FAILED": "finished",
    "TIMEOUT": "finished",
    "NODE_FAIL": "finished",
    "PREEMPTED": "finished",
    "BOOT_FAIL": "finished",
    "DEADLINE": "finished",
    "OUT_OF_MEMORY": "finished",
    "REVOKED": "finished",
}

# squeue --Format fields, '|'-separated and unpadded; the job name comes last so that it may contain '|'.
# JobArrayID is the id as squeue -o %i prints it (123_4, 5000+1; JobID would print the element's own 127 or 5001).
# exit_code is the raw wait status (768 for `exit 3`, 15 for SIGTERM), which spares a second call to scontrol.
_FIELDS = ("JobArrayID", "State", "StartTime", "EndTime", "NodeList", "exit_code", "Reason")
SQUEUE_FORMAT = ",".join(f"{field}:|" for field in _FIELDS) + ",Name:"
_ID = re.compile(r"(?P<job>\d+)(?:_(?:\d+|\[[^\]|]*\])|\+\d+)?")  # 123, 123_4, 123_[5-9] (array), 123+1 (het)
_STATE = re.compile(r"[A-Z][A-Z_]*")
_CLUSTER_LINE = re.compile(r"CLUSTER: \S+")  # before each cluster's lines, in squeue -M of older Slurm even with -h
# sbatch --parsable: "JOB" or "JOB;CLUSTER"; a site's sbatch wrapper may print the sentence of plain sbatch
_SBATCH_ID = re.compile(r"(?:Submitted batch job )?(?P<job>\d+)(?:(?:;| on cluster )(?P<cluster>[^\s;]+))?")
_TEMPLATE_CLUSTERS = re.compile(r"^#SBATCH[ \t]+(?:-M[ \t]*|--clusters?[= \t]+)([^\s{}]+)", re.MULTILINE)
_INVALID = "Invalid job id"  # squeue's and scancel's words for a job Slurm no longer knows
_INVALID_ID = re.compile(_INVALID)


class SlurmScheduler(CommandScheduler):
    """Submits with sbatch, follows with squeue (finished jobs stay visible for Slurm's MinJobAge), cancels."""

    kind: ClassVar[str] = "slurm"
    cancel_program = "scancel"
    gone = re.compile(rf"{_INVALID}|already completing or completed")  # scancel of a job Slurm no longer runs
    program = "squeue"

    @classmethod
    def check_version(cls) -> str | None:
        """``sbatch --version``: every Slurm version that has ``squeue -O`` is read."""
        found = re.search(r"slurm(?:-wlm)?\s+(\S+)", program_says(["sbatch", "--version"]) or "")
        return f"Slurm {found[1]}" if found else None

    @classmethod
    def this_host(cls, env: Mapping[str, str]) -> str:
        """``SLURMD_NODENAME``: the node's name in the allocation's node list (the host name may differ)."""
        return env.get("SLURMD_NODENAME") or super().this_host(env)

    @classmethod
    def hosts_from_environment(cls, env: Mapping[str, str], local: LocalNodes) -> list[Host]:
        """``SLURM_JOB_NODELIST`` (``SLURM_NODELIST`` of older Slurm) expanded, each node with the job's
        ``SLURM_CPUS_ON_NODE`` CPUs and ``SLURM_GPUS_ON_NODE`` GPUs (0 when unset)."""
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not nodelist:
            return []
        cpus = int(env.get("SLURM_CPUS_ON_NODE") or 0) or None
        gpus = int(env.get("SLURM_GPUS_ON_NODE") or 0)
        return [Host(name, cpus, gpus) for name in expand_hostlist(nodelist)]

    def submit_command(self, req: SubmitRequest) -> list[str]:
        """``sbatch --parsable``; no ``-p`` for the ``default`` queue, no ``-A`` for the ``none`` project."""
        argv = ["sbatch", "--parsable", "--job-name", req.job_name, "-N", str(req.num_nodes)]
        argv += ["-t", str(req.wall_time_min)]
        if req.queue != DEFAULT_QUEUE:
            argv += ["-p", req.queue]
        if req.project != NO_PROJECT:
            argv += ["-A", req.project]
        argv += ["--output", str(req.output_dir / f"{req.job_name}.%j.out"), *req.extra_args, str(req.script_path)]
        return argv

    def find_by_name(self, job_name: str) -> str | None:
        """The newest allocation called ``job_name`` that Slurm still shows, finished ones included, in the form
        sbatch gave it: on every cluster the site submits to (``SBATCH_CLUSTERS``, ``SLURM_CLUSTERS``, ``#SBATCH
        --clusters`` in its job template), else on the default one. squeue lists only jobs of that name: if it lists
        none, a line that cannot be read (or is cut short) may be one, and that is a SchedulerError."""
        ids: dict[int, str] = {}
        unread: list[Unread] = []
        clusters: list[str | None] = [*self._clusters()] or [None]
        for cluster in clusters:
            stdout = self._run(["squeue", *_on(cluster), "-h", "-n", job_name, "-o", "%i", "-t", "all"])
            jobs, unreadable = _listed(stdout)
            ids.update({int(job): allocation_id(job, cluster) for job in jobs})
            unread += unreadable
        return newest_called(job_name, list(ids.values()), unread, "squeue")

    def _submitted_id(self, stdout: str) -> str | None:
        """The id on sbatch's last line, ``JOB;CLUSTER`` when it names a cluster."""
        lines = stdout.strip().splitlines()
        match = _SBATCH_ID.fullmatch(lines[-1].strip()) if lines else None
        return allocation_id(match["job"], match["cluster"]) if match else None

    def _cancel_command(self, scheduler_id: str) -> list[str]:
        """``scancel [-M CLUSTER] JOB``."""
        job, cluster = split_id(scheduler_id)
        return ["scancel", *_on(cluster), job]

    def _ask(self, scheduler_ids: list[str]) -> Answer:
        """One ``squeue -t all -j JOB,...`` per cluster. Slurm refuses an id it no longer knows as an invalid job
        id: asked alone, that is its word that the job is gone; asked with others, they are asked for alone.
        SchedulerError if a line about a job asked for cannot be parsed."""
        by_cluster: dict[str | None, dict[str, str]] = {}
        for sid in scheduler_ids:
            job, cluster = split_id(sid)
            by_cluster.setdefault(cluster, {})[sid] = job
        found: dict[str, AllocationStatus] = {}
        gone: set[str] = set()
        for cluster, jobs in by_cluster.items():
            statuses = self._squeue(cluster, list(dict.fromkeys(jobs.values())))
            if statuses is None:
                if len(set(jobs.values())) == 1:
                    gone.update(sequence(sid) for sid in jobs)
                continue
            found.update(
                {sid: replace(statuses[job], scheduler_id=sid) for sid, job in jobs.items() if job in statuses}
            )
        return Answer(found, gone=frozenset(gone))

    def _squeue(self, cluster: str | None, jobs: list[str]) -> dict[str, AllocationStatus] | None:
        """The statuses squeue gives for ``jobs``, or None when it refuses them as invalid job ids."""
        argv = ["squeue", *_on(cluster), "-h", "-t", "all", "-j", ",".join(jobs), "-O", SQUEUE_FORMAT]
        text = self._run_unless(argv, _INVALID_ID)
        if text is None:
            return None
        statuses, unparsed = parse_squeue(text)
        for line in unparsed:
            match = _ID.match(line.split("|", 1)[0].strip())
            if match and match["job"] in jobs:
                raise SchedulerError(argv, 0, f"cannot parse squeue line {line!r}")
        return statuses

    def _clusters(self) -> list[str]:
        """The clusters this site submits to, as the environment and its job template name them."""
        named = [os.environ.get("SBATCH_CLUSTERS", ""), os.environ.get("SLURM_CLUSTERS", "")]
        template = self.site_path / "job-template.sh"
        if template.is_file():
            named += _TEMPLATE_CLUSTERS.findall(template.read_text())
        return list(dict.fromkeys(name for names in named for name in names.split(",") if name))


def allocation_id(job: str, cluster: str | None) -> str:
    """The id of an allocation: ``JOB``, or ``JOB;CLUSTER`` as sbatch --parsable prints it."""
    return f"{job};{cluster}" if cluster else job


def split_id(scheduler_id: str) -> tuple[str, str | None]:
    """The job (``123`` also of ``123_4`` or ``123+1``) and the cluster (None for the default one) of an id."""
    job, _, cluster = scheduler_id.partition(";")
    match = _ID.fullmatch(job)
    return (match["job"] if match else job), cluster or None


def _on(cluster: str | None) -> list[str]:
    return ["-M", cluster] if cluster else []


def _listed(text: str) -> tuple[list[str], list[Unread]]:
    """The jobs (``123`` of ``123_4``) in ``squeue -h -o %i`` output, and its lines that are not a job id (``cut``:
    a last line without its newline); ``CLUSTER:`` lines are neither."""
    *lines, partial = text.split("\n")
    jobs: list[str] = []
    unread = [Unread(None, "the output ends inside this line", partial, cut=True)] if partial.strip() else []
    for line in map(str.strip, lines):
        match = _ID.fullmatch(line)
        if match:
            jobs.append(match["job"])
        elif line and not _CLUSTER_LINE.fullmatch(line):
            unread.append(Unread(None, "not a job id", line))
    return jobs, unread


def parse_squeue(text: str) -> tuple[dict[str, AllocationStatus], list[str]]:
    """Statuses by allocation id from ``squeue -h -O SQUEUE_FORMAT`` output, and the non-blank lines that are not
    such a line (``CLUSTER:`` lines are neither). The parts of a heterogeneous job and the elements of an array are
    read as one allocation (see the module's docstring).

    Never raises. A state missing from :data:`STATES` is kept, with a message: "running" if the job has started,
    else "queued". Times are squeue's local times as aware UTC; exit codes only for finished jobs, 128 + N for a
    job killed by signal N (as a shell reports it).
    """
    parts: dict[str, list[AllocationStatus]] = {}
    unparsed: list[str] = []
    for line in text.split("\n"):
        fields = [field.strip() for field in line.split("|", len(_FIELDS))]
        match = _ID.fullmatch(fields[0])
        if len(fields) == len(_FIELDS) + 1 and match and _STATE.fullmatch(fields[1]):
            parts.setdefault(match["job"], []).append(_status(match["job"], *fields[1 : len(_FIELDS)]))
        elif line.strip() and not _CLUSTER_LINE.fullmatch(line.strip()):
            unparsed.append(line)
    return {job: _whole(found) for job, found in parts.items()}, unparsed


def _whole(parts: list[AllocationStatus]) -> AllocationStatus:
    """One allocation from its parts: running while one runs, queued while one waits, finished once all ended."""
    if len(parts) == 1:
        return parts[0]
    state = next(s for s in ("running", "queued", "finished") if any(part.state == s for part in parts))
    lead = next(part for part in parts if part.state == state)
    starts = [part.start_time for part in parts if part.start_time is not None]
    ends = [part.end_time for part in parts if part.end_time is not None]
    codes = [part.exit_code for part in parts if part.exit_code is not None]
    counts = ", ".join(f"{n} {raw}" for raw, n in Counter(part.raw_state for part in parts).items())
    return replace(
        lead,
        start_time=min(starts) if starts and state != "queued" else None,
        end_time=max(ends) if ends and state == "finished" else None,
        exit_code=next((code for code in codes if code), codes[0] if codes else None) if state == "finished" else None,
        nodes=tuple(dict.fromkeys(node for part in parts for node in part.nodes)),
        message="; ".join(filter(None, [f"{len(parts)} parts: {counts}", lead.message])),
    )


def _status(
    sid: str, raw_state: str, start_text: str, end_text: str, nodelist: str, wait_text: str, reason: str
) -> AllocationStatus:
    nodes, notes = _nodes(nodelist)
    start, end, exit_code = _time(start_text), _time(end_text), None
    state = STATES.get(raw_state)
    if state is None:
        state = "running" if start is not None and start <= datetime.now(UTC) else "queued"
        notes.insert(0, f"unknown Slurm state {raw_state}")
    if state == "queued":
        start = end = None  # a pending job's StartTime is a forecast
        if reason not in ("", "None"):
            notes.append(f"reason {reason}")
    elif state == "running":
        end = None  # a running job's EndTime is its time limit
    else:
        start = start if nodelist else None  # a job cancelled while pending gets the cancel time as StartTime
        exit_code, note = _exit_code(wait_text)
        notes += [note] if note else []
    return AllocationStatus(sid, state, raw_state, start, end, exit_code, nodes, "; ".join(notes))


def _exit_code(text: str) -> tuple[int | None, str]:
    """The exit code from a raw wait status (``768`` -> 3; 128 + N for signal N) and a note; None if garbage."""
    try:
        wait_status = int(text)
    except ValueError:
        return None, ""
    signal = wait_status & 0x7F
    if signal:
        return 128 + signal, f"killed by signal {signal}"
    code = (wait_status >> 8) & 0xFF
    return code, f"exit code {code}"


def _time(text: str) -> datetime | None:
    """A squeue time (local time without a zone) as aware UTC; None for ``N/A``, ``Unknown`` and the like."""
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _nodes(nodelist: str) -> tuple[tuple[str, ...], list[str]]:
    """The expanded node list, and a note if it cannot be expanded."""
    if not nodelist:
        return (), []
    try:
        return tuple(expand_hostlist(nodelist)), []
    except ValueError:
        return (), [f"cannot expand node list {nodelist!r}"]

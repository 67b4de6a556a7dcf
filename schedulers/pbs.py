"""PBS Professional and OpenPBS: ``qsub`` submits, one ``qstat -f -F json -x`` reports, ``qdel`` cancels.

Every job state of qstat(1B) and what it means for the allocation:

=====  ================================================================  ==========
state  PBS                                                               allocation
=====  ================================================================  ==========
Q      queued                                                            queued
H      held                                                              queued
W      waiting for its requested start time, or after a failed stage-in  queued
T      being moved to a new location                                     queued
M      moved to another server                                           queued
R      running                                                           running
E      exiting after having run (epilogue, stage-out)                    running
S      suspended                                                         running
U      suspended while its workstation is busy (cycle harvesting)        running
B      array job: at least one subjob has started                        running
F      finished (kept in the job history, which ``-x`` shows)            finished
X      subjob finished                                                   finished
=====  ================================================================  ==========

qstat's JSON is read record by record as PBS prints it (see :mod:`balsamctl.schedulers.jsonish`). A job a clean answer
leaves
out is asked for alone; it is absent only when qstat says ``Unknown Job Id`` (past the history ``-x`` shows).

``Exit_status`` is reported as PBS gives it: the job script's exit code, 256 + N when signal N killed it, negative
when PBS ended the job; -29 (JOB_EXEC_KILL_WALLTIME) is the walltime running out, a normal end of a pilot.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from balsamctl.schedulers.base import (
    AllocationState,
    AllocationStatus,
    Host,
    SubmitRequest,
    UnsupportedScheduler,
    program_says,
)
from balsamctl.schedulers.common import (
    Answer,
    CommandScheduler,
    allocation,
    local_time,
    newest_called,
    said,
    text_field,
)
from balsamctl.schedulers.jsonish import Unread, members

if TYPE_CHECKING:
    from balsamctl.schemas.settings import LocalNodes

STATES: dict[str, AllocationState] = {
    "Q": "queued",
    "H": "queued",
    "W": "queued",
    "T": "queued",
    "M": "queued",
    "R": "running",
    "E": "running",
    "S": "running",
    "U": "running",
    "B": "running",
    "F": "finished",
    "X": "finished",
}
KILL_WALLTIME = -29  # JOB_EXEC_KILL_WALLTIME
_TIME = "%a %b %d %H:%M:%S %Y"  # qstat -f: ctime(3) in local time, "Wed Mar 17 20:36:48 2021"
_UNKNOWN = re.compile(r"Unknown Job Id (?:Error )?(?P<id>\S+)")
_PBS_VERSION = re.compile(r"pbs_version\s*=\s*(\S+)")  # qstat --version of PBS Professional and OpenPBS
_TORQUE_VERSION = re.compile(r"^\s*version:\s*(\S+)", re.IGNORECASE | re.MULTILINE)  # Torque's
_JOB_NAME = re.compile(r'"Job_Name"\s*:\s*"?(?P<name>[^",\n]*)"?\s*[,\n}]')  # whole: not cut off by the end


class PbsScheduler(CommandScheduler):
    """Submits with qsub, follows with qstat (finished jobs stay in PBS's job history), cancels with qdel."""

    kind: ClassVar[str] = "pbs"
    submitted = re.compile(r"^(?P<id>\d+(?:\[\d*\])?(?:\.\S+)?)\s*$", re.MULTILINE)  # 1234.pbs01
    cancel_program = "qdel"
    gone = re.compile(r"Unknown Job Id|Job has finished")
    program = "qstat"

    @classmethod
    def hosts_from_environment(cls, env: Mapping[str, str], local: LocalNodes) -> list[Host]:
        """The hosts of ``PBS_NODEFILE``, each once, in order (the file lists a host once per chunk or slot)."""
        path = env.get("PBS_NODEFILE")
        return [Host(name) for name in dict.fromkeys(Path(path).read_text().split())] if path else []

    def submit_command(self, req: SubmitRequest) -> list[str]:
        """``qsub -N NAME -l select=N -l walltime=HH:MM:SS -q QUEUE -A PROJECT -j oe -o OUT [extra] SCRIPT``."""
        hours, minutes = divmod(req.wall_time_min, 60)
        return [
            "qsub",
            *("-N", req.job_name, "-l", f"select={req.num_nodes}", "-l", f"walltime={hours:02d}:{minutes:02d}:00"),
            *("-q", req.queue, "-A", req.project, "-j", "oe", "-o", str(req.output_dir / f"{req.job_name}.out")),
            *req.extra_args,
            str(req.script_path),
        ]

    @classmethod
    def check_version(cls) -> str | None:
        """``qstat --version``: PBS Professional or OpenPBS (``pbs_version = ...``) is read; Torque (``Version:
        ...``), whose qstat has no JSON output, is refused."""
        said = program_says(["qstat", "--version"])
        pbs = _PBS_VERSION.search(said or "")
        if pbs:
            return f"PBS {pbs[1]}"
        torque = _TORQUE_VERSION.search(said or "")
        if torque:
            raise UnsupportedScheduler(
                f"qstat is Torque {torque[1]}: it has no JSON output (qstat -f -F json), which the pbs scheduler "
                "reads; it needs PBS Professional or OpenPBS"
            )
        return None

    def find_by_name(self, job_name: str) -> str | None:
        """The newest allocation called ``job_name``, from ``qstat -f -F json -x`` (every user's jobs, finished ones
        included). A record that cannot be read is still searched for its Job_Name; SchedulerError if none is found
        while a record that cannot be read may be one (it names ``job_name``, or the output is cut short): a restarted
        controller must not submit the allocation again."""
        named, unread = members(self._run(["qstat", "-f", "-F", "json", "-x"]), "Jobs")
        said(Answer({}, unread), "qstat")
        ids = [sid for sid, job in named if sid and isinstance(job, dict) and job.get("Job_Name") == job_name]
        ids += [record.name for record in unread if record.name and _job_name(record) == job_name]
        return newest_called(job_name, ids, [record for record in unread if record.may_hold(job_name)], "qstat")

    def _ask(self, scheduler_ids: list[str]) -> Answer:
        """``qstat -f -F json -x ID...``; if qstat names ids it does not know, once more without them."""
        text, gone = self._query(lambda ids: ["qstat", "-f", "-F", "json", "-x", *ids], scheduler_ids, _UNKNOWN)
        return Answer({}, gone=gone) if text is None else Answer(*parse_status(text), gone)


def _job_name(record: Unread) -> str | None:
    """The Job_Name printed whole in a record that could not be read, if there is one."""
    found = _JOB_NAME.search(record.text)
    return found["name"] if found else None


def parse_status(text: str) -> tuple[dict[str, AllocationStatus], list[Unread]]:
    """Statuses by job id from ``qstat -f -F json`` output, and the records that could not be read; never raises.

    Times are qstat's local times as aware UTC: ``stime`` starts, ``obittime`` ends an allocation.
    """
    named, unread = members(text, "Jobs")
    statuses: dict[str, AllocationStatus] = {}
    for sid, job in named:
        if sid and isinstance(job, dict) and isinstance(job.get("job_state"), str):
            statuses[sid] = _status(sid, job)
        else:
            unread.append(Unread(sid, "no job_state", repr(job)))
    return statuses, unread


def _status(sid: str, job: dict[str, Any]) -> AllocationStatus:
    exit_code = job.get("Exit_status")
    if not isinstance(exit_code, int) or isinstance(exit_code, bool):
        exit_code = None
    hosts = (chunk.split("/", 1)[0] for chunk in text_field(job, "exec_host").split("+"))  # node1/0*2+node2/0*2
    return allocation(
        sid,
        job["job_state"],
        STATES,
        "PBS",
        start=local_time(text_field(job, "stime"), _TIME),
        end=local_time(text_field(job, "obittime"), _TIME),
        exit_code=exit_code,
        nodes=hosts,
        notes=[_exit_note(exit_code), text_field(job, "comment")],
    )


def _exit_note(code: int | None) -> str:
    if code is None:
        return ""
    if code == KILL_WALLTIME:
        return f"walltime limit reached (Exit_status {code})"
    if code < 0:
        return f"ended by PBS (Exit_status {code})"
    if code > 256:
        return f"killed by signal {code - 256}"
    return f"exit code {code}"

"""Running an App's lifecycle hooks: a shell command in the Job's workdir, or ``python: module:function``."""

from __future__ import annotations

import ctypes
import importlib
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from balsamctl.schemas import Job, JobState
from balsamctl.schemas.objects import AppSpec, PythonHook

HOOK_TIMEOUT_SEC = 600
TAIL_CHARS = 2000
_STATE_LINE = re.compile(r"^balsam-state:\s*([A-Z_]+)\s*$", re.MULTILINE)

#: Per hook: (state the Job is in, next state on success). Failure is FAILED.
HOOKS: dict[str, tuple[JobState, JobState]] = {
    "preprocess": (JobState.STAGED_IN, JobState.PREPROCESSED),
    "postprocess": (JobState.RUN_DONE, JobState.POSTPROCESSED),
    "handle_error": (JobState.RUN_ERROR, JobState.RESTART_READY),
    "handle_timeout": (JobState.RUN_TIMEOUT, JobState.RESTART_READY),
}

log = logging.getLogger("balsamctl.hooks")
_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class HookOutcome:
    """What a hook decided: the next state and why."""

    state: JobState
    message: str


def hook_env(job: Job, app: AppSpec, workdir: Path, site_path: Path) -> dict[str, str]:
    """The environment a shell hook runs with."""
    env = dict(os.environ)
    env.update(app.environment)
    env.update(
        BALSAM_SITE_PATH=str(site_path),
        BALSAM_JOB_NAME=job.metadata.name,
        BALSAM_JOB_STATE=str(job.status.state),
        BALSAM_JOB_WORKDIR=str(workdir),
        BALSAM_JOB_ATTEMPTS=str(job.status.attempts),
        BALSAM_JOB_RETURN_CODE="" if job.status.return_code is None else str(job.status.return_code),
    )
    for key, value in job.spec.parameters.items():
        env[f"BALSAM_PARAM_{key.upper()}"] = str(value)
    return env


def run_hook(hook_name: str, job: Job, app: AppSpec, workdir: Path, site_path: Path, record: Path) -> HookOutcome:
    """Run one hook of ``app`` for ``job``, once per transition; never raises (a failing hook means FAILED).

    ``record`` names this transition's files in the site's state directory (``.exit-CODE``, ``.out``, ``.err`` of a
    shell hook, ``.json`` of a Python hook): a hook that completed under a controller killed before it could write the
    Job's next state is not run again; the next controller takes its outcome from them. A hook killed before it
    completed dies with its controller (it never overlaps the run that replaces it). :func:`forget` the record
    once the transition is stored.
    """
    hook = getattr(app, hook_name)
    _, success = HOOKS[hook_name]
    done = _recorded(record, success, job.metadata.name)
    if done is not None:
        log.info("job/%s: %s completed under a previous controller: %s", job.metadata.name, hook_name, done.message)
        return done
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        record.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if isinstance(hook, PythonHook):
            outcome = _run_python(hook.python, job, success, site_path)
            partial = record.with_name(f"{record.name}.partial")
            partial.write_text(json.dumps({"state": outcome.state.value, "message": outcome.message}))
            partial.replace(_json_path(record))  # atomic: a whole record or none
            return outcome
        return _run_shell(hook, job, app, workdir, site_path, success, record)
    except Exception as exc:  # a hook is user code: any failure is the Job's, never the controller's
        return HookOutcome(JobState.FAILED, f"{hook_name} hook failed: {type(exc).__name__}: {exc}")


def forget(record: Path) -> None:
    """Remove a hook's record once the transition it decided is stored."""
    for path in (*_exits(record), *_outputs(record), _json_path(record)):
        path.unlink(missing_ok=True)


def _outputs(record: Path) -> tuple[Path, Path]:
    """Where a shell hook's stdout and stderr go."""
    return record.with_name(f"{record.name}.out"), record.with_name(f"{record.name}.err")


def _exits(record: Path) -> list[Path]:
    """The ``NAME.exit-CODE`` file a shell hook's own shell created as it exited (the code is in the name: creating
    a file is atomic, so a kill at any instant leaves either no record or a whole one)."""
    return list(record.parent.glob(f"{record.name}.exit-*"))


def _json_path(record: Path) -> Path:
    return record.with_name(f"{record.name}.json")


def _recorded(record: Path, success: JobState, name: str) -> HookOutcome | None:
    """The outcome of a hook that already completed for this transition, if any."""
    for path in _exits(record):
        return _shell_outcome(int(path.name.rpartition("-")[2]), record, success, name)
    if _json_path(record).exists():
        done = json.loads(_json_path(record).read_text())
        return HookOutcome(JobState(done["state"]), done["message"])
    return None


def _run_python(target: str, job: Job, success: JobState, site_path: Path) -> HookOutcome:
    module_name, func_name = target.split(":")
    if str(site_path) not in sys.path:
        sys.path.insert(0, str(site_path))
    func = getattr(importlib.import_module(module_name), func_name)
    result = func(job)
    if result is None:
        return HookOutcome(success, f"python hook {target} returned nothing: {success}")
    return HookOutcome(JobState(str(result)), f"python hook {target} returned {result}")


def _die_with_controller() -> None:
    """In the hook's process, before exec: SIGKILL it if the controller dies, so a hook the next controller runs
    again never overlaps an orphan of the same hook."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _run_shell(
    command: str, job: Job, app: AppSpec, workdir: Path, site_path: Path, success: JobState, record: Path
) -> HookOutcome:
    out_path, err_path = _outputs(record)
    # the shell itself records its exit status as it exits: no window in which the hook completed unrecorded
    record_exit = f"trap {shlex.quote(f': > {shlex.quote(str(record))}.exit-$?')} EXIT\n"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.run(
            ["bash", "-c", record_exit + command],
            cwd=workdir,
            env=hook_env(job, app, workdir, site_path),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            timeout=HOOK_TIMEOUT_SEC,
            preexec_fn=_die_with_controller,  # one C call in the child: no Python lock taken
        )
    return _shell_outcome(proc.returncode, record, success, job.metadata.name)


def _shell_outcome(returncode: int, record: Path, success: JobState, name: str) -> HookOutcome:
    """What a shell hook that exited with ``returncode`` decided (its output is in the record's files)."""
    out_path, err_path = _outputs(record)
    stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    output = (stdout + stderr).strip()
    for line in output.splitlines():
        log.info("job/%s: %s", name, line)
    if returncode != 0:
        return HookOutcome(JobState.FAILED, f"hook exited {returncode}: {output[-TAIL_CHARS:]}")
    chosen = _STATE_LINE.findall(stdout)
    if chosen:
        return HookOutcome(JobState(chosen[-1]), f"hook chose {chosen[-1]}")
    return HookOutcome(success, "hook succeeded")

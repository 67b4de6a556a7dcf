"""Running an App's lifecycle hooks: a shell command in the Job's workdir, or ``python: module:function``."""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from schemas import Job, JobState
from schemas.objects import AppSpec, PythonHook

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


def run_hook(hook_name: str, job: Job, app: AppSpec, workdir: Path, site_path: Path) -> HookOutcome:
    """Run one hook of ``app`` for ``job``; never raises (a failing hook means FAILED, with its reason)."""
    hook = getattr(app, hook_name)
    _, success = HOOKS[hook_name]
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        if isinstance(hook, PythonHook):
            return _run_python(hook.python, job, success, site_path)
        return _run_shell(hook, job, app, workdir, site_path, success)
    except Exception as exc:  # a hook is user code: any failure is the Job's, never the controller's
        return HookOutcome(JobState.FAILED, f"{hook_name} hook failed: {type(exc).__name__}: {exc}")


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


def _run_shell(command: str, job: Job, app: AppSpec, workdir: Path, site_path: Path, success: JobState) -> HookOutcome:
    proc = subprocess.run(
        ["bash", "-c", command],
        cwd=workdir,
        env=hook_env(job, app, workdir, site_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=HOOK_TIMEOUT_SEC,
        preexec_fn=_die_with_controller,  # one C call in the child: no Python lock taken
    )
    output = (proc.stdout + proc.stderr).strip()
    for line in output.splitlines():
        log.info("job/%s: %s", job.metadata.name, line)
    if proc.returncode != 0:
        return HookOutcome(JobState.FAILED, f"hook exited {proc.returncode}: {output[-TAIL_CHARS:]}")
    chosen = _STATE_LINE.findall(proc.stdout)
    if chosen:
        return HookOutcome(JobState(chosen[-1]), f"hook chose {chosen[-1]}")
    return HookOutcome(success, "hook succeeded")

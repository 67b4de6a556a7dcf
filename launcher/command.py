"""Rendering a Job's shell command from its App's Jinja2 template, every parameter value shell-quoted."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from balsamctl.schemas.objects import AppSpec, ParamValue

_ENV = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=False)


class CommandError(ValueError):
    """An App's command template that cannot be rendered for a Job."""


@lru_cache(maxsize=256)
def _template(source: str) -> Template:
    return _ENV.from_string(source)


@lru_cache(maxsize=4096)
def _rendered(source: str, values: tuple[tuple[str, str], ...]) -> str:
    """A template rendered with (quoted) values: Jobs of one App with the same parameters render once."""
    return _template(source).render(dict(values))  # a dict: a parameter may be named "self"


def render_command(app: AppSpec, parameters: Mapping[str, ParamValue]) -> str:
    """The shell command of one Job: the App's preamble and command, parameters quoted (never re-rendered)."""
    values: dict[str, str] = {}
    for name, param in app.parameters.items():
        value = parameters.get(name, param.default)
        if value is None:
            if param.required:
                raise CommandError(f"parameter {name!r} is required")
            value = ""  # optional without a default: an empty word, as apply accepted the Job without it
        values[name] = shlex.quote(str(value).lower() if isinstance(value, bool) else str(value))
    try:
        command = _rendered(app.command, tuple(values.items()))
    except TemplateError as exc:
        raise CommandError(f"App command template: {exc}") from None
    except Exception as exc:  # the template's own code failed (1/0, "a" + 1, a range too big for the sandbox)
        raise CommandError(f"App command template: {type(exc).__name__}: {exc}") from None
    command = f"{app.preamble}\n{command}" if app.preamble else command
    if "\x00" in command:  # no process can take it: it would be a ValueError in the launcher, not this Job's RUN_ERROR
        raise CommandError("the command contains a NUL character")
    return command


def job_variables(app: AppSpec, job_name: str, workdir: Path, placement_env: Mapping[str, str]) -> dict[str, str]:
    """A Job's own environment variables: the App's, the placement's and Balsam's (the rest is inherited)."""
    bad = sorted(name for name, value in app.environment.items() if "\x00" in value)
    if bad:  # no process can take it: it would be a ValueError in the launcher, not this Job's RUN_ERROR
        raise CommandError(f"environment variable {bad[0]} contains a NUL character")
    return {
        **app.environment,
        **placement_env,
        "BALSAM_JOB_NAME": job_name,
        "BALSAM_JOB_WORKDIR": str(workdir),
    }

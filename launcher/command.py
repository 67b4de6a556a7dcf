"""Rendering a Job's shell command from its App's Jinja2 template, every parameter value shell-quoted."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from schemas.objects import AppSpec, ParamValue

_ENV = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=False)


class CommandError(ValueError):
    """An App's command template that cannot be rendered for a Job."""


@lru_cache(maxsize=256)
def _template(source: str) -> Template:
    return _ENV.from_string(source)


def render_command(app: AppSpec, parameters: Mapping[str, ParamValue]) -> str:
    """The shell command of one Job: the App's preamble and command, parameters quoted (never re-rendered)."""
    values: dict[str, str] = {}
    for name, param in app.parameters.items():
        value = parameters.get(name, param.default)
        if value is None:
            raise CommandError(f"parameter {name!r} is required")
        values[name] = shlex.quote(str(value).lower() if isinstance(value, bool) else str(value))
    try:
        command = _template(app.command).render(**values)
    except TemplateError as exc:
        raise CommandError(f"App command template: {exc}") from None
    return f"{app.preamble}\n{command}" if app.preamble else command


def job_variables(app: AppSpec, job_name: str, workdir: Path, placement_env: Mapping[str, str]) -> dict[str, str]:
    """A Job's own environment variables: the App's, the placement's and Balsam's (the rest is inherited)."""
    return {
        **app.environment,
        **placement_env,
        "BALSAM_JOB_NAME": job_name,
        "BALSAM_JOB_WORKDIR": str(workdir),
    }

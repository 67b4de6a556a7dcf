"""Rendering a BatchJob's job script from the site's Jinja2 template, in Jinja2's sandbox."""

from __future__ import annotations

import shlex
import sys
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from balsamctl.schedulers import SubmitRequest
from balsamctl.schemas import BatchJob
from balsamctl.site.directory import SiteError
from balsamctl.site.handle import Site

_ENV = SandboxedEnvironment(
    autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True
)
_ENV.filters["shquote"] = lambda value: shlex.quote(str(value))


def launcher_command(site: Site, batch_job: BatchJob) -> str:
    """The shell command that starts the launcher(s) of ``batch_job`` inside its allocation."""
    python = site.settings.launcher.python or sys.executable
    argv = [python, "-m", "balsamctl.launcher", "--site", str(site.path), "--batch-job", batch_job.metadata.name]
    return shlex.join(argv)


def template_context(site: Site, batch_job: BatchJob) -> dict[str, Any]:
    """What a job template sees: the BatchJob's fields, its partitions, filter tags, optional params, the launcher."""
    spec = batch_job.spec
    optional = {**site.settings.optional_batch_job_params, **spec.optional_params}
    return {
        "batch_job": {"name": batch_job.metadata.name, **spec.model_dump(mode="json")},
        "partitions": [p.model_dump(mode="json") for p in spec.launcher_partitions()],
        "filter_tags": dict(spec.filter_tags),
        "optional_params": optional,
        "site_name": site.name,
        "site_path": str(site.path),
        "launcher_command": launcher_command(site, batch_job),
    }


def render_job_script(site: Site, batch_job: BatchJob) -> str:
    """The job script for ``batch_job``; :class:`SiteError` names the template on a template error."""
    try:
        template = _ENV.from_string(site.job_template)
        return template.render(**template_context(site, batch_job))
    except SiteError:
        raise
    except Exception as exc:  # the template is site code: any failure of it is the site's, named, never a crash
        raise SiteError(f"{site.job_template_source}: cannot render: {exc}") from None


def job_name(site: Site, bj: BatchJob) -> str:
    """The unique name a BatchJob's allocation carries at the scheduler."""
    return f"balsam-{site.name}-{bj.metadata.name}-{(bj.metadata.uid or '')[:8]}"


def submit_request(site: Site, bj: BatchJob) -> SubmitRequest:
    """What the scheduler is asked for."""
    spec = bj.spec
    return SubmitRequest(
        script_path=site.qsubmit_dir / f"{bj.metadata.name}.sh",
        job_name=job_name(site, bj),
        num_nodes=spec.num_nodes,
        wall_time_min=spec.wall_time_min,
        queue=spec.queue,
        project=spec.project,
        output_dir=site.qsubmit_dir,
    )

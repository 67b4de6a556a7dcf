"""``settings.yml``: a site's configuration."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from balsamctl.schemas.objects import EnvName, Identifier, Strict

SITE_NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$"
SiteName = Annotated[str, StringConstraints(pattern=SITE_NAME_PATTERN)]

SchedulerKind = str
"""The ``kind`` of a scheduler adapter: a key of ``balsamctl.schedulers.SCHEDULERS``, the one list of them. Schemas
lie below the schedulers and do not read it: the site layer checks the name wherever it reads one (settings.yml, a
platform preset, ``site init``)."""
MpiFlavor = Literal["mpich", "openmpi", "srun", "aprun"]


class QueueLimits(Strict):
    """What one queue allows."""

    max_nodes: int = Field(default=1, ge=1)
    max_walltime: int = Field(default=60, ge=1, description="Minutes.")
    max_queued_jobs: int = Field(default=10, ge=1)


class LocalNodes(Strict):
    """The nodes of a site without a batch scheduler: all on this machine, emulated."""

    count: int = Field(default=1, ge=1, le=1024)
    cpus_per_node: int = Field(default=2, ge=1)
    gpus_per_node: int = Field(default=0, ge=0)


class LauncherSettings(Strict):
    """How launchers behave at this site."""

    idle_ttl_sec: float = Field(default=30.0, gt=0)
    cpus_per_node: int | None = Field(default=None, ge=1, description="Default: what the scheduler says.")
    gpus_per_node: int | None = Field(default=None, ge=0, description="Default: what the scheduler says, else 0.")
    lease_sec: float = Field(
        default=60.0,
        gt=0,
        description="A launcher silent this long is lost: it claims and starts nothing more; once its allocation "
        "has ended (the controller cancels it) its claims go back and its RUNNING Jobs become RUN_TIMEOUT.",
    )
    start_timeout_sec: float = Field(
        default=120.0,
        gt=0,
        description="An allocation running this long without a launcher's heartbeat gets LaunchersStarted=False.",
    )
    crash_limit: int = Field(
        default=5,
        ge=0,
        description="Runs lost with their launcher a Job is forgiven (status.crashes, not max_retries): one more "
        "FAILS it.",
    )
    poll_interval_sec: float = Field(default=0.1, gt=0)
    infra_failure_limit: int = Field(
        default=3,
        ge=1,
        description="Black-hole protection: after this many infrastructure failures in a row (Jobs that could not "
        "start because of the node: fork refused, workdir refused, MPI command missing) a node is fenced off; a "
        "launcher with no usable node drains and ends. Never charged to the Jobs.",
    )
    mpi_flavor: MpiFlavor = "mpich"
    mpi_command: str = "mpiexec"
    policy: Literal["small_first", "long_large_first"] = Field(
        default="small_first",
        description="Job order: fewest nodes, highest packing, longest wall time first; or most nodes, longest first.",
    )
    python: str | None = Field(default=None, description="Interpreter for the launcher; default: the current one.")
    gpu_visible_devices: list[EnvName] = Field(
        default_factory=lambda: ["CUDA_VISIBLE_DEVICES"],
        description="Variables that tell a Job its GPUs: ZE_AFFINITY_MASK for Intel GPUs, ROCR_VISIBLE_DEVICES or "
        "HIP_VISIBLE_DEVICES for AMD ones.",
    )


class SiteSettings(Strict):
    """The contents of a site's ``settings.yml``."""

    name: SiteName
    scheduler: SchedulerKind = Field(
        default="local", description="The batch scheduler: the kind of one of balsamctl.schedulers' adapters."
    )
    store_url: str | None = Field(default=None, description="SQLAlchemy URL; default: SQLite in .balsam/.")
    platform: str | None = Field(default=None, description="The platform preset the site was made from.")
    sync_period_sec: float = Field(default=5.0, gt=0)
    job_template_path: str = "job-template.sh"
    allowed_queues: dict[str, QueueLimits] = Field(default_factory=lambda: {"local": QueueLimits()})
    allowed_projects: list[str] = Field(default_factory=lambda: ["local"])
    optional_batch_job_params: dict[Identifier, str] = Field(default_factory=dict)
    local_nodes: LocalNodes = Field(default_factory=LocalNodes)
    launcher: LauncherSettings = Field(default_factory=LauncherSettings)


def is_valid_site_name(name: str) -> bool:
    """Whether ``name`` can name a site."""
    return re.fullmatch(SITE_NAME_PATTERN.removeprefix("^").removesuffix("$"), name) is not None

"""The manifest kinds: App, Job and BatchJob, each ``apiVersion``/``kind``/``metadata``/``spec``/``status``."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from balsamctl.schemas.states import BatchJobState, JobState

API_VERSION: Final = "balsam/v1"

NAME_PATTERN = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"
LABEL_KEY_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9_./-]{0,61}[A-Za-z0-9])?$"
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([A-Za-z0-9_.:+@-]{0,251}[A-Za-z0-9])?)?$"
MAX_WALL_TIME_MIN = 60 * 24 * 365
MAX_DATA_DEPTH = 100
"""How deeply a Job's ``data`` may nest (pydantic cannot serialize a model nested past 255 levels)."""
IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN)]
Labels = dict[LabelKey, LabelValue]
Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
ParamValue = str | int | FiniteFloat | bool
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class Strict(BaseModel):
    """Base of every manifest part: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ObjectMeta(Strict):
    """``metadata``: ``name``, ``site``, ``labels`` and ``annotations`` are the user's; the rest is read-only."""

    name: Name
    site: str | None = None
    labels: Labels = Field(default_factory=dict, description="A Job's tags.")
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = Field(default=None, description="Read-only, set by the system.")
    generation: int | None = Field(default=None, description="Read-only: bumped on every spec change.")
    resource_version: int | None = Field(default=None, description="Read-only.")
    creation_timestamp: datetime | None = Field(default=None, description="Read-only.")
    deletion_timestamp: datetime | None = Field(default=None, description="Read-only.")


class Condition(Strict):
    """One observed condition of an object (Kubernetes style)."""

    type: str
    status: Literal["True", "False", "Unknown"] = "True"
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None


class Status(Strict):
    """What the controller and the launchers observed; never taken from a user's apply."""

    state: str | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)


# ---------------------------------------------------------------- App


class Parameter(Strict):
    """One parameter of an App's command template."""

    required: bool | None = None
    default: ParamValue | None = None
    help: str = ""

    @model_validator(mode="after")
    def _required_unless_default(self) -> Parameter:
        if self.required is None:
            self.required = self.default is None
        return self


class PythonHook(Strict):
    """A hook written in Python: ``module:function`` takes the Job and returns its next state (or None)."""

    python: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]


Hook = str | PythonHook
"""A hook is a shell command run in the Job's workdir, or ``{python: module:function}``."""


TEMPLATE_RESERVED_NAMES = frozenset({"self", "not", "true", "false", "none", "True", "False", "None"})
"""Names a Jinja2 template cannot refer to as a variable: ``{{ self }}`` and ``{{ true }}`` mean something else."""


class AppSpec(Strict):
    """``kind: App`` spec: a command template and its lifecycle hooks."""

    command: Annotated[str, StringConstraints(min_length=1)] = Field(
        description="Jinja2 template; every parameter value is shell-quoted when rendered."
    )
    parameters: dict[Identifier, Parameter] = Field(default_factory=dict)
    environment: dict[EnvName, str] = Field(default_factory=dict)
    preamble: str | None = Field(default=None, description="Shell lines run before the command.")
    preprocess: Hook | None = None
    postprocess: Hook | None = None
    handle_error: Hook | None = Field(default=None, description="Default: the Job is FAILED.")
    handle_timeout: Hook | None = Field(default=None, description="Default: the Job is RESTART_READY.")
    max_retries: int | None = Field(
        default=None, ge=0, le=1000, description="Default of its Jobs' max_retries (none: errors fail, hooks decide)."
    )

    @field_validator("parameters")
    @classmethod
    def _parameters_the_template_can_name(cls, value: dict[str, Parameter]) -> dict[str, Parameter]:
        reserved = sorted(TEMPLATE_RESERVED_NAMES.intersection(value))
        if reserved:
            raise ValueError(f"{reserved[0]!r} cannot name a parameter: the command template reads it as a Jinja2 word")
        return value


class AppStatus(Status):
    """An App's observed state (``state`` is ``Ready``)."""


class App(Strict):
    """``kind: App``: what a Job runs."""

    api_version: Literal["balsam/v1"] = Field(default="balsam/v1", alias="apiVersion")
    kind: Literal["App"] = "App"
    metadata: ObjectMeta
    spec: AppSpec
    status: AppStatus = Field(default_factory=AppStatus)


# ---------------------------------------------------------------- Job


def _relative_workdir(value: str) -> str:
    if not value or value.startswith("/") or "\\" in value or "\x00" in value:
        raise ValueError("must be a relative path inside the site's data/ directory")
    if any(part in ("..", "") for part in value.split("/")) and value != ".":
        raise ValueError("must not contain '..' or empty path parts")
    return str(PurePosixPath(value))


def _depth(value: Any, limit: int) -> int:
    """How deeply ``value`` nests lists and mappings (a scalar is 0), counted up to ``limit + 1``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list) and depth <= limit:
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


class JobSpec(Strict):
    """``kind: Job`` spec: one run of an App with its resources."""

    app: Name
    workdir: str = Field(description="Relative to the site's data/ directory.")
    parameters: dict[Identifier, ParamValue] = Field(default_factory=dict)
    num_nodes: int = Field(default=1, ge=1, le=100_000)
    ranks_per_node: int = Field(default=1, ge=1, le=4096)
    threads_per_rank: int = Field(default=1, ge=1, le=4096)
    threads_per_core: int = Field(default=1, ge=1, le=16)
    gpus_per_rank: int = Field(default=0, ge=0, le=1024)
    node_packing_count: int = Field(default=1, ge=1, le=4096)
    launch_params: dict[Identifier, str] = Field(default_factory=dict)
    wall_time_min: int = Field(default=0, ge=0, le=MAX_WALL_TIME_MIN)
    max_retries: int | None = Field(
        default=None, ge=0, le=1000, description="Errors (and lost launchers) retried before FAILED; default: App's."
    )
    parents: list[Name] = Field(default_factory=list)
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("workdir")
    @classmethod
    def _check_workdir(cls, value: str) -> str:
        return _relative_workdir(value)

    @field_validator("data")
    @classmethod
    def _json_data(cls, value: dict[str, Any]) -> dict[str, Any]:
        if _depth(value, MAX_DATA_DEPTH) > MAX_DATA_DEPTH:
            raise ValueError(f"must not nest more than {MAX_DATA_DEPTH} levels deep")
        try:
            json.dumps(value, allow_nan=False)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"must be plain JSON data: {exc}") from None
        return value

    @field_validator("parents")
    @classmethod
    def _unique_parents(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists a parent twice")
        return value


class JobStatus(Status):
    """A Job's observed state."""

    state: JobState | None = None
    return_code: int | None = None
    batch_job: str | None = None
    attempts: int = 0
    failures: int = Field(default=0, description="Errors charged to the Job (walltime and deletion kills are not).")
    crashes: int = Field(
        default=0, description="Runs lost with their launcher (counted against launcher.crash_limit, not max_retries)."
    )
    start_time: datetime | None = None
    end_time: datetime | None = None
    output_tail: str | None = Field(default=None, description="The tail of the output after an error.")
    message: str | None = None


class Job(Strict):
    """``kind: Job``: one task."""

    api_version: Literal["balsam/v1"] = Field(default="balsam/v1", alias="apiVersion")
    kind: Literal["Job"] = "Job"
    metadata: ObjectMeta
    spec: JobSpec
    status: JobStatus = Field(default_factory=JobStatus)


# ---------------------------------------------------------------- BatchJob

JobMode = Literal["mpi", "serial"]


class Partition(Strict):
    """A slice of one allocation run by its own launcher."""

    job_mode: JobMode
    num_nodes: int = Field(ge=1)
    filter_tags: Labels = Field(default_factory=dict)


class BatchJobSpec(Strict):
    """``kind: BatchJob`` spec: a fixed block of node-hours on the site's scheduler."""

    num_nodes: int = Field(ge=1, le=1_000_000)
    wall_time_min: int = Field(ge=1, le=MAX_WALL_TIME_MIN)
    queue: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@-]{1,128}$")]
    project: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@-]{1,128}$")]
    job_mode: JobMode = "mpi"
    filter_tags: Labels = Field(default_factory=dict)
    partitions: list[Partition] = Field(default_factory=list)
    optional_params: dict[Identifier, Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:,=@/+-]{0,1024}$")]] = (
        Field(default_factory=dict)
    )

    @model_validator(mode="after")
    def _partitions_fill_the_allocation(self) -> BatchJobSpec:
        if self.partitions:
            total = sum(p.num_nodes for p in self.partitions)
            if total != self.num_nodes:
                raise ValueError(
                    f"partitions: their num_nodes sum to {total}, but the BatchJob has num_nodes {self.num_nodes}"
                )
        for i, part in enumerate(self.partitions):
            for key, value in part.filter_tags.items():
                if self.filter_tags.get(key, value) != value:  # a Job has one value per label: it would match none
                    raise ValueError(
                        f"partitions[{i}].filter_tags.{key}: {value!r} contradicts the BatchJob's filter_tags.{key} "
                        f"{self.filter_tags[key]!r}"
                    )
        return self

    def launcher_partitions(self) -> list[Partition]:
        """The launchers this allocation runs: its partitions, each also bound by the BatchJob's own filter tags, or
        one for the whole allocation."""
        if self.partitions:
            return [
                p.model_copy(update={"filter_tags": {**self.filter_tags, **p.filter_tags}}) for p in self.partitions
            ]
        return [Partition(job_mode=self.job_mode, num_nodes=self.num_nodes, filter_tags=self.filter_tags)]


class PartitionStatus(Strict):
    """One launcher of a BatchJob's allocation as its last heartbeat told it (``status.partitions``, copied by the
    controller from the store's launcher records)."""

    launcher: str
    partition: int
    """The index of its partition in the BatchJob's ``spec.partitions`` (0 for the whole allocation)."""
    job_mode: JobMode
    nodes: list[str]
    running_jobs: int = 0
    claimed_jobs: int = 0
    """Claimed and not started yet: queued, or waiting in a lane."""
    occupancy: float = 0.0
    """The share of its nodes' CPUs its running Jobs hold (0..1)."""
    last_heartbeat: datetime | None = None
    ended: bool = False
    lost: bool = False
    """Ended by the lease sweep, silent since its last heartbeat (a record written before this field: False)."""


class BatchJobStatus(Status):
    """A BatchJob's observed state."""

    state: BatchJobState | None = None
    scheduler_id: str | None = None
    job_name: str | None = Field(default=None, description="The allocation's name at the scheduler.")
    submit_script: str | None = None
    nodes: list[str] = Field(default_factory=list)
    start_time: datetime | None = None
    end_time: datetime | None = None
    message: str | None = None
    partitions: list[PartitionStatus] = Field(default_factory=list)


class BatchJob(Strict):
    """``kind: BatchJob``: an allocation that runs launchers."""

    api_version: Literal["balsam/v1"] = Field(default="balsam/v1", alias="apiVersion")
    kind: Literal["BatchJob"] = "BatchJob"
    metadata: ObjectMeta
    spec: BatchJobSpec
    status: BatchJobStatus = Field(default_factory=BatchJobStatus)


Manifest = App | Job | BatchJob
KINDS: dict[str, type[App] | type[Job] | type[BatchJob]] = {"App": App, "Job": Job, "BatchJob": BatchJob}

_KIND_ALIASES = {
    "app": "App",
    "apps": "App",
    "job": "Job",
    "jobs": "Job",
    "batchjob": "BatchJob",
    "batchjobs": "BatchJob",
    "bj": "BatchJob",
}


def kind_of(word: str) -> str:
    """The kind named by a CLI word (``jobs``, ``bj``, ``BatchJob`` ...); ``ValueError`` if none."""
    if word in KINDS:
        return word
    try:
        return _KIND_ALIASES[word.lower()]
    except KeyError:
        raise ValueError(f"unknown kind {word!r}; expected one of: apps, jobs, batchjobs (bj)") from None


_NAME_RE = re.compile(NAME_PATTERN.removeprefix("^").removesuffix("$"))


def is_valid_name(name: str) -> bool:
    """Whether ``name`` is a valid object name."""
    return _NAME_RE.fullmatch(name) is not None

"""Pure pydantic models and state machines of balsamctl: no I/O lives here."""

if __name__ != "balsamctl.schemas":  # the folder is also importable from the repository root: refuse a 2nd copy
    raise ImportError(f"import balsamctl.schemas, not {__name__}: one package, one copy of each class")

from balsamctl.schemas.objects import (
    API_VERSION,
    KINDS,
    App,
    AppSpec,
    BatchJob,
    BatchJobSpec,
    BatchJobStatus,
    Condition,
    Hook,
    Job,
    JobSpec,
    JobStatus,
    Manifest,
    ObjectMeta,
    Parameter,
    Partition,
    kind_of,
)
from balsamctl.schemas.states import (
    BATCHJOB_TRANSITIONS,
    JOB_TRANSITIONS,
    BatchJobState,
    InvalidTransition,
    JobState,
    check_batchjob_transition,
    check_job_transition,
)

__all__ = [
    "API_VERSION",
    "BATCHJOB_TRANSITIONS",
    "JOB_TRANSITIONS",
    "KINDS",
    "App",
    "AppSpec",
    "BatchJob",
    "BatchJobSpec",
    "BatchJobState",
    "BatchJobStatus",
    "Condition",
    "Hook",
    "InvalidTransition",
    "Job",
    "JobSpec",
    "JobState",
    "JobStatus",
    "Manifest",
    "ObjectMeta",
    "Parameter",
    "Partition",
    "check_batchjob_transition",
    "check_job_transition",
    "kind_of",
]

"""The state store: the only code in balsamctl that speaks SQL (SQLite by default, PostgreSQL by URL)."""

from balsamctl.store.batchjobs import BatchJobStore
from balsamctl.store.engine import StoreUnavailable, redact, sqlite_url
from balsamctl.store.events import EventStore
from balsamctl.store.jobs import JobRef, JobStore, Transition
from balsamctl.store.leases import LeaseStore, SweepResult
from balsamctl.store.objects import ApplyResult, Conflict, NotFound, ObjectStore, Selector
from balsamctl.store.rows import StoredObject, to_datetime


class Store(ObjectStore, JobStore, BatchJobStore, EventStore, LeaseStore):
    """One store: objects, Job lifecycle, BatchJobs, launchers and their leases, events."""


__all__ = [
    "ApplyResult",
    "Conflict",
    "JobRef",
    "NotFound",
    "Selector",
    "Store",
    "StoreUnavailable",
    "StoredObject",
    "SweepResult",
    "Transition",
    "redact",
    "sqlite_url",
    "to_datetime",
]

"""The one object that holds every part of the store."""

from __future__ import annotations

from balsamctl.store.batchjobs import BatchJobStore
from balsamctl.store.events import EventStore
from balsamctl.store.jobs import JobStore
from balsamctl.store.leases import LeaseStore
from balsamctl.store.notify import NotifyStore
from balsamctl.store.objects import ObjectStore


class Store(ObjectStore, JobStore, BatchJobStore, EventStore, LeaseStore, NotifyStore):
    """One store: objects, Job lifecycle, BatchJobs, launchers and their leases, events, wake-ups."""

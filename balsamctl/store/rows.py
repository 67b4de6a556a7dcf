"""Converting between table rows and the pydantic models of ``schemas``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row

from balsamctl.schemas import App, BatchJob, Job, Manifest
from balsamctl.schemas.objects import KINDS


def now() -> float:
    """Seconds since the epoch (the store's time unit)."""
    return time.time()


def to_datetime(ts: float | None) -> datetime | None:
    """A UTC datetime from epoch seconds."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


@dataclass(frozen=True)
class StoredObject:
    """An object as the store holds it: its id, its site and the full manifest (metadata, spec, status)."""

    id: int
    site_id: int
    site_name: str
    manifest: Manifest

    @property
    def kind(self) -> str:
        """``App``, ``Job`` or ``BatchJob``."""
        return self.manifest.kind

    @property
    def name(self) -> str:
        """The object's name."""
        return self.manifest.metadata.name

    @property
    def ref(self) -> str:
        """``job/hello-1`` style reference."""
        return f"{self.kind.lower()}/{self.name}"


def _status(row: Row[Any]) -> dict[str, Any]:
    status: dict[str, Any] = dict(row.status or {})
    status["state"] = row.state
    status["observed_generation"] = row.observed_generation
    if row.kind == "Job":
        status.update(
            return_code=row.return_code,
            batch_job=row.batch_job,
            attempts=row.attempts,
            start_time=to_datetime(row.start_time),
            end_time=to_datetime(row.end_time),
            output_tail=row.output_tail,
            message=row.message,
        )
    elif row.kind == "BatchJob":
        status["scheduler_id"] = row.scheduler_id
    return status


def row_to_object(row: Row[Any], site_name: str) -> StoredObject:
    """The :class:`StoredObject` of one ``objects`` row."""
    body = {
        "apiVersion": "balsam/v1",
        "kind": row.kind,
        "metadata": {
            "name": row.name,
            "site": site_name,
            "labels": row.labels or {},
            "annotations": row.annotations or {},
            "uid": row.uid,
            "generation": row.generation,
            "resource_version": row.resource_version,
            "creation_timestamp": to_datetime(row.created_at),
            "deletion_timestamp": to_datetime(row.deletion_timestamp),
        },
        "spec": row.spec,
        "status": _status(row),
    }
    model: type[App] | type[Job] | type[BatchJob] = KINDS[row.kind]
    return StoredObject(row.id, row.site_id, site_name, model.model_validate(body))

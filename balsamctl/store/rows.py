"""Converting between table rows and the pydantic models of ``schemas``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row

from balsamctl.schemas import App, BatchJob, Job, Manifest
from balsamctl.schemas.objects import KINDS
from balsamctl.store.fastread import object_body, to_datetime


def now() -> float:
    """Seconds since the epoch (the store's time unit)."""
    return time.time()


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


def row_to_object(row: Row[Any], site_name: str) -> StoredObject:
    """The :class:`StoredObject` of one ``objects`` row."""
    body = object_body(row._mapping, site_name, to_datetime)
    model: type[App] | type[Job] | type[BatchJob] = KINDS[row.kind]
    return StoredObject(row.id, row.site_id, site_name, model.model_validate(body))

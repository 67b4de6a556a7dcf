"""The state store: the only code in balsamctl that speaks SQL (SQLite by default, PostgreSQL by URL).

Its names are imported on first use (PEP 562): importing ``balsamctl.store.fastread``, which the CLI's fast paths
read with, runs this file and must cost no SQLAlchemy and no pydantic.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from balsamctl.store.batchjobs import Heartbeat
    from balsamctl.store.engine import StoreUnavailable, redact
    from balsamctl.store.facade import Store
    from balsamctl.store.fastread import Selector, sqlite_url, to_datetime
    from balsamctl.store.jobs import JobRef, RunResult, RunStart, Transition
    from balsamctl.store.leases import SweepResult
    from balsamctl.store.notify import Listener, runnable_channel, site_channel
    from balsamctl.store.objects import ApplyResult, Conflict, NotFound
    from balsamctl.store.rows import StoredObject

__all__ = [
    "ApplyResult",
    "Conflict",
    "Heartbeat",
    "JobRef",
    "Listener",
    "NotFound",
    "RunResult",
    "RunStart",
    "Selector",
    "Store",
    "StoreUnavailable",
    "StoredObject",
    "SweepResult",
    "Transition",
    "redact",
    "runnable_channel",
    "site_channel",
    "sqlite_url",
    "to_datetime",
]
_HOMES = {
    "ApplyResult": "objects",
    "Conflict": "objects",
    "Heartbeat": "batchjobs",
    "JobRef": "jobs",
    "Listener": "notify",
    "NotFound": "objects",
    "RunResult": "jobs",
    "RunStart": "jobs",
    "Selector": "fastread",
    "Store": "facade",
    "StoreUnavailable": "engine",
    "StoredObject": "rows",
    "SweepResult": "leases",
    "Transition": "jobs",
    "redact": "engine",
    "runnable_channel": "notify",
    "site_channel": "notify",
    "sqlite_url": "fastread",
    "to_datetime": "fastread",
}
"""The module of each name of ``__all__``."""


def __getattr__(name: str) -> Any:
    """Import an exported name from its module on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value

"""Kubernetes-style conditions on an object's status."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from balsamctl.schemas.objects import Condition

Status = Literal["True", "False", "Unknown"]
"""A condition's status, as Kubernetes writes it."""

_C = TypeVar("_C", bound=Mapping[str, Any] | Condition)


def condition_of(conditions: Iterable[_C], type_: str) -> _C | None:
    """The condition of ``type_`` among ``conditions`` (as stored, or read into models), if there is one."""
    return next((c for c in conditions if _field(c, "type") == type_), None)


def condition_status(conditions: Iterable[Mapping[str, Any] | Condition], type_: str) -> str | None:
    """The status (``True``, ``False``, ``Unknown``) of the condition of ``type_`` among ``conditions``, if any."""
    found = condition_of(conditions, type_)
    return None if found is None else _field(found, "status")


def _field(condition: Mapping[str, Any] | Condition, name: str) -> Any:
    return condition.get(name) if isinstance(condition, Mapping) else getattr(condition, name)


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: Status,
    reason: str,
    message: str,
) -> list[dict[str, Any]]:
    """``conditions`` with the one of ``type_`` replaced; its transition time moves only when ``status`` does."""
    old = condition_of(conditions, type_)
    when = old.get("last_transition_time") if old and old.get("status") == status else None
    new = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "last_transition_time": when or datetime.now(UTC).isoformat(),
    }
    return [c for c in conditions if c.get("type") != type_] + [new]

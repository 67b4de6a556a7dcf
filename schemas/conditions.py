"""Kubernetes-style conditions on an object's status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]
"""A condition's status, as Kubernetes writes it."""


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: Status,
    reason: str,
    message: str,
) -> list[dict[str, Any]]:
    """``conditions`` with the one of ``type_`` replaced; its transition time moves only when ``status`` does."""
    old = next((c for c in conditions if c.get("type") == type_), None)
    when = old.get("last_transition_time") if old and old.get("status") == status else None
    new = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "last_transition_time": when or datetime.now(UTC).isoformat(),
    }
    return [c for c in conditions if c.get("type") != type_] + [new]

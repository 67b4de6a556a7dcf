"""Conditions read one way whether stored (dicts, as the store and launchers write them) or read into models."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from balsamctl.schemas.conditions import Status, condition_of, condition_status, set_condition
from balsamctl.schemas.objects import Condition

TYPES = ("LaunchersStarted", "LauncherReady", "NodesHealthy")
STATUSES: tuple[Status, ...] = ("True", "False", "Unknown")
writes = st.lists(st.tuples(st.sampled_from(TYPES), st.sampled_from(STATUSES), st.text(max_size=5)), max_size=8)


@given(writes)
def test_the_last_write_of_each_type_is_read_from_dicts_and_models_alike(steps: list[tuple[str, Status, str]]) -> None:
    stored: list[dict[str, object]] = []
    for type_, status, reason in steps:
        stored = set_condition(stored, type_, status, reason, f"{type_} {status}")
    models = [Condition.model_validate(c) for c in stored]
    for type_ in TYPES:
        last = next(((s, r) for t, s, r in reversed(steps) if t == type_), None)
        assert condition_status(stored, type_) == condition_status(models, type_) == (last and last[0])
        found = condition_of(models, type_)
        assert (found and (found.status, found.reason)) == last

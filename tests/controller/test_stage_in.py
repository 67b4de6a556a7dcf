"""Stage-in (READY -> STAGED_IN): Jobs whose workdir the file system refuses wait, say so (``StagedIn=False``), and
never hold up the others.

Escapes out of ``data/`` and the files stage-in makes are covered by tests/security/test_security.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from balsamctl import controller
from balsamctl.controller.jobs import JobReconciler
from balsamctl.schemas import JobState
from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory
from balsamctl.store import Store
from tests.support.site_ops import app, apply_raws, job, stored_job


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SiteDirectory]:
    s = init_site(tmp_path / "site", "stage-in")
    yield s
    s.close()


def passes(site: SiteDirectory, count: int) -> None:
    """``count`` passes of one controller's Job reconciler (its stage-in remembers where it stopped)."""
    reconciler = JobReconciler(site, lambda: None)
    try:
        for _ in range(count):
            reconciler()
    finally:
        reconciler.close()


def states(site: SiteDirectory, names: list[str]) -> set[JobState | None]:
    return {stored_job(site, n).status.state for n in names}


def test_jobs_whose_workdir_cannot_be_made_yet_wait_without_starving_newer_ones(
    site: SiteDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More refused Jobs than one pass takes, applied first: the newer Jobs still get staged in, the refused
    ones stay READY (no FAILED: the file system may come back), and are staged in once it does."""
    monkeypatch.setattr(controller.jobs, "STAGE_IN_BATCH", 3)
    (site.data_dir / "blocked").write_text("a file where the workdirs' parent directory should be\n")
    blocked = [f"blocked-{i}" for i in range(7)]
    fine = [f"fine-{i}" for i in range(4)]
    apply_raws(site, app("a", "true"), *(job(n, "a", f"blocked/{n}") for n in blocked))
    apply_raws(site, *(job(n, "a", f"runs/{n}") for n in fine), source="later.yaml")

    reconciler = JobReconciler(site, lambda: None)
    try:
        for _ in range(6):
            reconciler()
        assert states(site, fine) == {JobState.PREPROCESSED}
        assert states(site, blocked) == {JobState.READY}
        for name in blocked:  # each says why it waits...
            [said] = [c for c in stored_job(site, name).status.conditions if c.type == "StagedIn"]
            assert (said.status, said.reason) == ("False", "WorkdirRefused") and "Not a directory" in said.message
        versions = {n: stored_job(site, n).metadata.resource_version for n in blocked}
        for _ in range(3):
            reconciler()
        assert {
            n: stored_job(site, n).metadata.resource_version for n in blocked
        } == versions  # ...once, not every pass
    finally:
        reconciler.close()

    (site.data_dir / "blocked").unlink()
    passes(site, 6)
    assert states(site, blocked) == {JobState.PREPROCESSED}
    assert all((site.data_dir / "blocked" / n / "job.out").exists() for n in blocked)
    assert [c for n in blocked for c in stored_job(site, n).status.conditions if c.type == "StagedIn"] == []


class Killed(BaseException):
    """The controller killed at that point (nothing after it runs)."""


def test_a_controller_killed_right_after_staging_in_leaves_no_stale_refusal(
    site: SiteDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal a Job carried goes in the same transaction as its stage-in: a controller killed just after it
    never leaves a staged Job saying its workdir is refused."""
    (site.data_dir / "blocked").write_text("not a directory\n")
    apply_raws(site, app("a", "true"), job("j", "a", "blocked/j"))
    passes(site, 1)
    assert [c.reason for c in stored_job(site, "j").status.conditions if c.type == "StagedIn"] == ["WorkdirRefused"]
    (site.data_dir / "blocked").unlink()

    def advance_then_die(*args: Any, **kwargs: Any) -> int:
        moved = Store.advance(site.store, *args, **kwargs)
        if kwargs.get("reason") == "StagedIn":
            raise Killed
        return moved

    monkeypatch.setattr(site.store, "advance", advance_then_die)
    with pytest.raises(Killed):
        passes(site, 1)

    staged = stored_job(site, "j")
    assert staged.status.state == JobState.STAGED_IN
    assert [c for c in staged.status.conditions if c.type == "StagedIn"] == []


def test_a_controller_forgets_the_refusals_of_jobs_no_longer_ready(
    site: SiteDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a controller remembers having told (so as not to tell it every pass) goes with the Job once it is no
    longer READY (here deleted), over passes that each see only part of the READY Jobs; a Job still refused is
    never forgotten (it would be told again)."""
    monkeypatch.setattr(controller.jobs, "STAGE_IN_BATCH", 2)
    (site.data_dir / "blocked").write_text("not a directory\n")
    names = [f"b{i}" for i in range(5)]
    apply_raws(site, app("a", "true"), *(job(n, "a", f"blocked/{n}") for n in names))
    ids = {n: site.store.get_object(site.site_id, "Job", n).id for n in names}
    reconciler = JobReconciler(site, lambda: None)
    try:
        for _ in range(3):  # 2 + 2 + 1: every Job seen
            reconciler()
        assert set(reconciler.refused) == set(ids.values())
        site.store.delete(site.site_id, [("Job", "b1"), ("Job", "b4")])
        for _ in range(3):
            reconciler()
            assert set(reconciler.refused) >= {ids[n] for n in ("b0", "b2", "b3")}
        assert set(reconciler.refused) == {ids[n] for n in ("b0", "b2", "b3")}
    finally:
        reconciler.close()

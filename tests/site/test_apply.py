"""Applying manifest files to a real site: created/configured/unchanged, all-or-nothing errors, dry runs, prune."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from balsamctl.schemas import Job
from balsamctl.schemas import JobState as S
from balsamctl.schemas.manifest import ManifestError
from balsamctl.site.apply import apply_documents, load_paths
from balsamctl.site.directory import SiteDirectory, SiteError
from balsamctl.store import Conflict, Selector, Transition

KINDS = ("App", "Job", "BatchJob")


def app(name: str = "sim") -> dict[str, Any]:
    return {
        "apiVersion": "balsam/v1",
        "kind": "App",
        "metadata": {"name": name},
        "spec": {
            "command": "simulate --n {{ n }} --mode {{ mode }}",
            "parameters": {"n": {"help": "required"}, "mode": {"default": "fast"}},
        },
    }


def job(
    name: str,
    *,
    parents: list[str] | None = None,
    params: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    app_name: str = "sim",
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "balsam/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels or {"exp": "a"}},
        "spec": {
            "app": app_name,
            "workdir": f"runs/{name}",
            "parameters": {"n": 1} if params is None else params,
            "parents": parents or [],
            **spec,
        },
    }


def batchjob(name: str = "bj", **spec: Any) -> dict[str, Any]:
    body = {"num_nodes": 1, "wall_time_min": 10, "queue": "local", "project": "local", **spec}
    return {"apiVersion": "balsam/v1", "kind": "BatchJob", "metadata": {"name": name}, "spec": body}


def write(directory: Path, filename: str, *raws: dict[str, Any]) -> str:
    path = directory / filename
    path.write_text(yaml.safe_dump_all(raws, sort_keys=False))
    return str(path)


def apply_files(site: SiteDirectory, *paths: str, **kwargs: Any) -> dict[str, str]:
    docs = load_paths(list(paths), recursive=False)
    return {r.ref: r.action for r in apply_documents(site, docs, **kwargs)}


def snapshot(site: SiteDirectory) -> tuple[Any, ...]:
    """Everything a user can observe of the store: every object in full, the event log's length and the sources."""
    objects = [
        (o.id, o.manifest.model_dump(mode="json"))
        for kind in KINDS
        for o in site.store.list_objects(Selector(kind, (site.site_id,)))
    ]
    n_events = len(site.store.events((site.site_id,), limit=1_000_000))
    return objects, n_events, sorted(site.store.sources(site.site_id))


def stored_job(site: SiteDirectory, name: str) -> Job:
    manifest = site.store.get_object(site.site_id, "Job", name).manifest
    assert isinstance(manifest, Job)
    return manifest


def meta(site: SiteDirectory, kind: str, name: str) -> tuple[int, int]:
    """``(generation, resource_version)`` of one stored object."""
    m = site.store.get_object(site.site_id, kind, name).manifest.metadata
    assert m.generation is not None and m.resource_version is not None
    return m.generation, m.resource_version


@pytest.fixture
def site(balsam_site: SiteDirectory) -> SiteDirectory:
    return balsam_site


@pytest.fixture
def populated(site: SiteDirectory, tmp_path: Path) -> SiteDirectory:
    """A site holding an App, a chain of three Jobs (c waits for b, b for a) and a BatchJob."""
    f = write(tmp_path, "base.yaml", app(), job("a"), job("b", parents=["a"]), job("c", parents=["b"]), batchjob())
    apply_files(site, f, source="base.yaml")
    return site


# ---------------------------------------------------------------- created / unchanged / configured


def test_apply_creates_every_object_in_its_initial_state(site: SiteDirectory, tmp_path: Path) -> None:
    f = write(tmp_path, "hello.yaml", app(), job("j1"), job("j2", parents=["j1"]), batchjob())
    assert apply_files(site, f) == {
        "app/sim": "created",
        "job/j1": "created",
        "job/j2": "created",
        "batchjob/bj": "created",
    }
    j2 = stored_job(site, "j2")
    assert j2.status.state == "CREATED"
    assert (j2.metadata.generation, j2.metadata.resource_version) == (1, 1)
    assert j2.spec.parents == ["j1"]
    assert j2.metadata.site == site.name
    assert site.store.get_object(site.site_id, "BatchJob", "bj").manifest.status.state == "pending_submission"
    created = [e for e in site.store.events((site.site_id,)) if e["reason"] == "Created"]
    assert sorted((e["kind"], e["name"]) for e in created) == [
        ("App", "sim"),
        ("BatchJob", "bj"),
        ("Job", "j1"),
        ("Job", "j2"),
    ]
    assert (site.wake_dir / "poke").exists(), "the controller is woken after a change"


def test_reapplying_unchanged_manifests_changes_nothing(populated: SiteDirectory, tmp_path: Path) -> None:
    before = snapshot(populated)
    (populated.wake_dir / "poke").unlink()
    f = write(tmp_path, "base.yaml", app(), job("a"), job("b", parents=["a"]), job("c", parents=["b"]), batchjob())
    results = apply_files(populated, f, source="base.yaml")
    assert set(results.values()) == {"unchanged"}
    assert len(results) == 5
    assert snapshot(populated) == before
    assert not (populated.wake_dir / "poke").exists(), "nothing changed, so the controller is not woken"


def test_changing_a_job_spec_configures_it_and_bumps_generation(populated: SiteDirectory, tmp_path: Path) -> None:
    gen, rv = meta(populated, "Job", "b")
    others = {n: meta(populated, "Job", n) for n in ("a", "c")}
    f = write(tmp_path, "b.yaml", job("b", parents=["a"], params={"n": 2}, num_nodes=1, wall_time_min=5))
    assert apply_files(populated, f) == {"job/b": "configured"}
    assert meta(populated, "Job", "b") == (gen + 1, rv + 1)
    b = stored_job(populated, "b")
    assert b.spec.parameters == {"n": 2}
    assert b.spec.wall_time_min == 5
    assert {n: meta(populated, "Job", n) for n in ("a", "c")} == others
    (event,) = [e for e in populated.store.events((populated.site_id,), name="b") if e["reason"] == "Configured"]
    assert "spec changed" in event["message"]


def test_changing_only_labels_configures_without_a_new_generation(populated: SiteDirectory, tmp_path: Path) -> None:
    gen, rv = meta(populated, "Job", "a")
    f = write(tmp_path, "a.yaml", job("a", labels={"exp": "b", "tier": "gold"}))
    assert apply_files(populated, f) == {"job/a": "configured"}
    assert meta(populated, "Job", "a") == (gen, rv + 1)
    sid = populated.site_id
    assert [o.name for o in populated.store.list_objects(Selector("Job", (sid,), labels=(("exp", "b"),)))] == ["a"]
    assert populated.store.count_objects(Selector("Job", (sid,), labels=(("exp", "a"),))) == 2  # b and c
    assert populated.store.count_objects(Selector("Job", (sid,), labels=(("exp", "a"), ("tier", "gold")))) == 0


def test_changing_parents_rewires_the_dependency(populated: SiteDirectory, tmp_path: Path) -> None:
    """c waited for b; after re-apply it waits for a only, so finishing a releases it although b never ran."""
    f = write(tmp_path, "c.yaml", job("c", parents=["a"]))
    assert apply_files(populated, f) == {"job/c": "configured"}
    sid = populated.site_id
    ids = {o.name: o.id for o in populated.store.list_objects(Selector("Job", (sid,)))}
    store = populated.store
    store.transition(sid, [Transition(ids[n], S.CREATED, S.AWAITING_PARENTS, "test") for n in ("b", "c")])
    for src, dst in [
        (S.CREATED, S.READY),
        (S.READY, S.STAGED_IN),
        (S.STAGED_IN, S.PREPROCESSED),
        (S.PREPROCESSED, S.RUNNING),
        (S.RUNNING, S.RUN_DONE),
        (S.RUN_DONE, S.POSTPROCESSED),
        (S.POSTPROCESSED, S.STAGED_OUT),
        (S.STAGED_OUT, S.JOB_FINISHED),
    ]:
        assert store.transition(sid, [Transition(ids["a"], src, dst, "test")]) == 1
    moved = store.advance(sid, S.AWAITING_PARENTS, S.READY, reason="ParentsFinished", parents="all_finished")
    assert moved == 2  # b and c both wait for a alone now; c no longer waits for the unfinished b
    assert store.get_object(sid, "Job", "c").manifest.status.state == "READY"
    assert store.get_object(sid, "Job", "b").manifest.status.state == "READY"


# ---------------------------------------------------------------- bad input: named precisely, nothing applied

BAD_CASES: dict[str, tuple[list[dict[str, Any]], int, str, str]] = {
    # id: (documents, index of the bad document, its ref, the field the problem names)
    "unknown app": ([job("n1", app_name="nope")], 1, "job/n1", "spec.app"),
    "undeclared parameter": ([job("n1", params={"n": 1, "bogus": 2})], 1, "job/n1", "spec.parameters.bogus"),
    "missing required parameter": ([job("n1", params={"mode": "slow"})], 1, "job/n1", "spec.parameters.n"),
    "missing parent": ([job("n1"), job("n2", parents=["n1", "ghost"])], 2, "job/n2", "spec.parents[1]"),
    "own parent": ([job("n1", parents=["n1"])], 1, "job/n1", "spec.parents[0]"),
    "cycle in the batch": ([job("n1", parents=["n2"]), job("n2", parents=["n1"])], 1, "job/n1", "spec.parents"),
    "cycle through a stored job": ([job("a", parents=["b"])], 1, "job/a", "spec.parents"),
    "cycle through two stored jobs": ([job("a", parents=["c"])], 1, "job/a", "spec.parents"),
    "duplicate name": ([job("n1"), app("other"), job("n1")], 3, "job/n1", "metadata.name"),
    "batchjob over max_nodes": ([batchjob("bj2", num_nodes=2)], 1, "batchjob/bj2", "spec.num_nodes"),
    "batchjob over max_walltime": ([batchjob("bj2", wall_time_min=61)], 1, "batchjob/bj2", "spec.wall_time_min"),
    "batchjob unknown queue": ([batchjob("bj2", queue="gpu")], 1, "batchjob/bj2", "spec.queue"),
    "batchjob project not allowed": ([batchjob("bj2", project="other")], 1, "batchjob/bj2", "spec.project"),
    "batchjob undeclared optional param": (
        [batchjob("bj2", optional_params={"mig": "on"})],
        1,
        "batchjob/bj2",
        "spec.optional_params.mig",
    ),
    "another site": (
        [{**job("n1"), "metadata": {"name": "n1", "site": "elsewhere"}}],
        1,
        "job/n1",
        "metadata.site",
    ),
    "wall time beyond any integer column": (
        [job("n1", wall_time_min=10**20)],
        1,
        "job/n1",
        "spec.wall_time_min",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_is_named_and_changes_nothing(populated: SiteDirectory, tmp_path: Path, case: str) -> None:
    raws, index, ref, field = copy.deepcopy(BAD_CASES[case])
    # a good change rides along: it must not be applied either
    f = write(tmp_path, "bad.yaml", job("ok-extra"), *raws)
    index += 1
    before = snapshot(populated)
    with pytest.raises(ManifestError) as info:
        apply_files(populated, f, source="bad.yaml")
    problems = info.value.problems
    assert any((p.source, p.document, p.object, p.field) == (f, index, ref, field) for p in problems), (
        f"expected {f}: document {index} ({ref}): {field}; got:\n{info.value}"
    )
    assert f in str(info.value)
    assert snapshot(populated) == before


def test_recursive_yaml_data_is_a_manifest_error(populated: SiteDirectory, tmp_path: Path) -> None:
    """An anchor that contains itself parses, but cannot be stored; it must be reported, not crash apply."""
    text = yaml.safe_dump(job("n1")) + "  data: &loop {self: [*loop]}\n"
    path = tmp_path / "loop.yaml"
    path.write_text(text)
    before = snapshot(populated)
    with pytest.raises(ManifestError) as info:
        apply_files(populated, str(path))
    assert any(p.field is not None and p.field.startswith("spec.data") for p in info.value.problems)
    assert snapshot(populated) == before


def test_second_file_bad_means_nothing_from_the_first_is_applied(populated: SiteDirectory, tmp_path: Path) -> None:
    good = write(tmp_path, "1-good.yaml", app("tool"), job("g1", app_name="tool"), job("a", params={"n": 9}))
    before = snapshot(populated)
    # a syntax error in the second file
    broken = tmp_path / "2-broken.yaml"
    broken.write_text("apiVersion: balsam/v1\nkind: Job\n- oops\n")
    with pytest.raises(ManifestError) as info:
        apply_files(populated, good, str(broken))
    assert [p.source for p in info.value.problems] == [str(broken)]
    assert snapshot(populated) == before
    # a cross-document error in the second file (it needs an App nobody declares)
    bad = write(tmp_path, "2-bad.yaml", job("g2", app_name="missing"))
    with pytest.raises(ManifestError) as info:
        apply_files(populated, good, bad)
    assert [(p.source, p.document, p.field) for p in info.value.problems] == [(bad, 1, "spec.app")]
    assert snapshot(populated) == before


def test_a_folder_is_applied_as_one_batch(site: SiteDirectory, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    write(folder, "2-jobs.yaml", job("x"), job("y", parents=["x"]))
    write(folder, "1-app.yml", app())
    (folder / "notes.txt").write_text("not a manifest")
    assert apply_files(site, str(folder)) == {"app/sim": "created", "job/x": "created", "job/y": "created"}


def test_missing_path_is_a_manifest_error(site: SiteDirectory, tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_paths([str(tmp_path / "nope.yaml")], recursive=False)
    assert info.value.problems[0].source == str(tmp_path / "nope.yaml")


# ---------------------------------------------------------------- dry run and prune


def test_dry_run_reports_but_changes_nothing(populated: SiteDirectory, tmp_path: Path) -> None:
    before = snapshot(populated)
    (populated.wake_dir / "poke").unlink()
    f = write(tmp_path, "base.yaml", app(), job("a", params={"n": 5}), job("b", parents=["a"]), job("new"))
    results = apply_files(populated, f, source="base.yaml", prune=True, dry_run=True)
    assert results == {
        "app/sim": "unchanged",
        "job/a": "configured",
        "job/b": "unchanged",
        "job/new": "created",
        "job/c": "deleted",
        "batchjob/bj": "deletion requested",
    }
    assert snapshot(populated) == before
    assert not (populated.wake_dir / "poke").exists()


def test_prune_deletes_only_what_left_that_source(populated: SiteDirectory, tmp_path: Path) -> None:
    sid = populated.site_id
    other = write(tmp_path, "other.yaml", job("o1", parents=["a"]), job("moved"))
    apply_files(populated, other, source="other.yaml")
    cli = write(tmp_path, "cli.yaml", job("manual"))
    apply_files(populated, cli)  # no source, like `balsamctl apply -f`
    # "moved" now lives in base.yaml; b, c and the BatchJob are gone from it
    base = write(tmp_path, "base.yaml", app(), job("a"), job("moved"))
    results = apply_files(populated, base, source="base.yaml", prune=True)
    assert results == {
        "app/sim": "unchanged",
        "job/a": "unchanged",
        "job/moved": "unchanged",
        "job/b": "deleted",
        "job/c": "deleted",
        "batchjob/bj": "deletion requested",
    }
    names = {o.name for o in populated.store.list_objects(Selector("Job", (sid,)))}
    assert names == {"a", "o1", "moved", "manual"}
    # "moved" belongs to base.yaml now: pruning other.yaml with nothing left in it keeps it
    pruned = apply_documents(populated, [], source="other.yaml", prune=True)
    assert {r.ref: r.action for r in pruned} == {"job/o1": "deleted"}
    names = {o.name for o in populated.store.list_objects(Selector("Job", (sid,)))}
    assert names == {"a", "moved", "manual"}
    assert populated.store.sources(sid) == {"base.yaml"}


def test_prune_that_would_orphan_jobs_changes_nothing(populated: SiteDirectory, tmp_path: Path) -> None:
    """The App is still used by a Job from another file: deleting it is refused, and so is the whole apply."""
    other = write(tmp_path, "other.yaml", job("o1"))
    apply_files(populated, other, source="other.yaml")
    before = snapshot(populated)
    with pytest.raises((Conflict, ManifestError)):
        apply_documents(populated, [], source="base.yaml", prune=True)
    assert snapshot(populated) == before


# ---------------------------------------------------------------- workdirs


def test_workdir_stays_inside_data(site: SiteDirectory, tmp_path: Path) -> None:
    data = site.data_dir.resolve()
    assert site.workdir("runs/a") == data / "runs" / "a"
    assert site.workdir(".") == data
    outside = tmp_path / "outside"
    outside.mkdir()
    (site.data_dir / "escape").symlink_to(outside)
    (site.data_dir / "inner").mkdir()
    (site.data_dir / "alias").symlink_to(site.data_dir / "inner")
    assert site.workdir("alias/x") == data / "inner" / "x"
    for bad in ("escape", "escape/x", "../log", "runs/../../x", "/etc"):
        with pytest.raises(SiteError, match="outside"):
            site.workdir(bad)
    # a sibling directory that merely shares the prefix is outside too
    (site.path / "data2").mkdir()
    with pytest.raises(SiteError):
        site.workdir("../data2")


def test_a_stored_object_dumped_as_yaml_reapplies_unchanged(populated: SiteDirectory, tmp_path: Path) -> None:
    """``get -o yaml > f; apply -f f`` is a no-op: read-only metadata and status are ignored."""
    stored = [
        o.manifest.model_dump(mode="json", by_alias=True)
        for kind in KINDS
        for o in populated.store.list_objects(Selector(kind, (populated.site_id,)))
    ]
    before = snapshot(populated)
    f = write(tmp_path, "dump.yaml", *stored)
    results = apply_files(populated, f, source="base.yaml")
    assert len(results) == 5
    assert set(results.values()) == {"unchanged"}
    assert snapshot(populated) == before

"""End to end GitOps: files written into a running site's ``manifests/`` folder are applied, edited, pruned.

The controller runs for the whole module; each test uses its own file names, objects and BatchJob filter tags.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.support.e2e import E2ESite, app_doc, batchjob_doc, job_doc, manifest

pytestmark = pytest.mark.slow

SETTINGS = {"sync_period_sec": 1, "launcher": {"idle_ttl_sec": 30}}
"""Launchers idle for 30 s: each test's allocation outlives its edits; removing a file cancels it, teardown kills it."""


def apply_failed(site: E2ESite, source: str) -> list[str]:
    """Messages of the ApplyFailed events of one manifest file (``manifests/...``)."""
    return [e.message or "" for e in site.events() if e.object == f"manifest/{source}" and e.reason == "ApplyFailed"]


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file, then a rename): never seen half written."""
    tmp = path.with_name(path.name + ".tmp")  # not a manifest suffix: never applied itself
    tmp.write_text(text)
    os.replace(tmp, path)


def test_file_added_edited_and_removed(site: E2ESite) -> None:
    path = site.path / "manifests" / "pipeline.yaml"
    tags = {"suite": "gitops"}
    path.write_text(
        manifest(
            app_doc("greet", "echo hi from $BALSAM_JOB_NAME"),
            job_doc("g-1", "greet", labels=tags),
            job_doc("g-2", "greet", labels=tags),
            batchjob_doc("g-bj-1", filter_tags=tags),
        )
    )
    first = site.wait_jobs(["g-1", "g-2"], {"JOB_FINISHED"})
    assert "hi from g-2" in site.logs("g-2")

    # edit: relabel g-1, add g-3 (rewritten atomically; in-place rewrites have a test of their own below)
    replace_file(
        path,
        manifest(
            app_doc("greet", "echo hi from $BALSAM_JOB_NAME"),
            job_doc("g-1", "greet", labels={**tags, "color": "blue"}),
            job_doc("g-2", "greet", labels=tags),
            job_doc("g-3", "greet", labels=tags),
            batchjob_doc("g-bj-1", filter_tags=tags),
        ),
    )
    edited = site.wait_jobs(["g-3"], {"JOB_FINISHED"})
    site.wait_for("g-1's new label", lambda: site.get("jobs", extra=["-l", "color=blue"]).keys() == {"g-1"})
    now = site.jobs("g-1", "g-2", "g-3")
    for name in ("g-1", "g-2"):  # updated, not deleted and re-created (or run again)
        assert now[name]["metadata"]["uid"] == first[name]["metadata"]["uid"]
        assert now[name]["status"]["state"] == "JOB_FINISHED"
        assert now[name]["status"]["attempts"] == 1
    assert now["g-1"]["metadata"]["labels"] == {"suite": "gitops", "color": "blue"}
    assert "hi from g-3" in site.logs("g-3")
    assert edited["g-3"]["status"]["state"] == "JOB_FINISHED"

    # remove: everything the file created goes away (the running allocation is cancelled first)
    assert site.batchjobs("g-bj-1")["g-bj-1"]["status"]["state"] == "running"
    path.unlink()
    site.wait_for("the file's Jobs to be deleted", lambda: not site.jobs("g-1", "g-2", "g-3"))
    site.wait_for("the file's BatchJob to be deleted", lambda: not site.batchjobs("g-bj-1"))
    assert site.get("apps", "greet") == {}
    bj_states = [e.to_state for e in site.events("g-bj-1") if e.object == "batchjob/g-bj-1"]
    assert bj_states[-2:] == ["pending_deletion", "finished"], bj_states

    # the removal was acted on once: a BatchJob waiting for its cancellation is not "deleted" again and again
    log = (site.path / "log" / "controller.log").read_text()
    lines = [line for line in log.splitlines() if "manifests/pipeline.yaml: batchjob/g-bj-1 " in line]
    assert len(lines) <= 2, f"{len(lines)} log lines for one BatchJob (created, deletion requested):\n" + "\n".join(
        lines[:6]
    )


def test_bad_files_do_not_block_good_ones(site: E2ESite) -> None:
    manifests = site.path / "manifests"
    tags = {"suite": "badfiles"}
    good = manifest(
        app_doc("steady", "echo steady $BALSAM_JOB_NAME"),
        job_doc("b-good", "steady", labels=tags),
        batchjob_doc("b-bj-1", filter_tags=tags),
    )
    corrupt = "apiVersion: balsam/v1\nkind: Job\nmetadata: {name: b-corrupt\nspec: [unclosed\n"
    bad_field = job_doc("b-field", "steady", labels=tags, nodes=2)  # `nodes` is no Job field
    (manifests / "corrupt.yaml").write_text(corrupt)
    (manifests / "badfield.yaml").write_text(bad_field)
    (manifests / "good.yaml").write_text(good)

    site.wait_jobs(["b-good"], {"JOB_FINISHED"})
    corrupt_msgs = site.wait_for("corrupt.yaml's ApplyFailed", lambda: apply_failed(site, "manifests/corrupt.yaml"))
    field_msgs = site.wait_for("badfield.yaml's ApplyFailed", lambda: apply_failed(site, "manifests/badfield.yaml"))
    assert any("corrupt.yaml" in m for m in corrupt_msgs), corrupt_msgs
    assert any("badfield.yaml" in m and "nodes" in m for m in field_msgs), field_msgs
    assert site.jobs("b-corrupt", "b-field") == {}

    # fix both; they are applied and run
    (manifests / "badfield.yaml").write_text(job_doc("b-field", "steady", labels=tags, num_nodes=1))
    (manifests / "corrupt.yaml").write_text(job_doc("b-corrupt", "steady", labels=tags))
    jobs = site.wait_jobs(["b-field", "b-corrupt", "b-good"], {"JOB_FINISHED"})
    assert jobs["b-good"]["status"]["attempts"] == 1
    assert "steady b-field" in site.logs("b-field")


def test_file_rewritten_in_place_keeps_its_objects(site: E2ESite) -> None:
    """An editor, ``cp`` or ``cat >`` rewrites a file in place: truncated first, the new text a moment later.

    The short while the file is empty must not read as "this file holds no objects any more": its Jobs must not
    be deleted and re-created (and run again), its running allocation must not be cancelled.
    """
    path = site.path / "manifests" / "inplace.yaml"
    tags = {"suite": "inplace"}

    def text(color: str) -> str:
        return manifest(
            app_doc("paint", "echo painted $BALSAM_JOB_NAME"),
            job_doc("ip-1", "paint", labels={**tags, "color": color}),
            batchjob_doc("ip-bj", filter_tags=tags),
        )

    replace_file(path, text("red"))
    before = site.wait_jobs(["ip-1"], {"JOB_FINISHED"})["ip-1"]
    assert site.batchjobs("ip-bj")["ip-bj"]["status"]["state"] == "running"

    with path.open("w") as stream:  # truncates
        stream.flush()
        time.sleep(0.3)  # the writer is slow (a large file, a network file system, a busy machine)
        stream.write(text("green"))
    site.wait_for("ip-1's new label", lambda: site.get("jobs", extra=["-l", "color=green"]).keys() == {"ip-1"})
    after = site.job("ip-1")
    deletions = [
        e
        for e in site.events()
        if e.object in ("job/ip-1", "batchjob/ip-bj", "app/paint") and e.reason in ("Deleted", "DeletionRequested")
    ]
    assert not deletions, f"the in-place rewrite deleted objects: {deletions}"
    assert after["metadata"]["uid"] == before["metadata"]["uid"], "ip-1 was deleted and re-created"
    assert after["status"]["attempts"] == 1 and after["status"]["state"] == "JOB_FINISHED", after["status"]
    assert site.batchjobs("ip-bj")["ip-bj"]["status"]["state"] == "running"

"""Preflight: what a launcher checks before it claims anything, and what a failed check leaves behind.

Each check against the real thing it checks (a PATH, a file without its execute bit, a read-only file system); the
launcher's entry point run in this process on a real site: a failed check is ``LauncherReady=False`` on the
BatchJob, exit code 1, nothing claimed; a launcher that passes never hides a sibling partition's failure.
(The MPI command missing on the real Slurm cluster: tests/e2e/test_slurm_health.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from balsamctl.launcher import main as launcher_main
from balsamctl.launcher.nodes import Node
from balsamctl.launcher.preflight import Problem, check_data_dir, check_mpi_command, check_nodes, first_problem
from balsamctl.schemas import BatchJob, JobState
from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory
from tests.support.launcher_ops import jobs_of, read_only
from tests.support.site_ops import advance_to_runnable, app, apply_raws, batchjob, configure, job


def test_an_mpi_command_on_path_resolves_and_a_missing_one_names_the_path_searched(tmp_path: Path) -> None:
    assert check_mpi_command("sh -x", {"PATH": "/usr/bin:/bin"}) is None
    missing = check_mpi_command("mpiexec", {"PATH": str(tmp_path)})
    assert missing is not None and missing.reason == "MPICommandNotFound"
    assert "'mpiexec'" in missing.message and f"searched {tmp_path}" in missing.message


def test_an_mpi_command_by_path_must_exist_and_be_executable(tmp_path: Path) -> None:
    plain = tmp_path / "mpiexec"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    gone = check_mpi_command(str(tmp_path / "nowhere" / "mpiexec"), {})
    assert gone is not None and gone.reason == "MPICommandNotFound"
    refused = check_mpi_command(f"{plain} --verbose", {})
    assert refused is not None and refused.reason == "MPICommandNotExecutable" and str(plain) in refused.message
    plain.chmod(0o755)
    assert check_mpi_command(str(plain), {}) is None


def test_an_mpi_command_that_cannot_be_read_is_a_problem_not_a_crash() -> None:
    unreadable = check_mpi_command("mpiexec --env 'A=1", {"PATH": "/bin"})
    assert unreadable is not None and unreadable.reason == "MPICommandInvalid"


def test_the_node_list_must_hold_the_partitions_nodes() -> None:
    assert check_nodes([Node("n1", (0,)), Node("n2", (0,))], 2, "batchjob/b") is None
    empty = check_nodes([], 2, "batchjob/b")
    assert empty is not None and empty.reason == "NoNodes"
    short = check_nodes([Node("n1", (0,))], 2, "batchjob/b partition 1")
    assert short is not None and short.reason == "NodeListMismatch"
    assert "partition 1 asks for 2 node(s)" in short.message and "names 1: n1" in short.message


def test_a_data_directory_that_takes_no_file_fails(tmp_path: Path) -> None:
    assert check_data_dir(tmp_path) is None
    assert list(tmp_path.iterdir()) == [], "the probe file is gone"
    with read_only(tmp_path / "data") as data:
        refused = check_data_dir(data)
    assert refused is not None and refused.reason == "DataNotWritable" and "Read-only file system" in refused.message
    gone = check_data_dir(tmp_path / "missing")
    assert gone is not None and gone.reason == "DataNotWritable"


def test_the_first_problem_is_the_one_told() -> None:
    first, second = Problem("A", "a"), Problem("B", "b")
    assert first_problem(None, first, second) == first
    assert first_problem(None, None) is None


@pytest.fixture
def site(tmp_path: Path) -> SiteDirectory:
    made = init_site(tmp_path / "site", "preflight", register=False)
    site = configure(made, {"launcher": {"idle_ttl_sec": 1.0}})
    apply_raws(site, app("a", "true"), job("j1", "a", "w/j1"), batchjob("bj"))
    advance_to_runnable(site)
    return site


def launcher_ready(site: SiteDirectory) -> tuple[str, str, str]:
    bj = site.store.get_object(site.site_id, "BatchJob", "bj").manifest
    assert isinstance(bj, BatchJob)
    [ready] = [c for c in bj.status.conditions if c.type == "LauncherReady"]
    return ready.status, ready.reason, ready.message


def test_a_launcher_whose_node_list_does_not_match_ends_at_once_claiming_nothing(
    site: SiteDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BALSAM_NODES", "n1,n2")  # the allocation's environment names 2 nodes; the BatchJob asked 1
    assert launcher_main.main(["--site", str(site.path), "--batch-job", "bj"]) == 1
    status, reason, message = launcher_ready(site)
    assert (status, reason) == ("False", "NodeListMismatch") and "n1,n2" in message
    assert jobs_of(site)["j1"].status.state == JobState.PREPROCESSED
    assert site.store.launchers_of(site.site_id, "bj") == [], "no launcher registered, nothing claimed"


def test_a_launcher_whose_data_directory_is_read_only_ends_at_once(
    site: SiteDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BALSAM_NODES", raising=False)
    with read_only(site.data_dir):
        assert launcher_main.main(["--site", str(site.path), "--batch-job", "bj"]) == 1
    assert launcher_ready(site)[:2] == ("False", "DataNotWritable")
    assert jobs_of(site)["j1"].status.state == JobState.PREPROCESSED


def test_a_launcher_that_passes_leaves_a_sibling_partitions_failure_in_place(site: SiteDirectory) -> None:
    store, sid = site.store, site.site_id
    assert store.set_batchjob_condition(sid, "bj", "LauncherReady", "False", "MPICommandNotFound", "partition 1")
    assert not store.set_batchjob_condition(sid, "bj", "LauncherReady", "True", "PreflightPassed", "p0", unless="False")
    assert launcher_ready(site) == ("False", "MPICommandNotFound", "partition 1")

"""The MPI launch command of each flavor."""

from __future__ import annotations

import shlex
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balsamctl.launcher.mpi_command import Flavor, build_mpi_command, needs_mpi
from balsamctl.launcher.nodes import Share
from balsamctl.launcher.placement import Placement, Request

TWO_NODES = Placement("job", (Share("h1", (0, 1), (), Fraction(1)), Share("h2", (0, 1), (), Fraction(1))))
REQ = Request(num_nodes=2, ranks_per_node=4, threads_per_rank=4, threads_per_core=2)
ENV = {"OMP_NUM_THREADS": "4", "BALSAM_JOB_NAME": "j1"}
PARAMS = {"cpu_bind": "depth"}
MPIEXEC = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "mpiexec"


def build(flavor: Flavor, command: str = "mpiexec", params: dict[str, str] | None = None) -> list[str]:
    return build_mpi_command(flavor, command, TWO_NODES, REQ, "./app --x 1", PARAMS if params is None else params, ENV)


def test_mpich() -> None:
    assert build("mpich") == [
        "mpiexec", "-n", "8", "-ppn", "4", "-hosts", "h1,h2",
        "--env", "OMP_NUM_THREADS", "4", "--env", "BALSAM_JOB_NAME", "j1",
        "--cpu-bind", "depth", "bash", "-c", "./app --x 1",
    ]  # fmt: skip


def test_openmpi() -> None:
    assert build("openmpi", "/opt/ompi/bin/mpiexec") == [
        "/opt/ompi/bin/mpiexec", "-n", "8", "--npernode", "4", "--host", "h1:4,h2:4",
        "-x", "OMP_NUM_THREADS=4", "-x", "BALSAM_JOB_NAME=j1",
        "--oversubscribe", "--cpu-bind", "depth", "bash", "-c", "./app --x 1",
    ]  # fmt: skip


def test_srun() -> None:
    assert build("srun", "srun") == [
        "srun", "-N", "2", "-n", "8", "--ntasks-per-node", "4", "--nodelist", "h1,h2", "--cpus-per-task", "2",
        "--export=ALL,OMP_NUM_THREADS=4,BALSAM_JOB_NAME=j1", "--mpi=pmi2", "--cpu-bind", "depth",
        "bash", "-c", "./app --x 1",
    ]  # fmt: skip


def test_aprun() -> None:
    nids = Placement("job", (Share("3826", (0, 1), (), Fraction(1)), Share("3827", (0, 1), (), Fraction(1))))
    argv = build_mpi_command("aprun", "aprun", nids, REQ, "./app --x 1", {"bypass_app_transfer": ""}, ENV)
    assert argv == [
        "aprun", "-n", "8", "-N", "4", "-d", "4", "-j", "2", "-L", "3826,3827",
        "-e", "OMP_NUM_THREADS=4", "-e", "BALSAM_JOB_NAME=j1", "--bypass-app-transfer",
        "bash", "-c", "./app --x 1",
    ]  # fmt: skip


def test_srun_mpi_param_replaces_the_default_and_commas_are_not_exported() -> None:
    argv = build_mpi_command("srun", "srun", TWO_NODES, REQ, "app", {"mpi": "pmix"}, {"A": "1", "B": "x,y"})
    assert "--mpi=pmi2" not in argv
    assert argv[argv.index("--mpi") + 1] == "pmix"
    assert "--export=ALL,A=1" in argv


def test_local_has_no_host_list_and_no_launch_params() -> None:
    assert build("local", "/venv/bin/mpiexec -l") == [
        "/venv/bin/mpiexec", "-l", "-n", "8",
        "--env", "OMP_NUM_THREADS", "4", "--env", "BALSAM_JOB_NAME", "j1",
        "bash", "-c", "./app --x 1",
    ]  # fmt: skip


@pytest.mark.parametrize("flavor", ["mpich", "openmpi", "srun", "aprun"])
def test_shell_metacharacters_stay_one_argv_item(flavor: Flavor) -> None:
    value = "depth; rm -rf ~ && echo $(whoami) 'x' \"y\" | cat"
    argv = build(flavor, params={"cpu_bind": value, "env_file": "a b"})
    assert argv.count(value) == 1 and argv[argv.index(value) - 1] == "--cpu-bind"
    assert argv[argv.index("--env-file") + 1] == "a b"


def test_empty_param_value_is_a_bare_flag() -> None:
    argv = build("openmpi", params={"report_bindings": ""})
    assert argv[argv.index("--report-bindings") + 1] == "bash"


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        build("mpich", params={"-x": "1"})
    with pytest.raises(ValueError):
        build_mpi_command("mpich", "mpiexec", TWO_NODES, REQ, "app", {}, {"A=B": "1"})
    with pytest.raises(ValueError):
        build("mvapich")  # type: ignore[arg-type]  # a flavor the type refuses is refused at run time too


def test_needs_mpi() -> None:
    assert not needs_mpi(Request())
    assert not needs_mpi(Request(threads_per_rank=8, gpus_per_rank=2))
    assert needs_mpi(Request(ranks_per_node=2))
    assert needs_mpi(Request(num_nodes=2))


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["mpich", "openmpi", "srun", "aprun", "local"]),
    st.integers(1, 64),
    st.integers(1, 128),
    st.dictionaries(st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True), st.text(max_size=10), max_size=3),
)
def test_rank_count_is_the_n_value(flavor: Flavor, num_nodes: int, ranks_per_node: int, params: dict[str, str]) -> None:
    req = Request(num_nodes=num_nodes, ranks_per_node=ranks_per_node)
    placement = Placement("j", tuple(Share(f"n{i}", (0,), (), Fraction(1)) for i in range(num_nodes)))
    argv = build_mpi_command(flavor, "mpiexec", placement, req, "true", params, {})
    assert argv[argv.index("-n") + 1] == str(num_nodes * ranks_per_node)
    assert argv[-3:] == ["bash", "-c", "true"]


@pytest.mark.slow
def test_local_command_really_runs_two_ranks(tmp_path: Path) -> None:
    placement = Placement("j", (Share("localhost", (0,), (), Fraction(1)),))
    code = "from mpi4py import MPI; import os; print(f'{MPI.COMM_WORLD.size} {os.environ[\"GREETING\"]}', flush=True)"
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"
    env = {"GREETING": "hi; there"}
    argv = build_mpi_command("local", str(MPIEXEC), placement, Request(ranks_per_node=2), command, {}, env)
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("2 hi; there") == 2, result.stdout  # two ranks; their lines may interleave

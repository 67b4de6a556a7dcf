"""What the PBS, LSF and Cobalt adapter tests share: fake scheduler programs (see ``replay.py``), job scripts."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from balsamctl.schedulers.base import SchedulerError
from balsamctl.schemas import BatchJob
from balsamctl.schemas.settings import SchedulerKind
from balsamctl.site.create import init_site
from balsamctl.site.jobscript import launcher_command, render_job_script

FAKES = Path(__file__).parent
FIXTURES = FAKES.parent / "recorded"
# JSON values of any shape, for parsers that must take anything
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


class Fakes:
    """One scheduler's fake programs first on PATH, replaying a scenario of ``recorded/<scheduler>/``."""

    def __init__(self, scheduler: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        self.scheduler = scheduler
        self.monkeypatch = monkeypatch
        self.log = tmp_path / "calls.jsonl"
        monkeypatch.setenv("PATH", f"{FAKES / scheduler}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_SCHED_LOG", str(self.log))
        monkeypatch.delenv("FAKE_SCHED_HANG", raising=False)
        self.scenario("none")

    def scenario(self, name: str) -> Path:
        """Replay ``recorded/<scheduler>/<name>/`` from now on (a missing one: no output, exit code 0)."""
        path = FIXTURES / self.scheduler / name
        self.monkeypatch.setenv("FAKE_SCHED_FIXTURE", str(path))
        return path

    def hang(self) -> None:
        """Make every program hang."""
        self.monkeypatch.setenv("FAKE_SCHED_HANG", "1")

    def assert_a_hang_times_out(self, call: Callable[[], object]) -> None:
        """With every program hanging, ``call`` (an adapter with a short timeout) fails with a timeout, in time."""
        self.hang()
        began = time.monotonic()
        with pytest.raises(SchedulerError) as caught:
            call()
        assert caught.value.returncode is None
        assert time.monotonic() - began < 5

    @property
    def calls(self) -> list[dict[str, Any]]:
        """Every call so far: {"prog", "argv", "stdin"}."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def job_script(tmp_path: Path, scheduler: SchedulerKind, **optional_params: str) -> tuple[list[str], str]:
    """The lines of a BatchJob's job script rendered from ``scheduler``'s template (checked by ``bash -n``), and
    the launcher command it must end with."""
    site = init_site(tmp_path / "site", f"{scheduler}-site", scheduler, register=False)
    try:
        spec = {"num_nodes": 2, "wall_time_min": 30, "queue": "prod", "project": "datascience"}
        bj = BatchJob.model_validate({"metadata": {"name": "bj-1"}, "spec": spec})
        bj.spec.optional_params.update(optional_params)
        script, command = render_job_script(site, bj), launcher_command(site, bj)
    finally:
        site.close()
    path = tmp_path / "bj-1.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    return script.splitlines(), command


def expected_state(states: Mapping[str, str], state: str, started: bool) -> str:
    """What an adapter must make of ``state``: its table's word, or for an unknown one "running" once started."""
    return states.get(state) or ("running" if started else "queued")

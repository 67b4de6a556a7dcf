"""A launcher inside an allocation loads what it runs and nothing of a site's management: no registry of sites, no
platform presets, no site creation, no CLI, no controller. The import-linter contract ``pilot-is-lean`` says so of
the import graph; this runs a real launcher to its end and reads its ``sys.modules``, so lazy imports count too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from balsamctl.schemas import JobState
from balsamctl.site.directory import SiteDirectory
from tests.support.launcher_ops import jobs_of
from tests.support.site_ops import advance_to_runnable, app, apply_raws, batchjob, job

NOT_IN_A_PILOT = (
    "balsamctl.site.registry",
    "balsamctl.site.platforms",
    "balsamctl.site.create",
    "balsamctl.site.lookup",
    "balsamctl.cli",
    "balsamctl.controller",
    "balsam.",
    "typer",
)
RUN_AND_DUMP = """\
import atexit, json, sys
atexit.register(lambda: open(sys.argv[1], "w").write(json.dumps(sorted(sys.modules))))
from balsamctl.launcher.main import main
sys.exit(main(["--site", sys.argv[2], "--batch-job", "bj"]))
"""


def test_a_launcher_process_loads_no_registry_presets_cli_or_controller(site: SiteDirectory, tmp_path: Path) -> None:
    apply_raws(site, app("a", "true"), job("j1", "a", "w/j1"), batchjob("bj"))
    advance_to_runnable(site)
    dump = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PBS_", "LSB_", "COBALT_", "BALSAM_"))}
    proc = subprocess.run(
        [sys.executable, "-c", RUN_AND_DUMP, str(dump), str(site.path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert jobs_of(site)["j1"].status.state == JobState.JOB_FINISHED, "the launcher ran its Job"
    loaded = json.loads(dump.read_text())
    assert "balsamctl.launcher.pilot" in loaded
    assert [m for m in loaded if m.startswith(NOT_IN_A_PILOT)] == []

"""A site's scheduler is the kind of one of the scheduler adapters (``balsamctl.schedulers.SCHEDULERS``, the one
list of them): settings.yml, a platform preset and ``site init`` are checked against that list, and say which kinds
it holds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from balsamctl.cli import app as cli
from balsamctl.schedulers import SCHEDULERS
from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory, SiteError
from balsamctl.site.platforms import PlatformError, parse_preset
from tests.support.fake_scheduler import FakeScheduler

KNOWN = "is not one of the known kinds: cobalt, local, lsf, pbs, slurm"


def test_settings_naming_no_scheduler_are_refused_with_the_file_the_field_and_the_kinds(tmp_path: Path) -> None:
    init_site(tmp_path / "s", "s", register=False).close()
    settings = tmp_path / "s" / "settings.yml"
    settings.write_text(yaml.safe_dump({**yaml.safe_load(settings.read_text()), "scheduler": "moab"}))
    with pytest.raises(SiteError) as refused:
        SiteDirectory.load(tmp_path / "s")
    assert str(refused.value) == f"{settings}: scheduler: 'moab' {KNOWN}"


def test_a_preset_naming_no_scheduler_is_refused(tmp_path: Path) -> None:
    for scheduler in ("moab", "[pbs]", "{}"):
        with pytest.raises(PlatformError, match=rf"^platform 'p': scheduler: .* {KNOWN}$"):
            parse_preset("p", f"description: d\nscheduler: {scheduler}\n", "#!/bin/bash\n")


def test_site_init_refuses_a_scheduler_that_is_none_of_the_kinds(tmp_path: Path) -> None:
    with pytest.raises(SiteError, match=f"^scheduler: 'moab' {KNOWN}$"):
        init_site(tmp_path / "s", "s", "moab")
    result = CliRunner().invoke(cli.app, ["site", "init", str(tmp_path / "s"), "--scheduler", "moab"])
    assert (result.exit_code, result.stderr.strip()) == (1, f"error: scheduler: 'moab' {KNOWN}")
    assert not (tmp_path / "s").exists()


def test_a_scheduler_added_to_the_registry_is_a_kind_sites_may_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(SCHEDULERS, FakeScheduler.kind, FakeScheduler)
    init_site(tmp_path / "s", "s", register=False).close()
    settings = tmp_path / "s" / "settings.yml"
    settings.write_text(yaml.safe_dump({**yaml.safe_load(settings.read_text()), "scheduler": "fake"}))
    site = SiteDirectory.load(tmp_path / "s")
    assert site.settings.scheduler == "fake"
    site.close()
    assert parse_preset("p", "description: d\nscheduler: fake\n", "#!/bin/bash\n").scheduler == "fake"

"""Fixtures of the fast-path and completion tests: two sites holding objects, on SQLite or PostgreSQL, and a way to
call ``balsamctl`` in-process through its entry point with or without the fast paths."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from balsamctl.cli import NO_FASTPATH, main, verbs
from balsamctl.schemas.manifest import parse_documents
from balsamctl.site.apply import apply_documents
from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory
from tests.support.databases import Databases

MANIFEST = """\
apiVersion: balsam/v1
kind: App
metadata: {name: hello, labels: {team: blue}}
spec:
  command: echo {{ who }}
  parameters: {who: {default: world}}
---
apiVersion: balsam/v1
kind: Job
metadata: {name: hello-1, labels: {exp: a, tier: gold}}
spec: {app: hello, workdir: hello/1, num_nodes: 2, ranks_per_node: 4, gpus_per_rank: 1}
---
apiVersion: balsam/v1
kind: Job
metadata: {name: hello-2, labels: {exp: b}, annotations: {note: second}}
spec: {app: hello, workdir: hello/2, parents: [hello-1]}
---
apiVersion: balsam/v1
kind: Job
metadata: {name: hello-3}
spec: {app: hello, workdir: "esc/\\e[31mred", parameters: {who: you}}
---
apiVersion: balsam/v1
kind: BatchJob
metadata: {name: alloc}
spec: {num_nodes: 1, wall_time_min: 10, queue: local, project: local}
"""
OTHER = """\
apiVersion: balsam/v1
kind: App
metadata: {name: other-app}
spec: {command: "true"}
---
apiVersion: balsam/v1
kind: Job
metadata: {name: hello-1, labels: {exp: a}}
spec: {app: other-app, workdir: o/1}
---
apiVersion: balsam/v1
kind: Job
metadata: {name: elsewhere, labels: {rack: r7}}
spec: {app: other-app, workdir: o/2}
"""
NOW = time.time() + 3600
"""The clock of every call: tables show ages, which must not tick between the two paths' calls."""


@dataclass
class Called:
    """What one call of ``balsamctl`` did: its exit code, output, and whether the fast path answered."""

    code: int
    out: str
    err: str
    fast: bool


@dataclass
class Sites:
    """The two test sites: ``test-site`` (the current directory) and ``other-site``, registered."""

    main: SiteDirectory
    other: SiteDirectory


def apply_text(site: SiteDirectory, text: str) -> None:
    """Apply a manifest to ``site``."""
    apply_documents(site, parse_documents(text, "test.yaml"))


def make_sites(main: SiteDirectory, tmp_path: Path, store_url: str | None, monkeypatch: pytest.MonkeyPatch) -> Sites:
    """``main`` with MANIFEST (made the current directory) and a new ``other-site`` with OTHER, in the store
    ``store_url`` (default: its own SQLite file)."""
    monkeypatch.delenv("BALSAM_SITE", raising=False)
    other = init_site(tmp_path / "other", "other-site")
    if store_url is not None:
        other.close()
        settings = other.path / "settings.yml"
        body = yaml.safe_load(settings.read_text())
        settings.write_text(yaml.safe_dump({**body, "store_url": store_url}, sort_keys=False))
        other = SiteDirectory.load(other.path)
    apply_text(main, MANIFEST)
    apply_text(other, OTHER)
    monkeypatch.chdir(main.path)
    return Sites(main, other)


@pytest.fixture
def sites(
    balsam_site: SiteDirectory, databases: Databases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Sites]:
    """The two sites, each backend's way: on PostgreSQL both in one store."""
    made = make_sites(
        balsam_site, tmp_path, "${BALSAMCTL_TEST_STORE_URL}" if databases.backend == "postgresql" else None, monkeypatch
    )
    yield made
    made.other.close()


@pytest.fixture
def sqlite_sites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sites]:
    """The two sites, each with its SQLite store (what the sqlite3 reader reads)."""
    made = make_sites(init_site(tmp_path / "site", "test-site"), tmp_path, None, monkeypatch)
    yield made
    made.main.close()
    made.other.close()


@pytest.fixture
def call(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Caller:
    """Calls ``balsamctl`` in-process through its entry point (see :class:`Caller`)."""
    return Caller(monkeypatch, capsys)


class Caller:
    """``balsamctl ARGS`` run by :func:`balsamctl.cli.main`, with the fast paths (``fast=True``) or with
    ``BALSAMCTL_NO_FASTPATH=1``; the clock frozen at :data:`NOW`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        self.monkeypatch, self.capsys = monkeypatch, capsys
        monkeypatch.setattr("sys.argv", ["balsamctl"])  # the program name typer's completion variable is named by

    def __call__(self, *args: str, fast: bool = True, env: dict[str, str] | None = None) -> Called:
        handed: list[list[str]] = []
        real_run = verbs.run

        def typer_run(typer_args: list[str]) -> None:
            handed.append(typer_args)
            real_run(typer_args)

        with self.monkeypatch.context() as patch:
            patch.setattr(verbs, "run", typer_run)
            patch.setattr("time.time", lambda: NOW)
            for key, value in (env or {}).items():
                patch.setenv(key, value)
            if fast:
                patch.delenv(NO_FASTPATH, raising=False)
            else:
                patch.setenv(NO_FASTPATH, "1")
            try:
                main(list(args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        gc.collect()  # the typer path's stores, opened per call, release their connections
        captured = self.capsys.readouterr()
        return Called(code, captured.out, captured.err, fast=not handed)


_LEAN = """\
import json, sys
from balsamctl.cli import main
try:
    main()
finally:
    print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})), file=sys.stderr)
"""
HEAVY = {"typer", "click", "sqlalchemy", "pydantic", "yaml", "rich"}


def heavy_modules(args: list[str], env: dict[str, str] | None = None) -> list[str]:
    """The heavy packages (typer, click, SQLAlchemy, pydantic, YAML, rich) a ``balsamctl ARGS`` process loads, in
    the current directory (it must succeed and print something)."""
    proc = subprocess.run(
        [sys.executable, "-c", _LEAN, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout
    return sorted(HEAVY.intersection(json.loads(proc.stderr.splitlines()[-1])))

"""What a manifest must not be able to do, and what a site must not give away.

* Escape the site's ``data/``: absolute and ``..`` workdirs are refused at apply; a symlink inside ``data/``
  pointing outside never becomes a Job's working directory (the real launcher records RUN_ERROR "could not
  start", the controller never runs a hook there) and nothing is written outside.
* Inject shell: parameter values holding ``$(...)``, backticks, ``;``, newlines, quotes reach the command
  verbatim (the rendered command run through bash prints them back), in the launcher and in shell hooks.
* Run template code: ``{{ 7*7 }}`` in a parameter value stays text; an App command template cannot reach Python
  internals (Jinja2's sandbox: a clear CommandError, nothing executed) and its own runtime errors are the Job's
  RUN_ERROR, never the launcher's crash; job templates render in the sandbox too.
* Reach another site's objects through a store both sites share (one SQLite file in both settings.yml).
* Find a site's files open to others (0700 directories, 0600 files, the store and its -wal/-shm included) or
  its database password in ``site ls``, errors, ``describe`` or the controller's log.
* Hostile files in the watched ``manifests/`` folder (aliases of aliases, an alias inside itself, nesting past
  what can be stored) never block the other files. Corrupt and truncated files are covered by
  tests/e2e/test_gitops.py (test_bad_files_do_not_block_good_ones, test_file_rewritten_in_place_keeps_its_objects).
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner, Result

from balsamctl import controller
from balsamctl.cli import app as cli
from balsamctl.controller.hooks import run_hook
from balsamctl.controller.jobs import JobReconciler
from balsamctl.controller.manifests import ManifestReconciler
from balsamctl.launcher.command import CommandError, render_command
from balsamctl.schemas import BatchJob, Job, JobState
from balsamctl.schemas.manifest import ManifestError
from balsamctl.schemas.objects import AppSpec
from balsamctl.site.apply import apply_documents
from balsamctl.site.create import init_site
from balsamctl.site.directory import LAYOUT, SiteDirectory, SiteError
from balsamctl.site.jobscript import render_job_script
from balsamctl.store import NotFound, Selector, redact, sqlite_url
from tests.support.site_ops import advance_to_runnable, app, apply_raws, batchjob, configure, job, stored_job

REPO = Path(__file__).resolve().parents[2]
BALSAMCTL = REPO / ".venv" / "bin" / "balsamctl"
SECRET = "s3cr3t-Pa55word-never-print"
UNREACHABLE = "postgresql+psycopg://u:{password}@127.0.0.1:1/db"
REDACTED = "postgresql+psycopg://u:***@127.0.0.1:1/db"
SCHEDULER_VARS = ("SLURM_", "PBS_", "LSB_", "COBALT_", "BALSAM_NODES", "BALSAM_NUM_NODES", "BALSAM_SITE")

HOSTILE_VALUES = [
    *["$(touch pwned)", "`touch pwned`", "; touch pwned", "a && touch pwned #", "| touch pwned", "$((6*7))"],
    *["${HOME}", "~", "*", "'", '"', "\\", 'it\'s "quoted"', "\\'", "line1\nline2; touch pwned", "\r", "\t"],
    *["{{ 7*7 }}", "{% for x in range(3) %}x{% endfor %}", "{{ ''.__class__.__mro__ }}", "{# c #}", "{{", "%}"],
    *["-n", "--", "", "  spaced  ", "é😀\u2028", "%s%n", "!!", "!$", "EOF\n<<EOF", "$'\\x41'"],
]
"""Parameter values that would run code, change the command or break quoting if anything evaluated them."""

runner = CliRunner()


def invoke(*args: str, stdin: str | None = None) -> Result:
    return runner.invoke(cli.app, list(args), input=stdin)


def everything(site: SiteDirectory) -> list[Any]:
    """Every object of ``site`` in full (metadata with resource_version, spec, status)."""
    return [
        o.manifest.model_dump(mode="json")
        for kind in ("App", "Job", "BatchJob")
        for o in site.store.list_objects(Selector(kind, (site.site_id,)))
    ]


def files_under(path: Path) -> list[Path]:
    return sorted(path.rglob("*"))


def launcher_env() -> dict[str, str]:
    """This environment without any batch scheduler's variables: the launcher emulates the site's local nodes."""
    return {k: v for k, v in os.environ.items() if not k.startswith(SCHEDULER_VARS)}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SiteDirectory]:
    """A local site whose launchers stop after 1 s without work, on one emulated node of 4 CPUs."""
    s = configure(
        init_site(tmp_path / "site", "sec-site"),
        {"launcher": {"idle_ttl_sec": 1.0, "poll_interval_sec": 0.05}, "local_nodes": {"count": 1, "cpus_per_node": 4}},
    )
    yield s
    s.close()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the site that nothing may write into."""
    path = tmp_path / "outside"
    path.mkdir()
    return path


# ---------------------------------------------------------------- escaping data/


@pytest.mark.parametrize(
    "workdir",
    ["/etc", "/", "/tmp/x", "..", "../log", "a/..", "a/../../b", "./../x", "x/../../../etc/passwd", "a\\..\\b", ""],
)
def test_absolute_and_dotdot_workdirs_are_refused_at_apply(site: SiteDirectory, workdir: str) -> None:
    before = everything(site)
    with pytest.raises(ManifestError) as info:
        apply_raws(site, app("a", "true"), job("j", "a", workdir))
    assert [(p.source, p.document, p.field) for p in info.value.problems] == [("sec.yaml", 2, "spec.workdir")]
    assert everything(site) == before


def test_workdir_words_a_shell_would_expand_stay_literal_inside_data(site: SiteDirectory) -> None:
    data = site.data_dir.resolve()
    for literal in ("~/x", "$HOME/x", "$(id)/x", "`id`", "*", "a b/'c'"):
        assert site.workdir(literal) == data / literal


def test_launcher_never_starts_a_job_in_a_symlink_out_of_data_nor_crashes_on_hostile_jobs(
    site: SiteDirectory, outside: Path
) -> None:
    """The real launcher (``python -m balsamctl.launcher``) on one allocation with hostile Jobs in it.

    Symlinked workdirs out of data/ (a directory on the path, or the workdir itself): FAILED at stage-in, which
    makes workdirs; one that became a symlink after its stage-in: RUN_ERROR "could not start". Nothing is
    written outside. Template code in the App: RUN_ERROR, never executed. A NUL in a parameter:
    RUN_ERROR. Hostile parameter values: passed verbatim. And the launcher itself ends normally.
    """
    (site.data_dir / "evil").symlink_to(outside)
    (site.data_dir / "runs").mkdir()
    (site.data_dir / "runs" / "leaf").symlink_to(outside)
    names = [f"v{i}" for i in range(len(HOSTILE_VALUES))]
    printf = "printf '%s\\n'" + "".join(f" {{{{ {n} }}}}" for n in names)
    marker = outside / "pwned-by-template"
    apply_raws(
        site,
        app("touch-app", "touch made-here && echo ran > ran.txt"),
        app("echo-app", printf, {n: {} for n in names}),
        app("one-app", "printf '%s' {{ v }}", {"v": {}}),
        app("div-app", "echo {{ 1 // 0 }}"),
        app("mro-app", f"echo {{{{ ''.__class__.__mro__[1].__subclasses__() }}}} > {marker}"),
        app("globals-app", f"{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}"),
        job("escape-dir", "touch-app", "evil/run"),
        job("escape-leaf", "touch-app", "runs/leaf"),
        job("escape-late", "touch-app", "late/run"),
        job("inject", "echo-app", "inject/$(touch pwned)", dict(zip(names, HOSTILE_VALUES, strict=True))),
        job("div", "div-app", "div"),
        job("mro", "mro-app", "mro"),
        job("globals", "globals-app", "globals"),
        batchjob("alloc"),
    )
    advance_to_runnable(site)
    assert {stored_job(site, n).status.state for n in ("escape-late", "inject", "div")} == {JobState.PREPROCESSED}
    for name in ("escape-dir", "escape-leaf"):
        refused = stored_job(site, name).status
        assert refused.state == JobState.FAILED and "outside the site's data/ directory" in (refused.message or "")
    assert files_under(outside) == [], "stage-in made something outside data/"
    shutil.rmtree(site.data_dir / "late")  # staged in, then swapped for a way out before the launcher runs
    (site.data_dir / "late").symlink_to(outside)

    proc = subprocess.run(
        [sys.executable, "-m", "balsamctl.launcher", "--site", str(site.path), "--batch-job", "alloc"],
        env=launcher_env(),
        cwd=site.path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    def outcome(name: str) -> tuple[JobState | None, str]:
        j = stored_job(site, name)
        return j.status.state, j.status.message or ""

    for name in ("escape-late",):
        state, message = outcome(name)
        assert state == JobState.RUN_ERROR and message.startswith("could not start:"), (name, state, message)
        assert "outside the site's data/ directory" in message, message
    assert files_under(outside) == [], "a Job wrote outside data/"
    assert not list(site.path.rglob("made-here")) and not list(site.path.rglob("ran.txt"))

    state, message = outcome("inject")
    assert state == JobState.JOB_FINISHED, message  # no postprocess hook: the launcher finishes it
    workdir = site.data_dir / "inject" / "$(touch pwned)"
    assert (workdir / "job.out").read_bytes().decode() == "".join(v + "\n" for v in HOSTILE_VALUES)
    assert not list(site.path.rglob("pwned")) and not (Path.cwd() / "pwned").exists()

    expected = {
        "div": "ZeroDivisionError",
        "mro": "unsafe",
        "globals": "unsafe",
    }
    for name, reason in expected.items():
        state, message = outcome(name)
        assert state == JobState.RUN_ERROR and message.startswith("could not start:"), (name, state, message)
        assert reason in message, (name, message)
    assert not marker.exists()


def test_stage_in_makes_each_workdir_and_its_empty_output_file_inside_data(site: SiteDirectory, outside: Path) -> None:
    """The controller's stage-in (READY -> STAGED_IN) makes the workdir and an empty ``job.out``, so that the
    launcher only opens it; a workdir through a symlink out of data/ FAILS there, nothing made outside."""
    (site.data_dir / "evil").symlink_to(outside)
    apply_raws(site, app("a", "true"), job("deep", "a", "runs/1/deep"), job("escape", "a", "evil/run"))
    advance_to_runnable(site)
    workdir = site.data_dir / "runs" / "1" / "deep"
    assert stored_job(site, "deep").status.state == JobState.PREPROCESSED
    assert (workdir / "job.out").read_bytes() == b""
    refused = stored_job(site, "escape").status
    assert refused.state == JobState.FAILED and "outside the site's data/ directory" in (refused.message or "")
    assert files_under(outside) == []


def test_logs_of_a_job_whose_workdir_leaves_data_is_an_error(site: SiteDirectory, outside: Path) -> None:
    (site.data_dir / "evil").symlink_to(outside)
    (outside / "job.out").write_text("a file outside data/ that logs must not print\n")
    apply_raws(site, app("a", "true"), job("escape", "a", "evil"))
    result = invoke("logs", "job", "escape", "--site", site.name)
    assert result.exit_code == 1
    assert "outside the site's data/ directory" in result.stderr
    assert "must not print" not in result.stdout + result.stderr


def _run_reconciler_until(site: SiteDirectory, done: Any, seconds: float) -> None:
    reconciler = JobReconciler(site, lambda: None, workers=2)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not done():
            reconciler()
            time.sleep(0.05)
    finally:
        reconciler.close()


def _hooked_escape(site: SiteDirectory, outside: Path) -> None:
    (site.data_dir / "evil").symlink_to(outside)
    apply_raws(
        site,
        app("hooked", "true", preprocess="touch hook-ran && echo 'balsam-state: PREPROCESSED'"),
        job("escape", "hooked", "evil/run"),
    )


def test_controller_never_runs_a_hook_in_a_symlink_out_of_data(site: SiteDirectory, outside: Path) -> None:
    _hooked_escape(site, outside)
    _run_reconciler_until(site, lambda: stored_job(site, "escape").status.state == JobState.FAILED, 1.5)
    assert files_under(outside) == [], "a hook wrote outside data/"
    assert not list(site.path.rglob("hook-ran"))
    assert stored_job(site, "escape").status.state in (JobState.STAGED_IN, JobState.FAILED)


def test_a_hooked_job_whose_workdir_leaves_data_fails_with_the_reason(site: SiteDirectory, outside: Path) -> None:
    _hooked_escape(site, outside)
    _run_reconciler_until(site, lambda: stored_job(site, "escape").status.state == JobState.FAILED, 2.0)
    failed = stored_job(site, "escape")
    assert failed.status.state == JobState.FAILED
    assert "outside" in (failed.status.message or "")


# ---------------------------------------------------------------- shell injection and template code


def _through_bash(values: list[str]) -> str:
    names = [f"v{i}" for i in range(len(values))]
    spec = AppSpec(
        command="printf '%s\\n'" + "".join(f" {{{{ {n} }}}}" for n in names), parameters={n: {} for n in names}
    )
    command = render_command(spec, dict(zip(names, values, strict=True)))
    proc = subprocess.run(["bash", "-c", command], capture_output=True, timeout=30, cwd="/")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode()  # not text=True: universal newlines would turn a "\r" into "\n"


def test_hostile_parameter_values_reach_the_command_verbatim() -> None:
    assert _through_bash(HOSTILE_VALUES) == "".join(v + "\n" for v in HOSTILE_VALUES)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40), min_size=1)
)
def test_any_parameter_value_reaches_the_command_verbatim(values: list[str]) -> None:
    assert _through_bash(values) == "".join(v + "\n" for v in values)


def test_parameter_values_are_never_rendered_as_templates() -> None:
    spec = AppSpec(command="echo {{ x }}", parameters={"x": {}})
    assert render_command(spec, {"x": "{{ 7*7 }}"}) == "echo '{{ 7*7 }}'"
    assert render_command(spec, {"x": "{% if true %}yes{% endif %}"}) == "echo '{% if true %}yes{% endif %}'"


def test_shell_hooks_get_parameter_values_verbatim(tmp_path: Path) -> None:
    names = [f"v{i}" for i in range(len(HOSTILE_VALUES))]
    hook = "; ".join(f'printf "%s" "$BALSAM_PARAM_{n.upper()}" > {n}.txt' for n in names)
    spec = AppSpec(command="true", parameters={n: {} for n in names}, preprocess=hook)
    j = Job.model_validate(
        {
            "metadata": {"name": "j"},
            "spec": {"app": "a", "workdir": "w", "parameters": dict(zip(names, HOSTILE_VALUES, strict=True))},
        }
    )
    workdir = tmp_path / "w"
    outcome = run_hook("preprocess", j, spec, workdir, tmp_path, tmp_path / "hooks" / "j-preprocess")
    assert outcome.state == JobState.PREPROCESSED, outcome.message
    assert [(workdir / f"{n}.txt").read_bytes().decode() for n in names] == HOSTILE_VALUES
    assert not list(tmp_path.rglob("pwned"))


SANDBOX_ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__base__.__subclasses__() }}",
    "{{ ().__class__.__bases__[0].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.system('touch {marker}') }}",
    "{{ joiner.__init__.__globals__['os'].popen('touch {marker}').read() }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].system('touch {marker}') }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{% set x = ''.__class__ %}{{ x }}",
    "{{ 'abc' | attr('__class__') }}",
    "{{ '{0.__class__}'.format(1) }}",
    "{{ range.__self__ }}",
    "{{ config }}",
    "{{ request.application.__globals__ }}",
    "{% import 'os' as os %}{{ os.system('touch {marker}') }}",
    "{% include '/etc/passwd' %}",
]


@pytest.mark.parametrize("template", SANDBOX_ESCAPES)
def test_an_app_command_template_cannot_reach_python_internals(template: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    spec = AppSpec(command="echo " + template.replace("{marker}", str(marker)))
    with pytest.raises(CommandError) as info:
        render_command(spec, {})
    assert str(info.value).startswith("App command template: ")
    reasons = ("is unsafe", "is undefined", "has no attribute", "no loader")
    assert any(w in str(info.value) for w in reasons), info.value
    assert not marker.exists()


@pytest.mark.parametrize(
    "template",
    [
        "{{ 1 // 0 }}",
        "{{ 'a' + 1 }}",
        "{% for x in 1 %}{% endfor %}",
        "{{ range(10**6) | list | length }}",
        "{{ x.y }}",
        "{% if %}",
        "{% endfor %}",
        "{{ (" * 300 + "1" + ")" * 300 + " }}",
    ],
)
def test_an_app_command_template_error_is_a_command_error(template: str) -> None:
    with pytest.raises(CommandError, match=r"^App command template: "):
        render_command(AppSpec(command=template), {})


def test_an_optional_parameter_without_default_renders_as_an_empty_word() -> None:
    """apply accepts the Job without it, so the launcher must be able to start it."""
    spec = AppSpec(command="printf '[%s]' {{ opt }}", parameters={"opt": {"required": False}})
    assert render_command(spec, {}) == "printf '[%s]' ''"


JOB_TEMPLATE_ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ batch_job.__class__ }}",
    "{{ launcher_command.__class__.__base__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.system('touch {marker}') }}",
]


@pytest.mark.parametrize("template", JOB_TEMPLATE_ESCAPES)
def test_job_templates_render_in_the_sandbox(site: SiteDirectory, template: str) -> None:
    marker = site.path / "pwned"
    (site.path / "job-template.sh").write_text("#!/bin/bash\n" + template.replace("{marker}", str(marker)) + "\n")
    bj = BatchJob.model_validate(batchjob("b"))
    with pytest.raises(SiteError, match=r"job-template\.sh: cannot render: "):
        render_job_script(site, bj)
    assert not marker.exists()


@pytest.mark.parametrize("template", ["{{ 1 // 0 }}", "{{ range(10**7) | list }}", "{% include 'x' %}"])
def test_a_job_template_runtime_error_is_a_site_error(site: SiteDirectory, template: str) -> None:
    (site.path / "job-template.sh").write_text(template)
    with pytest.raises(SiteError, match="cannot render"):
        render_job_script(site, BatchJob.model_validate(batchjob("b")))


# ---------------------------------------------------------------- two sites, one store


@pytest.fixture
def two_sites(tmp_path: Path) -> Iterator[tuple[SiteDirectory, SiteDirectory]]:
    """Sites A and B whose settings.yml name the same SQLite store; B holds an App, Jobs and a BatchJob."""
    shared = tmp_path / "shared"
    shared.mkdir()
    url = sqlite_url(shared / "store.db")
    a = configure(init_site(tmp_path / "a", "site-a"), {"store_url": url})
    b = configure(init_site(tmp_path / "b", "site-b"), {"store_url": url})
    apply_raws(
        b,
        app("b-app", "echo {{ x }}", {"x": {"default": "b"}}),
        job("shared-name", "b-app", "b/1"),
        job("only-b", "b-app", "b/2", parents=["shared-name"]),
        batchjob("b-bj"),
        source="shared.yaml",
    )
    assert a.site_id != b.site_id and a.store_url == b.store_url
    yield a, b
    a.close()
    b.close()


def test_a_manifest_for_site_b_is_refused_at_site_a(two_sites: tuple[SiteDirectory, SiteDirectory]) -> None:
    a, b = two_sites
    before = everything(a), everything(b)
    doc = job("sneaky", "b-app", "x")
    doc["metadata"]["site"] = "site-b"
    with pytest.raises(ManifestError) as info:
        apply_raws(a, app("b-app", "true"), doc)
    assert [(p.document, p.field) for p in info.value.problems] == [(2, "metadata.site")]
    assert "'site-b'" in str(info.value) and "'site-a'" in str(info.value)
    assert (everything(a), everything(b)) == before


def test_parents_and_apps_of_site_b_do_not_exist_at_site_a(two_sites: tuple[SiteDirectory, SiteDirectory]) -> None:
    a, b = two_sites
    before = everything(a), everything(b)
    with pytest.raises(ManifestError) as info:
        apply_raws(a, app("a-app", "true"), job("child", "a-app", "c", parents=["only-b"]))
    assert [(p.field, p.message) for p in info.value.problems] == [
        ("spec.parents[0]", "parent Job 'only-b' does not exist")
    ]
    with pytest.raises(ManifestError) as info:
        apply_raws(a, job("user", "b-app", "u"))
    assert [(p.field, p.message) for p in info.value.problems] == [
        ("spec.app", "App 'b-app' does not exist at this site")
    ]
    assert (everything(a), everything(b)) == before


def test_site_a_cannot_read_modify_delete_or_prune_site_b_objects(
    two_sites: tuple[SiteDirectory, SiteDirectory],
) -> None:
    a, b = two_sites
    before_b = everything(b)
    # the same names at A are A's own new objects
    assert apply_raws(a, app("b-app", "echo a-side"), job("shared-name", "b-app", "a/1")) == {
        "app/b-app": "created",
        "job/shared-name": "created",
    }
    # reads by name, listings and counts stay at A
    with pytest.raises(NotFound):
        a.store.get_object(a.site_id, "Job", "only-b")
    assert [o.name for o in a.store.list_objects(Selector("Job", (a.site_id,)))] == ["shared-name"]
    assert a.store.count_objects(Selector("BatchJob", (a.site_id,))) == 0
    assert [e for e in a.store.events((a.site_id,), limit=1000) if e["name"] in ("only-b", "b-bj")] == []
    # deletes and a prune of the same source file
    assert [(r.ref, r.action) for r in a.store.delete(a.site_id, [("Job", "only-b"), ("BatchJob", "b-bj")])] == [
        ("job/only-b", "not found"),
        ("batchjob/b-bj", "not found"),
    ]
    apply_documents(a, [], source="shared.yaml", prune=True)
    assert everything(b) == before_b
    # a launcher of A never claims B's runnable Jobs
    advance_to_runnable(b)
    assert stored_job(b, "shared-name").status.state == JobState.PREPROCESSED
    assert a.store.claim(a.site_id, owner="a-launcher", batch_job="x", filter_tags={}, limit=100) == []
    assert stored_job(b, "shared-name").status.batch_job is None


def test_the_cli_at_site_a_does_not_see_site_b_objects(two_sites: tuple[SiteDirectory, SiteDirectory]) -> None:
    _, b = two_sites
    for args in (["get", "jobs", "only-b"], ["describe", "job", "only-b"], ["delete", "job", "only-b"]):
        result = invoke(*args, "--site", "site-a")
        assert result.exit_code == 1, (args, result.stdout)
        assert 'jobs "only-b" not found' in result.stderr, (args, result.stderr)
    listing = invoke("get", "jobs", "--site", "site-a")
    assert "only-b" not in listing.stdout
    assert "only-b" in invoke("get", "jobs", "--site", "site-b").stdout
    stored_job(b, "only-b")


# ---------------------------------------------------------------- private files


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_private_store(db: Path) -> None:
    assert db.is_file() and mode(db) == 0o600, (db, oct(mode(db)))
    for suffix in ("-wal", "-shm"):
        side = db.with_name(db.name + suffix)
        if side.exists():
            assert mode(side) == 0o600, (side, oct(mode(side)))


@pytest.fixture(params=[0o022, 0o002, 0o000], ids=["umask-022", "umask-002", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The process umask for one test (a group-writable one is common on shared HPC systems)."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_init_site_makes_the_site_private_to_its_owner(
    tmp_path: Path, umask: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config" / "balsamctl" / "sites.yaml"
    monkeypatch.setenv("BALSAMCTL_CONFIG", str(config))
    site = init_site(tmp_path / "site", "private")
    try:
        assert site.store.count_objects(Selector("Job", (site.site_id,))) == 0  # the store is open: -wal, -shm
        assert mode(site.path) == 0o700
        for sub in LAYOUT:
            assert mode(site.path / sub) == 0o700, sub
        for name in ("settings.yml", "job-template.sh"):
            assert mode(site.path / name) == 0o600, name
        assert_private_store(site.state_dir / "store.db")
        assert (site.state_dir / "store.db-wal").exists()
        assert mode(config) == 0o600 and mode(config.parent) == 0o700
    finally:
        site.close()


def test_a_store_created_after_init_is_private(tmp_path: Path, umask: int) -> None:
    site = init_site(tmp_path / "site", "later")
    site.close()
    for db in site.state_dir.glob("store.db*"):  # a site directory cloned without its store
        db.unlink()
    again = SiteDirectory.load(site.path)
    try:
        apply_raws(again, app("a", "true"))
        assert_private_store(again.state_dir / "store.db")
    finally:
        again.close()
    # a SQLite store_url elsewhere (one store for several sites)
    (tmp_path / "elsewhere").mkdir()
    other = configure(again, {"store_url": sqlite_url(tmp_path / "elsewhere" / "shared.db")})
    try:
        apply_raws(other, app("a", "true"))
        assert_private_store(tmp_path / "elsewhere" / "shared.db")
    finally:
        other.close()


def test_site_init_through_the_cli_is_private(tmp_path: Path, umask: int) -> None:
    result = invoke("site", "init", str(tmp_path / "cli-site"), "--name", "cli-site")
    assert result.exit_code == 0, result.stderr
    path = tmp_path / "cli-site"
    assert [mode(path / s) for s in LAYOUT] == [0o700] * len(LAYOUT)
    assert mode(path / "settings.yml") == mode(path / "job-template.sh") == 0o600
    assert_private_store(path / ".balsam" / "store.db")


# ---------------------------------------------------------------- credentials


@pytest.fixture(params=["literal", "env-var"])
def pg_site(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SiteDirectory:
    """A registered site whose store is a PostgreSQL URL with a password (in settings.yml, or ``${VAR}``);
    nothing listens on port 1, so every use of the store fails."""
    monkeypatch.setenv("BALSAMCTL_TEST_SECRET", SECRET)
    password = SECRET if request.param == "literal" else "${BALSAMCTL_TEST_SECRET}"
    site = configure(init_site(tmp_path / "pg", "pg-site"), {"store_url": UNREACHABLE.format(password=password)})
    assert site.store_url == UNREACHABLE.format(password=SECRET)
    return site


def test_site_ls_never_prints_the_password(pg_site: SiteDirectory) -> None:
    proc = subprocess.run(
        [str(BALSAMCTL), "site", "ls"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    everything_printed = proc.stdout + proc.stderr
    assert SECRET not in everything_printed
    assert REDACTED in everything_printed, everything_printed
    assert "Traceback" not in everything_printed, everything_printed


def test_site_ls_lists_a_site_whose_store_is_unreachable_with_the_url_redacted(pg_site: SiteDirectory) -> None:
    result = invoke("site", "ls", "-o", "wide")
    assert result.exit_code == 3, result.stderr  # partial: the site is listed with what is known, and a warning
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("pg-site")]
    assert REDACTED in row and SECRET not in result.stdout + result.stderr
    assert "warning: site pg-site: cannot open its store" in result.stderr, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["get", "jobs"],
        ["get", "sites"],
        ["get", "events"],
        ["describe", "job", "x"],
        ["delete", "job", "x"],
        ["apply", "-f", "-"],
        ["logs", "job", "x"],
        ["queue", "ls"],
    ],
)
def test_every_verb_on_an_unreachable_store_names_it_without_the_password(
    pg_site: SiteDirectory, args: list[str]
) -> None:
    stdin = yaml.safe_dump(app("a", "true")) if "-f" in args else None
    result = invoke(*args, "--site", "pg-site", stdin=stdin)
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    printed = result.stdout + result.stderr + str(result.exception or "")
    assert SECRET not in printed
    assert f"cannot open its store {REDACTED}" in result.stderr, printed


def test_the_controller_log_never_holds_the_password(pg_site: SiteDirectory) -> None:
    log = pg_site.log_dir / "controller.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "balsamctl.controller", "run", "--site", str(pg_site.path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None and REDACTED not in log.read_text(errors="replace"):
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    text = log.read_text(errors="replace")
    assert REDACTED in text, text[-3000:]
    assert SECRET not in text


def test_redact_hides_the_password_of_a_url() -> None:
    assert redact(UNREACHABLE.format(password=SECRET)) == REDACTED
    assert redact(f"postgresql://user:{SECRET}@host:5432/db?sslmode=require") == (
        "postgresql://user:***@host:5432/db?sslmode=require"
    )
    assert redact("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


@pytest.mark.parametrize(
    "url", [f"postgresql+psycopg://u@127.0.0.1:1/db?password={SECRET}", f"postgresql+psycopg://:{SECRET}@h/db"]
)
def test_redact_hides_every_form_of_password(url: str) -> None:
    assert SECRET not in redact(url)


# ---------------------------------------------------------------- hostile files in the watched folder

BOMB = """\
apiVersion: balsam/v1
kind: Job
metadata: {name: bomb}
spec:
  app: steady
  workdir: bomb
  data:
    a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]
""" + "".join(f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10))
LOOP = "apiVersion: balsam/v1\nkind: Job\nmetadata: {name: loop}\nspec: {app: steady, workdir: l, data: &d {x: [*d]}}\n"
DEEP = (
    "apiVersion: balsam/v1\nkind: Job\nmetadata: {name: deep}\n"
    f"spec: {{app: steady, workdir: d, data: {{x: {'[' * 300}{']' * 300}}}}}\n"
)


@pytest.mark.timeout(120)
def test_alias_bombs_and_deep_nesting_in_the_watched_folder_do_not_block_it(site: SiteDirectory) -> None:
    """A billion-laughs file used to hang the controller; one nested past 255 levels made apply raise a
    ValueError the reconciler did not catch, so every later file waited forever."""
    files = {"a-bomb.yaml": BOMB, "b-loop.yaml": LOOP, "c-deep.yaml": DEEP}
    files["d-good.yaml"] = yaml.safe_dump_all([app("steady", "true"), job("good", "steady", "g")], sort_keys=False)
    past = time.time() - 60
    for name, body in files.items():
        path = site.manifests_dir / name
        path.write_text(body)
        os.utime(path, (past, past))
    started = time.monotonic()
    assert ManifestReconciler(site)() is True
    assert time.monotonic() - started < 30
    assert stored_job(site, "good").spec.workdir == "g"
    failed = {
        e["name"]: e["message"] for e in site.store.events((site.site_id,), limit=100) if e["reason"] == "ApplyFailed"
    }
    assert set(failed) == {f"manifests/{n}" for n in ("a-bomb.yaml", "b-loop.yaml", "c-deep.yaml")}, failed
    assert "document 1 (job/bomb): spec.data: the documents expand to more than" in failed["manifests/a-bomb.yaml"]
    assert "(job/loop): spec.data: nests more than 1000 levels deep" in failed["manifests/b-loop.yaml"]
    assert (
        "(job/deep): spec.data: Value error, must not nest more than 100 levels deep" in failed["manifests/c-deep.yaml"]
    )
    for name in ("bomb", "loop", "deep"):
        with pytest.raises(NotFound):
            site.store.get_object(site.site_id, "Job", name)


def test_a_file_the_store_cannot_take_does_not_block_the_folder_and_is_retried(
    site: SiteDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a bad file (those are ApplyFailed until they change) but a failure of the store or of the code: the
    later files are applied in the same pass, and the failed one at a later pass, without being touched."""
    past = time.time() - 60
    for name, doc in (("a-first.yaml", job("first", "steady", "f")), ("b-second.yaml", job("second", "steady", "s"))):
        path = site.manifests_dir / name
        path.write_text(yaml.safe_dump_all([app("steady", "true"), doc], sort_keys=False))
        os.utime(path, (past, past))
    outage = {"on": True}

    def flaky(target: SiteDirectory, docs: Any, **kw: Any) -> Any:
        if outage["on"] and kw.get("source") == "manifests/a-first.yaml":
            raise OperationalError("INSERT", {}, Exception("the store went away"))
        return apply_documents(target, docs, **kw)

    monkeypatch.setattr(controller.manifests, "apply_documents", flaky)
    reconcile = ManifestReconciler(site)
    assert reconcile() is True
    assert stored_job(site, "second").spec.workdir == "s"
    with pytest.raises(NotFound):
        site.store.get_object(site.site_id, "Job", "first")
    assert reconcile.retry_after() == controller.manifests.RETRY_SEC
    outage["on"] = False
    assert reconcile() is True
    assert stored_job(site, "first").spec.workdir == "f"


@pytest.mark.parametrize(
    ("where", "field"),
    [
        ("annotation", "metadata.annotations.note"),
        ("launch_params", "spec.launch_params.cpu_bind"),
        ("data", "spec.data.k[0]"),
    ],
)
def test_a_nul_character_is_refused_at_apply_naming_the_field(site: SiteDirectory, where: str, field: str) -> None:
    """PostgreSQL text, environment variables and command lines cannot carry a NUL: refused before anything."""
    doc = job("j", "a", "w")
    if where == "annotation":
        doc["metadata"]["annotations"] = {"note": "a\x00b"}
    elif where == "launch_params":
        doc["spec"]["launch_params"] = {"cpu_bind": "depth\x00"}
    else:
        doc["spec"]["data"] = {"k": ["\x00"]}
    before = everything(site)
    with pytest.raises(ManifestError) as info:
        apply_raws(site, app("a", "true"), doc)
    (problem,) = info.value.problems
    assert (problem.source, problem.document, problem.field) == ("sec.yaml", 2, field), problem
    assert "NUL" in problem.message
    assert everything(site) == before

"""The balsamctl command line, end to end through typer's CliRunner, on sites under tmp_path."""

from __future__ import annotations

import getpass
import json
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event
from sqlalchemy.engine import Engine
from typer.testing import CliRunner, Result

from balsamctl.cli import app as cli
from balsamctl.cli import listing, output
from balsamctl.schemas import App
from balsamctl.schemas.objects import NAME_PATTERN
from balsamctl.schemas.settings import SITE_NAME_PATTERN
from balsamctl.site.directory import SiteDirectory
from balsamctl.store import Selector, Store, StoredObject
from tests.support.databases import Databases

runner = CliRunner()

MANIFEST = """\
apiVersion: balsam/v1
kind: App
metadata: {name: hello}
spec:
  command: echo {{ who }}
  parameters:
    who: {default: world}
---
apiVersion: balsam/v1
kind: Job
metadata: {name: hello-1, labels: {exp: a}}
spec: {app: hello, workdir: hello/1}
---
apiVersion: balsam/v1
kind: Job
metadata: {name: hello-2, labels: {exp: b}}
spec: {app: hello, workdir: hello/2, parents: [hello-1]}
---
apiVersion: balsam/v1
kind: Job
metadata: {name: hello-3}
spec: {app: hello, workdir: hello/3, parameters: {who: you}}
---
apiVersion: balsam/v1
kind: BatchJob
metadata: {name: alloc}
spec: {num_nodes: 1, wall_time_min: 10, queue: local, project: local}
"""
JOBS = ["job/hello-1", "job/hello-2", "job/hello-3"]


def job(name: str, spec: str) -> str:
    """One Job document."""
    return f"apiVersion: balsam/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec: {spec}\n"


def run(*args: str, code: int = 0, stdin: str | None = None) -> Result:
    """Invoke balsamctl and check its exit code."""
    result = runner.invoke(cli.app, list(args), input=stdin)
    assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
    return result


def lines(result: Result) -> list[str]:
    """The stdout lines."""
    return result.stdout.splitlines()


def write(path: Path, text: str) -> str:
    """Write ``text`` to ``path``; its name."""
    path.write_text(text)
    return str(path)


@pytest.fixture(autouse=True)
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private site registry; no BALSAM_SITE from the caller's environment."""
    config = tmp_path / "sites.yaml"
    monkeypatch.setenv("BALSAMCTL_CONFIG", str(config))
    monkeypatch.delenv("BALSAM_SITE", raising=False)
    return config


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A site named ``alpha``, the current directory."""
    path = tmp_path / "alpha"
    run("site", "init", str(path))
    monkeypatch.chdir(path)
    return path


@pytest.fixture
def applied(site: Path, tmp_path: Path) -> str:
    """The site with MANIFEST applied; the manifest's file name."""
    name = write(tmp_path / "hello.yaml", MANIFEST)
    run("apply", "-f", name)
    return name


# ---------------------------------------------------------------- site


def test_site_init_ls_rm(tmp_path: Path) -> None:
    assert "site/alpha created" in run("site", "init", str(tmp_path / "alpha")).stdout
    listing = lines(run("site", "ls"))
    assert listing[0].split() == ["NAME", "ID", "HOST", "SCHEDULER", "ACTIVE", "JOBS", "BATCHJOBS", "UNSTARTED"]
    assert listing[1].split() == ["alpha", "1", socket.gethostname(), "local", "no", "0", "0", "0"]
    wide = lines(run("get", "sites", "-o", "wide"))[1].split()
    assert wide[-3:-1] == [str(tmp_path / "alpha"), getpass.getuser()] and wide[-1].startswith("sqlite:///")

    run("site", "init", str(tmp_path / "beta"), "--scheduler", "slurm")
    assert "#SBATCH" in (tmp_path / "beta" / "job-template.sh").read_text()
    assert "already a site" in run("site", "init", str(tmp_path / "beta"), code=1).stderr
    assert "invalid site name" in run("site", "init", str(tmp_path / "bad name!"), code=1).stderr

    assert "unregistered" in run("site", "rm", "alpha").stdout
    assert (tmp_path / "alpha" / "settings.yml").exists()
    assert [row.split()[0] for row in lines(run("site", "ls"))[1:]] == ["beta"]
    assert "error: no site named 'alpha'" in run("site", "rm", "alpha", code=1).stderr


def test_get_sites_shows_a_site_whose_store_cannot_count_its_unstarted_allocations(site: Path) -> None:
    with sqlite3.connect(site / ".balsam" / "store.db") as db:  # a broken store: it answers, but not this query
        db.execute("ALTER TABLE objects RENAME TO objects_gone")
    result = run("get", "sites", code=3)  # partial: what could be read is shown, the rest is a warning
    [row] = lines(result)[1:]
    assert row.split()[:4] == ["alpha", "1", socket.gethostname(), "local"] and row.split()[-1] == "<none>"
    assert "warning: site alpha: cannot count its allocations that never started a launcher" in result.stderr
    assert "no such table: objects" in result.stderr


def test_site_selection(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert "error: not inside a site directory" in run("get", "jobs", code=1).stderr
    assert "No resources found." in run("get", "jobs", "--site", "alpha").stderr
    monkeypatch.setenv("BALSAM_SITE", "alpha")
    assert "No resources found." in run("get", "jobs").stderr
    assert "error: no site named 'nope'" in run("get", "jobs", "--site", "nope", code=1).stderr


# ---------------------------------------------------------------- apply


def test_apply_created_unchanged_configured(site: Path, tmp_path: Path) -> None:
    name = write(tmp_path / "hello.yaml", MANIFEST)
    assert lines(run("apply", "-f", name)) == [
        "app/hello created",
        *(f"{ref} created" for ref in JOBS),
        "batchjob/alloc created",
    ]
    assert all(line.endswith(" unchanged") for line in lines(run("apply", "-f", name)))
    edited = write(tmp_path / "edited.yaml", MANIFEST.replace("workdir: hello/3", "workdir: hello/33"))
    out = lines(run("apply", "-f", edited))
    assert "job/hello-3 configured" in out
    assert [line for line in out if not line.endswith(" unchanged")] == ["job/hello-3 configured"]
    assert lines(run("apply", "-f", "-", stdin=job("from-stdin", "{app: hello, workdir: s}"))) == [
        "job/from-stdin created"
    ]


def test_apply_dry_run_changes_nothing(site: Path, tmp_path: Path) -> None:
    result = run("apply", "--dry-run", "-f", write(tmp_path / "hello.yaml", MANIFEST))
    assert "job/hello-1 created (dry run)" in lines(result)
    assert f"# batchjob/alloc: job script {site / 'qsubmit' / 'alloc.sh'}" in lines(result)
    assert "-m balsamctl.launcher" in result.stdout
    assert "# batchjob/alloc: submit command" in lines(result)
    assert run("get", "jobs", "-o", "name").stdout == ""
    assert not (site / "qsubmit" / "alloc.sh").exists()


BAD = [
    ("unknown field", job("bad", "{app: hello, workdir: w, bogus: 1}"), "document 1 (job/bad): spec.bogus"),
    ("bad workdir", job("bad", "{app: hello, workdir: ../x}"), "document 1 (job/bad): spec.workdir"),
    (
        "undeclared parameter",
        job("bad", "{app: hello, workdir: w, parameters: {zzz: 1}}"),
        "document 1 (job/bad): spec.parameters.zzz",
    ),
    ("missing parent", job("bad", "{app: hello, workdir: w, parents: [ghost]}"), "spec.parents[0]"),
    (
        "cycle",
        job("c-1", "{app: hello, workdir: a, parents: [c-2]}")
        + "---\n"
        + job("c-2", "{app: hello, workdir: b, parents: [c-1]}"),
        "spec.parents: dependency cycle",
    ),
    (
        "duplicate",
        job("dup", "{app: hello, workdir: a}") + "---\n" + job("dup", "{app: hello, workdir: b}"),
        "document 2 (job/dup): metadata.name",
    ),
    ("invalid yaml", "kind: Job\nmetadata: {name: [unclosed\n", "invalid YAML"),
]


@pytest.mark.parametrize(("text", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_manifest_applies_nothing(applied: str, tmp_path: Path, text: str, expected: str) -> None:
    before = run("get", "jobs", "-o", "name").stdout
    good = write(tmp_path / "good.yaml", job("fine", "{app: hello, workdir: fine}"))
    bad = write(tmp_path / "bad.yaml", text)
    for args in (["-f", bad], ["-f", good, "-f", bad]):
        result = run("apply", *args, code=1)
        assert result.stdout == ""
        assert all(line.startswith(f"error: {bad}: ") for line in result.stderr.splitlines())
        assert expected in result.stderr
        assert run("get", "jobs", "-o", "name").stdout == before


# ---------------------------------------------------------------- get


def test_get_tables(applied: str) -> None:
    table = lines(run("get", "jobs"))
    assert table[0].split() == ["NAME", "APP", "STATE", "NODES", "BATCHJOB", "ATTEMPTS", "AGE"]
    assert [r.split()[:6] for r in table[1:]] == [
        [n, "hello", "CREATED", "1", "<none>", "0"] for n in ("hello-1", "hello-2", "hello-3")
    ]
    assert table[0].index("APP") == table[1].index("hello ")
    wide = lines(run("get", "job", "-o", "wide"))
    assert wide[0].split()[7:] == ["RANKS", "GPUS", "RC", "WORKDIR", "LABELS"]
    assert wide[1].split()[-2:] == ["hello/1", "exp=a"]
    bj = lines(run("get", "bj"))
    assert bj[0].split() == [
        "NAME", "STATE", "SCHEDULER_ID", "NODES", "QUEUE", "PROJECT", "WALLTIME", "MODE", "AGE"
    ]  # fmt: skip
    assert bj[1].split()[:8] == ["alloc", "pending_submission", "<none>", "1", "local", "local", "10m", "mpi"]
    assert lines(run("get", "apps"))[1].split()[:2] == ["hello", "who"]


def test_get_name_json_yaml(applied: str, tmp_path: Path) -> None:
    assert lines(run("get", "jobs", "-o", "name")) == JOBS
    single = json.loads(run("get", "job", "hello-2", "-o", "json").stdout)
    assert (single["kind"], single["metadata"]["name"], single["spec"]["parents"]) == ("Job", "hello-2", ["hello-1"])
    assert single["status"]["state"] == "CREATED"
    listing = json.loads(run("get", "jobs", "-o", "json").stdout)
    assert (listing["apiVersion"], listing["kind"]) == ("balsam/v1", "List")
    assert [i["metadata"]["name"] for i in listing["items"]] == ["hello-1", "hello-2", "hello-3"]
    assert json.loads(run("get", "jobs", "-l", "exp=zzz", "-o", "json").stdout)["items"] == []

    dumped = "---\n".join(run("get", kind, "-o", "yaml").stdout for kind in ("apps", "jobs", "batchjobs"))
    assert dumped.count("---\n") == 4
    again = lines(run("apply", "-f", write(tmp_path / "dump.yaml", dumped)))
    assert len(again) == 5
    assert all(line.endswith(" unchanged") for line in again)


def test_get_selectors(applied: str) -> None:
    assert lines(run("get", "jobs", "-l", "exp=a", "-o", "name")) == ["job/hello-1"]
    assert lines(run("get", "jobs", "-l", "exp==b", "-o", "name")) == ["job/hello-2"]
    assert "No resources found." in run("get", "jobs", "-l", "exp=a,other=x").stderr
    assert lines(run("get", "jobs", "--state", "created", "-o", "name")) == JOBS
    assert run("get", "jobs", "--state", "RUNNING,READY", "-o", "name").stdout == ""
    assert lines(run("get", "bj", "--state", "pending_submission", "-o", "name")) == ["batchjob/alloc"]
    assert "unknown Job state 'bogus'" in run("get", "jobs", "--state", "bogus", code=1).stderr
    assert "invalid label selector" in run("get", "jobs", "-l", "exp", code=1).stderr


def test_get_limit_and_pages(applied: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cut = run("get", "jobs", "--limit", "2", "-o", "name")
    assert lines(cut) == JOBS[:2]
    assert cut.stderr == "(showing 2 of 3 jobs: 1 left out; use --limit 0 for all)\n"
    assert run("get", "jobs", "--limit", "3").stderr == ""
    monkeypatch.setattr(listing, "PAGE", 2)
    assert lines(run("get", "jobs", "--limit", "0", "-o", "name")) == JOBS
    table = lines(run("get", "jobs", "--limit", "0"))
    assert [r.split()[0] for r in table] == ["NAME", "hello-1", "hello-2", "hello-3"]


def test_get_not_found(applied: str) -> None:
    result = run("get", "jobs", "hello-1", "nope", "-o", "name", code=1)
    assert lines(result) == ["job/hello-1"]
    assert result.stderr == 'Error from server (NotFound): jobs "nope" not found\n'
    assert "error: unknown kind 'pods'" in run("get", "pods", code=1).stderr


def test_get_batchjobs_across_sites(applied: str, tmp_path: Path) -> None:
    run("site", "init", str(tmp_path / "beta"))
    run("apply", "--site", "beta", "-f", write(tmp_path / "bj.yaml", MANIFEST.split("---\n")[-1]))
    table = lines(run("get", "batchjobs", "--site=all"))
    assert table[0].split()[:2] == ["SITE", "NAME"]
    assert sorted(r.split()[:2] for r in table[1:]) == [["alpha", "alloc"], ["beta", "alloc"]]
    assert lines(run("get", "bj", "--site", "alpha,beta", "-o", "name")) == [
        "alpha/batchjob/alloc",
        "beta/batchjob/alloc",
    ]
    assert lines(run("queue", "ls", "--site", "alpha,beta"))[0].split()[:2] == ["SITE", "NAME"]
    assert lines(run("get", "events", "--site", "beta,alpha"))[0].split()[:2] == ["SITE", "TIME"]
    sites = lines(run("get", "sites", "--site", "all"))
    assert [r.split()[0] for r in sites] == ["NAME", "alpha", "beta"]
    assert "exactly one site" in run("apply", "--site", "all", "-f", applied, code=1).stderr


def test_site_all_names_the_site_even_when_one_is_registered(applied: str) -> None:
    """``--site=all`` shows the SITE column and ``SITE/``-prefixed names with one site registered too (as kubectl's
    ``-A`` always shows NAMESPACE); one site chosen by name or by the current directory shows neither."""
    assert lines(run("get", "jobs", "--site=all"))[0].split()[:2] == ["SITE", "NAME"]
    assert lines(run("get", "jobs", "--site=all", "-o", "name")) == [f"alpha/{ref}" for ref in JOBS]
    assert lines(run("get", "jobs", "hello-1", "--site=all", "-o", "name")) == ["alpha/job/hello-1"]
    listed = json.loads(run("get", "jobs", "hello-1", "--site=all", "-o", "json").stdout)
    assert listed["kind"] == "List" and [i["metadata"]["site"] for i in listed["items"]] == ["alpha"]
    assert lines(run("queue", "ls", "--site=all"))[0].split()[:2] == ["SITE", "NAME"]
    assert lines(run("get", "events", "--site=all"))[0].split()[:2] == ["SITE", "TIME"]
    assert lines(run("get", "jobs", "--site", "alpha"))[0].split()[:2] == ["NAME", "APP"]
    assert lines(run("get", "jobs", "-o", "name")) == JOBS
    assert lines(run("queue", "ls"))[0].split()[0] == "NAME"


def test_machine_output_returns_every_match_the_table_pages(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A script counting ``get jobs -o name`` lines gets every Job, read from the store a page at a time; the table
    stops at its default page and says on stderr how many it left out; ``--limit`` caps any output."""
    count = cli.DEFAULT_LIMIT + 1
    docs = [MANIFEST.split("---\n")[0]] + [job(f"j-{i}", f"{{app: hello, workdir: j/{i}}}") for i in range(count)]
    run("apply", "-f", "-", stdin="---\n".join(docs))
    monkeypatch.setattr(listing, "PAGE", 100)
    asked: list[int | None] = []
    list_objects = Store.list_objects

    def spy(store: Store, sel: Selector, **kw: Any) -> list[StoredObject]:
        asked.append(kw.get("limit"))
        return list_objects(store, sel, **kw)

    monkeypatch.setattr(Store, "list_objects", spy)
    names = run("get", "jobs", "-o", "name")
    assert lines(names) == [f"job/j-{i}" for i in range(count)] and names.stderr == ""
    assert len(asked) == 6 and all(n is not None and n <= 100 for n in asked)
    assert len(lines(run("get", "jobs", "--site=all", "-o", "name"))) == count
    assert len(json.loads(run("get", "jobs", "-o", "json").stdout)["items"]) == count
    assert len(list(yaml.safe_load_all(run("get", "jobs", "-o", "yaml").stdout))) == count
    table = run("get", "jobs")
    assert len(lines(table)) == 1 + cli.DEFAULT_LIMIT
    assert table.stderr == f"(showing {cli.DEFAULT_LIMIT} of {count} jobs: 1 left out; use --limit 0 for all)\n"
    assert len(lines(run("get", "jobs", "-o", "wide"))) == 1 + cli.DEFAULT_LIMIT
    assert len(lines(run("get", "jobs", "--limit", "0"))) == 1 + count
    capped = run("get", "jobs", "-o", "name", "--limit", "3")
    assert len(lines(capped)) == 3 and f"{count - 3} left out" in capped.stderr


def test_get_events_and_describe(applied: str) -> None:
    events = lines(run("get", "events"))
    assert events[0].split() == ["TIME", "OBJECT", "FROM", "TO", "REASON", "MESSAGE"]
    assert any(r.split()[1:5] == ["job/hello-2", "<none>", "CREATED", "Created"] for r in events[1:])
    assert [r.split()[1] for r in lines(run("get", "events", "hello-1", "--kind", "job"))[1:]] == ["job/hello-1"]
    assert len(lines(run("get", "events", "--limit", "2"))) == 3

    text = run("describe", "job", "hello-2").stdout
    for expected in ("Name:", "hello-2", "Labels:", "exp=b", "State:", "CREATED", "Spec:", "Status:", "Events:"):
        assert expected in text
    assert "  parents:\n  - hello-1\n" in text
    assert text.split("Events:\n")[1].split()[:5] == ["TIME", "FROM", "TO", "REASON", "MESSAGE"]
    assert "Created" in text.split("Events:\n")[1]
    missing = run("describe", "bj", "nope", code=1)
    assert missing.stderr == 'Error from server (NotFound): batchjobs "nope" not found\n'


# ---------------------------------------------------------------- delete, diff, logs, schema


def test_delete(applied: str, tmp_path: Path) -> None:
    assert lines(run("delete", "job", "hello-3")) == ["job/hello-3 deleted"]
    used = run("delete", "app", "hello", code=1)
    assert "error: app/hello is used by 2 Job(s)" in used.stderr
    assert lines(run("get", "apps", "-o", "name")) == ["app/hello"]
    assert run("delete", "job", "nope", code=1).stderr == 'Error from server (NotFound): jobs "nope" not found\n'
    assert lines(run("delete", "jobs", "-l", "exp=b")) == ["job/hello-2 deleted"]
    gone = run("delete", "-f", applied, code=1)
    assert lines(gone) == ["job/hello-1 deleted", "batchjob/alloc deletion requested", "app/hello deleted"]
    assert 'jobs "hello-2" not found' in gone.stderr
    assert run("get", "jobs", "-o", "name").stdout == ""
    assert run("delete", "jobs", code=2).exit_code == 2


@given(
    site=st.from_regex(SITE_NAME_PATTERN, fullmatch=True),
    name=st.from_regex(NAME_PATTERN, fullmatch=True),
    with_site=st.booleans(),
)
def test_o_name_reads_back(site: str, name: str, with_site: bool) -> None:
    """What ``-o name`` prints for an object, with or without its site, parses back to that site, kind and name."""
    app = App.model_validate(
        {"apiVersion": "balsam/v1", "kind": "App", "metadata": {"name": name}, "spec": {"command": "x"}}
    )
    printed = output.object_name(StoredObject(1, 1, site, app), with_site=with_site)
    assert output.parse_name(printed) == (site if with_site else None, "app", name)


@given(st.text(alphabet="ab/", max_size=8))
def test_o_name_parser_refuses_what_is_not_a_reference(text: str) -> None:
    """A reference is KIND/NAME or SITE/KIND/NAME with no empty part; anything else is refused, never mangled."""
    try:
        site, kind, name = output.parse_name(text)
    except ValueError as exc:
        assert text.count("/") not in (1, 2) or "" in text.split("/")
        assert f"invalid reference {text!r}" in str(exc)
    else:
        assert "/".join(p for p in (site, kind, name) if p is not None) == text


def test_delete_takes_what_get_o_name_prints(applied: str, tmp_path: Path) -> None:
    """``get -o name`` output fed back to ``delete``: each ``SITE/KIND/NAME`` at its own site, ``KIND/NAME`` at
    ``--site``'s; a bad reference or unknown site changes nothing."""
    run("site", "init", str(tmp_path / "beta"))
    run("apply", "--site", "beta", "-f", applied)
    refs = lines(run("get", "jobs", "--site=all", "-l", "exp=a", "-o", "name"))
    assert refs == ["alpha/job/hello-1", "beta/job/hello-1"]
    assert "no site named 'gamma'" in run("delete", *refs, "gamma/job/hello-3", code=1).stderr
    assert "invalid reference 'hello-3'" in run("delete", *refs, "hello-3", code=1).stderr
    assert "unknown kind 'pods'" in run("delete", *refs, "beta/pods/hello-3", code=1).stderr
    assert len(lines(run("get", "jobs", "--site=all", "-o", "name"))) == 6
    assert lines(run("delete", *refs)) == ["alpha/job/hello-1 deleted", "beta/job/hello-1 deleted"]
    assert lines(run("delete", "job/hello-3")) == ["job/hello-3 deleted"]
    assert lines(run("get", "jobs", "--site=all", "-o", "name")) == [
        "alpha/job/hello-2",
        "beta/job/hello-2",
        "beta/job/hello-3",
    ]
    assert run("delete", "job/hello-2", "-l", "exp=b", code=2).exit_code == 2


def test_diff(applied: str, tmp_path: Path) -> None:
    assert run("diff", "-f", applied).stdout == ""
    edited = write(tmp_path / "edited.yaml", MANIFEST.replace("labels: {exp: a}", "labels: {exp: z}"))
    changed = run("diff", "-f", edited, code=1).stdout
    assert "--- live/job/hello-1\n+++ file/job/hello-1\n" in changed
    assert "-    exp: a\n+    exp: z\n" in changed
    new = run("diff", "-f", write(tmp_path / "new.yaml", job("brand-new", "{app: hello, workdir: n}")), code=1)
    assert "+  name: brand-new\n" in new.stdout
    assert "error:" in run("diff", "-f", str(tmp_path / "missing.yaml"), code=2).stderr


def test_logs(applied: str, site: Path) -> None:
    assert "has no output yet" in run("logs", "job", "hello-1", code=1).stderr
    workdir = site / "data" / "hello" / "1"
    workdir.mkdir(parents=True)
    (workdir / "job.out").write_text("second\n")
    assert run("logs", "job", "hello-1").stdout == "second\n"
    (workdir / "job.out.1").write_text("first\n")
    assert lines(run("logs", "job", "hello-1")) == ["==> attempt 1 <==", "first", "==> attempt 2 <==", "second"]
    assert run("logs", "job", "hello-1", "--attempt", "1").stdout == "first\n"
    assert "attempts: 1, 2" in run("logs", "job", "hello-1", "--attempt", "3", code=1).stderr
    assert "only Jobs have logs" in run("logs", "bj", "alloc", code=1).stderr


def test_schema_and_version() -> None:
    schema = json.loads(run("schema", "Job").stdout)
    assert {"apiVersion", "kind", "metadata", "spec"} <= set(schema["properties"])
    assert "error: unknown kind 'pod'" in run("schema", "pod", code=1).stderr
    assert run("version").stdout.startswith("balsamctl ")


def test_controller_status(site: Path) -> None:
    table = lines(run("controller", "status"))
    assert table[0].split() == ["SITE", "STATUS", "PID", "LOG"]
    assert table[1].split()[:3] == ["alpha", "stopped", "<none>"]
    assert "was not running" in run("controller", "stop").stdout


# ---------------------------------------------------------------- output


@pytest.mark.parametrize(
    ("seconds", "text"), [(-3, "0s"), (5.9, "5s"), (180, "3m"), (7200, "2h"), (4 * 86400, "4d"), (800 * 86400, "2y")]
)
def test_short_duration(seconds: float, text: str) -> None:
    assert output.short_duration(seconds) == text


def test_table_pages_align_and_grow() -> None:
    t = output.Table(["NAME", "X"])
    assert t.render([]) == ""
    assert t.render([["a", "1"]]) == "NAME  X\na     1\n"
    assert t.render([["longer-name", "2"]]) == "longer-name  2\n"
    assert output.cell("two\nlines") == "two lines"
    assert output.cell(None) == output.cell("") == "<none>"


def test_json_writer_streams_valid_json(applied: str) -> None:
    site = SiteDirectory.load(Path.cwd())
    objs = site.store.list_objects(Selector("Job", (site.site_id,)))
    writer = output.JsonWriter(single=False)
    text = writer.page(objs[:1]) + writer.page(objs[1:]) + writer.end()
    expected = {"apiVersion": "balsam/v1", "kind": "List", "items": [output.to_dict(o) for o in objs]}
    assert text == json.dumps(expected, indent=2) + "\n"


# ---------------------------------------------------------------- queue (the reference text's flags)


def test_queue_submit_creates_the_batchjob_an_apply_would(site: Path) -> None:
    settings = site / "settings.yml"
    settings.write_text(
        settings.read_text().replace("optional_batch_job_params: {}", "optional_batch_job_params: {mig_count: '0'}")
    )
    out = run(
        "queue",
        "submit",
        "-q",
        "local",
        "-A",
        "local",
        "-n",
        "1",
        "-t",
        "7",
        "-j",
        "serial",
        "--name",
        "alloc-1",
        "--tag",
        "system=H2O",
        "-p",
        "serial:1:role=worker",
        "-x",
        "mig_count=3",
    ).stdout
    printed = yaml.safe_load(out)
    assert printed["kind"] == "BatchJob" and printed["metadata"]["name"] == "alloc-1"
    spec = printed["spec"]
    assert (spec["num_nodes"], spec["wall_time_min"], spec["job_mode"]) == (1, 7, "serial")
    assert spec["filter_tags"] == {"system": "H2O"} and spec["optional_params"] == {"mig_count": "3"}
    assert spec["partitions"] == [{"job_mode": "serial", "num_nodes": 1, "filter_tags": {"role": "worker"}}]
    assert printed["status"]["state"] == "pending_submission"
    # the same object through apply is unchanged
    assert run("apply", "-f", "-", stdin=out).stdout.strip() == "batchjob/alloc-1 unchanged"
    listing = lines(run("queue", "ls"))
    assert listing[0].split()[:4] == ["NAME", "STATE", "SCHEDULER_ID", "NODES"]
    assert listing[1].split()[:2] == ["alloc-1", "pending_submission"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-q", "nosuch", "-A", "local", "-n", "1", "-t", "5"], "spec.queue: queue 'nosuch' is not in"),
        (["-q", "local", "-A", "other", "-n", "1", "-t", "5"], "spec.project"),
        (["-q", "local", "-A", "local", "-n", "9", "-t", "5"], "spec.num_nodes: 9 exceeds max_nodes"),
        (["-q", "local", "-A", "local", "-n", "1", "-t", "5", "-x", "undeclared=1"], "spec.optional_params.undeclared"),
        (["-q", "local", "-A", "local", "-n", "1", "-t", "5", "-p", "mpi:2"], "partitions"),
        (["-q", "local", "-A", "local", "-n", "1", "-t", "5", "-p", "mpi"], "expected MODE:NODES"),
        (["-q", "local", "-A", "local", "-n", "1", "-t", "5", "--tag", "novalue"], "expected KEY=VALUE"),
    ],
)
def test_queue_submit_refuses_what_breaks_the_site_limits(site: Path, args: list[str], message: str) -> None:
    result = run("queue", "submit", *args, code=1)
    assert message in result.stderr
    assert run("get", "batchjobs", "-o", "name").stdout == ""


def test_get_across_sites_sharing_one_store_is_one_query(databases: Databases, tmp_path: Path) -> None:
    """Several sites over one store (PostgreSQL, or one SQLite file): ``get jobs --site=all`` and ``get events
    --site=all`` read it with one query each, and each row names its own site."""
    with databases.fresh(tmp_path) as url:
        for name in ("s1", "s2", "s3"):
            run("site", "init", str(tmp_path / name))
            settings = tmp_path / name / "settings.yml"
            settings.write_text(yaml.safe_dump({**yaml.safe_load(settings.read_text()), "store_url": url}))
            run("apply", "--site", name, "-f", "-", stdin=MANIFEST)
        statements: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(statement)

        event.listen(Engine, "before_cursor_execute", record)
        try:
            table = lines(run("get", "jobs", "--site=all"))
            events = lines(run("get", "events", "--site=all", "--limit", "100"))
        finally:
            event.remove(Engine, "before_cursor_execute", record)
    assert sorted(tuple(r.split()[:2]) for r in table[1:]) == sorted(
        (site, f"hello-{i}") for site in ("s1", "s2", "s3") for i in (1, 2, 3)
    )
    assert {r.split()[0] for r in events[1:]} == {"s1", "s2", "s3"}
    assert len([s for s in statements if "FROM objects" in s]) == 1, statements
    assert len([s for s in statements if "FROM events" in s]) == 1, statements

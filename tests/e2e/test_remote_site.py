"""End to end across two hosts sharing one PostgreSQL store and nothing else.

Host A holds the site (``site init --store URL``), its controller, the local scheduler's allocations and their
launchers. Host B is another machine: its processes cannot see host A's directory (a tmpfs hides it) nor host A's
processes (a PID namespace), and have their own hostname, HOME and registry. Host B reaches the site by its store
alone (``site add``) and drives it with every verb; the test process only prepares the hosts, polls the store and
cleans up.

One store (a fresh PostgreSQL database) and one controller serve the module; its Jobs carry labels that only
their own BatchJob selects.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import yaml

from balsamctl.schemas import Job
from balsamctl.store import NotFound, Store
from balsamctl.store.sites import SiteRecord
from tests.support.databases import Databases, pg_server_url
from tests.support.e2e import DEADLINE_SEC, app_doc, batchjob_doc, job_doc, manifest
from tests.support.hosts import Host, HostedSite

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("remote-site")]

SITE = "far"
HOST_B = "balsam-host-b"
SETTINGS = {
    "sync_period_sec": 1,
    "launcher": {"idle_ttl_sec": 2},
    "allowed_queues": {"local": {"max_nodes": 1, "max_walltime": 30}},
    "allowed_projects": ["local", "proj-a"],
    "optional_batch_job_params": {"tier": "bronze"},
}
TEMPLATE_MARK = "# host A's own line: only the template its controller published has it"
LONG_OUTPUT = "".join(f"{i}\n" for i in range(1, 401))  # `seq 1 400`: 1492 bytes, more than the stored tail
TAIL_BYTES = 512
MAIN = {"run": "main"}
MAIN_JOBS = ("say-1", "long-1", "rerun-1", "gone-1")


def main_manifest(word: str = "hello") -> str:
    """The Apps, the Jobs of :data:`MAIN_JOBS` and their BatchJob."""
    return manifest(
        app_doc("say", "echo remote-marker-{{ word }}", parameters={"word": {"required": True}}),
        app_doc("count", "seq 1 400"),
        job_doc("say-1", "say", labels=MAIN, parameters={"word": word}),
        job_doc("long-1", "count", labels=MAIN),
        job_doc("rerun-1", "say", labels={**MAIN, "step": "rerun"}, parameters={"word": "again"}),
        job_doc("gone-1", "say", labels=MAIN, parameters={"word": "gone"}),
        batchjob_doc("main-bj", filter_tags=MAIN),
    )


# ---------------------------------------------------------------- the store, the hosts, the site


@pytest.fixture(scope="module")
def shared_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh PostgreSQL database, the only thing the hosts share."""
    dbs = Databases("postgresql", pg_server_url())
    with dbs.fresh(tmp_path_factory.mktemp("db")) as url:
        yield url
    dbs.close()


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Host, Host]:
    """Host A (the site's, its own hostname kept for MPI) and host B (another name, its own process ids); each
    hides the other's directory."""
    root_a, root_b = tmp_path_factory.mktemp("host-a"), tmp_path_factory.mktemp("host-b")
    host_a = Host("host-a", root_a, (root_b,)).make()
    host_b = Host("host-b", root_b, (root_a,), hostname=HOST_B, own_pids=True).make()
    return host_a, host_b


@pytest.fixture(scope="module")
def store(shared_url: str) -> Iterator[Store]:
    """The test process's own handle on the store, to poll it."""
    s = Store(shared_url)
    yield s
    s.close()


@pytest.fixture(scope="module")
def site(hosts: tuple[Host, Host], shared_url: str, store: Store) -> Iterator[HostedSite]:
    """The site on host A (``site init --store``, :data:`SETTINGS`, a job template with :data:`TEMPLATE_MARK`), its
    controller running there and its settings published."""
    host_a = hosts[0]
    s = HostedSite(host_a, SITE)
    out = host_a.balsamctl("site", "init", str(s.path), "--name", SITE, "--store", shared_url).stdout
    assert out == f"site/{SITE} created at {s.path}\n", out
    s.update_settings(SETTINGS)
    template = s.path / "job-template.sh"
    shebang, _, rest = template.read_text().partition("\n")
    template.write_text(f"{shebang}\n{TEMPLATE_MARK}\n{rest}")
    try:
        s.start_controller()
        s.wait_for("the controller to publish the site", lambda: store.site_record(SITE).settings is not None)
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def other(hosts: tuple[Host, Host], site: HostedSite, shared_url: str) -> Host:
    """Host B with the site added by its store."""
    host_b = hosts[1]
    out = host_b.balsamctl("site", "add", SITE, "--store", shared_url).stdout
    assert out.startswith(f"site/{SITE} added: id ") and out.endswith(f", at {socket.gethostname()}:{site.path}\n")
    return host_b


@pytest.fixture(scope="module")
def site_id(store: Store, site: HostedSite) -> int:
    """The site's id in the store."""
    return store.site_record(SITE).id


def job_status(store: Store, site_id: int, name: str) -> dict[str, Any]:
    """A Job's status as the store holds it."""
    return store.get_object(site_id, "Job", name).manifest.status.model_dump(mode="json")


def wait_job(site: HostedSite, store: Store, site_id: int, name: str, **wanted: Any) -> dict[str, Any]:
    """Poll the store until Job ``name``'s status has the ``wanted`` fields; its status."""

    def probe() -> dict[str, Any] | None:
        status = job_status(store, site_id, name)
        return status if all(status.get(k) == v for k, v in wanted.items()) else None

    return site.wait_for(f"job/{name} with {wanted}", probe, timeout=2 * DEADLINE_SEC)


@pytest.fixture(scope="module")
def ran(other: Host, site: HostedSite, store: Store, site_id: int) -> list[str]:
    """:func:`main_manifest` applied from host B and run at the site to the end; ``apply``'s output lines."""
    lines = other.balsamctl("apply", "-f", "-", "--site", SITE, stdin=main_manifest()).stdout.splitlines()
    for name in MAIN_JOBS:
        wait_job(site, store, site_id, name, state="JOB_FINISHED")
    return lines


def unbeating(record: SiteRecord) -> SiteRecord:
    """A site record without its heartbeat (which its controller moves on)."""
    return replace(record, heartbeat_at=None)


def cli_json(host: Host, *args: str) -> Any:
    """``balsamctl ARGS -o json`` on ``host``, parsed."""
    return json.loads(host.balsamctl(*args, "-o", "json").stdout)


def table(text: str) -> list[dict[str, str]]:
    """The rows of a table whose cells have no spaces, by column."""
    header, *rows = text.splitlines()
    return [dict(zip(header.split(), row.split(), strict=True)) for row in rows]


# ---------------------------------------------------------------- the hosts really are apart


def test_the_other_host_sees_neither_the_site_nor_its_processes(hosts: tuple[Host, Host], site: HostedSite) -> None:
    host_a, host_b = hosts
    assert (site.path / "settings.yml").is_file() and site.controller_pid is not None
    probe = 'test -e "$1/settings.yml" && echo site; ls -A "$2"; test -e "/proc/$3" && echo controller; hostname'
    seen = host_b.run("sh", "-c", probe, "sh", str(site.path), str(host_a.root), str(site.controller_pid))
    assert seen.stdout == f"{HOST_B}\n", seen
    assert socket.gethostname() != HOST_B
    env = host_b.run("env").stdout
    assert str(host_a.root) not in env and "BALSAM_SITE" not in env, env
    assert host_a.run("ls", "-A", str(host_b.root)).stdout == ""


# ---------------------------------------------------------------- every verb from the other host


def test_get_sites_shows_the_site_active_with_its_host_and_scheduler(
    other: Host, site: HostedSite, shared_url: str
) -> None:
    (row,) = table(other.balsamctl("get", "sites", "--site", "active", "-o", "wide").stdout)
    expected = {"NAME": SITE, "HOST": socket.gethostname(), "SCHEDULER": "local", "ACTIVE": "yes"}
    assert {k: row[k] for k in expected} == expected, row
    assert (row["PATH"], row["OWNER"], row["STORE"]) == (str(site.path), "postgres", shared_url), row
    uuid = (site.path / ".balsam" / "uuid").read_text().strip()
    (entry,) = yaml.safe_load(other.config.read_text())["sites"]
    assert entry == {"name": SITE, "id": int(row["ID"]), "uuid": uuid, "store": shared_url}, entry


def test_jobs_applied_from_the_other_host_run_at_the_site(ran: list[str], other: Host, site_id: int) -> None:
    assert ran == [
        "app/say created",
        "app/count created",
        *(f"job/{n} created" for n in MAIN_JOBS),
        "batchjob/main-bj created",
    ]
    listed = cli_json(other, "get", "jobs", "-l", "run=main", "--site", str(site_id))["items"]
    assert {j["metadata"]["name"]: j["status"]["state"] for j in listed} == dict.fromkeys(MAIN_JOBS, "JOB_FINISHED")
    assert all(j["metadata"]["site"] == SITE for j in listed), listed
    described = other.balsamctl("describe", "job", "say-1", "--site", SITE).stdout
    for line in ("Name:             say-1", f"Site:             {SITE}", "State:            JOB_FINISHED"):
        assert line in described, described
    assert "word: hello" in described and "Finished" in described, described


def test_diff_from_the_other_host_exits_0_unchanged_and_1_changed(ran: list[str], other: Host) -> None:
    same = other.balsamctl("diff", "-f", "-", "--site", SITE, stdin=main_manifest(), check=False)
    assert (same.returncode, same.stdout, same.stderr) == (0, "", ""), same
    changed = other.balsamctl("diff", "-f", "-", "--site", SITE, stdin=main_manifest("changed"), check=False)
    assert changed.returncode == 1, changed
    assert "--- live/job/say-1" in changed.stdout and "-    word: hello\n+    word: changed" in changed.stdout


def test_logs_print_the_stored_tail_here_and_the_whole_file_where_the_directory_is_readable(
    ran: list[str], hosts: tuple[Host, Host], other: Host, site: HostedSite, shared_url: str
) -> None:
    where = f"site {SITE} lives on {socket.gethostname()}:{site.path}"
    say = other.balsamctl("logs", "job", "say-1", "--site", SITE)
    assert say.stdout == "remote-marker-hello\n", say
    assert where in say.stderr and "as kept in the store" in say.stderr, say.stderr
    tail = other.balsamctl("logs", "job", "long-1", "--site", SITE).stdout
    assert LONG_OUTPUT.endswith(tail) and len(tail.encode()) == TAIL_BYTES, tail

    # on the site's own host, a registry that knows the site by its store alone reads the whole file
    host_a = hosts[0]
    by_store = {"BALSAMCTL_CONFIG": str(host_a.root / "by-store.yaml")}
    host_a.balsamctl("site", "add", SITE, "--store", shared_url, env=by_store)
    whole = host_a.balsamctl("logs", "job", "long-1", "--site", SITE, env=by_store)
    assert (whole.stdout, whole.stderr) == (LONG_OUTPUT, ""), whole


def test_rerun_from_the_other_host_runs_under_a_batchjob_queue_submit_made(
    ran: list[str], other: Host, site: HostedSite, store: Store, site_id: int
) -> None:
    def ended() -> bool:
        return store.get_object(site_id, "BatchJob", "main-bj").manifest.status.state == "finished"

    site.wait_for("main-bj to end (its launcher would take the rerun)", ended)
    out = other.balsamctl("rerun", "jobs", "rerun-1", "--state", "JOB_FINISHED", "--site", SITE).stdout
    assert out == "1 job(s) reset to READY\n", out
    submit = ["queue", "submit", "-q", "local", "-A", "local", "-n", "1", "-t", "5", "--tag", "step=rerun"]
    made = yaml.safe_load(other.balsamctl(*submit, "--name", "again-bj", "--site", SITE).stdout)
    assert (made["metadata"]["site"], made["spec"]["filter_tags"]) == (SITE, {"step": "rerun"}), made
    listed = {r["NAME"]: r for r in table(other.balsamctl("queue", "ls", "--history", "--site", SITE).stdout)}
    assert (listed["again-bj"]["NODES"], listed["again-bj"]["QUEUE"]) == ("1", "local"), listed
    assert listed["main-bj"]["STATE"] == "finished", listed
    status = wait_job(site, store, site_id, "rerun-1", state="JOB_FINISHED", batch_job="again-bj")
    assert status["attempts"] == 2, status


def test_delete_from_the_other_host(ran: list[str], other: Host, store: Store, site_id: int) -> None:
    assert other.balsamctl("delete", "job", "gone-1", "--site", SITE).stdout == "job/gone-1 deleted\n"
    with pytest.raises(NotFound):
        store.get_object(site_id, "Job", "gone-1")


def test_dry_run_of_a_batchjob_renders_the_template_the_site_published(
    other: Host, site: HostedSite, store: Store, site_id: int
) -> None:
    doc = {
        "apiVersion": "balsam/v1",
        "kind": "BatchJob",
        "metadata": {"name": "dry-1"},
        "spec": {"num_nodes": 1, "wall_time_min": 20, "queue": "local", "project": "proj-a"},
    }
    out = other.balsamctl("apply", "--dry-run", "-f", "-", "--site", SITE, stdin=yaml.safe_dump(doc)).stdout
    assert out.startswith("batchjob/dry-1 created (dry run)\n"), out
    assert f"# batchjob/dry-1: job script {site.path}/qsubmit/dry-1.sh\n#!/bin/bash\n{TEMPLATE_MARK}\n" in out, out
    assert "export BALSAM_OPT_TIER=bronze\n" in out and f"--site {site.path} --batch-job dry-1\n" in out, out
    with pytest.raises(NotFound):
        store.get_object(site_id, "BatchJob", "dry-1")


def test_apply_from_the_other_host_is_held_to_the_published_settings(
    ran: list[str], other: Host, store: Store, site_id: int
) -> None:
    docs = manifest(
        job_doc("refused-1", "say", parameters={"word": "no"}),  # valid, yet not created: all or nothing
        batchjob_doc("refused-q").replace("queue: local", "queue: debug"),
        batchjob_doc("refused-w", wall_time_min=45),  # within the preset's 60 min, over the published 30
    )
    path = other.root / "refused.yaml"
    path.write_text(docs)
    proc = other.balsamctl("apply", "-f", str(path), "--site", SITE, check=False)
    assert (proc.returncode, proc.stdout) == (1, ""), proc
    assert proc.stderr.splitlines() == [
        f"error: {path}: document 2 (batchjob/refused-q): spec.queue: queue 'debug' is not in the site's "
        "allowed_queues (local)",
        f"error: {path}: document 3 (batchjob/refused-w): spec.wall_time_min: 45 exceeds max_walltime 30 of queue "
        "'local'",
    ], proc.stderr
    for kind, name in (("Job", "refused-1"), ("BatchJob", "refused-q"), ("BatchJob", "refused-w")):
        with pytest.raises(NotFound):
            store.get_object(site_id, kind, name)


def test_python_api_on_the_other_host(ran: list[str], other: Host, store: Store, site_id: int) -> None:
    script = f"""
import json
from balsam.api import BatchJob, Job
job = Job.objects.create(site_name={SITE!r}, app_id="say", workdir="say/api", parameters={{"word": "api"}})
names = sorted(b.name for b in BatchJob.objects.filter(site_id={site_id}))
print(json.dumps({{"job": job.name, "site_id": job.site_id, "batchjobs": names}}))
"""
    proc = other.run("python", "-c", script)
    assert proc.returncode == 0, proc
    out = json.loads(proc.stdout)
    assert out["site_id"] == site_id and "main-bj" in out["batchjobs"], out
    stored = store.get_object(site_id, "Job", out["job"]).manifest
    assert isinstance(stored, Job)
    assert (stored.spec.app, stored.spec.workdir) == ("say", "say/api"), stored


# ---------------------------------------------------------------- bad input changes nothing


def closed_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_site_add_of_a_bad_store_or_name_is_refused_and_changes_nothing(
    other: Host, shared_url: str, store: Store
) -> None:
    registry = other.config.read_bytes()
    sites = [unbeating(r) for r in store.site_records()]
    base = shared_url.rpartition("/")[0]
    cases = {
        # the test server trusts 127.0.0.1 (no password is ever asked), so a database that does not exist stands
        # for a wrong password: the server refuses the connection
        f"{base}/balsam_test_no_such_db": 'database "balsam_test_no_such_db" does not exist',
        f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{closed_port()}/x": "Connection refused",
    }
    for url, said in cases.items():
        proc = other.balsamctl("site", "add", "newcomer", "--store", url, check=False)
        assert proc.returncode == 1 and proc.stdout == "", proc
        (line,) = proc.stderr.splitlines()
        assert line.startswith("error: site newcomer: cannot open its store ") and said in line, line
        assert "s3cret" not in line, line
    unknown = other.balsamctl("site", "add", "newcomer", "--store", shared_url, check=False)
    assert (unknown.returncode, unknown.stdout) == (1, ""), unknown
    assert (
        unknown.stderr
        == f"error: site newcomer: the store {shared_url} has no site of that name (or this role may not see it)\n"
    )
    assert other.config.read_bytes() == registry
    assert [unbeating(r) for r in store.site_records()] == sites


def test_a_second_site_of_the_same_name_is_refused_naming_the_first(
    other: Host, site: HostedSite, shared_url: str, store: Store
) -> None:
    before = store.site_record(SITE)
    fresh = {"BALSAMCTL_CONFIG": str(other.root / "fresh.yaml")}
    target = other.root / SITE
    proc = other.balsamctl("site", "init", str(target), "--name", SITE, "--store", shared_url, env=fresh, check=False)
    assert (proc.returncode, proc.stdout) == (1, ""), proc
    assert proc.stderr == (
        f"error: a site named '{SITE}' already exists in the store {shared_url} of postgres, at "
        f"{socket.gethostname()}:{site.path} (site id {before.id}): choose another name\n"
    ), proc.stderr
    assert not target.exists() and not (other.root / "fresh.yaml").exists()
    assert unbeating(store.site_record(SITE)) == unbeating(before)

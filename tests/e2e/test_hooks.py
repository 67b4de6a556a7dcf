"""End to end lifecycle hooks: shell and Python hooks run by the real controller around real runs.

The controller runs for the whole module; each test has its own Apps, Jobs and BatchJob filter tags.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
import yaml

from balsamctl.controller.hooks import HookOutcome, forget, run_hook
from balsamctl.controller.jobs import JobReconciler
from balsamctl.schemas import App, Job, JobState
from balsamctl.schemas.manifest import parse_documents
from balsamctl.site.apply import apply_documents
from balsamctl.site.create import init_site
from tests.support.e2e import E2ESite, Event, app_doc, batchjob_doc, job_doc, manifest, parse_time

pytestmark = pytest.mark.slow

SETTINGS = {"sync_period_sec": 1, "launcher": {"idle_ttl_sec": 5}, "local_nodes": {"count": 1, "cpus_per_node": 64}}
HOOKS_MODULE = textwrap.dedent(
    '''
    """Python hooks of the e2e-hooks site (the controller imports them from the site directory)."""


    def verdict(job):
        """Postprocess: FAILED when the Job's parameter says so, else the default next state."""
        return "FAILED" if job.spec.parameters.get("verdict") == "fail" else None
    '''
)
SITE_FILES = {"mysite_hooks.py": HOOKS_MODULE}  # the site fixture writes it into the site directory


def to_states(events: list[Event], name: str) -> list[str | None]:
    """The states ``job/NAME`` went through, in order."""
    return [e.to_state for e in events if e.object == f"job/{name}"]


def test_job_moves_on_right_after_its_hook(site: E2ESite) -> None:
    """The step after a hook is taken when the hook ends, not at the controller's next periodic pass.

    First in the module: no other allocation's launcher is around to wake the controller by chance.
    """
    tags = {"suite": "hook-latency"}
    site.apply(
        manifest(
            app_doc("checked", "echo ran", postprocess="sleep 0.5; echo checked"),
            job_doc("lat-1", "checked", labels=tags),
            batchjob_doc("lat-bj", filter_tags=tags),
        )
    )
    job = site.wait_jobs(["lat-1"])["lat-1"]
    seen = time.time()  # an upper bound of when it finished
    assert job["status"]["state"] == "JOB_FINISHED", job["status"]
    after_run = seen - parse_time(job["status"]["end_time"]).timestamp()
    assert after_run < 3.0, f"JOB_FINISHED {after_run:.1f} s after the run ended (postprocess takes 0.5 s)"


def test_preprocess_prepares_the_workdir(site: E2ESite) -> None:
    tags = {"suite": "pre"}
    site.apply(
        manifest(
            app_doc("reader", "cat input.txt", preprocess='echo "prepared for $BALSAM_JOB_NAME" > input.txt'),
            job_doc("pre-1", "reader", labels=tags),
            batchjob_doc("pre-bj", filter_tags=tags),
        )
    )
    job = site.wait_jobs(["pre-1"])["pre-1"]
    assert job["status"]["state"] == "JOB_FINISHED", job["status"]
    assert site.logs("pre-1").strip() == "prepared for pre-1"
    events = site.job_events("pre-1")
    assert [e.reason for e in events if e.to_state == "PREPROCESSED"] == ["Preprocess"]  # the hook moved it


def test_postprocess_decides_the_outcome(site: E2ESite) -> None:
    tags = {"suite": "post"}
    site.apply(
        manifest(
            app_doc("chooser", "echo ran", postprocess="echo checking; echo 'balsam-state: FAILED'"),
            app_doc("refuser", "echo ran", postprocess="echo 'output looks wrong' >&2; exit 1"),
            job_doc("post-state", "chooser", labels=tags),
            job_doc("post-exit", "refuser", labels=tags),
            batchjob_doc("post-bj", filter_tags=tags),
        )
    )
    jobs = site.wait_jobs(["post-state", "post-exit"])
    events = site.events()
    for name, job in jobs.items():
        assert job["status"]["state"] == "FAILED", (name, job["status"])
        assert job["status"]["return_code"] == 0
        assert to_states(events, name)[-3:] == ["RUNNING", "RUN_DONE", "FAILED"]
    assert "FAILED" in (jobs["post-state"]["status"]["message"] or "")
    assert "output looks wrong" in (jobs["post-exit"]["status"]["message"] or "")


def test_handle_error_restarts_a_failed_run(site: E2ESite) -> None:
    tags = {"suite": "retry"}
    flaky = "if [ -e marker ]; then echo second try ok; else touch marker; echo first try fails; exit 1; fi"
    site.apply(
        manifest(
            app_doc("flaky", flaky, handle_error="echo retrying; echo 'balsam-state: RESTART_READY'"),
            job_doc("retry-1", "flaky", labels=tags),
            batchjob_doc("retry-bj", filter_tags=tags),
        )
    )
    job = site.wait_jobs(["retry-1"])["retry-1"]
    assert job["status"]["state"] == "JOB_FINISHED", job["status"]
    assert job["status"]["attempts"] == 2
    assert job["status"]["return_code"] == 0
    states = to_states(site.job_events("retry-1"), "retry-1")
    assert states.count("RUNNING") == 2
    assert "RUN_ERROR" in states
    assert states[states.index("RUN_ERROR") + 1] == "RESTART_READY"

    logs = site.logs("retry-1")
    assert "==> attempt 1 <==" in logs and "==> attempt 2 <==" in logs, logs
    assert logs.index("first try fails") < logs.index("==> attempt 2 <==") < logs.index("second try ok")
    assert site.logs("retry-1", "--attempt", "1").strip() == "first try fails"


def test_python_hook_from_the_site_directory(site: E2ESite) -> None:
    tags = {"suite": "python"}
    site.apply(
        manifest(
            app_doc(
                "judged",
                "echo verdict {{ verdict }}",
                parameters={"verdict": {"default": "pass"}},
                postprocess={"python": "mysite_hooks:verdict"},
            ),
            job_doc("py-pass", "judged", labels=tags),
            job_doc("py-fail", "judged", labels=tags, parameters={"verdict": "fail"}),
            batchjob_doc("py-bj", filter_tags=tags),
        )
    )
    jobs = site.wait_jobs(["py-pass", "py-fail"])
    assert jobs["py-pass"]["status"]["state"] == "JOB_FINISHED", jobs["py-pass"]["status"]
    assert jobs["py-fail"]["status"]["state"] == "FAILED", jobs["py-fail"]["status"]
    assert "mysite_hooks:verdict" in (jobs["py-fail"]["status"]["message"] or "")
    assert site.logs("py-fail").strip() == "verdict fail"


def test_hooks_run_once_per_transition(site: E2ESite) -> None:
    """Every hook appends a line: one ``pre`` and one ``post`` line per Job, never two.

    40 Jobs share one node and end at scattered times, so the controller passes while hooks are in flight.
    """
    tags = {"suite": "once"}
    counter = site.path / "hook-counter.txt"
    append = 'echo "$BALSAM_JOB_NAME {step}" >> "$BALSAM_SITE_PATH/hook-counter.txt"'
    names = [f"once-{i}" for i in range(40)]
    site.apply(
        manifest(
            app_doc(
                "counted",
                "sleep 0.$((RANDOM % 5))",
                preprocess=append.format(step="pre"),
                postprocess=append.format(step="post"),
            ),
            *(job_doc(n, "counted", labels=tags, node_packing_count=40) for n in names),
            batchjob_doc("once-bj", filter_tags=tags),
        )
    )
    jobs = site.wait_jobs(names, timeout=60)
    assert {n: j["status"]["state"] for n, j in jobs.items()} == dict.fromkeys(names, "JOB_FINISHED")
    counts = Counter(counter.read_text().splitlines())
    twice = sorted(line for line, n in counts.items() if n > 1)
    assert not twice, f"hooks that ran more than once: {twice}"
    assert counts == Counter({f"{n} {step}": 1 for n in names for step in ("pre", "post")})


def test_a_hook_dies_with_its_controller(tmp_path: Path) -> None:
    """A SIGKILLed controller takes its running shell hooks with it: the next controller's re-run of the hook
    never overlaps an orphan of the same hook."""
    pid_file = tmp_path / "hook.pid"
    slow_app = app_doc("slow", "true", postprocess=f"echo $$ > {pid_file}; sleep 60")
    controller = textwrap.dedent(
        f"""
        from pathlib import Path
        import yaml
        from balsamctl.controller.hooks import run_hook
        from balsamctl.schemas import App, Job
        app = App.model_validate(yaml.safe_load({slow_app!r}))
        job = Job.model_validate(yaml.safe_load({job_doc("slow-1", "slow")!r}))
        here = Path({str(tmp_path)!r})
        run_hook("postprocess", job, app.spec, here, here, here / "record")
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", controller], cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert proc.poll() is None and time.monotonic() < deadline, "the hook never started"
            time.sleep(0.05)
        hook = psutil.Process(int(pid_file.read_text()))
        proc.kill()
        proc.wait()
        hook.wait(timeout=5)  # raises TimeoutExpired if the hook outlives its controller
    finally:
        proc.kill()


def test_a_completed_hook_is_not_run_again_for_the_same_transition(tmp_path: Path) -> None:
    """A controller killed after a hook completed but before it stored the Job's next state: the next controller
    takes the recorded outcome instead of running the hook a second time; a new transition runs it again."""
    counter = tmp_path / "runs"
    app = App.model_validate(
        yaml.safe_load(app_doc("once", "true", postprocess=f"echo x >> {counter}; echo balsam-state: FAILED"))
    )
    job = Job.model_validate(yaml.safe_load(job_doc("once-1", "once")))
    record = tmp_path / "hooks" / "7-100-postprocess"
    first = run_hook("postprocess", job, app.spec, tmp_path / "w", tmp_path, record)
    again = run_hook("postprocess", job, app.spec, tmp_path / "w", tmp_path, record)  # no forget(): a crash
    assert counter.read_text() == "x\n", "the hook ran once"
    assert first == again == HookOutcome(JobState.FAILED, "hook chose FAILED")
    forget(record)
    assert not list(record.parent.iterdir()), "nothing left once the transition is stored"
    run_hook("postprocess", job, app.spec, tmp_path / "w", tmp_path, record.with_name("7-140-postprocess"))
    assert counter.read_text() == "x\nx\n", "the next entry into RUN_DONE runs the hook again"


def test_a_hook_that_exits_without_its_record_still_decides(tmp_path: Path) -> None:
    """A hook that replaces its shell (``exec``) leaves no exit record; the live controller still has its code."""
    app = App.model_validate(yaml.safe_load(app_doc("ex", "true", postprocess="exec sh -c 'exit 3'")))
    job = Job.model_validate(yaml.safe_load(job_doc("ex-1", "ex")))
    outcome = run_hook("postprocess", job, app.spec, tmp_path / "w", tmp_path, tmp_path / "hooks" / "1-2-postprocess")
    assert outcome.state == JobState.FAILED and outcome.message.startswith("hook exited 3"), outcome


def test_a_completed_python_hook_is_not_run_again_for_the_same_transition(tmp_path: Path) -> None:
    (tmp_path / "once_hooks.py").write_text(
        "def count(job):\n"
        f"    with open({str(tmp_path / 'calls')!r}, 'a') as f:\n        f.write('x')\n    return 'FAILED'\n"
    )
    app = App.model_validate(yaml.safe_load(app_doc("py-once", "true", postprocess={"python": "once_hooks:count"})))
    job = Job.model_validate(yaml.safe_load(job_doc("py-once-1", "py-once")))
    record = tmp_path / "hooks" / "9-200-postprocess"
    outcomes = [run_hook("postprocess", job, app.spec, tmp_path / "w", tmp_path, record) for _ in range(2)]
    assert (tmp_path / "calls").read_text() == "x", "the function ran once"
    assert outcomes[0] == outcomes[1] and outcomes[0].state == JobState.FAILED


def test_a_restarted_controller_forgets_records_of_transitions_already_stored(tmp_path: Path) -> None:
    """Killed after storing a hook's transition but before removing its record: the next controller removes it;
    the record of a transition not yet stored is kept (it is the outcome the next pass takes)."""
    made = init_site(tmp_path / "site", "records")
    apply_documents(made, parse_documents(manifest(app_doc("r", "true"), job_doc("r-1", "r")), "records.yaml"))
    job_id = made.store.get_object(made.site_id, "Job", "r-1").id
    records = made.state_dir / "hooks"
    records.mkdir()
    live = records / f"{job_id}-{made.store.last_transition(made.site_id, job_id)}-postprocess.exit-0"
    stale = records / f"{job_id}-0-postprocess.exit-0"
    for path in (live, stale):
        path.touch()
    JobReconciler(made, wake=lambda: None).close()
    assert sorted(p.name for p in records.iterdir()) == [live.name]
    made.close()

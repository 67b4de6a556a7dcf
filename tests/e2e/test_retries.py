"""max_retries and rerun, end to end: errors are retried up to the limit, then FAILED; rerun gives another go."""

from __future__ import annotations

from tests.support.e2e import E2ESite, app_doc, batchjob_doc, job_doc, manifest

SETTINGS = {"launcher": {"idle_ttl_sec": 3}, "sync_period_sec": 1}
# fails until the workdir holds N marker lines, then succeeds
FLAKY = 'echo try >> tries; test "$(wc -l < tries)" -gt {{ fail_times }}'


def test_errors_are_retried_up_to_max_retries_then_failed_and_rerun_restarts(site: E2ESite) -> None:
    tags = {"suite": "retries"}
    site.apply(
        manifest(
            app_doc("flaky", FLAKY, parameters={"fail_times": {}}, max_retries=1),
            job_doc("twice-then-ok", "flaky", labels=tags, parameters={"fail_times": 2}, max_retries=2),
            job_doc("fails-out", "flaky", labels=tags, parameters={"fail_times": 3}),  # the App's 1 retry
            batchjob_doc("retry-bj", filter_tags=tags),
        )
    )
    jobs = site.wait_jobs(["twice-then-ok", "fails-out"], {"JOB_FINISHED", "FAILED"})
    ok, out = jobs["twice-then-ok"]["status"], jobs["fails-out"]["status"]
    assert (ok["state"], ok["attempts"], ok["failures"]) == ("JOB_FINISHED", 3, 2)
    assert (out["state"], out["attempts"], out["failures"]) == ("FAILED", 2, 2)
    assert "exceeds max_retries 1" in out["message"]
    assert "==> attempt 1 <==" in site.logs("twice-then-ok") and "==> attempt 3 <==" in site.logs("twice-then-ok")

    # one more error left before it succeeds: rerun resets its charged failures and runs it again
    assert "1 job(s) reset to READY" in site.cli("rerun", "jobs", "-l", "suite=retries", "--state", "FAILED").stdout
    site.apply(manifest(batchjob_doc("retry-bj-2", filter_tags=tags)))
    again = site.wait_jobs(["fails-out"], {"JOB_FINISHED", "FAILED"})["fails-out"]["status"]
    assert (again["state"], again["attempts"]) == ("JOB_FINISHED", 4)
    reasons = [e.reason for e in site.job_events("fails-out")]
    assert reasons.count("Retry") == 2 and "RetriesExhausted" in reasons and "Rerun" in reasons

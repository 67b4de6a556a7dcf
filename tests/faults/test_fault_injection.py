"""Fault injection: the controller and launchers SIGKILLed at random instants while Jobs flow; nothing is lost.

One real local site (the real CLI, controller, local scheduler, launchers; SQLite). While Jobs remain unfinished,
a seeded chaos loop waits 0.2-2 s, then SIGKILLs the controller (and restarts it with ``balsamctl controller
start``) or a launcher, and sometimes applies more Jobs or another BatchJob; a BatchJob is always kept alive so
work goes on. Every Job run appends ``start``/``end`` lines (pid, allocation, timestamps) to a run log and holds a
per-Job ``flock`` while it runs, so a second process of the same Job running at the same time is seen for sure.

At the end: every Job is JOB_FINISHED (none lost), no Job ran two processes at once (duplicated), each BatchJob got
at most one allocation (double submits: local scheduler records and launcher registrations per BatchJob), every
Job's events form one unbroken chain, and the postprocess hook ran once per Job except where a controller kill
interrupted it (hook reruns). Re-runs of a Job whose launcher was killed are allowed and counted (reruns).

``BALSAMCTL_CHAOS_SEED`` replays a run; ``BALSAMCTL_CHAOS_JOBS`` caps how many Jobs are applied in all.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from balsamctl.schedulers import AllocationStatus, LocalScheduler, SubmitRequest
from balsamctl.schemas import BatchJob, Job
from balsamctl.schemas import JobState as S
from balsamctl.site.directory import SiteDirectory
from balsamctl.store import Heartbeat, RunResult, Selector, Store, Transition
from tests.support import store_ops
from tests.support.e2e import E2ESite, app_doc, batchjob_doc, job_doc, launchers, manifest
from tests.support.store_ops import acquire, add, make_runnable, register, state_events, state_of

pytestmark = pytest.mark.slow

# Recovery here comes with the allocation's end (a killed launcher ends its job script), not the lease: a lease that
# a busy 2-core machine stalling a store write for seconds cannot run out costs no time, and declares no live
# launcher lost (its Jobs would run again with no kill to explain it).
LEASE_SEC = 10
RETRIES = 100  # a run lost with its launcher is a crash (launcher.crash_limit): let it be retried, errors too
SETTINGS = {
    "sync_period_sec": 1,
    "local_nodes": {"count": 2, "cpus_per_node": 4},
    "allowed_queues": {"local": {"max_nodes": 2, "max_queued_jobs": 4}},
    "launcher": {"idle_ttl_sec": 3, "lease_sec": LEASE_SEC, "crash_limit": RETRIES},
}
MAX_JOBS = int(os.environ.get("BALSAMCTL_CHAOS_JOBS", "3000"))
FIRST_WAVE = 150
BACKLOG = 150  # more Jobs are applied while fewer than this are unfinished ...
APPLY_SEC = 70.0  # ... for this long
CHAOS_SEC = 100.0  # the chaos stops after this even if Jobs remain; they then finish undisturbed
SETTLE_SEC = 30.0
BATCHJOBS = 2  # kept pending, queued or running
FINAL = frozenset({"JOB_FINISHED", "FAILED"})
ACTIVE_BATCHJOB = ("pending_submission", "queued", "running")

# A Job run: lock the Job's lock file (a second process of the same Job running now fails to get it), log start
# (with its allocation: the local scheduler's BALSAM_SCHEDULER_ID, inherited from the launcher), work a little, log
# end. The lock is held by every process of the run (the fd is inherited), so it is released
# only when the whole run is gone. No `{{`, `{%` or `{#`: the command is a Jinja2 template.
RUN = (
    'exec 9>>"$CHAOS_LOCKS/$BALSAM_JOB_NAME"; if flock -n 9; then lock=ok; else lock=overlap; fi; '
    'echo "start $BALSAM_JOB_NAME $$ $BALSAM_SCHEDULER_ID $(date +%s.%N) $lock" >> "$CHAOS_RUNLOG"; '
    "sleep 0.$((RANDOM%5)); "
    'echo "end $BALSAM_JOB_NAME $$ $(date +%s.%N)" >> "$CHAOS_RUNLOG"'
)
HOOK = (
    "t0=$(date +%s.%N); sleep 0.05; "
    'echo "hook $BALSAM_JOB_NAME $$ $PPID $t0 $(date +%s.%N)" >> "$CHAOS_HOOKLOG"; '
    'echo "hook $BALSAM_JOB_NAME ran"'
)


@dataclass
class Run:
    """One process of one Job, from the run log."""

    name: str
    pid: int
    allocation: str  # the local scheduler id of the allocation whose launcher started it
    start: float
    lock: str
    end: float | None = None


@dataclass
class Chaos:
    """What the chaos loop did."""

    seed: int
    controller_kills: dict[int, float] = field(default_factory=dict)  # controller pid -> when it was killed
    restart_sec: list[float] = field(default_factory=list)
    launcher_kills: dict[int, float] = field(default_factory=dict)  # launcher pid -> when it was killed
    allocation_kills: dict[str, float] = field(default_factory=dict)  # its allocation -> when its launcher was killed
    jobs: list[str] = field(default_factory=list)
    batchjobs: list[str] = field(default_factory=list)
    waves: int = 0

    def __post_init__(self) -> None:
        self.feed_rng = random.Random(f"{self.seed}-feed")  # what is applied
        self.kill_rng = random.Random(f"{self.seed}-kill")  # what is killed, and when


@pytest.fixture
def site(tmp_path: Path) -> Iterator[E2ESite]:
    """The chaos site, its logs under ``tmp_path/chaos``; every process it caused is stopped afterwards."""
    s = E2ESite.create(tmp_path, "chaos", SETTINGS)
    try:
        yield s
    finally:
        s.close()


def test_sigkill_controller_and_launchers_loses_nothing(
    site: E2ESite, tmp_path: Path, capsys: pytest.CaptureFixture[str], record_property: Callable[[str, object], None]
) -> None:
    seed = int(os.environ.get("BALSAMCTL_CHAOS_SEED", str(random.SystemRandom().randrange(2**32))))
    with capsys.disabled():
        print(f"\nfault injection: seed {seed} (BALSAMCTL_CHAOS_SEED={seed} replays it)", flush=True)
    chaos = Chaos(seed)
    logs = tmp_path / "chaos-logs"
    (logs / "locks").mkdir(parents=True)
    run_log, hook_log = logs / "runs.log", logs / "hooks.log"
    env = {"CHAOS_RUNLOG": str(run_log), "CHAOS_LOCKS": str(logs / "locks"), "CHAOS_HOOKLOG": str(hook_log)}
    site.apply(
        manifest(
            app_doc("rec", RUN, environment=env, max_retries=RETRIES),
            app_doc("hooked", RUN, environment=env, postprocess=HOOK, max_retries=RETRIES),
        )
    )
    apply_wave(site, chaos, FIRST_WAVE)
    for _ in range(BATCHJOBS):
        apply_batchjob(site, chaos)
    site.start_controller()
    store_site = SiteDirectory.load(site.path)
    started = time.monotonic()
    try:
        run_chaos(site, store_site, chaos, started)
        chaos_sec = time.monotonic() - started
        settle_until = time.monotonic() + SETTLE_SEC  # the survivors finish undisturbed (or count as lost)
        while unfinished(store_site, keep_busy=site) and time.monotonic() < settle_until:
            time.sleep(0.2)
        site.stop_controller()
        check_invariants(site, store_site, chaos, run_log, hook_log, seed, chaos_sec, capsys, record_property)
    finally:
        store_site.close()


# ---------------------------------------------------------------- the chaos loop


def run_chaos(site: E2ESite, store_site: SiteDirectory, chaos: Chaos, started: float) -> None:
    """Kill and restart (in a thread of its own) and apply at random until every Job is final or time is up."""
    stop = threading.Event()
    errors: list[BaseException] = []
    killer = threading.Thread(target=kill_at_random, args=(site, chaos, stop, errors), name="chaos-killer")
    killer.start()
    rng = chaos.feed_rng
    try:
        while (elapsed := time.monotonic() - started) < CHAOS_SEC and not errors:
            left = unfinished(store_site)
            feeding = elapsed < APPLY_SEC and len(chaos.jobs) < MAX_JOBS
            if not left and not feeding:
                return
            if feeding and left < BACKLOG:
                apply_wave(site, chaos, min(MAX_JOBS - len(chaos.jobs), rng.randint(20, 80)))
            if active_batchjobs(store_site) < BATCHJOBS or rng.random() < 0.02:
                apply_batchjob(site, chaos)
            time.sleep(rng.uniform(0.2, 1.0))
    finally:
        stop.set()
        killer.join()
        if errors:
            raise errors[0]


def kill_at_random(site: E2ESite, chaos: Chaos, stop: threading.Event, errors: list[BaseException]) -> None:
    """Every 0.2-2 s, SIGKILL the controller (and restart it) or a launcher."""
    rng = chaos.kill_rng
    try:
        while not stop.wait(rng.uniform(0.2, 2.0)):
            if rng.random() < 0.7:
                kill_controller(site, chaos)
            else:
                kill_launcher(site, chaos)
    except BaseException as exc:
        errors.append(exc)


def unfinished(store_site: SiteDirectory, keep_busy: E2ESite | None = None) -> int:
    """How many Jobs are not final yet (with ``keep_busy``, first make sure a BatchJob will run them)."""
    counts = store_site.store.count_by_state(Selector("Job", (store_site.site_id,)))
    left = sum(n for state, n in counts.items() if state not in FINAL)
    if left and keep_busy is not None and not active_batchjobs(store_site):
        keep_busy.apply(batchjob_doc(f"settle-{time.monotonic_ns()}", num_nodes=2, wall_time_min=5))
    return left


def active_batchjobs(store_site: SiteDirectory) -> int:
    """BatchJobs that are or will be running."""
    counts = store_site.store.count_by_state(Selector("BatchJob", (store_site.site_id,)))
    return sum(counts.get(state, 0) for state in ACTIVE_BATCHJOB)


def kill_controller(site: E2ESite, chaos: Chaos) -> None:
    """SIGKILL the controller (pid from ``.balsam/controller.pid``) and start it again."""
    with contextlib.suppress(OSError, ValueError, psutil.Error):
        pid_text, created = (site.path / ".balsam" / "controller.pid").read_text().split()
        proc = psutil.Process(int(pid_text))
        if abs(proc.create_time() - float(created)) < 1.0:  # that controller, not a recycled pid
            proc.send_signal(signal.SIGKILL)
            chaos.controller_kills[proc.pid] = time.time()
            wait_dead(proc.pid)
    began = time.monotonic()
    site.start_controller()
    chaos.restart_sec.append(time.monotonic() - began)


def wait_dead(pid: int, timeout: float = 5.0) -> None:
    """Until ``pid`` is gone or a zombie (not a child of ours: its reaper may be slow, or never reap)."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(psutil.NoSuchProcess):
        proc = psutil.Process(pid)
        while proc.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)


def kill_launcher(site: E2ESite, chaos: Chaos) -> None:
    """SIGKILL one of the site's launchers, if any runs."""
    running = launchers(site)
    if not running:
        return
    victim = chaos.kill_rng.choice(running)
    with contextlib.suppress(psutil.Error):
        allocation = victim.environ().get("BALSAM_SCHEDULER_ID", "")
        victim.kill()
        chaos.launcher_kills[victim.pid] = chaos.allocation_kills[allocation] = time.time()


def apply_wave(site: E2ESite, chaos: Chaos, count: int) -> None:
    """``count`` more Jobs: most of App rec, some with the postprocess hook, some with parents in the wave."""
    rng = chaos.feed_rng
    chaos.waves += 1
    names: list[str] = []
    docs = []
    for i in range(count):
        name = f"w{chaos.waves}-{i}"
        app = "hooked" if rng.random() < 0.3 else "rec"
        parents = rng.sample(names, k=min(len(names), rng.randint(1, 2))) if names and rng.random() < 0.2 else []
        spec: dict[str, Any] = {"node_packing_count": 4, "wall_time_min": 1}
        if parents:
            spec["parents"] = parents
        docs.append(job_doc(name, app, **spec))
        names.append(name)
    site.apply(manifest(*docs))
    chaos.jobs += names


def apply_batchjob(site: E2ESite, chaos: Chaos) -> None:
    """One more small BatchJob (1-2 nodes, 5 min, no filter tags)."""
    name = f"bj-{len(chaos.batchjobs) + 1}"
    site.apply(batchjob_doc(name, num_nodes=chaos.feed_rng.randint(1, 2), wall_time_min=5))
    chaos.batchjobs.append(name)


# ---------------------------------------------------------------- the invariants


def read_runs(run_log: Path) -> dict[str, list[Run]]:
    """Every run of every Job, by Job name, in start order."""
    runs: dict[tuple[str, int], Run] = {}
    for line in run_log.read_text().splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "start":
            name, pid, allocation, ts, lock = words[1:6]
            runs[(name, int(pid))] = Run(name, int(pid), allocation, float(ts), lock)
        elif words[0] == "end":
            runs[(words[1], int(words[2]))].end = float(words[3])
    by_job: dict[str, list[Run]] = collections.defaultdict(list)
    for run in sorted(runs.values(), key=lambda r: r.start):
        by_job[run.name].append(run)
    return by_job


def two_at_once(runs: list[Run], allocation_kills: dict[str, float]) -> bool:
    """Whether two runs of one Job overlapped: the lock said so, or their known intervals overlap.

    A run without an ``end`` line was killed with its launcher: it lasted at most until that kill (if it had
    lived on, the lock would have told).
    """
    if any(run.lock != "ok" for run in runs):
        return True
    for a, b in itertools.pairwise(runs):
        a_end = a.end if a.end is not None else allocation_kills.get(a.allocation, a.start)
        if b.start < a_end:
            return True
    return False


def killed_with_launcher(run: Run, chaos: Chaos) -> bool:
    """Whether the launcher that started a run was killed, which explains a re-run of its Job.

    Known by the run's allocation (one launcher each here), not its parent pid: a run whose launcher was killed
    between starting it and its first line was already an orphan then, its parent whichever process adopted it.
    """
    return run.allocation in chaos.allocation_kills


def read_hooks(hook_log: Path) -> dict[str, list[int]]:
    """The controller pid of every postprocess hook run, by Job name, in the order the runs began."""
    begun: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)
    if hook_log.exists():
        for line in hook_log.read_text().splitlines():
            _, name, _, controller_pid, t0, _ = line.split()
            begun[name].append((float(t0), int(controller_pid)))
    return {name: [pid for _, pid in sorted(runs)] for name, runs in begun.items()}


def broken_chains(store_site: SiteDirectory, states: dict[str, str]) -> list[str]:
    """Jobs whose events do not form one chain from creation to their current state."""
    events = store_site.store.events((store_site.site_id,), kind="Job", limit=10_000_000)
    by_job: dict[str, list[dict[str, object]]] = collections.defaultdict(list)
    for event in events:
        if event["to_state"] is not None:
            by_job[str(event["name"])].append(event)
    broken = []
    for name, state in states.items():
        chain = by_job.get(name, [])
        ok = bool(chain) and chain[0]["from_state"] is None and chain[-1]["to_state"] == state
        ok = ok and all(b["from_state"] == a["to_state"] for a, b in itertools.pairwise(chain))
        if not ok:
            broken.append(f"{name}: " + " ".join(f"{e['from_state']}->{e['to_state']}" for e in chain))
    return broken


def history(store_site: SiteDirectory, name: str) -> str:
    """One Job's events, one line each, for a failure message."""
    events = store_site.store.events((store_site.site_id,), kind="Job", name=name, limit=1000)
    lines = [f"  {e['from_state']} -> {e['to_state']}  {e['reason']}: {e['message']}" for e in events]
    return f"job/{name}:\n" + "\n".join(lines)


def allocations(site: E2ESite) -> collections.Counter[str]:
    """The local scheduler's allocation records per job name."""
    counts: collections.Counter[str] = collections.Counter()
    for record in (site.path / "qsubmit" / ".local").glob("*.json"):
        counts[json.loads(record.read_text())["job_name"]] += 1
    return counts


def check_invariants(
    site: E2ESite,
    store_site: SiteDirectory,
    chaos: Chaos,
    run_log: Path,
    hook_log: Path,
    seed: int,
    chaos_sec: float,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    store, sid = store_site.store, store_site.site_id
    jobs = {o.name: o.manifest for o in store.list_objects(Selector("Job", (sid,))) if isinstance(o.manifest, Job)}
    states = {name: str(job.status.state) for name, job in jobs.items()}
    lost = sorted(n for n in chaos.jobs if states.get(n) != "JOB_FINISHED")

    runs = read_runs(run_log)
    duplicated = sorted(n for n, rs in runs.items() if two_at_once(rs, chaos.allocation_kills))
    never_ran = sorted(n for n in chaos.jobs if n not in runs)
    reruns = sum(len(rs) - 1 for rs in runs.values())
    unexplained_reruns = sorted(n for n, rs in runs.items() for a in rs[:-1] if not killed_with_launcher(a, chaos))

    hooked = {n for n, job in jobs.items() if job.spec.app == "hooked" and states.get(n) == "JOB_FINISHED"}
    hooks = read_hooks(hook_log)
    missing_hooks = sorted(n for n in hooked if not hooks.get(n))
    stray_hooks = sorted(set(hooks) - hooked)
    hook_reruns = sum(len(hooks[n]) - 1 for n in hooked if hooks.get(n))
    # a hook re-run is explained by the kill of the controller that ran the hook before
    unexplained_hook_reruns = sorted(
        n for n in hooked for pid in hooks.get(n, [])[:-1] if pid not in chaos.controller_kills
    )

    records = allocations(site)
    double_submits: list[str] = []
    unsubmitted: list[str] = []
    batchjobs = store.list_objects(Selector("BatchJob", (sid,)))
    for obj in batchjobs:
        assert isinstance(obj.manifest, BatchJob)
        status = obj.manifest.status
        allocs = records.get(status.job_name, 0) if status.job_name else 0
        started = len(store.launchers_of(sid, obj.name))
        if allocs > 1 or started > 1:
            double_submits.append(f"{obj.name}: {allocs} allocation record(s), {started} launcher(s)")
        if str(status.state) in ("queued", "running", "finished") and allocs != 1:
            unsubmitted.append(f"{obj.name} ({status.state}): {allocs} allocation record(s)")
    broken = broken_chains(store_site, states)

    kills = len(chaos.controller_kills) + len(chaos.launcher_kills)
    summary = (
        f"kills: {kills} (controller {len(chaos.controller_kills)}, launcher {len(chaos.launcher_kills)}), "
        f"jobs: {len(chaos.jobs)}, lost: {len(lost)}, duplicated: {len(duplicated)}, "
        f"double submits: {len(double_submits)}, reruns: {reruns}, hook reruns: {hook_reruns}"
    )
    restart = sum(chaos.restart_sec) / max(1, len(chaos.restart_sec))
    run = (
        f"fault injection: seed {seed}, chaos {chaos_sec:.0f} s, batchjobs {len(batchjobs)}, "
        f"allocations {sum(records.values())}, controller restart {restart:.1f} s on average"
    )
    record_property("figures", f"{run}; {summary}")  # shown at the end of the run (conftest), under xdist too
    with capsys.disabled():
        print(run)
        print(summary)
    lost_states = collections.Counter(states.get(n) for n in lost)
    assert not lost, f"{summary}\nnot JOB_FINISHED: {dict(lost_states)}\n" + "\n".join(
        history(store_site, n) for n in lost[:5]
    )
    assert not duplicated, f"{summary}\ntwo processes at once: {[(n, runs[n]) for n in duplicated[:5]]}"
    assert not double_submits, f"{summary}\n" + "\n".join(double_submits)
    assert not unsubmitted, f"{summary}\n" + "\n".join(unsubmitted)
    assert not broken, f"{summary}\nbroken event chains:\n" + "\n".join(broken[:10])
    assert not never_ran, f"{summary}\nfinished without a run: {never_ran[:20]}"
    reruns_seen = "\n".join(f"{runs[n]}\n{history(store_site, n)}" for n in unexplained_reruns[:3])
    assert not unexplained_reruns, f"{summary}\nre-run without a launcher kill: {unexplained_reruns[:9]}\n{reruns_seen}"
    assert not (missing_hooks or stray_hooks), f"{summary}\nno hook run: {missing_hooks[:20]}, stray: {stray_hooks}"
    assert not unexplained_hook_reruns, f"{summary}\nhook re-run without a controller kill: {unexplained_hook_reruns}"
    assert set(jobs) == set(chaos.jobs), f"{summary}\nJobs that were never applied: {set(jobs) - set(chaos.jobs)}"


# ---------------------------------------------------------------- no process outlives its allocation (local scheduler)

# Like a launcher's Jobs: processes in process groups of their own (not the script's), in the allocation's session.
# One of them ignores SIGTERM. Their pids go to "$0.pids"; then the script does what its argument says.
OWN_GROUPS = """\
"{python}" - "$0.pids" <<'PY'
import subprocess, sys
nice = subprocess.Popen(["sleep", "100"], process_group=0)
stubborn = subprocess.Popen(["bash", "-c", "trap '' TERM; exec sleep 100"], process_group=0)
open(sys.argv[1] + ".tmp", "w").write(f"{{nice.pid}} {{stubborn.pid}}\\n")
PY
mv "$0.pids.tmp" "$0.pids"
{then}
"""


def local_request(root: Path, name: str, then: str, wall_time_min: int = 5) -> SubmitRequest:
    (root / "qsubmit").mkdir(exist_ok=True)
    script = root / "qsubmit" / f"{name}.sh"
    script.write_text("#!/bin/bash\n" + OWN_GROUPS.format(python=sys.executable, then=then))
    return SubmitRequest(script, name, 1, wall_time_min, "local", "local", root / "qsubmit")


def pids_of(req: SubmitRequest) -> list[int]:
    path = Path(f"{req.script_path}.pids")
    deadline = time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < deadline, "the script did not start its processes"
        time.sleep(0.02)
    return [int(p) for p in path.read_text().split()]


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def finished(sched: LocalScheduler, scheduler_id: str, timeout: float = 10.0) -> AllocationStatus:
    deadline = time.monotonic() + timeout
    while (status := sched.status([scheduler_id])[scheduler_id]).state != "finished":
        assert time.monotonic() < deadline, f"allocation {scheduler_id} did not finish: {status}"
        time.sleep(0.05)
    return status


@pytest.fixture
def sched_root(tmp_path: Path) -> Iterator[Path]:
    """A site directory for the local scheduler; whatever a failed test left running is killed."""
    yield tmp_path
    for record in (tmp_path / "qsubmit" / ".local").glob("*.json"):
        sid = int(json.loads(record.read_text())["pid"])
        for proc in psutil.process_iter():
            with contextlib.suppress(OSError, psutil.Error):
                if os.getsid(proc.pid) == sid:
                    proc.kill()


def test_an_allocation_ends_every_process_of_its_session_when_its_script_exits(sched_root: Path) -> None:
    sched = LocalScheduler(sched_root)
    req = local_request(sched_root, "balsam-session-1", "exit 0")
    sid = sched.submit(req)
    pids = pids_of(req)
    status = finished(sched, sid)
    assert (status.raw_state, status.exit_code) == ("COMPLETED", 0)
    assert not [p for p in pids if running(p)], "processes of the allocation outlived it"


def test_status_ends_what_outlives_a_killed_session_leader(sched_root: Path) -> None:
    sched = LocalScheduler(sched_root)
    req = local_request(sched_root, "balsam-session-2", "sleep 100")
    sid = sched.submit(req)
    pids = pids_of(req)
    os.kill(int(sid), signal.SIGKILL)  # the wrapper cannot clean up: the scheduler must
    status = finished(sched, sid)
    assert status.exit_code is None
    assert not [p for p in pids if running(p)], "processes of the allocation outlived it"


def test_the_walltime_sigkill_reaches_every_process_group_of_the_session(sched_root: Path) -> None:
    now = [time.time()]
    sched = LocalScheduler(sched_root, clock=lambda: now[0])
    req = local_request(sched_root, "balsam-session-3", "trap '' TERM; sleep 100", wall_time_min=1)
    sid = sched.submit(req)
    pids = pids_of(req)
    now[0] += 61
    assert sched.status([sid])[sid].state == "running"  # SIGTERM sent to the script's group
    now[0] += 31
    status = finished(sched, sid)
    assert status.raw_state == "TIMEOUT"
    assert not [p for p in pids if running(p)], "processes of the allocation outlived it"


# ---------------------------------------------------------------- a SIGKILLed launcher's Jobs die with it

PIDS_APP = "echo $$ >> pids; if [ -e ran ]; then exit 0; fi; touch ran; exec sleep 60"


def test_the_jobs_of_a_sigkilled_launcher_die_with_it_before_they_run_again(tmp_path: Path) -> None:
    site = E2ESite.create(tmp_path, "orphans", SETTINGS)
    try:
        site.apply(
            manifest(
                app_doc("once", PIDS_APP, max_retries=1),
                job_doc("o-1", "once", workdir="o-1"),
                batchjob_doc("o-bj", num_nodes=1, wall_time_min=5),
            )
        )
        site.start_controller()
        pid_file = site.path / "data" / "o-1" / "pids"
        site.wait_for("job/o-1 to start", lambda: pid_file.exists() and pid_file.read_text().strip())
        site.wait_jobs(["o-1"], ["RUNNING"], timeout=15)  # its start recorded (a launcher writes starts in batches)
        job_pid = int(pid_file.read_text().split()[0])
        [launcher] = launchers(site)
        launcher.kill()
        site.wait_for("the orphaned Job process to end", lambda: not running(job_pid), timeout=5)
        site.wait_jobs(["o-1"], ["RESTART_READY"], timeout=15)
        site.apply(batchjob_doc("o-bj-2", num_nodes=1, wall_time_min=5))
        assert site.wait_jobs(["o-1"])["o-1"]["status"]["state"] == "JOB_FINISHED"
        assert len(pid_file.read_text().split()) == 2  # the Job ran again, once, after the first process was gone
    finally:
        site.close()


# ---------------------------------------------------------------- product bugs the chaos found (failing until fixed)


def test_a_live_launcher_keeps_its_lease(tmp_path: Path) -> None:
    """A launcher heartbeats often enough for its site's ``lease_sec``: a Job longer than the lease is not lost.

    Bug: launcher/pilot.py heartbeats every HEARTBEAT_SEC = 10 s whatever ``launcher.lease_sec`` says, so with a
    lease under 10 s the controller sweeps live launchers: their running Jobs become RUN_TIMEOUT (charged as lost
    runs, FAILED at max_retries 0) and run again elsewhere while the first process still runs.
    """
    lease = 6  # under HEARTBEAT_SEC, and not so short that a store write stalled on a busy machine breaks it
    site = E2ESite.create(tmp_path, "lease", {**SETTINGS, "launcher": {"idle_ttl_sec": 3, "lease_sec": lease}})
    try:
        site.apply(
            manifest(
                app_doc("slow", f"sleep {2 * lease}"),
                job_doc("slow-1", "slow", workdir="slow-1"),
                batchjob_doc("lease-bj", num_nodes=1, wall_time_min=5),
            )
        )
        site.start_controller()
        job = site.wait_jobs(["slow-1"])["slow-1"]
        reasons = [e.reason for e in site.job_events("slow-1")]
        assert "LeaseExpired" not in reasons, reasons
        assert (job["status"]["state"], reasons.count("Started")) == ("JOB_FINISHED", 1), reasons
    finally:
        site.close()


def test_a_run_outcome_applies_once_and_only_to_its_own_run(store: Store, site_id: int) -> None:
    """Bug: store/jobs.py _write_results checks "still RUNNING" once per batch, then updates by id alone.

    So the same Job's outcome twice in one batch is applied twice (two RUNNING -> RUN_DONE events: seen in the chaos
    test when a swept launcher re-claimed a Job it still ran), and a lost launcher's late outcome of run 1 ends run 2
    that another launcher started. Fix: make each UPDATE conditional on state RUNNING and owner == the recording
    launcher (``record`` knows it), and write an event only for the rows it changed.
    """
    add(store, site_id, [store_ops.app_doc(), store_ops.job_doc("twice"), store_ops.job_doc("late")])
    make_runnable(store, site_id)
    register(store, site_id, "a")
    twice, late = acquire(store, site_id, "a")
    done = RunResult(twice.id, twice.name, S.RUN_DONE, return_code=0)
    store.record(site_id, owner="a", results=[done, done])
    ran = [e for e in state_events(store, site_id, "twice") if e[1] == "RUN_DONE"]
    assert ran == [("RUNNING", "RUN_DONE", "Ran")]

    time.sleep(0.05)
    assert store.sweep_lost_launchers(site_id, lease_sec=0.01).launchers == ["a"]  # "late" is RUN_TIMEOUT now
    store.transition(site_id, [Transition(late.id, S.RUN_TIMEOUT, S.RESTART_READY, "Retry")])
    register(store, site_id, "b")
    assert [r.name for r in acquire(store, site_id, "b")] == ["late"]  # run 2, by launcher b
    stale = RunResult(late.id, late.name, S.RUN_DONE, return_code=0)
    store.record(site_id, owner="a", results=[stale])  # launcher a's outcome of run 1, late
    assert state_of(store, site_id, "late") == S.RUNNING


def test_a_launcher_swept_as_lost_stays_lost(store: Store, site_id: int) -> None:
    """Bug: store/batchjobs.py heartbeat() sets ``ended_at=None``, and store/jobs.py claim() ignores ``ended_at``.

    A launcher swept as lost while it was only slow heartbeats on and claims again; if it dies later, what it
    claimed after the sweep is never handed back (the chaos test saw Jobs stuck in RESTART_READY and PREPROCESSED
    with a dead launcher as owner). Fix: heartbeat() keeps ``ended_at`` and tells the launcher it lost its lease (so
    it stops its Jobs and exits); claim() and record() refuse an ended launcher.
    """
    add(store, site_id, [store_ops.app_doc(), store_ops.job_doc("j")])
    make_runnable(store, site_id)
    register(store, site_id, "slow")
    time.sleep(0.05)
    assert store.sweep_lost_launchers(site_id, lease_sec=0.01).launchers == ["slow"]
    store.heartbeat("slow", Heartbeat())
    [row] = [r for r in store.launchers_of(site_id, "bj") if r["id"] == "slow"]
    assert row["ended_at"] is not None, "a heartbeat brought a lost launcher back"
    assert store.claim(site_id, owner="slow", batch_job="bj", filter_tags={}, limit=5) == []


class _ControllerKilled(BaseException):
    """Stands for a SIGKILL of the controller at one instant."""


def test_an_allocation_whose_submit_was_killed_before_its_record_is_still_found(
    sched_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bug: schedulers/local.py submit() starts the job script, then writes its record (the only way find_by_name
    knows it); a controller killed in between leaves a running allocation that the restarted controller does not
    find by name, so it submits the BatchJob a second time. Fix: make the allocation findable without the record,
    e.g. the wrapper writes ``<state dir>/<its pid>.name`` first thing (it runs whatever happens to the controller),
    and find_by_name also reads those (or scans session leaders whose environment has BALSAM_JOB_NAME=<name>).
    """
    req = local_request(sched_root, "balsam-unrecorded-1", "sleep 100")

    def killed(_self: LocalScheduler, _record: object) -> None:
        raise _ControllerKilled

    monkeypatch.setattr(LocalScheduler, "_save", killed)
    with pytest.raises(_ControllerKilled):
        LocalScheduler(sched_root).submit(req)
    monkeypatch.undo()
    pids = pids_of(req)  # the allocation runs
    try:
        assert LocalScheduler(sched_root).find_by_name(req.job_name) is not None, "it would be submitted again"
    finally:
        for proc in psutil.process_iter(["cmdline"]):
            if str(req.script_path) in (proc.info["cmdline"] or []):
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


PARTITIONED = """\
apiVersion: balsam/v1
kind: BatchJob
metadata: {name: parts}
spec:
  num_nodes: 2
  wall_time_min: 5
  queue: local
  project: local
  partitions:
    - {job_mode: mpi, num_nodes: 1, filter_tags: {part: a}}
    - {job_mode: mpi, num_nodes: 1, filter_tags: {part: b}}
"""


def test_the_jobs_of_a_sigkilled_partition_launcher_die_with_it(tmp_path: Path) -> None:
    """Bug: with several partitions (launcher/main.py _fan_out), a SIGKILLed partition launcher's Jobs live on as
    long as the other partitions keep the allocation alive; after the lease they run again in another partition
    while the orphan still runs: two processes of one Job at once. Fix: _supervise notices a child launcher that died
    of a signal and kills its orphaned Jobs, e.g. it makes itself a child subreaper
    (prctl(PR_SET_CHILD_SUBREAPER)) so orphaned Jobs become its children, and kills the process group of every
    child that is not a launcher; or it ends the whole allocation (kills the session) when one launcher dies.
    """
    site = E2ESite.create(tmp_path, "parts", SETTINGS)
    try:
        site.apply(
            manifest(
                app_doc("once", PIDS_APP, max_retries=1),
                job_doc("p-1", "once", labels={"part": "a"}, workdir="p-1"),
                job_doc("p-busy", "once", labels={"part": "b"}, workdir="p-busy"),  # keeps partition b, and so
            )  # the allocation, alive
            + "---\n"
            + PARTITIONED
        )
        site.start_controller()
        pid_file = site.path / "data" / "p-1" / "pids"
        site.wait_for("job/p-1 to start", lambda: pid_file.exists() and pid_file.read_text().strip())
        job = psutil.Process(int(pid_file.read_text().split()[0]))
        psutil.Process(job.ppid()).kill()  # the partition launcher that runs it
        deadline = time.monotonic() + LEASE_SEC + 2
        while running(job.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(job.pid), "the Job outlived its launcher past the lease: it may run twice at once"
    finally:
        site.close()

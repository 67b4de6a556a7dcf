"""Platform presets: every preset loads and lays out a site; every template renders, parses and does what it says.

The Polaris MIG and Theta cache-priming sections are run, with fake ``mpiexec``/``nvidia-smi``/``aprun`` and a fake
launcher on PATH, so the tests see the order of what happens on which node, not just the text.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from balsamctl import schedulers
from balsamctl.cli import app as cli
from balsamctl.schemas import BatchJob
from balsamctl.schemas.manifest import ManifestError, parse_documents
from balsamctl.schemas.settings import SchedulerKind, SiteSettings
from balsamctl.site import platforms
from balsamctl.site.apply import apply_documents
from balsamctl.site.create import init_site
from balsamctl.site.directory import LAYOUT, SiteDirectory, SiteError
from balsamctl.site.jobscript import launcher_command, render_job_script
from balsamctl.site.platforms import Platform, PlatformError, load_platform, parse_preset, platform_names

EXPECTED = [
    "generic-cobalt", "generic-lsf", "generic-pbs", "generic-slurm", "local", "perlmutter", "polaris", "theta-knl",
]  # fmt: skip
NAMES = platform_names()


def preset(name: str) -> Platform:
    return load_platform(name)


def make_site(tmp_path: Path, name: str, launcher_python: Path | None = None) -> SiteDirectory:
    """A site laid out from platform ``name``; with ``launcher_python``, its launcher command starts that program."""
    site = init_site(tmp_path / name, f"site-{name}", platform=name, register=False)
    if launcher_python is None:
        return site
    site.close()
    settings_file = site.path / "settings.yml"
    raw = yaml.safe_load(settings_file.read_text())
    raw["launcher"]["python"] = str(launcher_python)
    settings_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    return SiteDirectory.load(site.path)


def batchjob_manifest(settings: SiteSettings, name: str = "bj-1", **optional_params: str) -> str:
    """A BatchJob valid for ``settings``: its first queue, 2 nodes (or its max), 30 min (or its max)."""
    queue, limits = next(iter(settings.allowed_queues.items()))
    project = settings.allowed_projects[0] if settings.allowed_projects else "myproject"
    spec = {
        "num_nodes": min(2, limits.max_nodes),
        "wall_time_min": min(30, limits.max_walltime),
        "queue": queue,
        "project": project,
        "optional_params": optional_params,
    }
    return yaml.safe_dump({"apiVersion": "balsam/v1", "kind": "BatchJob", "metadata": {"name": name}, "spec": spec})


def applied_batchjob(site: SiteDirectory, **optional_params: str) -> BatchJob:
    """A BatchJob applied to ``site`` through ``apply_documents`` (so valid for it), as the controller reads it."""
    docs = parse_documents(batchjob_manifest(site.settings, **optional_params), "bj.yaml")
    assert [r.action for r in apply_documents(site, docs)] == ["created"]
    return BatchJob.model_validate(yaml.safe_load(batchjob_manifest(site.settings, **optional_params)))


def render_checked(site: SiteDirectory, bj: BatchJob, tmp_path: Path) -> tuple[Path, list[str]]:
    """The rendered job script, written to a file and checked with ``bash -n``; its lines."""
    script = render_job_script(site, bj)
    path = tmp_path / f"{site.name}-{bj.metadata.name}.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash" and lines[-1] == launcher_command(site, bj)
    return path, lines


# ---------------------------------------------------------------- presets


def test_the_shipped_platforms() -> None:
    assert NAMES == EXPECTED
    shipped = {p.name for p in platforms.PLATFORMS_DIR.iterdir()}
    own_templates = {"polaris", "perlmutter"}  # the others use their scheduler's generic template
    assert shipped == {f"{n}.yml" for n in EXPECTED} | {f"{n}.sh" for n in own_templates}


@pytest.mark.parametrize("name", NAMES)
def test_every_preset_loads_and_validates(name: str) -> None:
    p = preset(name)
    assert p.name == name and p.description and p.template.startswith("#!/bin/bash\n")
    settings = SiteSettings.model_validate({**p.settings, "name": "x", "scheduler": p.scheduler, "platform": name})
    assert settings == p.site_settings("x") and settings.platform == name
    assert set(p.settings) >= {"allowed_queues", "allowed_projects", "optional_batch_job_params", "launcher"}
    assert ("local_nodes" in p.settings) == (p.scheduler == "local")
    assert settings.allowed_queues
    if name != "local":
        assert settings.allowed_projects == []  # any project


def test_the_platform_specifics() -> None:
    polaris, perlmutter, theta = preset("polaris"), preset("perlmutter"), preset("theta-knl")
    pol = polaris.site_settings("p")
    assert polaris.scheduler == "pbs" and set(pol.allowed_queues) == {"debug", "prod", "preemptable"}
    assert pol.optional_batch_job_params["mig_count"] == "0"
    assert (pol.launcher.mpi_flavor, pol.launcher.mpi_command) == ("mpich", "mpiexec")
    perl = perlmutter.site_settings("p")
    assert perlmutter.scheduler == "slurm" and set(perl.allowed_queues) == {"regular", "debug"}
    assert "qos" in perl.optional_batch_job_params and perl.launcher.mpi_flavor == "srun"
    assert "#SBATCH -C gpu" in perlmutter.template.splitlines()
    th = theta.site_settings("t")
    assert theta.scheduler == "cobalt"
    assert set(th.allowed_queues) == {"default", "debug-cache-quad", "debug-flat-quad"}
    assert th.optional_batch_job_params["singularity_prime_cache"] == "no"
    assert (th.launcher.mpi_flavor, th.launcher.mpi_command) == ("aprun", "aprun")


def test_the_generic_and_local_templates_are_the_scheduler_templates() -> None:
    generic = {
        "local": "local",
        "generic-slurm": "slurm",
        "generic-pbs": "pbs",
        "generic-lsf": "lsf",
        "generic-cobalt": "cobalt",
        "theta-knl": "cobalt",
    }
    for name, scheduler in generic.items():
        assert preset(name).scheduler == scheduler
        assert preset(name).template == (platforms.GENERIC_TEMPLATES / f"{scheduler}.sh").read_text(), name


GOOD = "description: d\nscheduler: pbs\nsettings: {allowed_queues: {q: {max_nodes: 4}}}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a list", "expected a mapping"),
        ("description: d\nscheduler: pbs\nextra: 1\n", "unknown key(s) extra"),
        ("scheduler: pbs\n", "description"),
        ("description: d\nscheduler: moab\n", "scheduler: 'moab' is not one of"),
        ("description: d\nscheduler: pbs\nsettings: [1]\n", "settings: expected a mapping"),
        ("description: d\nscheduler: pbs\nsettings: {name: x}\n", "settings.name: set per site"),
        ("description: d\nscheduler: pbs\nsettings: {store_url: x}\n", "settings.store_url: set per site"),
        ("description: d\nscheduler: pbs\nsettings: {local_nodes: {count: 2}}\n", "settings.local_nodes: only for"),
        ("description: d\nscheduler: pbs\nsettings: {allowed_queues: {q: {max_nodes: 0}}}\n", "max_nodes"),
        ("description: d\nscheduler: pbs\nsettings: {bogus: 1}\n", "settings.bogus"),
        ("description: d\nscheduler: pbs\nsettings: {optional_batch_job_params: {bad-key: x}}\n", "bad-key"),
        ("description: d\nscheduler: pbs\nsettings: {launcher: {mpi_flavor: mvapich}}\n", "mpi_flavor"),
        ("description: [unclosed\n", "invalid YAML"),
    ],
)
def test_an_invalid_preset_is_refused_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(PlatformError, match="platform 'x'") as info:
        parse_preset("x", text, "#!/bin/bash\n{{ launcher_command }}\n")
    assert message in str(info.value)


def test_a_valid_preset_is_parsed_purely() -> None:
    p = parse_preset("x", GOOD, "#!/bin/bash\n")
    assert p.site_settings("s").allowed_queues["q"].max_nodes == 4 and p.scheduler == "pbs"
    with pytest.raises(PlatformError, match="empty"):
        parse_preset("x", GOOD, "  \n")
    with pytest.raises(ValidationError):
        p.site_settings("not a name!")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("description: [unclosed\n", "invalid YAML"),
        ("- a list\n", "expected a mapping"),
        ("description: d\nscheduler: moab\n", "scheduler: 'moab' is not one of"),
    ],
)
def test_a_broken_preset_without_a_template_of_its_own_is_refused(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "x.yml").write_text(text)
    with pytest.raises(PlatformError, match="platform 'x'") as info:
        load_platform("x", tmp_path)
    assert message in str(info.value)


def test_an_unknown_platform_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(PlatformError) as info:
        load_platform("../local")
    assert str(info.value) == f"unknown platform '../local'; known platforms: {', '.join(EXPECTED)}"
    empty = tmp_path / "none"
    empty.mkdir()
    with pytest.raises(PlatformError, match="known platforms: none"):
        load_platform("local", empty)


# ---------------------------------------------------------------- init_site


@pytest.mark.parametrize("name", NAMES)
def test_init_site_lays_out_the_preset(tmp_path: Path, name: str) -> None:
    site = make_site(tmp_path, name)
    try:
        p = preset(name)
        assert all((site.path / sub).is_dir() for sub in LAYOUT)
        assert SiteDirectory.load(site.path).settings == p.site_settings(site.name) == site.settings
        assert site.settings.scheduler == p.scheduler
        assert (site.path / "job-template.sh").read_text() == p.template
    finally:
        site.close()


def test_the_local_platform_is_the_default_site(tmp_path: Path) -> None:
    default = init_site(tmp_path / "a", "same", register=False)
    local = init_site(tmp_path / "b", "same", platform="local", register=False)
    try:
        assert local.settings == default.settings
        assert (local.path / "job-template.sh").read_text() == (default.path / "job-template.sh").read_text()
    finally:
        default.close()
        local.close()


def test_init_site_refuses_an_unknown_platform_or_another_scheduler(tmp_path: Path) -> None:
    with pytest.raises(SiteError) as info:
        init_site(tmp_path / "s", "s", platform="frontier")
    assert "unknown platform 'frontier'" in str(info.value) and ", ".join(EXPECTED) in str(info.value)
    others: tuple[SchedulerKind, ...] = ("slurm", "local")  # local too, said or not: only an absent one is no check
    for scheduler in others:
        with pytest.raises(SiteError, match=f"platform 'polaris' uses scheduler 'pbs', not '{scheduler}'"):
            init_site(tmp_path / "s", "s", scheduler, platform="polaris")
    assert not (tmp_path / "s").exists()
    site = init_site(tmp_path / "s", "s", "pbs", platform="polaris", register=False)
    site.close()


# ---------------------------------------------------------------- --scheduler X is --platform generic-X

SCHEDULERS: list[SchedulerKind] = list(schedulers.SCHEDULERS)
LAUNCH = {  # what each scheduler's sites start Jobs with, nothing edited: the launcher its clusters offer
    "local": ("mpich", "mpiexec"),
    "slurm": ("srun", "srun"),
    "pbs": ("mpich", "mpiexec"),
    "lsf": ("openmpi", "mpirun"),
    "cobalt": ("aprun", "aprun"),
}


def cli_site(root: Path, *options: str) -> Path:
    """``balsamctl site init ROOT/s --name same OPTIONS`` in a registry of its own; the site's directory."""
    env = {"BALSAMCTL_CONFIG": str(root / "sites.yaml")}
    result = runner.invoke(cli.app, ["site", "init", str(root / "s"), "--name", "same", *options], env=env)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return root / "s"


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_a_scheduler_gives_exactly_its_generic_preset(tmp_path: Path, scheduler: SchedulerKind) -> None:
    generic = platforms.scheduler_platform(scheduler)
    assert generic in NAMES and preset(generic).scheduler == scheduler
    by_scheduler = cli_site(tmp_path / "a", "--scheduler", scheduler)
    by_platform = cli_site(tmp_path / "b", "--platform", generic)
    for name in ("settings.yml", "job-template.sh"):
        assert (by_scheduler / name).read_bytes() == (by_platform / name).read_bytes(), name
    settings = SiteDirectory.load(by_scheduler).settings
    assert settings == preset(generic).site_settings("same")
    assert (settings.launcher.mpi_flavor, settings.launcher.mpi_command) == LAUNCH[scheduler]


def test_cli_refuses_a_scheduler_the_platform_does_not_use(tmp_path: Path) -> None:
    args = ["site", "init", str(tmp_path / "x"), "--platform", "polaris", "--scheduler", "local"]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: platform 'polaris' uses scheduler 'pbs', not 'local'"
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- rendering


@pytest.mark.parametrize("name", NAMES)
def test_every_template_renders_and_parses(tmp_path: Path, name: str) -> None:
    site = make_site(tmp_path, name)
    try:
        bj = applied_batchjob(site)
        _, lines = render_checked(site, bj, tmp_path)
        for key, value in site.settings.optional_batch_job_params.items():
            assert f"export BALSAM_OPT_{key.upper()}={shlex.quote(value)}" in lines
        directives = {"slurm": "#SBATCH", "pbs": "#PBS", "lsf": "#BSUB", "cobalt": "#COBALT"}
        first_command = min(i for i, line in enumerate(lines) if not line.startswith("#"))
        prefix = directives.get(site.settings.scheduler)
        assert all(i < first_command for i, line in enumerate(lines) if prefix and line.startswith(prefix + " "))
    finally:
        site.close()


@pytest.mark.parametrize("name", NAMES)
def test_an_undeclared_optional_param_is_refused_at_apply(tmp_path: Path, name: str) -> None:
    site = make_site(tmp_path, name)
    try:
        docs = parse_documents(batchjob_manifest(site.settings, not_declared="1"), "bj.yaml")
        with pytest.raises(ManifestError, match=r"spec\.optional_params\.not_declared: not declared"):
            apply_documents(site, docs)
        declared = dict(site.settings.optional_batch_job_params)
        docs = parse_documents(batchjob_manifest(site.settings, name="ok", **declared), "bj.yaml")
        assert [r.action for r in apply_documents(site, docs)] == ["created"]
    finally:
        site.close()


NASTY = 'a b;$(touch pwned)`id`&|<>"*?~#\\'


@pytest.mark.parametrize("name", NAMES)
def test_optional_param_values_stay_quoted(tmp_path: Path, name: str) -> None:
    site = make_site(tmp_path, name)
    try:
        # the schema lets no shell metacharacter in ...
        with pytest.raises(ManifestError, match=r"spec\.optional_params\.qos: String should match pattern"):
            apply_documents(site, parse_documents(batchjob_manifest(site.settings, qos=NASTY), "bj.yaml"))
        # ... and a value that got past it anyway is still one quoted word wherever a template uses it
        bj = applied_batchjob(site)
        control = {"mig_count", "singularity_prime_cache"}  # values that choose a section: tested below
        for key in [*site.settings.optional_batch_job_params, "extra_param"]:
            if key not in control:
                bj.spec.optional_params[key] = NASTY
        path, lines = render_checked(site, bj, tmp_path)
        script = path.read_text()
        assert script.count(NASTY) == script.count(shlex.quote(NASTY)) >= 1
        assert f"export BALSAM_OPT_EXTRA_PARAM={shlex.quote(NASTY)}" in lines
        exports = "\n".join(line for line in lines if line.startswith("export BALSAM_OPT_"))
        shown = subprocess.run(
            ["bash", "-c", f"{exports}\nprintf '%s' \"$BALSAM_OPT_EXTRA_PARAM\""],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        assert shown.stdout == NASTY and not (tmp_path / "pwned").exists()
    finally:
        site.close()


# ---------------------------------------------------------------- running the platform sections, with fakes

FAKE_PROGRAMS = {
    "hostname": """
print(os.environ.get("FAKE_HOST", "head"))
""",
    "launcher-python": """
log("launcher", "BALSAM_GPU_IDS=" + os.environ.get("BALSAM_GPU_IDS", "<unset>"))
""",
    "mpiexec": """
args = sys.argv[1:]
log("mpiexec", *args[:4])
assert args[0] == "-n" and args[2:4] == ["--ppn", "1"], args
for i in range(int(args[1])):
    rc = subprocess.call(args[4:], env={**os.environ, "FAKE_HOST": f"node{i}"})
    if rc:
        sys.exit(rc)
""",
    "aprun": """
log("aprun", *sys.argv[1:], "COBALT_JOBSIZE=" + os.environ.get("COBALT_JOBSIZE", ""))
""",
    "sleep": """
log("sleep", *sys.argv[1:])
""",
    "nvidia-smi": """
args = sys.argv[1:]
log("nvidia-smi", *args)
state_file = Path(os.environ["FAKE_STATE"]) / (HOST + ".json")
state = json.loads(state_file.read_text()) if state_file.exists() else {"mig": [], "gi": {}}
if args == ["--query-gpu=index", "--format=csv,noheader"]:
    print("0\\n1\\n2\\n3")
elif args[:1] == ["-i"] and args[2:] == ["-mig", "1"]:
    if os.environ.get("FAKE_NO_MIG"):
        print("Unable to enable MIG Mode: Insufficient Permissions", file=sys.stderr)
        sys.exit(4)
    state["mig"].append(args[1])
elif args[:2] == ["mig", "-i"] and args[3:] in (["-dci"], ["-dgi"]):
    state["gi"].pop(args[2], None)
elif args[:2] == ["mig", "-i"] and args[3] == "-cgi" and args[5:] == ["-C"]:
    if args[2] not in state["mig"]:
        sys.exit(6)
    state["gi"].setdefault(args[2], []).append(args[4])
elif args == ["-L"]:
    for gpu in "0123":
        print(f"GPU {gpu}: NVIDIA A100-SXM4-40GB (UUID: GPU-{HOST}-{gpu})")
        for k, profile in enumerate(state["gi"].get(gpu, [])):
            print(f"  MIG {profile}     Device  {k}: (UUID: MIG-{HOST}-{gpu}-{k})")
else:
    sys.exit(f"fake nvidia-smi: unexpected {args}")
state_file.write_text(json.dumps(state))
""",
}
FAKE_PRELUDE = """\
import json, os, subprocess, sys
from pathlib import Path
HOST = os.environ.get("FAKE_HOST", "head")
def log(*words):
    with open(os.environ["FAKE_LOG"], "a") as f:
        f.write(" ".join([HOST, *words]) + "\\n")
"""


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory of fake programs, first on PATH; the head node is node0 (FAKE_HOST)."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for name, body in FAKE_PROGRAMS.items():
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{FAKE_PRELUDE}{body}")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "state").mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("FAKE_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("FAKE_HOST", "node0")
    monkeypatch.delenv("FAKE_NO_MIG", raising=False)
    return bin_dir


def run_script(tmp_path: Path, path: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run a rendered job script; its result and the calls the fakes logged, as lines ``HOST PROGRAM ARGS``."""
    result = subprocess.run(["bash", str(path)], env={**os.environ, **env}, capture_output=True, text=True)
    log = tmp_path / "calls.log"
    return result, log.read_text().splitlines() if log.exists() else []


def polaris_run(
    tmp_path: Path, fakes: Path, mig_count: str
) -> tuple[SiteDirectory, list[str], subprocess.CompletedProcess[str]]:
    site = make_site(tmp_path, "polaris", launcher_python=fakes / "launcher-python")
    bj = applied_batchjob(site, mig_count=mig_count)
    path, _ = render_checked(site, bj, tmp_path)
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("node0\nnode0\nnode1\nnode1\n")  # PBS lists a host once per slot
    result, calls = run_script(tmp_path, path, {"PBS_NODEFILE": str(nodefile)})
    return site, calls, result


@pytest.mark.parametrize(("mig_count", "profile"), [("2", "3g.20gb"), ("3", "2g.10gb"), ("7", "1g.5gb")])
def test_polaris_mig_splits_every_gpu_of_every_node_before_the_launcher(
    tmp_path: Path, fakes: Path, mig_count: str, profile: str
) -> None:
    site, calls, result = polaris_run(tmp_path, fakes, mig_count)
    site.close()
    assert result.returncode == 0, result.stderr
    assert calls[0] == "node0 mpiexec -n 2 --ppn 1"  # one process on each node, before anything else
    launcher = [i for i, c in enumerate(calls) if " launcher " in f" {c} "]
    assert launcher == [len(calls) - 1]  # the launcher starts last, once
    n = int(mig_count)
    for host in ("node0", "node1"):
        for gpu in "0123":
            assert f"{host} nvidia-smi -i {gpu} -mig 1" in calls
            created = [c for c in calls if c == f"{host} nvidia-smi mig -i {gpu} -cgi {profile} -C"]
            assert len(created) == n, (host, gpu)
        ids = (site.qsubmit_dir / "bj-1.mig" / host).read_text().strip().split(",")
        assert ids == [f"MIG-{host}-{gpu}-{k}" for gpu in "0123" for k in range(n)]
    expected = ",".join(f"MIG-node0-{gpu}-{k}" for gpu in "0123" for k in range(n))
    assert calls[-1] == f"node0 launcher BALSAM_GPU_IDS={expected}"


def test_polaris_mig_count_0_renders_none_of_it(tmp_path: Path, fakes: Path) -> None:
    site, calls, result = polaris_run(tmp_path, fakes, "0")
    try:
        assert result.returncode == 0, result.stderr
        assert calls == ["node0 launcher BALSAM_GPU_IDS=<unset>"]
        script = render_job_script(site, applied_batchjob_copy(site, mig_count="0"))
        for word in ("nvidia-smi", "mpiexec", "BALSAM_MIG_", "BALSAM_GPU_IDS", "# MIG"):
            assert word not in script
        with_mig = render_job_script(site, applied_batchjob_copy(site, mig_count="3")).splitlines()
        without = script.splitlines()
        # the MIG section goes right before the launcher command; all else is the same but the exported value
        count = "export BALSAM_OPT_MIG_COUNT="
        assert f"{count}0" in without
        before = [f"{count}3" if line.startswith(count) else line for line in without[:-1]]
        assert with_mig[: len(before)] == before and with_mig[-1] == without[-1]
        section = "\n".join(with_mig[len(before) : -1])
        assert 'mpiexec -n "$NNODES" --ppn 1' in section and '-cgi "$profile" -C' in section
    finally:
        site.close()


def applied_batchjob_copy(site: SiteDirectory, **optional_params: str) -> BatchJob:
    """A BatchJob like :func:`applied_batchjob`'s, not applied (for rendering variants)."""
    return BatchJob.model_validate(yaml.safe_load(batchjob_manifest(site.settings, **optional_params)))


def test_polaris_mig_failure_keeps_the_launcher_from_starting(
    tmp_path: Path, fakes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NO_MIG", "1")  # nvidia-smi -mig 1 refused, as without root
    site, calls, result = polaris_run(tmp_path, fakes, "3")
    site.close()
    assert result.returncode == 1 and "MIG setup failed" in result.stderr
    assert not any(" launcher " in f" {c} " for c in calls)


def test_polaris_refuses_an_unsupported_mig_count_before_submitting(tmp_path: Path) -> None:
    site = make_site(tmp_path, "polaris")
    try:
        with pytest.raises(SiteError, match="mig_count_must_be_0_2_3_or_7"):
            render_job_script(site, applied_batchjob(site, mig_count="5"))
    finally:
        site.close()


@pytest.mark.parametrize(("prime", "primed"), [("yes", True), ("no", False)])
def test_theta_knl_primes_the_cache_on_every_node_before_the_launcher(
    tmp_path: Path, fakes: Path, prime: str, primed: bool
) -> None:
    site = make_site(tmp_path, "theta-knl", launcher_python=fakes / "launcher-python")
    try:
        bj = applied_batchjob(site, singularity_prime_cache=prime)
        path, lines = render_checked(site, bj, tmp_path)
    finally:
        site.close()
    result, calls = run_script(tmp_path, path, {"COBALT_JOBSIZE": "2"})
    assert result.returncode == 0, result.stderr
    assert "export PMI_NO_FORK=1" in lines
    if primed:
        assert calls == [
            "node0 aprun -n 2 -N 1 /soft/tools/prime-cache COBALT_JOBSIZE=2",  # one per node, on every node
            "node0 sleep 10",
            "node0 launcher BALSAM_GPU_IDS=<unset>",
        ]
    else:
        assert calls == ["node0 launcher BALSAM_GPU_IDS=<unset>"]
        assert not any("prime-cache" in line or line.startswith("aprun") for line in lines)


# ---------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_site_init_with_a_platform(tmp_path: Path) -> None:
    result = runner.invoke(cli.app, ["site", "init", str(tmp_path / "pol"), "--platform", "polaris"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert result.stdout.strip() == f"site/pol created at {(tmp_path / 'pol').resolve()}"
    site = SiteDirectory.load(tmp_path / "pol")
    assert site.settings == preset("polaris").site_settings("pol")
    assert (site.path / "job-template.sh").read_text() == preset("polaris").template
    listed = runner.invoke(cli.app, ["site", "ls"])
    assert listed.exit_code == 0 and "pol" in listed.stdout


def test_cli_refuses_an_unknown_platform(tmp_path: Path) -> None:
    result = runner.invoke(cli.app, ["site", "init", str(tmp_path / "x"), "--platform", "frontier"])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: unknown platform 'frontier'; known platforms: {', '.join(EXPECTED)}"
    assert not (tmp_path / "x").exists()


def test_cli_help_lists_the_platforms() -> None:
    result = runner.invoke(cli.app, ["site", "init", "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    assert result.exit_code == 0 and "--platform" in result.stdout
    assert all(name in result.stdout for name in EXPECTED)

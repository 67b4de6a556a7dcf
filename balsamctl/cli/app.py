"""``balsamctl``: a kubectl-style command line over the balsamctl library."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from sqlalchemy.exc import DBAPIError
from typer.core import TyperGroup

from balsamctl import __version__
from balsamctl.cli import output
from balsamctl.schemas import KINDS, BatchJob, BatchJobState, Job, JobState, Manifest, kind_of
from balsamctl.schemas.settings import SchedulerKind
from balsamctl.site import platforms, registry
from balsamctl.site.apply import apply_documents, load_paths
from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory, SiteError
from balsamctl.site.joboutput import attempt_files
from balsamctl.site.lookup import resolve_sites
from balsamctl.store import ApplyResult, NotFound, Selector, Store, StoredObject
from balsamctl.store.migrations import SchemaError

PAGE = 1000
"""Rows fetched per query when streaming a listing (keyset pagination)."""
DEFAULT_LIMIT = 500
DEFAULT_EVENT_LIMIT = 100
MAX_ERROR_LINES = 50
EXPECTED_ERRORS = (SiteError, NotFound, ValueError, OSError, SchemaError)
"""Errors reported as ``error: ...`` without a traceback (ValueError covers ManifestError and Conflict)."""

OutputFormat = Literal["wide", "yaml", "json", "name"]
SiteOpt = Annotated[
    str | None,
    typer.Option(
        "--site",
        envvar="BALSAM_SITE",
        help="NAME, a,b, 'all' or 'this' (default: $BALSAM_SITE, else the site containing the current directory).",
    ),
]
FilesOpt = Annotated[list[str], typer.Option("-f", "--filename", help="A manifest file, a folder, or - for stdin.")]
RecursiveOpt = Annotated[bool, typer.Option("-R", "--recursive", help="Also read the subfolders of -f folders.")]
SelectorOpt = Annotated[str | None, typer.Option("-l", "--selector", help="Labels: key=value[,key=value...].")]


def _err(message: str) -> None:
    typer.echo(message, err=True)


@contextmanager
def reported(code: int) -> Iterator[None]:
    """Turn expected errors into ``error: ...`` lines on stderr and exit ``code``."""
    try:
        yield
    except BrokenPipeError:
        raise  # the reader went away (``| head``): typer exits quietly
    except EXPECTED_ERRORS as exc:
        lines = str(exc).splitlines() or [type(exc).__name__]
        for line in lines[:MAX_ERROR_LINES]:
            _err(f"error: {line}")
        if len(lines) > MAX_ERROR_LINES:
            _err(f"error: ... and {len(lines) - MAX_ERROR_LINES} more")
        raise typer.Exit(code) from None


class _Group(TyperGroup):
    """The root command: every expected error of every subcommand exits 1 with ``error: ...``."""

    def invoke(self, ctx: Any) -> Any:
        """Run the subcommand, reporting expected errors."""
        with reported(1):
            return super().invoke(ctx)


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Declarative control of HPC pilot jobs: Apps, Jobs and BatchJobs at one or more sites.",
)
site_app = typer.Typer(no_args_is_help=True, help="Create, list and forget sites.")
controller_app = typer.Typer(no_args_is_help=True, help="Run, start, stop or check a site's controller.")
app.add_typer(site_app, name="site")
app.add_typer(controller_app, name="controller")
queue_app = typer.Typer(no_args_is_help=True, help="Submit and list BatchJobs with the reference text's flags.")
app.add_typer(queue_app, name="queue")


# ---------------------------------------------------------------- helpers


def _echo(text: str) -> None:
    if text:
        typer.echo(text, nl=False)


def _sites(spec: str | None) -> list[SiteDirectory]:
    return resolve_sites(spec, Path.cwd())


def _by_store(sites: Sequence[SiteDirectory]) -> list[tuple[Store, dict[int, str]]]:
    """The sites grouped by the store they share, as ``(store, {site id: site name})``: one query per store lists
    them all (``--site=all`` over one PostgreSQL store is one query)."""
    groups: dict[str, tuple[Store, dict[int, str]]] = {}
    for s in sites:
        groups.setdefault(s.store_url, (s.store, {}))[1][s.site_id] = s.name
    return list(groups.values())


def _one_site(spec: str | None) -> SiteDirectory:
    sites = _sites(spec)
    if len(sites) != 1:
        raise SiteError(f"this command works on exactly one site, but --site {spec} names {len(sites)}")
    return sites[0]


def _stdin(files: Sequence[str]) -> str | None:
    return sys.stdin.read() if "-" in files else None


def _labels(selector: str | None) -> tuple[tuple[str, str], ...]:
    """``-l a=b,c==d`` as ``(("a", "b"), ("c", "d"))``."""
    pairs = []
    for term in filter(None, (selector or "").split(",")):
        key, sep, value = term.partition("=")
        if not sep or not key.strip() or key.endswith("!"):
            raise ValueError(f"invalid label selector {term!r}: expected key=value")
        pairs.append((key.strip(), value.removeprefix("=").strip()))
    return tuple(pairs)


def _states(kind: str, values: Sequence[str]) -> tuple[str, ...]:
    """``--state`` values (repeatable, comma-separated, any case) as the kind's state names."""
    words = [w for v in values for w in v.split(",") if w]
    if not words:
        return ()
    states: dict[str, type[JobState] | type[BatchJobState]] = {"Job": JobState, "BatchJob": BatchJobState}
    if kind not in states:
        raise ValueError(f"--state: {kind}s have no state")
    known = {s.value.lower(): s.value for s in states[kind]}
    unknown = [w for w in words if w.lower() not in known]
    if unknown:
        raise ValueError(f"--state: unknown {kind} state {unknown[0]!r}; expected one of {', '.join(known.values())}")
    return tuple(known[w.lower()] for w in words)


def _pages(store: Store, sel: Selector, limit: int | None) -> Iterator[list[StoredObject]]:
    """The objects of ``sel`` page by page (keyset pagination), at most ``limit`` of them (None: all)."""
    after_id = 0
    while limit is None or limit > 0:
        size = PAGE if limit is None else min(PAGE, limit)
        page = store.list_objects(sel, limit=size, after_id=after_id)
        if page:
            yield page
        if len(page) < size:
            return
        after_id = page[-1].id
        limit = None if limit is None else limit - len(page)


def _fetch(site: SiteDirectory, kind: str, name: str) -> StoredObject:
    """One object, or kubectl's NotFound message and exit 1."""
    try:
        return site.store.get_object(site.site_id, kind, name)
    except NotFound:
        _err(output.not_found(f"{kind.lower()}/{name}"))
        raise typer.Exit(1) from None


def _print_results(results: Iterable[ApplyResult], suffix: str = "", prefix: str = "") -> bool:
    """Print ``job/x created`` style lines (kubectl's message for ``not found``), each after ``prefix`` (a site's
    ``SITE/``); whether all were found."""
    all_found = True
    for r in results:
        if r.action == "not found":
            _err(output.not_found(r.ref))
            all_found = False
        else:
            typer.echo(f"{prefix}{r.ref} {r.action}{suffix}")
    return all_found


# ---------------------------------------------------------------- site


@site_app.command("init")
def site_init(
    path: Annotated[Path, typer.Argument(help="The new site's directory.")],
    name: Annotated[str | None, typer.Option("--name", help="Default: the directory's name.")] = None,
    scheduler: Annotated[
        SchedulerKind | None,
        typer.Option(
            "--scheduler",
            help="The batch scheduler: the site is made from its preset, as with --platform generic-X (local: "
            "the local preset). Jobs start with srun under slurm, mpiexec under pbs, mpirun under lsf, aprun under "
            "cobalt. Default: local.",
        ),
    ] = None,
    platform: Annotated[
        str | None,
        typer.Option(
            "--platform",
            metavar="NAME",
            help="Take the scheduler, settings and job template from a preset: "
            + ", ".join(platforms.platform_names())
            + ".",
        ),
    ] = None,
) -> None:
    """Lay out a new site directory and register it.

    Its scheduler, settings.yml and job-template.sh come from a platform preset (balsamctl/site/platforms/);
    --scheduler X gives exactly what --platform generic-X gives.
    """
    site = init_site(path, name or path.resolve().name, scheduler, platform=platform)
    typer.echo(f"site/{site.name} created at {site.path}")


def _print_sites(entries: Iterable[tuple[str, Path]], fmt: OutputFormat | None) -> bool:
    """The sites table (or names); sites whose directory or store cannot be read are listed with a warning.
    Whether every site could be read."""
    if fmt in ("yaml", "json"):
        raise ValueError(f"-o {fmt} is not supported for sites")
    rows, readable = [], True
    for name, path in entries:
        site, site_id, unstarted = None, None, None
        try:
            site = SiteDirectory.load(path)
            site_id = site.site_id  # opens the store
            unstarted = _unstarted(site, site_id)
        except SiteError as exc:
            _err(f"warning: {exc}" if site else f"warning: site {name}: {exc}")
            readable = False
        rows.append(output.site_row(name, path, site, site_id, unstarted))
    if fmt == "name":
        _echo("".join(f"site/{r[0]}\n" for r in rows))
    else:
        _echo(output.table(output.SITE_HEADERS, rows))
    return readable


def _unstarted(site: SiteDirectory, site_id: int) -> int | None:
    """The site's allocations in a row that never started a launcher; None, with a warning, if its store fails
    to count them (the rest of its row is still shown)."""
    try:
        return site.store.allocations_not_started(site_id)
    except DBAPIError as exc:
        said = str(getattr(exc, "orig", None) or exc).splitlines() or [type(exc).__name__]
        _err(f"warning: site {site.name}: cannot count its allocations that never started a launcher: {said[0]}")
        return None


@site_app.command("ls")
def site_ls() -> None:
    """List the registered sites."""
    entries = registry.load_registry()
    if not entries:
        _err("No sites registered.")
    _print_sites(sorted(entries.items()), None)  # the registry is listed whole: unreadable sites are warnings


@site_app.command("rm")
def site_rm(name: Annotated[str, typer.Argument(help="The site to forget.")]) -> None:
    """Unregister a site; its directory and store are left untouched."""
    path = registry.load_registry().get(name)
    if path is None or not registry.unregister(name):
        raise SiteError(f"no site named {name!r} is registered")
    typer.echo(f"site/{name} unregistered (its directory {path} and its store were left untouched)")


# ---------------------------------------------------------------- apply, delete, diff


@app.command()
def apply(
    files: FilesOpt,
    recursive: RecursiveOpt = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and show what would change, job scripts included.")
    ] = False,
    site: SiteOpt = None,
) -> None:
    """Create or update objects from manifests, all or nothing."""
    target = _one_site(site)
    docs = load_paths(files, recursive, _stdin(files))
    if not docs:
        raise ValueError("no objects passed to apply")
    _print_results(apply_documents(target, docs, dry_run=dry_run), " (dry run)" if dry_run else "")
    if dry_run:
        for doc in docs:
            if isinstance(doc.manifest, BatchJob):
                _echo(_submit_plan(target, doc.manifest))


def _submit_plan(site: SiteDirectory, bj: BatchJob) -> str:
    """The job script and scheduler command that submitting ``bj`` would use."""
    from balsamctl.schedulers import get_scheduler
    from balsamctl.site.jobscript import render_job_script, submit_request  # jinja2 only when needed

    req = submit_request(site, bj)
    argv = get_scheduler(site.settings.scheduler, site.path).submit_command(req)
    return output.submit_plan(f"batchjob/{bj.metadata.name}", req.script_path, render_job_script(site, bj), argv)


@queue_app.command("submit")
def queue_submit(
    queue: Annotated[str, typer.Option("-q", "--queue", help="The scheduler queue.")],
    project: Annotated[str, typer.Option("-A", "--project", help="The allocation project.")],
    num_nodes: Annotated[int, typer.Option("-n", "--num-nodes", help="Nodes.")],
    wall_time_min: Annotated[int, typer.Option("-t", "--wall-time-min", help="Minutes.")],
    job_mode: Annotated[str, typer.Option("-j", "--job-mode", help="mpi or serial.")] = "mpi",
    tags: Annotated[list[str] | None, typer.Option("--tag", help="Run only Jobs with this tag (k=v).")] = None,
    partitions: Annotated[
        list[str] | None, typer.Option("-p", "--partition", help="MODE:NODES[:k=v...], e.g. mpi:2:role=leader.")
    ] = None,
    params: Annotated[list[str] | None, typer.Option("-x", help="Optional param k=v of the site's template.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Default: a generated name.")] = None,
    site: SiteOpt = None,
) -> None:
    """Create a BatchJob (the same object an apply would create) and print it as YAML."""
    from balsamctl.cli.queue import batchjob_document

    target = _one_site(site)
    doc = batchjob_document(
        name=name,
        queue=queue,
        project=project,
        num_nodes=num_nodes,
        wall_time_min=wall_time_min,
        job_mode=job_mode,
        tags=tags or [],
        partitions=partitions or [],
        params=params or [],
    )
    apply_documents(target, [doc])
    _echo(output.to_yaml(output.to_dict(_fetch(target, "BatchJob", doc.manifest.metadata.name))))


@queue_app.command("ls")
def queue_ls(
    history: Annotated[bool, typer.Option("--history", help="Also finished and failed BatchJobs.")] = False,
    site: SiteOpt = None,
) -> None:
    """List BatchJobs: scheduler id, state, nodes, queue, wall time."""
    done = {BatchJobState.finished.value, BatchJobState.submit_failed.value}
    states = None if history else [s.value for s in BatchJobState if s.value not in done]
    get("batchjobs", names=None, selector=None, state=states, fmt=None, limit=None, event_kind=None, site=site)


@app.command()
def delete(
    kind: Annotated[str | None, typer.Argument(help="apps, jobs or batchjobs (bj).")] = None,
    names: Annotated[list[str] | None, typer.Argument(help="The objects to delete.")] = None,
    files: Annotated[
        list[str] | None, typer.Option("-f", "--filename", help="Delete the objects of manifests.")
    ] = None,
    recursive: RecursiveOpt = False,
    selector: SelectorOpt = None,
    site: SiteOpt = None,
) -> None:
    """Delete objects by KIND NAME..., by [SITE/]KIND/NAME... (what get -o name prints), by manifest (-f FILE) or by
    label (KIND -l key=value).

    Jobs and Apps go at once; a BatchJob's allocation is cancelled first ("deletion requested").
    """
    usage = typer.BadParameter(
        "use: delete KIND NAME... | delete [SITE/]KIND/NAME... | delete -f FILE | delete KIND -l key=value"
    )
    if kind is not None and "/" in kind:
        if files or selector:
            raise usage
        if not _delete_named([kind, *(names or [])], site):
            raise typer.Exit(1)
        return
    target = _one_site(site)
    if files:
        if kind or selector:
            raise usage
        keys = [doc.key for doc in load_paths(files, recursive, _stdin(files))]
        found = _print_results(target.store.delete(target.site_id, keys))
    elif kind is None or bool(names) == bool(selector):
        raise usage
    elif names:
        found = _print_results(target.store.delete(target.site_id, [(kind_of(kind), n) for n in names]))
    else:
        found = True
        sel = Selector(kind_of(kind), (target.site_id,), labels=_labels(selector))
        for page in _pages(target.store, sel, None):
            found = _print_results(target.store.delete(target.site_id, [(o.kind, o.name) for o in page])) and found
    target.poke()
    if not found:
        raise typer.Exit(1)


def _delete_named(refs: Sequence[str], spec: str | None) -> bool:
    """Delete ``[SITE/]KIND/NAME`` references, each at the site it names (``--site``'s one site if it names none);
    whether all were found."""
    keys: dict[str | None, list[tuple[str, str]]] = {}
    for ref in refs:
        site_name, kind, name = output.parse_name(ref)
        keys.setdefault(site_name, []).append((kind_of(kind), name))
    targets = {s: _one_site(spec) if s is None else _registered_site(s) for s in keys}  # bad input changes nothing
    found = True
    for site_name, target in targets.items():
        prefix = "" if site_name is None else f"{site_name}/"
        found = _print_results(target.store.delete(target.site_id, keys[site_name]), prefix=prefix) and found
        target.poke()
    return found


def _registered_site(name: str) -> SiteDirectory:
    """The registered site named ``name`` (a reference's ``SITE/`` part: a name, never ``all`` or ``this``)."""
    path = registry.load_registry().get(name)
    if path is None:
        raise SiteError(f"no site named {name!r} is registered")
    return SiteDirectory.load(path)


@app.command()
def rerun(
    kind: Annotated[str, typer.Argument(help="jobs")],
    names: Annotated[list[str] | None, typer.Argument(help="Only these Jobs.")] = None,
    selector: SelectorOpt = None,
    state: Annotated[
        list[str] | None, typer.Option("--state", help="Only Jobs in these states (default FAILED).")
    ] = None,
    site: SiteOpt = None,
) -> None:
    """Reset chosen FAILED (or JOB_FINISHED) Jobs to READY for another go; earlier attempts' output is kept."""
    if kind_of(kind) != "Job":
        raise ValueError("only Jobs can be rerun")
    target = _one_site(site)
    states = _states("Job", state or ["FAILED"])
    sel = Selector("Job", (target.site_id,), names=tuple(names or ()), labels=_labels(selector), states=states)
    count = sum(target.store.rerun(target.site_id, [o.id for o in page]) for page in _pages(target.store, sel, None))
    target.poke()
    typer.echo(f"{count} job(s) reset to READY")


@app.command()
def diff(files: FilesOpt, recursive: RecursiveOpt = False, site: SiteOpt = None) -> None:
    """Show how applying manifests would change the live objects: exit 0 no change, 1 changes, 2 error."""
    changed = False
    with reported(2):
        target = _one_site(site)
        docs = load_paths(files, recursive, _stdin(files))
        live: dict[tuple[str, str], Manifest] = {}
        for kind in {d.manifest.kind for d in docs}:
            sel = Selector(
                kind, (target.site_id,), names=tuple(d.manifest.metadata.name for d in docs if d.key[0] == kind)
            )
            live.update({(o.kind, o.name): o.manifest for o in target.store.list_objects(sel)})
        for doc in docs:
            text = output.unified_diff(doc.ref, live.get(doc.key), doc.manifest)
            changed = changed or bool(text)
            _echo(text)
    raise typer.Exit(1 if changed else 0)


# ---------------------------------------------------------------- get, describe


@app.command()
def get(
    kind: Annotated[str, typer.Argument(help="apps, jobs, batchjobs (bj), sites or events.")],
    names: Annotated[list[str] | None, typer.Argument(help="Only these objects (events: of this object).")] = None,
    selector: SelectorOpt = None,
    state: Annotated[list[str] | None, typer.Option("--state", help="Only objects in these states.")] = None,
    fmt: Annotated[OutputFormat | None, typer.Option("-o", "--output", help="wide, yaml, json or name.")] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            min=0,
            help="At most N (default: tables 500, events 100; -o name|json|yaml every match); 0: all, page by page.",
        ),
    ] = None,
    event_kind: Annotated[str | None, typer.Option("--kind", help="events: only of this kind.")] = None,
    site: SiteOpt = None,
) -> None:
    """List objects as a table, or as YAML, JSON or names."""
    word = {"site": "sites", "sites": "sites", "event": "events", "events": "events"}.get(kind.lower())
    names = names or []
    if word in ("sites", "events") and (selector or state):
        raise ValueError(f"-l and --state do not apply to {word}")
    if word != "events" and event_kind:
        raise ValueError("--kind applies to events only")
    if word == "sites":
        if names:
            raise ValueError("get sites takes no NAME; choose sites with --site")
        if not _print_sites(((s.name, s.path) for s in _sites(site)), fmt):
            raise typer.Exit(1)  # the sites asked for by name could not all be read
    elif word == "events":
        sites = _sites(site)
        limit = DEFAULT_EVENT_LIMIT if limit is None else limit
        _get_events(sites, names, event_kind, limit, fmt, many=_many(site, sites))
    else:
        k = kind_of(kind)
        sel = Selector(k, (), names=tuple(names), labels=_labels(selector), states=_states(k, state or []))
        sites = _sites(site)
        _get_objects(sites, sel, fmt or "table", 0 if names else _limit(fmt, limit), many=_many(site, sites))


def _many(spec: str | None, sites: Sequence[SiteDirectory]) -> bool:
    """Whether ``--site`` chose many sites, so that listings name each row's site (as kubectl's ``-A`` always shows
    NAMESPACE): ``all``, even with one site registered, or more than one site."""
    return spec == "all" or len({s.name for s in sites}) > 1


def _limit(fmt: OutputFormat | None, limit: int | None) -> int:
    """``--limit``, else its default (0: none): a table pages; ``-o name|json|yaml`` returns every match, so that a
    script counting them is never capped at a page without knowing."""
    if limit is not None:
        return limit
    return DEFAULT_LIMIT if fmt in (None, "wide") else 0


def _get_objects(sites: Sequence[SiteDirectory], sel: Selector, fmt: output.Format, limit: int, *, many: bool) -> None:
    """Stream the objects of ``sel`` at every site, a page at a time; the stderr footer when ``limit`` (0: none)
    cut the listing. ``many``: each row names its site."""
    single = len(sel.names) == 1 and not many
    out = output.writer(sel.kind, fmt, with_site=many, single=single, now=time.time())
    per_store = [
        (store, Selector(sel.kind, tuple(site_names), sel.names, sel.labels, sel.states))
        for store, site_names in _by_store(sites)
    ]
    shown, found = 0, set[str]()
    for store, store_sel in per_store:
        if limit and shown >= limit:
            break
        for page in _pages(store, store_sel, limit - shown if limit else None):
            shown += len(page)
            if sel.names:
                found.update(o.name for o in page)
            _echo(out.page(page))
    _echo(out.end())
    missing = [n for n in dict.fromkeys(sel.names) if n not in found]
    for name in missing:
        _err(output.not_found(f"{sel.kind.lower()}/{name}"))
    if missing:
        raise typer.Exit(1)
    if not shown:
        _err("No resources found.")
    elif limit and shown >= limit:
        total = sum(store.count_objects(store_sel) for store, store_sel in per_store)
        if total > shown:
            _err(f"(showing {shown} of {total} {sel.kind.lower()}s: {total - shown} left out; use --limit 0 for all)")


def _get_events(
    sites: Sequence[SiteDirectory],
    names: Sequence[str],
    kind: str | None,
    limit: int,
    fmt: OutputFormat | None,
    *,
    many: bool,
) -> None:
    """The newest ``limit`` events of the sites (of one object with a NAME), newest last."""
    if fmt not in (None, "wide"):
        raise ValueError(f"-o {fmt} is not supported for events")
    if len(names) > 1:
        raise ValueError("get events takes at most one NAME")
    if limit == 0:
        raise ValueError("--limit 0 (all) is not supported for events; give a number")
    k = kind_of(kind) if kind else None
    found = [
        (site_names[e["site_id"]], e)
        for store, site_names in _by_store(sites)
        for e in store.events(tuple(site_names), kind=k, name=names[0] if names else None, limit=limit)
    ]
    found = sorted(found, key=lambda se: se[1]["time"])[-limit:]
    headers = (["SITE"] if many else []) + output.EVENT_HEADERS
    rows = [([name] if many else []) + output.event_row(e) for name, e in found]
    if not rows:
        _err("No events found.")
    _echo(output.table(headers, rows))


@app.command()
def describe(
    kind: Annotated[str, typer.Argument(help="apps, jobs or batchjobs (bj).")],
    name: Annotated[str, typer.Argument(help="The object.")],
    site: SiteOpt = None,
) -> None:
    """Show one object in detail: fields, spec, status and its last 20 events."""
    target = _one_site(site)
    obj = _fetch(target, kind_of(kind), name)
    events = target.store.events((target.site_id,), kind=obj.kind, name=obj.name, limit=20)
    _echo(output.describe(obj, events, time.time()))


# ---------------------------------------------------------------- logs, schema, version


@app.command()
def logs(
    kind: Annotated[str, typer.Argument(help="job")],
    name: Annotated[str, typer.Argument(help="The Job.")],
    attempt: Annotated[int | None, typer.Option("--attempt", min=1, help="Only this attempt.")] = None,
    site: SiteOpt = None,
) -> None:
    """Print a Job's output, every attempt in order (or one with --attempt)."""
    if kind_of(kind) != "Job":
        raise ValueError("only Jobs have logs")
    target = _one_site(site)
    job = _fetch(target, "Job", name).manifest
    assert isinstance(job, Job)
    workdir = target.workdir(job.spec.workdir)
    files = attempt_files(workdir)
    if not files:
        raise SiteError(f"job/{name} has no output yet (no job.out in {workdir})")
    if attempt is not None:
        if attempt not in files:
            raise SiteError(f"job/{name} has no output of attempt {attempt} (attempts: {', '.join(map(str, files))})")
        files = {attempt: files[attempt]}
    for number, path in files.items():
        if len(files) > 1:
            typer.echo(f"==> attempt {number} <==")
        with path.open(errors="replace") as stream:
            while chunk := stream.read(1 << 16):
                typer.echo(chunk, nl=False)


@app.command()
def schema(kind: Annotated[str, typer.Argument(help="App, Job or BatchJob.")]) -> None:
    """Print a kind's JSON Schema."""
    typer.echo(json.dumps(KINDS[kind_of(kind)].model_json_schema(by_alias=True), indent=2))


@app.command()
def version() -> None:
    """Print balsamctl's version."""
    typer.echo(f"balsamctl {__version__}")


# ---------------------------------------------------------------- controller


@controller_app.command("run")
def controller_run(site: SiteOpt = None) -> None:
    """Run the site's controller in the foreground."""
    from balsamctl.controller import daemon

    daemon.run(_one_site(site))


@controller_app.command("start")
def controller_start(site: SiteOpt = None) -> None:
    """Start the controller of each site in the background."""
    from balsamctl.controller import daemon

    for s in _sites(site):
        pid = daemon.start(s)
        typer.echo(f"controller of site/{s.name} started (pid {pid}, log {daemon.status(s)['log']})")


@controller_app.command("stop")
def controller_stop(site: SiteOpt = None) -> None:
    """Stop the controller of each site."""
    from balsamctl.controller import daemon

    for s in _sites(site):
        typer.echo(f"controller of site/{s.name} {'stopped' if daemon.stop(s) else 'was not running'}")


@controller_app.command("status")
def controller_status(site: SiteOpt = None) -> None:
    """Whether each site's controller runs."""
    from balsamctl.controller import daemon

    rows = []
    for s in _sites(site):
        st = daemon.status(s)
        rows.append([s.name, "running" if st["running"] else "stopped", output.cell(st["pid"]), str(st["log"])])
    _echo(output.table(["SITE", "STATUS", "PID", "LOG"], rows))


def main() -> None:
    """The ``balsamctl`` entry point."""
    app()

"""The verbs that change a site's objects: ``apply``, ``delete``, ``rerun`` and ``diff`` (which only compares)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer

from balsamctl.cli import output
from balsamctl.cli.common import (
    FilesOpt,
    RecursiveOpt,
    SelectorOpt,
    SiteOpt,
    complete_kinds,
    complete_names,
    echo,
    one_site,
    print_results,
    registered_site,
    reported,
    states,
    stdin,
    store_pages,
)
from balsamctl.cli.listing import parse_labels
from balsamctl.schemas import BatchJob, Manifest, kind_of
from balsamctl.site.apply import apply_documents, load_paths
from balsamctl.site.handle import Site
from balsamctl.store import Selector


def apply(
    files: FilesOpt,
    recursive: RecursiveOpt = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and show what would change, job scripts included.")
    ] = False,
    site: SiteOpt = None,
) -> None:
    """Create or update objects from manifests, all or nothing."""
    target = one_site(site)
    docs = load_paths(files, recursive, stdin(files))
    if not docs:
        raise ValueError("no objects passed to apply")
    print_results(apply_documents(target, docs, dry_run=dry_run), " (dry run)" if dry_run else "")
    if dry_run:
        for doc in docs:
            if isinstance(doc.manifest, BatchJob):
                echo(_submit_plan(target, doc.manifest))


def _submit_plan(site: Site, bj: BatchJob) -> str:
    """The job script and scheduler command that submitting ``bj`` would use."""
    from balsamctl.schedulers import get_scheduler
    from balsamctl.site.jobscript import render_job_script, submit_request  # jinja2 only when needed

    req = submit_request(site, bj)
    argv = get_scheduler(site.settings.scheduler, site.path).submit_command(req)
    return output.submit_plan(f"batchjob/{bj.metadata.name}", req.script_path, render_job_script(site, bj), argv)


def delete(
    kind: Annotated[
        str | None, typer.Argument(help="apps, jobs or batchjobs (bj).", autocompletion=complete_kinds)
    ] = None,
    names: Annotated[
        list[str] | None, typer.Argument(help="The objects to delete.", autocompletion=complete_names)
    ] = None,
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
    target = one_site(site)
    if files:
        if kind or selector:
            raise usage
        keys = [doc.key for doc in load_paths(files, recursive, stdin(files))]
        found = print_results(target.store.delete(target.site_id, keys))
    elif kind is None or bool(names) == bool(selector):
        raise usage
    elif names:
        found = print_results(target.store.delete(target.site_id, [(kind_of(kind), n) for n in names]))
    else:
        found = True
        sel = Selector(kind_of(kind), (target.site_id,), labels=parse_labels(selector))
        for page in store_pages(target.store, sel, None):
            found = print_results(target.store.delete(target.site_id, [(o.kind, o.name) for o in page])) and found
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
    targets = {s: one_site(spec) if s is None else registered_site(s) for s in keys}  # bad input changes nothing
    found = True
    for site_name, target in targets.items():
        prefix = "" if site_name is None else f"{site_name}/"
        found = print_results(target.store.delete(target.site_id, keys[site_name]), prefix=prefix) and found
        target.poke()
    return found


def rerun(
    kind: Annotated[str, typer.Argument(help="jobs", autocompletion=complete_kinds)],
    names: Annotated[list[str] | None, typer.Argument(help="Only these Jobs.", autocompletion=complete_names)] = None,
    selector: SelectorOpt = None,
    state: Annotated[
        list[str] | None, typer.Option("--state", help="Only Jobs in these states (default FAILED).")
    ] = None,
    site: SiteOpt = None,
) -> None:
    """Reset chosen FAILED (or JOB_FINISHED) Jobs to READY for another go; earlier attempts' output is kept."""
    if kind_of(kind) != "Job":
        raise ValueError("only Jobs can be rerun")
    target = one_site(site)
    chosen = states("Job", state or ["FAILED"])
    sel = Selector("Job", (target.site_id,), names=tuple(names or ()), labels=parse_labels(selector), states=chosen)
    count = sum(
        target.store.rerun(target.site_id, [o.id for o in page]) for page in store_pages(target.store, sel, None)
    )
    target.poke()
    typer.echo(f"{count} job(s) reset to READY")


def diff(files: FilesOpt, recursive: RecursiveOpt = False, site: SiteOpt = None) -> None:
    """Show how applying manifests would change the live objects: exit 0 no change, 1 changes, 2 error."""
    changed = False
    with reported(2):
        target = one_site(site)
        docs = load_paths(files, recursive, stdin(files))
        live: dict[tuple[str, str], Manifest] = {}
        for kind in {d.manifest.kind for d in docs}:
            sel = Selector(
                kind, (target.site_id,), names=tuple(d.manifest.metadata.name for d in docs if d.key[0] == kind)
            )
            live.update({(o.kind, o.name): o.manifest for o in target.store.list_objects(sel)})
        for doc in docs:
            text = output.unified_diff(doc.ref, live.get(doc.key), doc.manifest)
            changed = changed or bool(text)
            echo(text)
    raise typer.Exit(1 if changed else 0)

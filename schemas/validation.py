"""Checks that span documents: Apps and parameters, parents and cycles, site limits. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from balsamctl.schemas.manifest import Document, Problem
from balsamctl.schemas.objects import App, AppSpec, BatchJob, BatchJobSpec, Job
from balsamctl.schemas.settings import SiteSettings


def check_batch(
    docs: Sequence[Document],
    *,
    site: SiteSettings,
    stored_apps: Mapping[str, AppSpec],
    stored_parents: Mapping[str, Sequence[str]],
) -> list[Problem]:
    """Every cross-document problem of one apply.

    ``stored_apps`` holds the site's Apps that the batch refers to; ``stored_parents`` maps each stored Job that
    the batch names as a parent to that Job's own parents (to find cycles through stored Jobs).
    """
    problems: list[Problem] = []
    seen: dict[tuple[str, str], Document] = {}
    for doc in docs:
        if doc.key in seen:
            first = seen[doc.key]
            problems.append(doc.problem("metadata.name", f"duplicate of document {first.index} in {first.source}"))
        seen[doc.key] = doc
        wanted_site = doc.manifest.metadata.site
        if wanted_site is not None and wanted_site != site.name:
            problems.append(doc.problem("metadata.site", f"is {wanted_site!r}, but this apply targets {site.name!r}"))
    apps = dict(stored_apps)
    apps.update({d.manifest.metadata.name: d.manifest.spec for d in docs if isinstance(d.manifest, App)})
    batch_jobs = {d.manifest.metadata.name: d.manifest for d in docs if isinstance(d.manifest, Job)}
    for doc in docs:
        if isinstance(doc.manifest, Job):
            problems += _check_job(doc, doc.manifest, apps, batch_jobs, stored_parents)
        elif isinstance(doc.manifest, BatchJob):
            problems += [doc.problem(f, m) for f, m in check_batchjob_limits(doc.manifest.spec, site)]
    problems += _cycles(docs, batch_jobs, stored_parents)
    return problems


def _check_job(
    doc: Document,
    job: Job,
    apps: Mapping[str, AppSpec],
    batch_jobs: Mapping[str, Job],
    stored_parents: Mapping[str, Sequence[str]],
) -> list[Problem]:
    problems: list[Problem] = []
    app = apps.get(job.spec.app)
    if app is None:
        problems.append(doc.problem("spec.app", f"App {job.spec.app!r} does not exist at this site"))
    else:
        for pname in job.spec.parameters:
            if pname not in app.parameters:
                declared = ", ".join(sorted(app.parameters)) or "none"
                problems.append(
                    doc.problem(
                        f"spec.parameters.{pname}",
                        f"App {job.spec.app!r} declares no such parameter (declared: {declared})",
                    )
                )
        for pname, param in app.parameters.items():
            if param.required and pname not in job.spec.parameters:
                problems.append(
                    doc.problem(f"spec.parameters.{pname}", f"required by App {job.spec.app!r} but missing")
                )
    for i, parent in enumerate(job.spec.parents):
        if parent == job.metadata.name:
            problems.append(doc.problem(f"spec.parents[{i}]", "a Job cannot be its own parent"))
        elif parent not in batch_jobs and parent not in stored_parents:
            problems.append(doc.problem(f"spec.parents[{i}]", f"parent Job {parent!r} does not exist"))
    return problems


def _cycles(
    docs: Sequence[Document], batch_jobs: Mapping[str, Job], stored_parents: Mapping[str, Sequence[str]]
) -> list[Problem]:
    def parents_of(name: str) -> Sequence[str]:
        job = batch_jobs.get(name)
        return job.spec.parents if job is not None else stored_parents.get(name, ())

    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    problems: list[Problem] = []
    by_name = {d.manifest.metadata.name: d for d in docs if isinstance(d.manifest, Job)}
    for root in batch_jobs:
        if state.get(root):
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        state[root] = 1
        path.append(root)
        while stack:
            node, i = stack[-1]
            ps = parents_of(node)
            if i < len(ps):
                stack[-1] = (node, i + 1)
                nxt = ps[i]
                if state.get(nxt) == 1:
                    cycle = [*path[path.index(nxt) :], nxt]
                    doc = by_name.get(nxt) or by_name.get(node) or by_name[root]
                    problems.append(doc.problem("spec.parents", "dependency cycle: " + " -> ".join(cycle)))
                elif not state.get(nxt):
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                path.pop()
                stack.pop()
    return problems


def check_batchjob_limits(spec: BatchJobSpec, site: SiteSettings) -> list[tuple[str, str]]:
    """``(field, message)`` for each site limit a BatchJob breaks."""
    problems: list[tuple[str, str]] = []
    queue = site.allowed_queues.get(spec.queue)
    if queue is None:
        allowed = ", ".join(sorted(site.allowed_queues)) or "none"
        problems.append(("spec.queue", f"queue {spec.queue!r} is not in the site's allowed_queues ({allowed})"))
    else:
        if spec.num_nodes > queue.max_nodes:
            problems.append(
                ("spec.num_nodes", f"{spec.num_nodes} exceeds max_nodes {queue.max_nodes} of queue {spec.queue!r}")
            )
        if spec.wall_time_min > queue.max_walltime:
            problems.append(
                (
                    "spec.wall_time_min",
                    f"{spec.wall_time_min} exceeds max_walltime {queue.max_walltime} of queue {spec.queue!r}",
                )
            )
    if site.allowed_projects and spec.project not in site.allowed_projects:
        allowed = ", ".join(site.allowed_projects)
        problems.append(("spec.project", f"project {spec.project!r} is not in allowed_projects ({allowed})"))
    for key in spec.optional_params:
        if key not in site.optional_batch_job_params:
            declared = ", ".join(sorted(site.optional_batch_job_params)) or "none"
            problems.append(
                (f"spec.optional_params.{key}", f"not declared in the site's optional_batch_job_params ({declared})")
            )
    return problems

"""Site helpers: raw App/Job/BatchJob documents, applying them to a site, settings edits, Jobs made runnable."""

from __future__ import annotations

from typing import Any

import yaml

from balsamctl.controller.jobs import JobReconciler
from balsamctl.schemas import Job
from balsamctl.schemas.manifest import parse_documents
from balsamctl.site.apply import apply_documents
from balsamctl.site.directory import SiteDirectory


def configure(site: SiteDirectory, extra: dict[str, Any]) -> SiteDirectory:
    """``site`` reloaded with ``extra`` merged into its settings.yml (nested mappings merged one level deep)."""
    path = site.path / "settings.yml"
    body = yaml.safe_load(path.read_text())
    for key, value in extra.items():
        body[key] = {**body[key], **value} if isinstance(value, dict) and isinstance(body.get(key), dict) else value
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    site.close()
    return SiteDirectory.load(site.path)


def app(name: str, command: str, params: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body = {"command": command, "parameters": params or {}, **spec}
    return {"apiVersion": "balsam/v1", "kind": "App", "metadata": {"name": name}, "spec": body}


def job(name: str, app_name: str, workdir: str, params: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body = {"app": app_name, "workdir": workdir, "parameters": params or {}, **spec}
    return {"apiVersion": "balsam/v1", "kind": "Job", "metadata": {"name": name}, "spec": body}


def batchjob(name: str) -> dict[str, Any]:
    body = {"num_nodes": 1, "wall_time_min": 5, "queue": "local", "project": "local"}
    return {"apiVersion": "balsam/v1", "kind": "BatchJob", "metadata": {"name": name}, "spec": body}


def apply_raws(site: SiteDirectory, *raws: dict[str, Any], source: str = "sec.yaml") -> dict[str, str]:
    docs = parse_documents(yaml.safe_dump_all(raws, sort_keys=False), source)
    return {r.ref: r.action for r in apply_documents(site, docs, source=source)}


def stored_job(site: SiteDirectory, name: str) -> Job:
    manifest = site.store.get_object(site.site_id, "Job", name).manifest
    assert isinstance(manifest, Job)
    return manifest


def advance_to_runnable(site: SiteDirectory) -> None:
    """The controller's Job reconciler, in process, until nothing moves (Apps without hooks: to PREPROCESSED)."""
    reconciler = JobReconciler(site, lambda: None)
    try:
        for _ in range(20):
            if not reconciler():
                break
    finally:
        reconciler.close()

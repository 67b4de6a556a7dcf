"""``balsamctl queue``: submit and list BatchJobs with the reference text's flags (unchanged), ``submit``'s turned
into a BatchJob manifest."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from balsamctl.cli import output
from balsamctl.cli.common import SiteOpt, echo, fetch, one_site
from balsamctl.schemas import BatchJobState
from balsamctl.schemas.manifest import Document, ManifestError, validate_document
from balsamctl.schemas.objects import API_VERSION
from balsamctl.site.apply import apply_documents

queue_app = typer.Typer(no_args_is_help=True)


def parse_pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    """``["k=v", ...]`` as a dict; ``ValueError`` naming the flag on a malformed item."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        pairs[key] = value
    return pairs


def parse_partition(text: str) -> dict[str, Any]:
    """``mpi:2:role=leader`` (``MODE:NODES[:KEY=VALUE...]``) as a partition."""
    mode, _, rest = text.partition(":")
    nodes, _, tags = rest.partition(":")
    if not mode or not nodes.isdigit():
        raise ValueError(f"-p {text!r}: expected MODE:NODES[:KEY=VALUE...], e.g. mpi:2:role=leader")
    filter_tags = parse_pairs([t for t in tags.replace(",", ":").split(":") if t], "-p")
    return {"job_mode": mode, "num_nodes": int(nodes), "filter_tags": filter_tags}


def batchjob_document(
    *,
    name: str | None,
    queue: str,
    project: str,
    num_nodes: int,
    wall_time_min: int,
    job_mode: str,
    tags: Sequence[str] = (),
    partitions: Sequence[str] = (),
    params: Sequence[str] = (),
) -> Document:
    """The BatchJob an apply would create from the same fields; :class:`ManifestError` if invalid."""
    body = {
        "apiVersion": API_VERSION,
        "kind": "BatchJob",
        "metadata": {"name": name or f"batchjob-{uuid.uuid4().hex[:10]}"},
        "spec": {
            "num_nodes": num_nodes,
            "wall_time_min": wall_time_min,
            "queue": queue,
            "project": project,
            "job_mode": job_mode,
            "filter_tags": parse_pairs(tags, "--tag"),
            "partitions": [parse_partition(p) for p in partitions],
            "optional_params": parse_pairs(params, "-x"),
        },
    }
    doc, problems = validate_document(body, "queue submit", 1)
    if doc is None:
        raise ManifestError(problems)
    return doc


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
    target = one_site(site)
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
    echo(output.to_yaml(output.to_dict(fetch(target, "BatchJob", doc.manifest.metadata.name))))


@queue_app.command("ls")
def queue_ls(
    history: Annotated[bool, typer.Option("--history", help="Also finished and failed BatchJobs.")] = False,
    site: SiteOpt = None,
) -> None:
    """List BatchJobs: scheduler id, state, nodes, queue, wall time."""
    from balsamctl.cli.read import get

    done = {BatchJobState.finished.value, BatchJobState.submit_failed.value}
    states = None if history else [s.value for s in BatchJobState if s.value not in done]
    get("batchjobs", names=None, selector=None, state=states, fmt=None, limit=None, event_kind=None, site=site)

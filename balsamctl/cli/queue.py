"""``balsamctl queue submit``'s flags (the reference text's, unchanged) turned into a BatchJob manifest."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from balsamctl.schemas.manifest import Document, ManifestError, validate_document
from balsamctl.schemas.objects import API_VERSION


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

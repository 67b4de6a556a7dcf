"""Resource packing (Balsam's rules): which Jobs fit the idle CPUs, GPUs and node fractions of a launcher's nodes.

A single-node Job (``num_nodes == 1``) is packable: it fits a node with enough idle CPUs and GPUs and room for
``1/node_packing_count`` more occupancy. A multi-node Job takes whole idle nodes. Nodes are tried in order and the
first that fits is used (first fit, as Balsam does): it is deterministic and keeps the later nodes free for larger
Jobs. Pure bookkeeping, no I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal, TypeVar

from balsamctl.launcher.nodes import JobId, Node, Share
from balsamctl.schemas.objects import JobSpec

T = TypeVar("T")
Policy = Literal["small_first", "long_large_first"]


@dataclass(frozen=True)
class Request:
    """The resources one Job asks for."""

    num_nodes: int = 1
    ranks_per_node: int = 1
    threads_per_rank: int = 1
    threads_per_core: int = 1
    gpus_per_rank: int = 0
    node_packing_count: int = 1

    def __post_init__(self) -> None:
        counts = (self.num_nodes, self.ranks_per_node, self.threads_per_rank, self.threads_per_core)
        if min(counts) < 1 or self.node_packing_count < 1 or self.gpus_per_rank < 0:
            raise ValueError(f"invalid resource request {self}")

    @classmethod
    def of(cls, spec: JobSpec) -> Request:
        """The request of a Job's spec (Jobs mostly ask alike: one Request per distinct ask, made once)."""
        key = (
            spec.num_nodes,
            spec.ranks_per_node,
            spec.threads_per_rank,
            spec.threads_per_core,
            spec.gpus_per_rank,
            spec.node_packing_count,
        )
        request = _REQUESTS.get(key)
        if request is None:
            if len(_REQUESTS) >= _REQUESTS_KEPT:
                _REQUESTS.clear()
            request = _REQUESTS[key] = cls(*key)
        return request

    @property
    def num_ranks(self) -> int:
        """MPI ranks in all: ``num_nodes * ranks_per_node``."""
        return self.num_nodes * self.ranks_per_node

    @property
    def cpus_per_rank(self) -> int:
        """CPUs (cores) per rank: ``threads_per_rank // threads_per_core``, at least 1."""
        return max(1, self.threads_per_rank // self.threads_per_core)

    @property
    def cpus_per_node(self) -> int:
        """CPUs per node: ``ranks_per_node * threads_per_rank // threads_per_core``, at least 1."""
        return max(1, self.ranks_per_node * self.threads_per_rank // self.threads_per_core)

    @property
    def gpus_per_node(self) -> int:
        """GPUs per node: ``ranks_per_node * gpus_per_rank``."""
        return self.ranks_per_node * self.gpus_per_rank

    @property
    def occupancy(self) -> Fraction:
        """The fraction of a node a single-node Job takes: ``1 / node_packing_count``."""
        return Fraction(1, self.node_packing_count)


_REQUESTS: dict[tuple[int, ...], Request] = {}
_REQUESTS_KEPT = 4096


@dataclass(frozen=True)
class Placement:
    """Where one Job runs: per node, its CPU and GPU ids."""

    job_id: JobId
    shares: tuple[Share, ...]

    @property
    def hosts(self) -> list[str]:
        """The node names, in placement order."""
        return [s.node for s in self.shares]

    @property
    def cpu_ids(self) -> tuple[int, ...]:
        """The CPU ids to pin the Job to (those of its first node; whole-node Jobs get the same on each)."""
        return self.shares[0].cpu_ids

    @property
    def gpu_ids(self) -> tuple[str, ...]:
        """The GPU ids of its first node."""
        return self.shares[0].gpu_ids

    def environment(self, req: Request, gpu_variables: Sequence[str]) -> dict[str, str]:
        """``OMP_NUM_THREADS`` and, when GPUs are assigned, each of ``gpu_variables`` (the platform's way to tell a
        process its GPUs: ``CUDA_VISIBLE_DEVICES``, ``ZE_AFFINITY_MASK``, ``ROCR_VISIBLE_DEVICES``...)."""
        env = {"OMP_NUM_THREADS": str(req.threads_per_rank)}
        if self.gpu_ids:
            env.update(dict.fromkeys(gpu_variables, ",".join(self.gpu_ids)))
        return env

    def summary(self) -> str:
        """``local0 cpus 0-1 gpus 0`` per node, for people."""
        return "; ".join(
            f"{s.node} cpus {_ranges(s.cpu_ids)}" + (f" gpus {','.join(s.gpu_ids)}" if s.gpu_ids else "")
            for s in self.shares
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description, for the Job's record."""
        return {
            "nodes": [
                {"node": s.node, "cpu_ids": list(s.cpu_ids), "gpu_ids": list(s.gpu_ids), "occupancy": str(s.occupancy)}
                for s in self.shares
            ]
        }


class NodePool:
    """The nodes of one launcher and the Jobs placed on them."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.nodes = list(nodes)
        self.by_name = {n.name: n for n in self.nodes}
        self.placements: dict[JobId, Placement] = {}

    def place(self, job_id: JobId, req: Request) -> Placement | None:
        """Assign ``req`` to the first node(s) that fit now, or ``None``; ``ValueError`` if ``job_id`` is placed."""
        if job_id in self.placements:
            raise ValueError(f"job {job_id!r} is already placed")
        if req.num_nodes == 1:
            chosen = [n for n in self.nodes if n.fits(req.cpus_per_node, req.gpus_per_node, req.occupancy)][:1]
            occupancy = req.occupancy
        else:
            chosen = [n for n in self.nodes if n.is_idle and _big_enough(n, req)][: req.num_nodes]
            occupancy = Fraction(1)
        if len(chosen) < req.num_nodes:
            return None
        shares = tuple(n.take(job_id, req.cpus_per_node, req.gpus_per_node, occupancy) for n in chosen)
        placement = Placement(job_id, shares)
        self.placements[job_id] = placement
        return placement

    def release(self, job_id: JobId) -> Placement:
        """Free everything ``job_id`` holds; ``KeyError`` if it is not placed."""
        placement = self.placements.pop(job_id)
        for share in placement.shares:
            self.by_name[share.node].give_back(job_id)
        return placement

    def hand_over(self, job_id: JobId, to: JobId) -> Placement:
        """Give everything ``job_id`` holds to ``to`` (the Job that runs next on the same resources): its
        placement. ``KeyError`` if ``job_id`` is not placed, ``ValueError`` if ``to`` is."""
        if to in self.placements:
            raise ValueError(f"job {to!r} is already placed")
        placement = self.placements.pop(job_id)
        for share in placement.shares:
            jobs = self.by_name[share.node].jobs
            jobs[to] = jobs.pop(job_id)
        self.placements[to] = handed = Placement(to, placement.shares)
        return handed

    def fence(self, name: str) -> None:
        """Place nothing more on node ``name`` (what runs there ends as it will, and is released as usual)."""
        self.nodes = [n for n in self.nodes if n.name != name]

    def has_idle(self) -> bool:
        """Whether some node could still take a Job (it has an idle CPU and room left)."""
        return any(n.idle_cpus and n.occupancy < 1 for n in self.nodes)

    def occupancy(self) -> float:
        """The mean occupancy of the nodes (0..1)."""
        return float(sum((n.occupancy for n in self.nodes), Fraction(0)) / len(self.nodes)) if self.nodes else 0.0

    def idle_summary(self) -> dict[str, int | float]:
        """Counts for status and logs: idle nodes, idle CPUs, idle GPUs, running Jobs and mean occupancy."""
        return {
            "idle_nodes": sum(n.is_idle for n in self.nodes),
            "idle_cpus": sum(len(n.idle_cpus) for n in self.nodes),
            "idle_gpus": sum(len(n.idle_gpus) for n in self.nodes),
            "jobs": len(self.placements),
            "occupancy": self.occupancy(),
        }

    def why_never_fits(self, req: Request) -> str | None:
        """Why ``req`` cannot fit these nodes even when all are idle, or ``None`` if it can."""
        if req.num_nodes > len(self.nodes):
            return f"needs {_nodes(req.num_nodes)}, the allocation has {len(self.nodes)}"
        most_gpus = max(len(n.gpu_ids) for n in self.nodes)
        if req.gpus_per_node > most_gpus:
            return f"needs {req.gpus_per_node} GPUs per node, nodes have {most_gpus}"
        most_cpus = max(len(n.cpu_ids) for n in self.nodes)
        if req.cpus_per_node > most_cpus:
            return f"needs {req.cpus_per_node} CPUs per node, nodes have {most_cpus}"
        big_enough = sum(_big_enough(n, req) for n in self.nodes)
        if big_enough < req.num_nodes:
            return (
                f"needs {_nodes(req.num_nodes)} with {req.cpus_per_node} CPUs and {req.gpus_per_node} GPUs, "
                f"the allocation has {big_enough}"
            )
        return None


def _nodes(count: int) -> str:
    return f"{count} node" if count == 1 else f"{count} nodes"


def _big_enough(node: Node, req: Request) -> bool:
    """Whether ``node`` has at least the CPUs and GPUs per node of ``req`` (busy or not)."""
    return len(node.cpu_ids) >= req.cpus_per_node and len(node.gpu_ids) >= req.gpus_per_node


def order_key(policy: Policy) -> Callable[[Request, int], tuple[int, ...]]:
    """The sort key of a policy over (request, wall_time_min).

    ``small_first`` (default): fewest nodes, then highest ``node_packing_count``, then longest wall time first.
    ``long_large_first``: most nodes, then longest wall time first.
    """
    if policy == "small_first":
        return lambda req, wall: (req.num_nodes, -req.node_packing_count, -wall)
    if policy == "long_large_first":
        return lambda req, wall: (-req.num_nodes, -wall)
    raise ValueError(f"unknown policy {policy!r}; expected small_first or long_large_first")


def sort_requests(
    items: Sequence[tuple[T, Request, int]], policy: Policy = "small_first"
) -> list[tuple[T, Request, int]]:
    """``(item, request, wall_time_min)`` triples in the policy's order; ties keep their given order."""
    key = order_key(policy)
    return sorted(items, key=lambda item: key(item[1], item[2]))


def default_job_id(item: object) -> JobId:
    """The pool key of a candidate: its ``id`` attribute if it has one (a Job record), else the item itself."""
    job_id: JobId = getattr(item, "id", item)
    return job_id


def place_in_order(
    pool: NodePool, ordered: Sequence[tuple[T, Request]], job_id: Callable[[T], JobId] = default_job_id
) -> tuple[list[tuple[T, Placement]], list[tuple[T, Request]]]:
    """Place as many of ``ordered`` (candidates already in the policy's order, see :func:`sort_requests`: a
    launcher keeps its queue so) as fit now, greedily in that order: none that fits the remaining idle resources is
    left waiting. Returns what was placed and the rest, in order; stops looking once no node has room left. The pool
    is mutated: the caller releases (by ``job_id(item)``) the placements it does not use."""
    placed: list[tuple[T, Placement]] = []
    rest: list[tuple[T, Request]] = []
    for i, (item, req) in enumerate(ordered):
        if not pool.has_idle():
            rest.extend(ordered[i:])
            break
        placement = pool.place(job_id(item), req)
        if placement is None:
            rest.append((item, req))
        else:
            placed.append((item, placement))
    return placed, rest


def _ranges(ids: Sequence[int]) -> str:
    """``0-3,6`` for ``(0, 1, 2, 3, 6)``."""
    parts: list[str] = []
    for _, group in itertools.groupby(enumerate(sorted(ids)), key=lambda pair: pair[1] - pair[0]):
        run = [i for _, i in group]
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(parts) or "-"

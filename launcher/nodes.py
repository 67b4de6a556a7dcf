"""The nodes of an allocation: where they come from (the batch scheduler's environment) and what is busy on them."""

from __future__ import annotations

import itertools
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction

from balsamctl.schedulers import Host, scheduler_class
from balsamctl.schedulers.hostlist import expand_hostlist
from balsamctl.schemas.settings import SiteSettings

JobId = Hashable
"""What identifies a placed Job (the launcher uses the Job's database id)."""


@dataclass(frozen=True)
class Share:
    """What one Job holds on one node: CPU and GPU ids and a fraction of the node."""

    node: str
    cpu_ids: tuple[int, ...]
    gpu_ids: tuple[str, ...]
    occupancy: Fraction


@dataclass
class Node:
    """One compute node and its bookkeeping: idle CPUs and GPUs, occupancy (0..1) and the Jobs placed on it."""

    name: str
    cpu_ids: tuple[int, ...]
    gpu_ids: tuple[str, ...] = ()
    idle_cpus: list[int] = field(init=False)
    idle_gpus: list[str] = field(init=False)
    occupancy: Fraction = field(init=False, default=Fraction(0))
    jobs: dict[JobId, Share] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if len(set(self.cpu_ids)) != len(self.cpu_ids) or len(set(self.gpu_ids)) != len(self.gpu_ids):
            raise ValueError(f"node {self.name!r}: CPU and GPU ids must be unique")
        self.idle_cpus = list(self.cpu_ids)
        self.idle_gpus = list(self.gpu_ids)
        self._cpu_rank = {c: i for i, c in enumerate(self.cpu_ids)}  # the node's own order, kept by idle lists
        self._gpu_rank = {g: i for i, g in enumerate(self.gpu_ids)}

    @property
    def is_idle(self) -> bool:
        """Whether nothing runs on this node."""
        return self.occupancy == 0

    def fits(self, cpus: int, gpus: int, occupancy: Fraction) -> bool:
        """Whether ``cpus`` CPUs, ``gpus`` GPUs and ``occupancy`` more of this node are free now."""
        return len(self.idle_cpus) >= cpus and len(self.idle_gpus) >= gpus and self.occupancy + occupancy <= 1

    def take(self, job_id: JobId, cpus: int, gpus: int, occupancy: Fraction) -> Share:
        """Give ``job_id`` the first ``cpus`` idle CPUs and ``gpus`` idle GPUs and ``occupancy`` of the node."""
        if job_id in self.jobs:
            raise ValueError(f"job {job_id!r} is already placed on node {self.name!r}")
        if not self.fits(cpus, gpus, occupancy):
            raise ValueError(f"job {job_id!r} does not fit node {self.name!r}")
        share = Share(self.name, tuple(self.idle_cpus[:cpus]), tuple(self.idle_gpus[:gpus]), occupancy)
        del self.idle_cpus[:cpus]
        del self.idle_gpus[:gpus]
        self.occupancy += occupancy
        self.jobs[job_id] = share
        return share

    def give_back(self, job_id: JobId) -> None:
        """Free what ``job_id`` holds here; idle ids keep the node's order. ``KeyError`` if it holds nothing."""
        share = self.jobs.pop(job_id)
        if share.cpu_ids:  # a sort of the idle ids, however many Jobs the node runs
            self.idle_cpus = sorted([*self.idle_cpus, *share.cpu_ids], key=self._cpu_rank.__getitem__)
        if share.gpu_ids:
            self.idle_gpus = sorted([*self.idle_gpus, *share.gpu_ids], key=self._gpu_rank.__getitem__)
        self.occupancy -= share.occupancy


def nodes_from_environment(env: Mapping[str, str], settings: SiteSettings) -> list[Node]:
    """The nodes of this allocation: the hosts the site's scheduler names in its environment (its
    ``hosts_from_environment``; the local scheduler's are emulated), with ``launcher.cpus_per_node`` CPUs, else as
    many as the scheduler gives the job there, else this host's CPU count, and ``launcher.gpus_per_node`` GPUs, else
    as many as the scheduler gives, else 0. ``BALSAM_NODES`` (a host list), if set, names the nodes instead: a
    partition's launcher gets its slice of the allocation that way (a name the scheduler does not list gets the
    sizes of the first one it does).
    """
    hosts = scheduler_class(settings.scheduler).hosts_from_environment(env, settings.local_nodes)
    if env.get("BALSAM_NODES"):
        by_name, like = {host.name: host for host in hosts}, hosts[0] if hosts else Host("")
        hosts = [by_name.get(name) or replace(like, name=name) for name in expand_hostlist(env["BALSAM_NODES"])]
    cpus, gpus = settings.launcher.cpus_per_node, settings.launcher.gpus_per_node
    return [
        Node(
            host.name,
            tuple(range(cpus or host.cpus or os.cpu_count() or 1)),
            tuple(str(g) for g in range(gpus if gpus is not None else host.gpus or 0)),
        )
        for host in hosts
    ]


def split_nodes(nodes: Sequence[Node], sizes: Sequence[int]) -> list[list[Node]]:
    """Consecutive, non-overlapping slices of ``nodes`` of the given sizes (the partitions of an allocation)."""
    if any(size < 1 for size in sizes) or sum(sizes) != len(nodes):
        raise ValueError(f"partition sizes {list(sizes)} must be positive and sum to the {len(nodes)} node(s)")
    bounds = list(itertools.accumulate(sizes, initial=0))
    return [list(nodes[start:end]) for start, end in itertools.pairwise(bounds)]


def this_node(env: Mapping[str, str], settings: SiteSettings) -> str:
    """The name of the node this process runs on, as the allocation's node list names it (the site's scheduler
    knows how)."""
    return scheduler_class(settings.scheduler).this_host(env)

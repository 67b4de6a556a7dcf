"""The nodes of an allocation: where they come from (the batch scheduler's environment) and what is busy on them."""

from __future__ import annotations

import itertools
import os
import re
import socket
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from balsamctl.schemas.settings import LocalNodes

JobId = Hashable
"""What identifies a placed Job (the launcher uses the Job's database id)."""

_BRACKET_ITEM = re.compile(r"\[([^\[\]]*)\]|([^\[\],]+)")
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


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


def expand_hostlist(text: str) -> list[str]:
    """Expand a Slurm host list (``nid[0001-0003,0007]``, ``a1,b[2-3],c``, ``r[1-2]n[1-2]``); ``ValueError`` if bad.

    Numbers keep the width of a range's lower bound (``[08-10]`` gives ``08, 09, 10``); several bracket groups in
    one name expand as a cartesian product, the first group varying slowest.
    """
    text = text.strip()
    if not text:
        raise ValueError("empty host list")
    hosts: list[str] = []
    for name in _split_top_level(text):
        parts = _BRACKET_ITEM.findall(name)
        if "".join(f"[{group}]" if group else literal for group, literal in parts) != name:
            raise ValueError(f"malformed host list entry {name!r} in {text!r}")
        choices = [_expand_group(group, text) if group else [literal] for group, literal in parts]
        hosts.extend("".join(combo) for combo in itertools.product(*choices))
    return hosts


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets; ``ValueError`` on empty entries or unbalanced brackets."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if depth not in (0, 1):
            raise ValueError(f"unbalanced or nested brackets in host list {text!r}")
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    if depth or any(not item for item in items):
        raise ValueError(f"malformed host list {text!r}")
    return items


def _expand_group(group: str, text: str) -> list[str]:
    """The numbers of one bracket group such as ``0001-0003,0007``, zero padded like each range's lower bound."""
    numbers: list[str] = []
    for item in group.split(","):
        match = _RANGE.match(item)
        if match is None:
            raise ValueError(f"malformed range {item!r} in host list {text!r}")
        low, high = match.group(1), match.group(2) or match.group(1)
        if int(high) < int(low):
            raise ValueError(f"descending range {item!r} in host list {text!r}")
        numbers.extend(f"{n:0{len(low)}d}" for n in range(int(low), int(high) + 1))
    return numbers


def read_nodefile(path: str) -> list[str]:
    """The unique host names of a PBS node file, in order (it lists a host once per slot)."""
    lines = Path(path).read_text().split()
    return list(dict.fromkeys(lines))


def nodes_from_environment(
    env: Mapping[str, str], local: LocalNodes, cpus_per_node: int | None = None, gpus_per_node: int | None = None
) -> list[Node]:
    """The nodes of this allocation, from the batch scheduler's environment (Slurm, PBS, LSF, Cobalt) or emulated.

    CPUs per node: ``cpus_per_node``, else what the scheduler says (``SLURM_CPUS_ON_NODE``, the LSF slot count),
    else this host's CPU count; GPUs per node: ``gpus_per_node``, else ``SLURM_GPUS_ON_NODE`` under Slurm, else 0.
    Without a scheduler: the allocation's ``BALSAM_NUM_NODES`` of the site's ``local.count`` emulated nodes
    ``local0..`` (``localhost`` if the site has one), with ``local``'s CPUs and GPUs. ``BALSAM_NODES`` (a host
    list), if set, replaces the node names: a partition's launcher gets its slice of the allocation that way.
    """
    slots: dict[str, int] = {}
    gpus = gpus_per_node or 0
    if "SLURM_JOB_NODELIST" in env or "SLURM_NODELIST" in env:
        names = expand_hostlist(env.get("SLURM_JOB_NODELIST") or env["SLURM_NODELIST"])
        cpus = cpus_per_node or int(env.get("SLURM_CPUS_ON_NODE") or 0) or os.cpu_count() or 1
        gpus = gpus_per_node if gpus_per_node is not None else int(env.get("SLURM_GPUS_ON_NODE") or 0)
    elif "PBS_NODEFILE" in env:
        names = read_nodefile(env["PBS_NODEFILE"])
        cpus = cpus_per_node or os.cpu_count() or 1
    elif "LSB_MCPU_HOSTS" in env:
        hosts = _lsf_hosts(env["LSB_MCPU_HOSTS"], env.get("LSB_HOSTS", ""))
        names = list(hosts)
        slots = {} if cpus_per_node else hosts
        cpus = cpus_per_node or os.cpu_count() or 1
    elif "COBALT_PARTNAME" in env:
        names = [str(int(n)) for n in _expand_group(env["COBALT_PARTNAME"].strip(), env["COBALT_PARTNAME"])]
        cpus = cpus_per_node or os.cpu_count() or 1
    else:
        count = min(local.count, int(env.get("BALSAM_NUM_NODES") or local.count))  # the allocation's share
        names = ["localhost"] if local.count == 1 else [f"local{i}" for i in range(count)]
        cpus = cpus_per_node or local.cpus_per_node
        gpus = gpus_per_node if gpus_per_node is not None else local.gpus_per_node
    if env.get("BALSAM_NODES"):
        names = expand_hostlist(env["BALSAM_NODES"])
    return [Node(name, tuple(range(slots.get(name, cpus))), tuple(str(g) for g in range(gpus))) for name in names]


def _lsf_hosts(mcpu_hosts: str, lsb_hosts: str) -> dict[str, int]:
    """Host name -> slots from ``LSB_MCPU_HOSTS`` (``"host1 n1 host2 n2"``).

    LSF lists the launch (batch) host first, which runs the job script but no Job: when ``LSB_HOSTS`` starts with
    that host and other hosts follow, it is dropped.
    """
    words = mcpu_hosts.split()
    if len(words) % 2 or not words:
        raise ValueError(f"malformed LSB_MCPU_HOSTS {mcpu_hosts!r}")
    pairs = [(words[i], int(words[i + 1])) for i in range(0, len(words), 2)]
    first = lsb_hosts.split()[:1]
    if len(pairs) > 1 and first == [pairs[0][0]]:
        pairs = pairs[1:]
    return dict(pairs)


def split_nodes(nodes: Sequence[Node], sizes: Sequence[int]) -> list[list[Node]]:
    """Consecutive, non-overlapping slices of ``nodes`` of the given sizes (the partitions of an allocation)."""
    if any(size < 1 for size in sizes) or sum(sizes) != len(nodes):
        raise ValueError(f"partition sizes {list(sizes)} must be positive and sum to the {len(nodes)} node(s)")
    bounds = list(itertools.accumulate(sizes, initial=0))
    return [list(nodes[start:end]) for start, end in itertools.pairwise(bounds)]


def this_node(env: Mapping[str, str]) -> str:
    """The name of the node this process runs on, as the allocation's node list names it."""
    return env.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]

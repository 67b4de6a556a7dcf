"""Nodes, host lists and Balsam's resource packing rules."""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from balsamctl.launcher.nodes import Node, Share, nodes_from_environment, split_nodes
from balsamctl.launcher.placement import (
    NodePool,
    Placement,
    Policy,
    Request,
    default_job_id,
    order_key,
    place_in_order,
    sort_requests,
)
from balsamctl.schemas.objects import JobSpec
from balsamctl.schemas.settings import LauncherSettings, SiteSettings
from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory, SiteError

T = TypeVar("T")

FAST = settings(max_examples=60, deadline=None)


def choose(pool: NodePool, candidates: list[tuple[T, Request, int]], policy: Policy = "small_first") -> list[Any]:
    """What a launcher does with what it claimed: sort once in the policy's order, then place in that order."""
    ordered = [(item, req) for item, req, _ in sort_requests(candidates, policy)]
    placed, rest = place_in_order(pool, ordered)
    ids = [default_job_id(item) for item, _ in placed]
    assert len(set(ids)) == len(ids)
    placed_ids = set(ids)
    assert rest == [(item, req) for item, req in ordered if default_job_id(item) not in placed_ids], "rest in order"
    return placed


def gpu_nodes(count: int = 2, cpus: int = 64, gpus: int = 8) -> list[Node]:
    return [Node(f"n{i}", tuple(range(cpus)), tuple(str(g) for g in range(gpus))) for i in range(count)]


def fresh(nodes: list[Node]) -> list[Node]:
    return [Node(n.name, n.cpu_ids, n.gpu_ids) for n in nodes]


# ---------------------------------------------------------------- the reference examples


@pytest.mark.parametrize(
    ("packing", "gpus_per_rank", "expected"),
    [(8, 1, 16), (4, 1, 8), (8, 8, 2)],
    ids=["packing-8", "packing-4", "8-gpus-per-rank"],
)
def test_reference_examples(packing: int, gpus_per_rank: int, expected: int) -> None:
    pool = NodePool(gpu_nodes())
    req = Request(ranks_per_node=1, gpus_per_rank=gpus_per_rank, node_packing_count=packing)
    chosen = choose(pool, [(i, req, 10) for i in range(40)])
    assert [job for job, _ in chosen] == list(range(expected))
    gpus = [(s.node, g) for _, p in chosen for s in p.shares for g in s.gpu_ids]
    assert len(gpus) == len(set(gpus)) == expected * gpus_per_rank


# ---------------------------------------------------------------- requests and placements


def test_request_of_spec_and_derived_values() -> None:
    spec = JobSpec(
        app="a", workdir="w", num_nodes=2, ranks_per_node=4, threads_per_rank=8, threads_per_core=2,
        gpus_per_rank=1, node_packing_count=3,
    )  # fmt: skip
    req = Request.of(spec)
    assert (req.num_nodes, req.num_ranks, req.cpus_per_node, req.cpus_per_rank) == (2, 8, 16, 4)
    assert (req.gpus_per_node, req.occupancy) == (4, Fraction(1, 3))
    assert Request(threads_per_core=4).cpus_per_node == 1
    with pytest.raises(ValueError):
        Request(num_nodes=0)


def test_sub_node_packing_uses_first_fit_and_exact_occupancy() -> None:
    pool = NodePool(gpu_nodes(2, cpus=4, gpus=0))
    thirds = [pool.place(i, Request(node_packing_count=3)) for i in range(4)]
    assert [p.hosts if p else None for p in thirds] == [["n0"], ["n0"], ["n0"], ["n1"]]
    assert pool.nodes[0].occupancy == 1
    assert pool.place("whole", Request()) is None
    pool.release(0)
    assert pool.place("third", Request(node_packing_count=3)) is not None


def test_multi_node_jobs_take_whole_idle_nodes() -> None:
    pool = NodePool(gpu_nodes(3, cpus=4, gpus=2))
    assert pool.place("small", Request(node_packing_count=4)) is not None
    big = pool.place("big", Request(num_nodes=2, ranks_per_node=2))
    assert big is not None and big.hosts == ["n1", "n2"]
    assert all(pool.nodes[i].occupancy == 1 for i in (1, 2))
    assert pool.place("big2", Request(num_nodes=2)) is None


def test_placement_environment_and_description() -> None:
    pool = NodePool([Node("gpu", (0, 1, 2, 3), ("0.0", "0.1", "1"))])
    placement = pool.place(7, Request(ranks_per_node=2, threads_per_rank=2, gpus_per_rank=1, node_packing_count=2))
    assert placement is not None
    assert placement.cpu_ids == (0, 1, 2, 3) and placement.gpu_ids == ("0.0", "0.1")
    assert placement.environment(Request(threads_per_rank=2), LauncherSettings().gpu_visible_devices) == {
        "OMP_NUM_THREADS": "2",
        "CUDA_VISIBLE_DEVICES": "0.0,0.1",
    }
    assert placement.describe() == {
        "nodes": [{"node": "gpu", "cpu_ids": [0, 1, 2, 3], "gpu_ids": ["0.0", "0.1"], "occupancy": "1/2"}]
    }
    cpu_only = Placement(1, (Share("n", (0,), (), Fraction(1)),))
    assert cpu_only.environment(Request(), ["CUDA_VISIBLE_DEVICES"]) == {"OMP_NUM_THREADS": "1"}
    assert cpu_only.environment(Request(), ["ZE_AFFINITY_MASK"]) == {"OMP_NUM_THREADS": "1"}


def test_gpus_are_named_in_the_platforms_variables() -> None:
    placement = Placement(1, (Share("n", (0,), ("2", "3"), Fraction(1)),))
    env = placement.environment(Request(), ["ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"])
    assert env == {"OMP_NUM_THREADS": "1", "ROCR_VISIBLE_DEVICES": "2,3", "HIP_VISIBLE_DEVICES": "2,3"}


def test_pool_bookkeeping_helpers() -> None:
    pool = NodePool(gpu_nodes(2, cpus=2, gpus=1))
    assert pool.has_idle() and pool.occupancy() == 0.0
    pool.place("a", Request(gpus_per_rank=1, node_packing_count=2))
    assert pool.idle_summary() == {"idle_nodes": 1, "idle_cpus": 3, "idle_gpus": 1, "jobs": 1, "occupancy": 0.25}
    with pytest.raises(ValueError):
        pool.place("a", Request())
    pool.place("b", Request())
    pool.place("c", Request(node_packing_count=2))
    assert not pool.has_idle()
    with pytest.raises(KeyError):
        pool.release("missing")


def test_why_never_fits_messages() -> None:
    pool = NodePool(gpu_nodes(2, cpus=64, gpus=4))
    assert pool.why_never_fits(Request(ranks_per_node=4, gpus_per_rank=4)) == "needs 16 GPUs per node, nodes have 4"
    assert pool.why_never_fits(Request(num_nodes=8)) == "needs 8 nodes, the allocation has 2"
    assert pool.why_never_fits(Request(ranks_per_node=96)) == "needs 96 CPUs per node, nodes have 64"
    assert pool.why_never_fits(Request(num_nodes=2, ranks_per_node=64, gpus_per_rank=0)) is None
    mixed = NodePool([Node("cpu", tuple(range(8))), Node("gpu", (0,), ("0",))])
    assert mixed.why_never_fits(Request(ranks_per_node=8)) is None
    assert mixed.why_never_fits(Request(threads_per_rank=2, gpus_per_rank=1)) == (
        "needs 1 node with 2 CPUs and 1 GPUs, the allocation has 0"
    )
    assert NodePool([]).why_never_fits(Request()) == "needs 1 node, the allocation has 0"


def test_policies_order_requests() -> None:
    items = [
        ("big-short", Request(num_nodes=4), 10),
        ("small-packed", Request(node_packing_count=4), 5),
        ("small-long", Request(), 60),
        ("small-short", Request(), 5),
        ("big-long", Request(num_nodes=4), 90),
    ]
    small = [item for item, _, _ in sort_requests(items, "small_first")]
    assert small == ["small-packed", "small-long", "small-short", "big-long", "big-short"]
    large = [item for item, _, _ in sort_requests(items, "long_large_first")]
    assert large == ["big-long", "big-short", "small-long", "small-packed", "small-short"]
    with pytest.raises(ValueError):
        order_key("fifo")  # type: ignore[arg-type]


def test_placing_keys_records_by_their_id() -> None:
    @dataclass
    class Ref:
        id: int
        spec: object

    pool = NodePool(gpu_nodes(1, cpus=2, gpus=0))
    chosen = choose(pool, [(Ref(5, None), Request(), 1)])
    assert [ref.id for ref, _ in chosen] == [5] and chosen[0][1].job_id == 5
    pool.release(5)
    assert pool.nodes[0].is_idle


# ---------------------------------------------------------------- properties

requests = st.builds(
    Request,
    num_nodes=st.sampled_from([1, 1, 1, 2, 3]),
    ranks_per_node=st.integers(1, 4),
    threads_per_rank=st.integers(1, 4),
    threads_per_core=st.integers(1, 2),
    gpus_per_rank=st.integers(0, 2),
    node_packing_count=st.integers(1, 8),
)


@st.composite
def pools(draw: st.DrawFn) -> list[Node]:
    count = draw(st.integers(1, 4))
    return [
        Node(f"n{i}", tuple(range(draw(st.integers(1, 8)))), tuple(f"{g}.0" for g in range(draw(st.integers(0, 4)))))
        for i in range(count)
    ]


def assert_consistent(pool: NodePool) -> None:
    cpus = [(s.node, c) for p in pool.placements.values() for s in p.shares for c in s.cpu_ids]
    gpus = [(s.node, g) for p in pool.placements.values() for s in p.shares for g in s.gpu_ids]
    assert len(cpus) == len(set(cpus)) and len(gpus) == len(set(gpus))
    for node in pool.nodes:
        held = [s for p in pool.placements.values() for s in p.shares if s.node == node.name]
        assert node.occupancy == sum((s.occupancy for s in held), Fraction(0)) <= 1
        assert set(node.idle_cpus) == set(node.cpu_ids) - {c for s in held for c in s.cpu_ids}
        assert set(node.idle_gpus) == set(node.gpu_ids) - {g for s in held for g in s.gpu_ids}


@FAST
@given(pools(), st.lists(st.one_of(requests, st.integers(0, 30)), max_size=30))
def test_random_place_and_release_never_overcommit(nodes: list[Node], ops: list[Request | int]) -> None:
    pool = NodePool(nodes)
    for job_id, op in enumerate(ops):
        if isinstance(op, int):
            if pool.placements:
                pool.release(sorted(pool.placements, key=str)[op % len(pool.placements)])
        else:
            idle_before = {n.name for n in pool.nodes if n.is_idle}
            placement = pool.place(job_id, op)
            if placement is not None and op.num_nodes > 1:
                assert set(placement.hosts) <= idle_before and len(placement.hosts) == op.num_nodes
        assert_consistent(pool)
    for placed in list(pool.placements):
        pool.release(placed)
    for n in pool.nodes:
        assert (n.idle_cpus, n.idle_gpus) == (list(n.cpu_ids), list(n.gpu_ids))
        assert n.occupancy == 0 and not n.jobs


@FAST
@given(
    pools(),
    st.lists(requests, max_size=5),
    st.lists(st.tuples(requests, st.integers(0, 100)), max_size=12),
    st.sampled_from(["small_first", "long_large_first"]),
)
def test_placing_in_order_leaves_nothing_fitting_waiting(
    nodes: list[Node], running: list[Request], candidates: list[tuple[Request, int]], policy: Policy
) -> None:
    pool = NodePool(nodes)
    for i, req in enumerate(running):
        pool.place(("running", i), req)
    chosen = choose(pool, [(i, req, wall) for i, (req, wall) in enumerate(candidates)], policy)
    assert_consistent(pool)
    placed = {i for i, _ in chosen}
    for i, (req, _) in enumerate(candidates):
        if i not in placed:
            assert pool.place(("probe", i), req) is None


@FAST
@given(pools(), requests)
def test_why_never_fits_iff_no_fit_on_empty_pool(nodes: list[Node], req: Request) -> None:
    busy = NodePool(nodes)
    busy.place("other", Request())
    assert (busy.why_never_fits(req) is None) == (NodePool(fresh(nodes)).place("probe", req) is not None)


# ---------------------------------------------------------------- nodes of an allocation

SLURM_ENV = {"SLURM_JOB_NODELIST": "nid[001-002]", "SLURM_CPUS_ON_NODE": "64", "SLURM_GPUS_ON_NODE": "4"}


def site_settings(scheduler: str, **launcher: int) -> SiteSettings:
    """The settings of a site of ``scheduler`` with 3 emulated nodes of 4 CPUs and 2 GPUs and ``launcher`` sizes."""
    local = {"count": 3, "cpus_per_node": 4, "gpus_per_node": 2}
    return SiteSettings.model_validate(
        {"name": "s", "scheduler": scheduler, "local_nodes": local, "launcher": launcher}
    )


def shape(nodes: list[Node]) -> list[tuple[str, int, int]]:
    return [(n.name, len(n.cpu_ids), len(n.gpu_ids)) for n in nodes]


def test_the_sites_scheduler_names_the_nodes_and_the_launcher_settings_size_them() -> None:
    assert shape(nodes_from_environment(SLURM_ENV, site_settings("slurm"))) == [("nid001", 64, 4), ("nid002", 64, 4)]
    sized = site_settings("slurm", cpus_per_node=8, gpus_per_node=1)
    assert shape(nodes_from_environment(SLURM_ENV, sized)) == [("nid001", 8, 1), ("nid002", 8, 1)]
    assert shape(nodes_from_environment({"COBALT_PARTNAME": "3"}, site_settings("cobalt"))) == [
        ("3", os.cpu_count() or 1, 0)  # the scheduler does not say: this host's CPUs, no GPU
    ]
    assert nodes_from_environment({}, site_settings("pbs")) == [], "outside an allocation: none (preflight: NoNodes)"


def test_a_local_site_emulates_its_nodes_even_inside_another_schedulers_allocation() -> None:
    """The site's scheduler reads the environment, not whichever scheduler's variables happen to be set (a
    controller of a local site started inside a Slurm job passes them on)."""
    nodes = nodes_from_environment(SLURM_ENV, site_settings("local"))
    assert shape(nodes) == [("local0", 4, 2), ("local1", 4, 2), ("local2", 4, 2)]


def test_balsam_nodes_name_a_partitions_slice() -> None:
    env = {**SLURM_ENV, "BALSAM_NODES": "nid002"}
    assert shape(nodes_from_environment(env, site_settings("slurm"))) == [("nid002", 64, 4)]
    assert shape(nodes_from_environment({"BALSAM_NODES": "local2"}, site_settings("local"))) == [("local2", 4, 2)]
    lsf = {"LSB_MCPU_HOSTS": "a01 42 a02 40", "BALSAM_NODES": "a02,x9"}  # a name LSF does not list: a01's sizes
    assert shape(nodes_from_environment(lsf, site_settings("lsf"))) == [("a02", 40, 0), ("x9", 42, 0)]


def test_split_nodes() -> None:
    nodes = gpu_nodes(5, cpus=1, gpus=0)
    parts = split_nodes(nodes, [2, 3])
    assert [[n.name for n in part] for part in parts] == [["n0", "n1"], ["n2", "n3", "n4"]]
    for bad in ([2, 2], [6], [5, 0], [6, -1]):
        with pytest.raises(ValueError):
            split_nodes(nodes, bad)


def test_node_rejects_duplicate_ids() -> None:
    with pytest.raises(ValueError):
        Node("n", (0, 0))


def test_a_gpu_variable_that_is_no_variable_name_is_refused_naming_the_field(tmp_path: Path) -> None:
    site = init_site(tmp_path / "s", "s", register=False)
    site.close()
    settings = tmp_path / "s" / "settings.yml"
    body = yaml.safe_load(settings.read_text())
    body["launcher"] = {"gpu_visible_devices": ["ROCR_VISIBLE_DEVICES", "X=1 rm"]}
    settings.write_text(yaml.safe_dump(body))
    with pytest.raises(SiteError) as info:
        SiteDirectory.load(tmp_path / "s")
    assert f"{settings}: launcher.gpu_visible_devices.1: String should match pattern" in str(info.value)

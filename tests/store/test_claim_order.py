"""A launcher claims the site's Jobs in the site's policy order (``launcher.policy`` in settings.yml).

The order is written twice: in SQL (``store.jobs._ORDERS``, which decides *which* Jobs a launcher gets when it
claims fewer than are runnable) and in memory (``launcher.placement.sort_requests``, the launcher's queue). The
tests here pin both to the policies' definitions and to each other:

- ``small_first``: fewest nodes, then highest ``node_packing_count``, then longest ``wall_time_min``;
- ``long_large_first``: most nodes, then longest ``wall_time_min`` (``node_packing_count`` plays no part);

ties broken by id, i.e. the order the Jobs were applied in.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from balsamctl.launcher import pilot
from balsamctl.launcher.mpi_mode import LocalExecutor
from balsamctl.launcher.nodes import Node
from balsamctl.launcher.placement import Placement, Policy, Request, sort_requests
from balsamctl.launcher.process import Task
from balsamctl.schemas import Job
from balsamctl.schemas.manifest import Document
from balsamctl.schemas.objects import AppSpec, Partition
from balsamctl.site.create import init_site
from balsamctl.store import JobRef, Store
from tests.support.site_ops import advance_to_runnable, app, apply_raws, configure, job
from tests.support.store_ops import add, app_doc, make_runnable

POLICIES: tuple[Policy, ...] = ("small_first", "long_large_first")

# (num_nodes, node_packing_count, wall_time_min) of one Job
Shape = tuple[int, int, int]


def no_task(_ref: JobRef, _app: AppSpec, _placement: Placement) -> Task:
    """The Task builder of a launcher that only claims: it never starts a Job."""
    raise AssertionError("this launcher only claims")


@pytest.mark.parametrize(
    ("policy", "rate", "placed", "queued"),
    [
        ("small_first", 0.0, ["one-0", "one-1"], []),
        ("long_large_first", 0.0, ["two-0"], []),
        ("small_first", 16.0, ["one-0", "one-1"], ["one-2", "one-3", "one-4", "one-5"]),
        ("long_large_first", 16.0, ["two-0"], ["two-1", "two-2", "two-3", "one-0"]),
    ],
)
def test_the_launcher_claims_what_fits_now_and_what_it_will_soon_start_in_the_sites_policy_order(
    tmp_path: Path, policy: str, rate: float, placed: list[str], queued: list[str]
) -> None:
    """Ten Jobs on two 1-CPU nodes. A launcher claims in the policy's order what fits its idle nodes now (placed at
    once) and, when its Jobs are short (``rate`` Jobs end a second), what it ends in CLAIM_AHEAD_SEC more (16/s:
    4, queued); nothing beyond, which other launchers may take."""
    site = configure(init_site(tmp_path / "site", "order"), {"launcher": {"policy": policy}})
    singles = [job(f"one-{i}", "a", f"one/{i}", num_nodes=1) for i in range(6)]
    doubles = [job(f"two-{i}", "a", f"two/{i}", num_nodes=2) for i in range(4)]
    apply_raws(site, app("a", "true"), *singles, *doubles)
    advance_to_runnable(site)
    nodes = [Node("n0", (0,)), Node("n1", (1,))]
    partition = Partition(job_mode="mpi", num_nodes=2)
    launcher = pilot.Launcher(
        site,
        "bj",
        partition,
        0,
        nodes,
        time.time() + 3600,
        "l",
        LocalExecutor(),
        no_task,
    )
    launcher.rate = rate
    assert launcher._claim_ahead() == len(queued)
    started, count = launcher._claim()
    assert [ref.name for ref, _ in started] == placed
    assert [ref.name for ref, _ in launcher.queue] == queued
    assert count == len(placed) + len(queued)
    with site.store.engine.connect() as conn:
        owned = set(conn.execute(text("SELECT name FROM objects WHERE owner IS NOT NULL")).scalars())
    assert owned == {*placed, *queued}, "claimed exactly what was placed or queued"
    site.close()


# ---------------------------------------------------------------- Store.claim's SQL order, batch by batch


def shaped_job(name: str, shape: Shape) -> Document:
    num_nodes, packing, wall = shape
    spec: dict[str, Any] = {
        "app": "sim",
        "workdir": f"w/{name}",
        "num_nodes": num_nodes,
        "node_packing_count": packing,
        "wall_time_min": wall,
    }
    return Document(Job.model_validate({"metadata": {"name": name}, "spec": spec}), "order.yaml", 1)


def apply_runnable(store: Store, site_id: int, shapes: Sequence[Shape]) -> list[str]:
    """Jobs ``j00, j01, ...`` of ``shapes``, applied in that order and made runnable; their names."""
    names = [f"j{i:02d}" for i in range(len(shapes))]
    add(store, site_id, [app_doc(), *(shaped_job(n, s) for n, s in zip(names, shapes, strict=True))])
    make_runnable(store, site_id)
    return names


def claim_in_batches(store: Store, site_id: int, policy: Policy, limit: int) -> list[list[JobRef]]:
    """Claim every runnable Job of the site, ``limit`` at a time, as launcher ``policy``: the batches."""
    batches: list[list[JobRef]] = []
    while batch := store.claim(site_id, owner=policy, batch_job="bj", filter_tags={}, limit=limit, order=policy):
        assert len(batch) <= limit
        batches.append(batch)
    return batches


def policy_key(policy: Policy, ref: JobRef) -> tuple[int, ...]:
    """The policy's order written out from its definition (not from either implementation); ties by id."""
    spec = ref.spec
    if policy == "small_first":
        return (spec.num_nodes, -spec.node_packing_count, -spec.wall_time_min, ref.id)
    return (-spec.num_nodes, -spec.wall_time_min, ref.id)


def in_memory_order(refs: Sequence[JobRef], policy: Policy) -> list[str]:
    """What the launcher's queue does with the same Jobs (given in apply order: ``sort_requests`` is stable)."""
    items = [(ref.name, Request.of(ref.spec), ref.spec.wall_time_min) for ref in sorted(refs, key=lambda r: r.id)]
    return [name for name, _, _ in sort_requests(items, policy)]


def test_claim_batches_follow_each_policy_with_every_tiebreak(store: Store, site_id: int) -> None:
    """Eight Jobs claimed three at a time: each batch is exactly the next three in the policy's order."""
    shapes = {
        "a": (1, 1, 10),
        "b": (2, 1, 30),
        "c": (1, 4, 5),
        "d": (1, 4, 20),
        "e": (2, 1, 60),
        "f": (1, 1, 10),  # a's twin, applied later: after a
        "g": (3, 1, 5),
        "h": (1, 2, 0),
    }
    add(store, site_id, [app_doc(), *(shaped_job(n, s) for n, s in shapes.items())])
    make_runnable(store, site_id)
    expected = {
        # 1 node: packing 4 (longest first: d, c), packing 2 (h), packing 1 (a, f: same, by id); 2 nodes: e 60 > b 30
        "small_first": [["d", "c", "h"], ["a", "f", "e"], ["b", "g"]],
        # 3 nodes, 2 nodes by wall time (e, b), then 1 node by wall time alone: d 20, a = f 10 (by id), c 5, h 0
        "long_large_first": [["g", "e", "b"], ["d", "a", "f"], ["c", "h"]],
    }
    for policy in POLICIES:
        batches = claim_in_batches(store, site_id, policy, limit=3)
        assert [[ref.name for ref in batch] for batch in batches] == expected[policy], policy
        claimed = [ref for batch in batches for ref in batch]
        assert in_memory_order(claimed, policy) == [name for batch in expected[policy] for name in batch], policy
        assert store.unclaim(site_id, policy) == len(shapes), "all handed back for the next policy"


shapes_strategy = st.lists(
    st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(0, 3)),  # narrow ranges: many ties on each column
    min_size=2,
    max_size=24,
)
_sites = itertools.count()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes=shapes_strategy, limit=st.integers(1, 5))
def test_sql_claim_order_is_the_policy_order_and_the_launchers(
    store: Store, tmp_path: Path, shapes: list[Shape], limit: int
) -> None:
    """Random Jobs claimed ``limit`` at a time (fewer than there are), with each policy in turn: the claimed
    sequence is exactly the policy's order (ties by id = apply order), and ``sort_requests`` agrees with it."""
    limit = min(limit, len(shapes) - 1)  # always fewer than are runnable: the SQL order decides which come first
    site_id = store.ensure_site(f"order-{next(_sites)}", str(tmp_path))
    names = apply_runnable(store, site_id, shapes)
    for policy in POLICIES:
        batches = claim_in_batches(store, site_id, policy, limit)
        claimed = [ref for batch in batches for ref in batch]
        assert sorted(ref.name for ref in claimed) == names, "every runnable Job, each once"
        assert [ref.name for ref in sorted(claimed, key=lambda r: r.id)] == names, "ids follow the apply order"
        got = [ref.name for ref in claimed]
        assert got == [ref.name for ref in sorted(claimed, key=lambda r: policy_key(policy, r))], (policy, shapes)
        assert got == in_memory_order(claimed, policy), (policy, shapes)
        assert store.unclaim(site_id, policy) == len(shapes)

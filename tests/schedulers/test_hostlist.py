"""Slurm's compressed host lists, as SLURM_JOB_NODELIST, squeue's NodeList and BALSAM_NODES write them."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balsamctl.schedulers.hostlist import expand_hostlist


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n[1-4]", ["n1", "n2", "n3", "n4"]),
        ("nid[0001-0003,0007]", ["nid0001", "nid0002", "nid0003", "nid0007"]),
        ("a1,b[2-3],c", ["a1", "b2", "b3", "c"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("x[8-10]-ib", ["x8-ib", "x9-ib", "x10-ib"]),
        ("host", ["host"]),
        ("[3]", ["3"]),
    ],
)
def test_expand_hostlist(text: str, expected: list[str]) -> None:
    assert expand_hostlist(text) == expected


@pytest.mark.parametrize("text", ["", "n[1-", "n1-2]", "n[]", "n[a-b]", "n[3-1]", "a,,b", "n[1,]", "n[[1]]", "a,"])
def test_expand_hostlist_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        expand_hostlist(text)


@st.composite
def bracket_group(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A compressed ``[..]`` group and the numbers it stands for."""
    numbers = sorted(draw(st.sets(st.integers(0, 300), min_size=1, max_size=8)))
    width = draw(st.integers(1, 4))
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    text = ",".join(f"{r[0]:0{width}d}" + (f"-{r[-1]:0{width}d}" if len(r) > 1 else "") for r in runs)
    return f"[{text}]", [f"{n:0{width}d}" for n in numbers]


names = st.text("abcxyz-", min_size=1, max_size=4)


@st.composite
def hostlist_entry(draw: st.DrawFn) -> tuple[str, list[str]]:
    """One comma-separated entry: a name of literal parts and 0-2 bracket groups, and its expansion."""
    first = draw(names)
    parts = [(first, [first])]
    for _ in range(draw(st.integers(0, 2))):
        parts.append(draw(bracket_group()))
        parts.extend((s, [s]) for s in draw(st.lists(names, max_size=1)))
    return "".join(t for t, _ in parts), ["".join(combo) for combo in itertools.product(*(e for _, e in parts))]


@settings(max_examples=60, deadline=None)
@given(st.lists(hostlist_entry(), min_size=1, max_size=4))
def test_expand_hostlist_round_trip(entries: list[tuple[str, list[str]]]) -> None:
    assert expand_hostlist(",".join(t for t, _ in entries)) == [h for _, hosts in entries for h in hosts]

"""Slurm's compressed host lists (``nid[0001-0003,0007]``): how ``SLURM_JOB_NODELIST``, squeue's NodeList and a
partition's ``BALSAM_NODES`` name many hosts in one word."""

from __future__ import annotations

import itertools
import re

_BRACKET_ITEM = re.compile(r"\[([^\[\]]*)\]|([^\[\],]+)")
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


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

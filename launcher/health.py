"""Black-hole protection: a node (or a whole launcher) whose Jobs keep failing to start is fenced off.

A pilot job whose environment is broken claims Jobs and fails them as fast as it can. Here an *infrastructure*
failure (a start the node or site refused: :func:`balsamctl.launcher.process.start_failure`) is never charged to the
Job, and
:class:`FailureStreaks` counts such failures in a row per place: ``limit`` of them with no run started between
fence the place off. Pure bookkeeping: the launcher decides what fencing means (a serial-mode node: its worker gets
nothing more; the mpi mode's head node: the whole launcher, which drains and ends).
"""

from __future__ import annotations


class FailureStreaks:
    """Infrastructure failures in a row, per place (a node name): a place is due to be fenced once ``limit`` of
    them came with no run started there in between."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the limit must be at least 1, not {limit}")
        self.limit = limit
        self.in_a_row: dict[str, int] = {}

    def failed(self, place: str) -> bool:
        """One more infrastructure failure at ``place``; whether it is due to be fenced."""
        self.in_a_row[place] = self.in_a_row.get(place, 0) + 1
        return self.in_a_row[place] >= self.limit

    def ran(self, place: str) -> None:
        """A run started at ``place`` (and ended, whatever its exit): its row is broken."""
        self.in_a_row.pop(place, None)

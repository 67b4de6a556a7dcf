"""A serial-mode worker: starts the Tasks its launcher sends on its node and reports their outcomes in batches.

Every node of a serial-mode launcher has one, the launcher's own node included, so the launcher's bookkeeping
(claims, placement, status writes) never waits for a fork and exec, and the two run side by side. A worker talks
to its launcher over a :class:`Link`: MPI to the other nodes, a local socket on the launcher's node
(``python -m balsamctl.launcher.worker --fd N``, which imports nothing but this module, :mod:`balsamctl.launcher.lanes`
and
:mod:`balsamctl.launcher.process`).
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any, Protocol

from balsamctl.launcher.lanes import Event, ProcessLanes
from balsamctl.launcher.process import Outcome, ProcessGroup

TAG_TASKS, TAG_KILL, TAG_STOP, TAG_OUTCOMES, TAG_FINAL, TAG_READY = 1, 2, 3, 4, 5, 6
TICK_SEC = 0.002
IDLE_WAIT_SEC = 1.0
REPORT_EVERY_SEC = 0.005  # while every lane has a Job queued, what happened is reported at most this often


class WorkerLost(RuntimeError):
    """A worker's link closed while it still had work: the node cannot be used any more."""


class Link(Protocol):
    """A message link between a launcher and one worker: ``(tag, payload)`` messages, in order."""

    def send(self, tag: int, payload: Any) -> None:
        """Send one message."""

    def receive(self) -> tuple[int, Any] | None:
        """The next message if one is waiting, else None (never blocks); WorkerLost if the peer is gone."""

    def receive_wait(self) -> tuple[int, Any]:
        """The next message, waiting for it."""

    def ready(self) -> bool:
        """Whether a message waits (never blocks)."""

    def fileno(self) -> int | None:
        """A file descriptor readable when a message waits, or None (the link must be polled)."""


class SocketLink:
    """A link over a local socket (pickled messages): the launcher's own node."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def send(self, tag: int, payload: Any) -> None:
        """Send one message."""
        try:
            self.conn.send((tag, payload))
        except OSError as exc:
            raise WorkerLost(f"the local link closed: {exc}") from None

    def receive(self) -> tuple[int, Any] | None:
        """The next message if one waits."""
        return self.receive_wait() if self.ready() else None

    def ready(self) -> bool:
        """Whether a message (or the end of the link) waits."""
        try:
            return self.conn.poll()
        except OSError as exc:
            raise WorkerLost(f"the local link closed: {exc}") from None

    def receive_wait(self) -> tuple[int, Any]:
        """The next message, waiting for it."""
        try:
            tag, payload = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise WorkerLost(f"the local link closed: {exc or 'end of file'}") from None
        return tag, payload

    def fileno(self) -> int:
        """The socket's descriptor."""
        return self.conn.fileno()


class MpiLink:
    """A link to one MPI rank (the launcher is rank 0)."""

    def __init__(self, comm: Any, peer: int) -> None:
        from mpi4py import MPI

        self.comm = comm
        self.peer = peer
        self.status = MPI.Status()

    def send(self, tag: int, payload: Any) -> None:
        """Send one message."""
        self.comm.send(payload, dest=self.peer, tag=tag)

    def receive(self) -> tuple[int, Any] | None:
        """The next message if one waits."""
        if not self.comm.Iprobe(source=self.peer, status=self.status):
            return None
        tag = self.status.Get_tag()
        return tag, self.comm.recv(source=self.peer, tag=tag)

    def ready(self) -> bool:
        """Whether a message waits."""
        return bool(self.comm.Iprobe(source=self.peer))

    def receive_wait(self) -> tuple[int, Any]:
        """The next message, waiting for it."""
        payload = self.comm.recv(source=self.peer, status=self.status)
        return self.status.Get_tag(), payload

    def fileno(self) -> None:
        """MPI has no descriptor to wait on: polled."""
        return None


def wait_any(links: Sequence[Link], timeout: float, also: Sequence[int] = ()) -> None:
    """Until a message waits on one of ``links``, one of the descriptors ``also`` is readable, or ``timeout`` seconds
    pass (a blocking poll when every link has a descriptor, short ticks otherwise)."""
    fds = [fd for link in links if (fd := link.fileno()) is not None]
    if len(fds) == len(links):
        poller = select.poll()
        for fd in [*fds, *also]:
            poller.register(fd, select.POLLIN)
        poller.poll(timeout * 1000)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not any(link.ready() for link in links):
        if select.select(also, [], [], TICK_SEC)[0]:  # a tick, or less
            return


def work(link: Link) -> None:
    """The worker loop: start what the launcher sends (or queue it on its lane), report outcomes and starts as
    they come (in batches when many happen together), stop when told (or when the launcher is gone: its Jobs are
    then stopped too)."""
    for sig in (signal.SIGTERM, signal.SIGINT):  # the scheduler signals every process of an allocation at its end
        signal.signal(sig, _left_to_the_launcher)
    fd = link.fileno()
    group = ProcessGroup(dedicated=fd is not None)  # the local worker: nothing in it but this loop
    if fd is not None:
        group.watch(fd)
    lanes = ProcessLanes(group)
    pending: list[Event] = []
    last_report = 0.0
    link.send(TAG_READY, None)  # the launcher records no start before its worker can make it
    while True:
        try:
            while (message := link.receive()) is not None:
                tag, payload = message
                if tag == TAG_TASKS:
                    lanes.add(payload)
                elif tag == TAG_KILL:
                    lanes.kill(*payload)
                elif tag == TAG_STOP:
                    link.send(TAG_FINAL, pending + lanes.stop(*payload))
                    return
        except WorkerLost:
            lanes.stop("the launcher is gone", 1.0)
            return
        pending += lanes.poll()
        due = last_report + REPORT_EVERY_SEC - time.monotonic()
        if pending and (due <= 0 or _slot_idles(lanes, pending)):
            link.send(TAG_OUTCOMES, pending)
            pending, last_report, due = [], time.monotonic(), REPORT_EVERY_SEC
        idle = IDLE_WAIT_SEC if fd is not None else TICK_SEC  # MPI has no descriptor: look again after a tick
        group.wait(min(idle, due) if pending else idle)


def _left_to_the_launcher(_signum: int, _frame: FrameType | None) -> None:
    """A worker outlives the signal that ends its allocation: its launcher, signalled too, tells it to stop its
    Jobs and gathers their last outcomes (a worker that died of it would lose them); a Job's own signal handling is
    its own (a handled signal is reset to the default in a new program)."""


def _slot_idles(lanes: ProcessLanes, pending: Sequence[Event]) -> bool:
    """Whether a slot is idle (a Task ended and no queued one followed it) or soon will be (a running Task with
    nothing queued behind it): the launcher refills it sooner when told at once."""
    ends = sum(isinstance(event, Outcome) for event in pending)
    return ends > len(pending) - ends or lanes.starving()


def start_local() -> tuple[SocketLink, subprocess.Popen[bytes]]:
    """Start the worker of the launcher's own node: its link and its process."""
    ours, theirs = socket.socketpair()
    with theirs:
        fd = theirs.fileno()
        proc = subprocess.Popen([sys.executable, "-m", "balsamctl.launcher.worker", "--fd", str(fd)], pass_fds=[fd])
    return SocketLink(Connection(ours.detach())), proc


def main(argv: Sequence[str]) -> int:
    """``python -m balsamctl.launcher.worker --fd N``: the local worker, linked to its launcher by socket ``N``."""
    parser = argparse.ArgumentParser(prog="python -m balsamctl.launcher.worker")
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args(argv)
    os.set_inheritable(args.fd, False)  # the Jobs it starts must not hold the link open
    work(SocketLink(Connection(args.fd)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

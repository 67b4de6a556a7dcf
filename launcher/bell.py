"""The launcher's bell: a pipe that ends its executor's wait (:meth:`Watching.watch`) when another thread (the store's
listener: new runnable Jobs) or a signal handler (a stop) rings it."""

from __future__ import annotations

import contextlib
import os
import weakref
from typing import Protocol, runtime_checkable


@runtime_checkable
class Watching(Protocol):
    """An executor whose wait also ends when a descriptor becomes readable."""

    def watch(self, fd: int) -> None:
        """Also end the wait when ``fd`` becomes readable."""


class Bell:
    """A self-pipe: rung from any thread or a signal handler, heard by whoever polls its descriptor."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        weakref.finalize(self, _close, self._read, self._write)  # never before a late ring: it holds the Bell

    def fileno(self) -> int:
        """The descriptor readable while it rings."""
        return self._read

    def ring(self) -> None:
        """Ring (at once; a bell rung already stays rung)."""
        with contextlib.suppress(BlockingIOError):  # the pipe is full: rung already
            os.write(self._write, b"\0")

    def answer(self) -> bool:
        """Whether it rang since the last answer; silent again (never waits)."""
        rang = False
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 4096):
                rang = True
        return rang


def _close(*fds: int) -> None:
    for fd in fds:
        os.close(fd)

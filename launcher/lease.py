"""A launcher's lease: renewed by heartbeats; a launcher that cannot renew it fences itself.

The controller declares a launcher lost once it has been silent for ``lease_sec``. A launcher renews its lease every
``lease_sec / 4`` (at most every HEARTBEAT_SEC). Once it has not renewed it for ``lease_sec / 2`` (the store refused
or could not be reached, or the launcher itself was frozen: SIGSTOP, a hung node) it tries once more at once, and if
that fails too it must stop its Jobs before its lease can run out and they are handed on. A store that says the
launcher was declared lost ends it at once: it is never revived.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from balsamctl.store import Heartbeat, Store, StoreUnavailable

log = logging.getLogger("balsamctl.launcher")
HEARTBEAT_SEC = 10.0


class Lease:
    """One launcher's lease in ``store``."""

    def __init__(self, store: Store, launcher_id: str, lease_sec: float) -> None:
        self.store = store
        self.launcher_id = launcher_id
        self.every = min(HEARTBEAT_SEC, lease_sec / 4)
        self.fence_after = lease_sec / 2
        self.renewed = self.tried = time.monotonic()  # registering the launcher took the lease

    def keep(self, status: Callable[[], Heartbeat]) -> str | None:
        """Renew the lease when due, with the launcher's ``status``; why the launcher must stop now, or None."""
        now = time.monotonic()
        overdue = now - self.renewed >= self.fence_after
        if not overdue and now - self.tried < self.every:
            return None
        self.tried = now
        try:
            alive: bool | None = self.store.heartbeat(self.launcher_id, status())
        except StoreUnavailable as exc:
            log.warning("launcher %s: could not renew its lease: %s", self.launcher_id, str(exc).splitlines()[0])
            alive = None
        if alive:
            self.renewed = now
            return None
        if alive is False:
            return "lease lost"  # declared lost (silent too long): it must not go on
        if overdue:
            return f"lease not renewed for {now - self.renewed:.0f} s: fenced itself"
        return None

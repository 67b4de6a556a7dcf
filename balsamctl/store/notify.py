"""Push wake-ups on PostgreSQL: ``NOTIFY`` when a site has something to do, ``LISTEN`` in its controller and launchers.

Two channels per site (its id in the name): :func:`site_channel` wakes the site's controller (a write for the site,
sent by whoever wrote: :meth:`NotifyStore.notify_site`), :func:`runnable_channel` wakes its launchers (the store
makes Jobs runnable and unclaimed: :func:`notify_runnable`, in the writing transaction, so it arrives with the
commit). A controller and its launchers may run on other hosts than the writer: only the store is shared. Their
timers stay as the safety net: a notification lost (a listener reconnecting) only delays the work to the next tick.
On SQLite there is nothing to listen to: the site directory's file poke wakes the controller, launchers poll.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text

from balsamctl.store.base import StoreBase
from balsamctl.store.engine import CONNECT_TIMEOUT_SEC, is_postgres, write_tx

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

log = logging.getLogger("balsamctl.store.notify")
NO_PUSH_VAR = "BALSAMCTL_NO_PUSH"
"""Set (to anything but empty), controllers and launchers listen to nothing: timers alone wake them (a connection
pooler that cannot hold a ``LISTEN``, or a comparison)."""
APPLICATION_NAME = "balsamctl listener"
"""The ``application_name`` of a listener's connection (``pg_stat_activity`` shows it)."""
RETRY_SEC = 2.0  # how often a listener whose connection was lost tries to connect again
TICK_SEC = 30.0  # how long a listener's thread waits at a time (a stop interrupts it at once)
_NOTIFY = text("SELECT pg_notify(:channel, '')")


def site_channel(site_id: int) -> str:
    """The channel of "a write for site ``site_id``": its controller listens."""
    return f"balsamctl_site_{site_id}"


def runnable_channel(site_id: int) -> str:
    """The channel of "runnable Jobs at site ``site_id``": its launchers listen."""
    return f"balsamctl_runnable_{site_id}"


def notify_runnable(conn: Connection, site_id: int) -> None:
    """Wake the launchers of ``site_id`` when this transaction commits: it made Jobs runnable and unclaimed (one
    call per transaction; PostgreSQL delivers a repeat of the same notification in one transaction once). A no-op
    on SQLite."""
    if conn.dialect.name == "postgresql":
        conn.execute(_NOTIFY, {"channel": runnable_channel(site_id)})


class NotifyStore(StoreBase):
    """Wake-ups through the store (PostgreSQL ``LISTEN``/``NOTIFY``)."""

    def notify_site(self, site_id: int) -> None:
        """Wake the controller of ``site_id`` wherever it runs, after a write for the site; a no-op on SQLite."""
        if is_postgres(self.engine):
            with write_tx(self.engine) as conn:
                conn.execute(_NOTIFY, {"channel": site_channel(site_id)})

    def listen(self, *channels: str) -> Listener | None:
        """A :class:`Listener` on ``channels`` (connected and listening on return, or trying again as it waits);
        None on SQLite, or when ``BALSAMCTL_NO_PUSH`` is set."""
        if not is_postgres(self.engine) or os.environ.get(NO_PUSH_VAR):
            return None
        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        return Listener(conninfo, channels)


class Listener:
    """A connection of its own (autocommit) that ``LISTEN``s on some channels, for a loop to wait on.

    It never raises: a lost connection is reported (logged, counted in :attr:`reconnects`) and made again, every
    RETRY_SEC while the server is away; the wait after a reconnect returns True, as notifications sent meanwhile
    were lost. Its :meth:`wait` belongs to one thread at a time (the one :meth:`start` runs, if any).
    """

    def __init__(self, conninfo: str, channels: Sequence[str]) -> None:
        self.conninfo = conninfo
        self.channels = tuple(channels)
        self.reconnects = 0
        """How many times it connected again after losing its connection."""
        self._conn: psycopg.Connection[TupleRow] | None = None
        self._lost = False  # its connection was lost (or never made): the next one is a reconnect, and wakes its loop
        self._retry_at = 0.0
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._connect()

    def __repr__(self) -> str:
        return f"Listener({', '.join(self.channels)})"

    def wait(self, timeout: float) -> bool:
        """Block until a notification arrives on one of the channels, :meth:`close` is called, or ``timeout``
        seconds pass; whether one came (every one waiting is taken: the next wait waits for new ones)."""
        deadline = time.monotonic() + timeout
        while not self._stopping.is_set():
            if self._conn is None and time.monotonic() >= self._retry_at and self._connect():
                return True  # what was sent while it was away is lost: the caller looks for itself
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                if self._conn is not None:
                    if self._take():  # those received with the last batch, or while it ran LISTEN
                        return True
                    ready = self._sleep(left, self._conn.fileno())
                    if ready and self._take():
                        return True
                    continue  # something else came (an error, before the end of the connection): read on
            except Exception as exc:  # whatever the driver raises: the loop waiting here goes on
                self._drop(exc)
                continue
            self._sleep(min(left, self._retry_at - time.monotonic()))
        return False

    def start(self, on_wake: Callable[[], None], name: str) -> None:
        """Call ``on_wake`` from a thread of its own (named ``name``) whenever :meth:`wait` says so, until
        :meth:`close`."""

        def serve() -> None:
            while not self._stopping.is_set():
                if self.wait(TICK_SEC):
                    try:
                        on_wake()
                    except Exception:
                        log.exception("%s: waking up failed", self)

        self._thread = threading.Thread(target=serve, name=name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop its thread (at once: a wait in progress returns) and close its connection."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        os.write(self._wakeup_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=2 * CONNECT_TIMEOUT_SEC)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        os.close(self._wakeup_r)
        os.close(self._wakeup_w)

    def _connect(self) -> bool:
        """Connect and ``LISTEN``; whether it could (if not, it tries again after RETRY_SEC)."""
        import psycopg  # the PostgreSQL driver only where it is used: SQLite installs may lack it
        from psycopg import sql

        try:
            conn = psycopg.connect(
                self.conninfo,
                autocommit=True,
                application_name=APPLICATION_NAME,
                connect_timeout=CONNECT_TIMEOUT_SEC,
                keepalives=1,  # a peer that vanished without a word is found out (TCP keepalives)
                keepalives_idle=30,
                keepalives_interval=10,
                keepalives_count=3,
            )
            try:
                for channel in self.channels:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            except BaseException:
                conn.close()
                raise
        except Exception as exc:  # reported, tried again later
            if not self._lost:
                log.warning("%s: cannot connect to the store (%s); timers wake up meanwhile", self, _first_line(exc))
                self._lost = True
            self._retry_at = time.monotonic() + RETRY_SEC
            return False
        if self._lost:
            self._lost = False
            self.reconnects += 1
            log.info("%s: connected to the store again (reconnect %d)", self, self.reconnects)
        self._conn = conn
        return True

    def _drop(self, exc: Exception) -> None:
        """The connection was lost: report it and let go of it (the next wait connects again)."""
        log.warning("%s: lost its connection to the store (%s); connecting again", self, _first_line(exc))
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._lost = True
        self._retry_at = 0.0  # at once: a server that ended one session (a restart, a DBA) takes the next

    def _take(self) -> bool:
        """Take every notification received so far, never waiting; whether there was any."""
        assert self._conn is not None
        return bool(list(self._conn.notifies(timeout=0)))

    def _sleep(self, seconds: float, fd: int | None = None) -> bool:
        """Until ``fd`` is readable, :meth:`close` is called, or ``seconds`` pass; whether ``fd`` is readable."""
        watched = [self._wakeup_r] if fd is None else [self._wakeup_r, fd]
        ready, _, _ = select.select(watched, [], [], max(0.0, seconds))
        return fd is not None and fd in ready


def _first_line(exc: BaseException) -> str:
    """The first line of an error (a driver's error carries a hint after it)."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__

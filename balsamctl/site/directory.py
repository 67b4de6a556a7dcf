"""A site directory: settings.yml, job-template.sh, manifests/, data/, log/, qsubmit/ and .balsam/."""

from __future__ import annotations

import os
import socket
import uuid as uuidlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from balsamctl.schedulers import scheduler_class
from balsamctl.schemas.settings import SiteSettings
from balsamctl.site import light_settings
from balsamctl.site.light_settings import SiteError as SiteError  # re-exported: SiteDirectory.load raises it
from balsamctl.store import Store, redact
from balsamctl.store.engine import said as said  # re-exported: the site layer's callers name errors with it

LAYOUT = ("manifests", "data", "log", "qsubmit", ".balsam")
UUID_FILE = "uuid"
"""The site's identity, in its ``.balsam/``: copied and moved with the directory."""


@dataclass
class SiteDirectory:
    """One site: its directory, its settings and its store."""

    path: Path
    settings: SiteSettings
    _store: Store | None = field(default=None, repr=False)

    @classmethod
    def load(cls, path: Path) -> SiteDirectory:
        """Read the site at ``path``; :class:`SiteError` names the file and field when settings are invalid. Valid
        settings are recorded for the CLI's fast paths (:mod:`balsamctl.site.light_settings`)."""
        path = path.resolve()
        settings_file = path / "settings.yml"
        if not settings_file.is_file():
            raise SiteError(f"{path} is not a site directory (no settings.yml)")
        try:
            text = settings_file.read_text()
            raw = yaml.safe_load(text) or {}
            settings = SiteSettings.model_validate(raw)
        except yaml.YAMLError as exc:
            raise SiteError(f"{settings_file}: invalid YAML: {exc}") from None
        except ValidationError as exc:
            lines = [f"{settings_file}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            raise SiteError("\n".join(lines)) from None
        try:
            scheduler_class(settings.scheduler)
        except ValueError as exc:
            raise SiteError(f"{settings_file}: scheduler: {exc}") from None
        light_settings.remember(path, text, settings.name, settings.store_url)
        return cls(path, settings)

    @property
    def name(self) -> str:
        """The site's name."""
        return self.settings.name

    local = True
    """Its files are on this machine."""

    @cached_property
    def uuid(self) -> str | None:
        """The site's identity (``.balsam/uuid``), made for a site that predates it; None if this user can neither
        read nor make it (the site is then known to its store by its path)."""
        file = self.state_dir / UUID_FILE
        for _ in range(2):
            try:
                return file.read_text().strip() or None
            except FileNotFoundError:
                try:
                    return write_uuid(self.path)
                except FileExistsError:
                    continue  # another process made it first: read theirs
                except OSError:
                    return None
            except OSError:
                return None
        return None

    @property
    def host(self) -> str:
        """The machine it is read on."""
        return socket.gethostname()

    @property
    def job_template_source(self) -> str:
        """The job template's file."""
        return str(self.path / self.settings.job_template_path)

    @property
    def job_template(self) -> str:
        """The job template's text."""
        return (self.path / self.settings.job_template_path).read_text()

    @property
    def store_url(self) -> str:
        """The store's SQLAlchemy URL (``${VAR}`` expanded, so credentials can stay in the environment)."""
        return light_settings.store_url(self.path, self.settings.store_url)

    @property
    def store(self) -> Store:
        """The site's store, opened on first use; :class:`SiteError` (the URL without its password) if it cannot be."""
        if self._store is None:
            url = self.store_url
            create_private_sqlite_file(url)
            self._store = open_store(self.name, url)
        return self._store

    @cached_property
    def site_id(self) -> int:
        """This site's integer id in its store."""
        return self.store.ensure_site(self.name, str(self.path), uuid=self.uuid, host=self.host)

    @property
    def data_dir(self) -> Path:
        """Where Job workdirs live."""
        return self.path / "data"

    @property
    def manifests_dir(self) -> Path:
        """The watched GitOps folder."""
        return self.path / "manifests"

    @property
    def log_dir(self) -> Path:
        """Logs of the controller, hooks and launchers."""
        return self.path / "log"

    @property
    def qsubmit_dir(self) -> Path:
        """Rendered job scripts and allocation output."""
        return self.path / "qsubmit"

    @property
    def state_dir(self) -> Path:
        """``.balsam/``: the SQLite store, pid file, wake-up file."""
        return self.path / ".balsam"

    @property
    def wake_dir(self) -> Path:
        """Watched by the controller; the CLI touches a file here after a change (kept apart from the store)."""
        return self.state_dir / "wake"

    def poke(self) -> None:
        """Wake the controller up: a file it watches, and on a shared PostgreSQL store a ``NOTIFY`` (its controller
        may run on a host that does not see this file system)."""
        self.wake_dir.mkdir(exist_ok=True)
        (self.wake_dir / "poke").touch()
        if self._store is not None:  # a change was written: the store is open
            self._store.notify_site(self.site_id)

    def workdir(self, relative: str) -> Path:
        """A Job's workdir, guaranteed inside ``data/`` even through symlinks (only its own parts are looked at)."""
        base = self._real_data_dir
        parts = [part for part in relative.split("/") if part not in ("", ".")]
        if relative.startswith("/") or ".." in parts:
            raise SiteError(f"workdir {relative!r} resolves outside the site's data/ directory")
        target = str(base)  # plain strings: a launcher asks this for every Job it starts
        for part in parts:
            target = os.path.join(target, part)
            if os.path.islink(target):  # rare: resolve it and check where it leads
                resolved = Path(target).resolve()
                if resolved != base and base not in resolved.parents:
                    raise SiteError(f"workdir {relative!r} resolves outside the site's data/ directory")
                target = str(resolved)
        return Path(target)

    @cached_property
    def _real_data_dir(self) -> Path:
        return self.data_dir.resolve()

    def close(self) -> None:
        """Release the store."""
        if self._store is not None:
            self._store.close()
            self._store = None


def open_store(name: str, url: str) -> Store:
    """Open the store of site ``name``; :class:`SiteError` naming the URL without its password if it cannot be."""
    try:
        return Store(url)
    except SQLAlchemyError as exc:
        raise SiteError(f"site {name}: cannot open its store {redact(url)}: {said(exc)}") from None


def write_uuid(path: Path) -> str:
    """Give the site at ``path`` a new identity and return it."""
    value = str(uuidlib.uuid4())
    file = path / ".balsam" / UUID_FILE
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(value + "\n")
    return value


def create_private_sqlite_file(url: str) -> None:
    """Create a SQLite store's file readable by its owner only, before SQLite creates it with the umask's mode.

    SQLite gives the ``-wal`` and ``-shm`` files the database file's mode. An existing file is left as it is.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # Store() reports it
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:
        return  # a missing or read-only directory: SQLite reports it

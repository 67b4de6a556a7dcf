"""A site that lives on another machine, reached through its store alone (``site add NAME --store URL``).

Its settings, scheduler and job template are what its controller published to the store
(:meth:`balsamctl.store.sites.SiteStore.publish_site`); its files (Job workdirs, allocation output) stay on its
own host, so what needs them says so.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from balsamctl.schemas.settings import SiteSettings
from balsamctl.site.directory import SiteDirectory, open_store, said
from balsamctl.site.light_settings import SiteError
from balsamctl.store import NotFound, Store, redact
from balsamctl.store.sites import SiteRecord


class RemoteSite:
    """A registered site known by its name, its store and its UUID."""

    local = False

    def __init__(self, name: str, store_url: str, uuid: str | None = None) -> None:
        self.name = name
        self.configured_url = store_url
        """The store URL as registered (``${VAR}`` kept)."""
        self.uuid = uuid
        self._store: Store | None = None

    def __repr__(self) -> str:
        return f"RemoteSite({self.name!r}, {redact(self.store_url)!r})"

    @property
    def store_url(self) -> str:
        """The store's URL, ``${VAR}`` expanded (credentials can stay in the environment)."""
        return os.path.expandvars(self.configured_url)

    @property
    def store(self) -> Store:
        """The site's store, opened on first use; :class:`SiteError` (the URL without its password) if it cannot be."""
        if self._store is None:
            self._store = open_store(self.name, self.store_url)
        return self._store

    @cached_property
    def record(self) -> SiteRecord:
        """The site as its store knows it; :class:`SiteError` if the store has no such site, or another site of
        that name now (another UUID)."""
        try:
            record = self.store.site_record(self.name, by_name=True)
        except NotFound:
            raise SiteError(
                f"site {self.name}: the store {redact(self.store_url)} has no site of that name (or this role may "
                "not see it)"
            ) from None
        except SQLAlchemyError as exc:
            raise SiteError(f"site {self.name}: cannot read its store {redact(self.store_url)}: {said(exc)}") from None
        if self.uuid is not None and record.uuid not in (None, self.uuid):
            raise SiteError(
                f"site {self.name}: the store's site of that name is another site now (uuid {record.uuid}, registered "
                f"here as {self.uuid}): `balsamctl site rm {self.name}` and add it again if that is intended"
            )
        return record

    @property
    def site_id(self) -> int:
        """Its integer id in its store."""
        return self.record.id

    @property
    def host(self) -> str | None:
        """The machine its controller last ran on."""
        return self.record.host

    @property
    def path(self) -> Path:
        """Its directory on its own host."""
        return Path(self.record.path)

    @cached_property
    def settings(self) -> SiteSettings:
        """The settings its controller published; :class:`SiteError` if it never has, or they do not validate."""
        published = self.record.settings
        if published is None:
            raise SiteError(
                f"site {self.name} has not published its settings yet: start its controller once on its host "
                f"({self.record.where()})"
            )
        try:
            return SiteSettings.model_validate(published)
        except ValidationError as exc:
            raise SiteError(f"site {self.name}: its published settings do not validate here: {exc}") from None

    @property
    def job_template(self) -> str:
        """The job template its controller published."""
        if self.record.job_template is None:
            raise SiteError(f"site {self.name} has not published its job template yet: start its controller once")
        return self.record.job_template

    @property
    def job_template_source(self) -> str:
        """Where the job template comes from, for messages."""
        return f"the job template site {self.name} published"

    @property
    def qsubmit_dir(self) -> Path:
        """Where its job scripts and allocation output live, on its own host."""
        return self.path / "qsubmit"

    def poke(self) -> None:
        """Wake its controller up through the store (PostgreSQL ``NOTIFY``; its timers otherwise)."""
        self.store.notify_site(self.site_id)

    def workdir(self, relative: str) -> Path:
        """A Job's workdir, when the site's directory is readable here too (a shared file system: the same site,
        by its UUID); else :class:`SiteError`."""
        try:
            here = SiteDirectory.load(self.path)
            same = here.uuid is not None and here.uuid == self.record.uuid
        except (SiteError, OSError):
            same = False
        if not same:
            raise SiteError(
                f"site {self.name} lives on {self.record.where()}: its files (workdir {relative!r}) cannot be read here"
            )
        return here.workdir(relative)

    def close(self) -> None:
        """Release the store."""
        if self._store is not None:
            self._store.close()
            self._store = None

"""What every verb needs of a site, whether its directory is on this machine (:class:`~balsamctl.site.directory.
SiteDirectory`) or only its store is reachable (:class:`~balsamctl.site.remote.RemoteSite`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from balsamctl.schemas.settings import SiteSettings
    from balsamctl.store import Store


class Site(Protocol):
    """A site as the CLI and the API see it."""

    @property
    def name(self) -> str:
        """The site's name."""

    @property
    def local(self) -> bool:
        """Whether its directory is on this machine (its files can be read here)."""

    @property
    def path(self) -> Path:
        """Its directory (on its own host, for a remote site)."""

    @property
    def settings(self) -> SiteSettings:
        """Its settings (as its controller published them, for a remote site)."""

    @property
    def job_template(self) -> str:
        """The text of its job template."""

    @property
    def job_template_source(self) -> str:
        """Where that text comes from, for messages."""

    @property
    def store(self) -> Store:
        """Its store."""

    @property
    def store_url(self) -> str:
        """Its store's URL, expanded."""

    @property
    def site_id(self) -> int:
        """Its integer id in its store."""

    @property
    def qsubmit_dir(self) -> Path:
        """Where its job scripts and allocation output live (on its own host)."""

    def poke(self) -> None:
        """Wake its controller up."""

    def workdir(self, relative: str) -> Path:
        """A Job's workdir in its ``data/``; :class:`~balsamctl.site.light_settings.SiteError` if it cannot be read
        here."""

    def close(self) -> None:
        """Release its store."""

"""A site directory: settings.yml, job-template.sh, manifests/, data/, log/, qsubmit/ and .balsam/."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from balsamctl.schedulers import UnsupportedScheduler, check_scheduler
from balsamctl.schemas.settings import SchedulerKind, SiteSettings, is_valid_site_name
from balsamctl.site import platforms, registry
from balsamctl.store import Store, redact, sqlite_url

LAYOUT = ("manifests", "data", "log", "qsubmit", ".balsam")


class SiteError(Exception):
    """A site that cannot be found, created or read."""


@dataclass
class Site:
    """One site: its directory, its settings and its store."""

    path: Path
    settings: SiteSettings
    _store: Store | None = field(default=None, repr=False)

    @classmethod
    def load(cls, path: Path) -> Site:
        """Read the site at ``path``; :class:`SiteError` names the file and field when settings are invalid."""
        path = path.resolve()
        settings_file = path / "settings.yml"
        if not settings_file.is_file():
            raise SiteError(f"{path} is not a site directory (no settings.yml)")
        try:
            raw = yaml.safe_load(settings_file.read_text()) or {}
            settings = SiteSettings.model_validate(raw)
        except yaml.YAMLError as exc:
            raise SiteError(f"{settings_file}: invalid YAML: {exc}") from None
        except ValidationError as exc:
            lines = [f"{settings_file}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            raise SiteError("\n".join(lines)) from None
        return cls(path, settings)

    @property
    def name(self) -> str:
        """The site's name."""
        return self.settings.name

    @property
    def store_url(self) -> str:
        """The store's SQLAlchemy URL (``${VAR}`` expanded, so credentials can stay in the environment)."""
        if self.settings.store_url:
            return os.path.expandvars(self.settings.store_url)
        return sqlite_url(self.path / ".balsam" / "store.db")

    @property
    def store(self) -> Store:
        """The site's store, opened on first use; :class:`SiteError` (the URL without its password) if it cannot be."""
        if self._store is None:
            url = self.store_url
            create_private_sqlite_file(url)
            try:
                self._store = Store(url)
            except SQLAlchemyError as exc:
                reason = getattr(exc, "orig", None) or exc
                raise SiteError(f"site {self.name}: cannot open its store {redact(url)}: {reason}") from None
        return self._store

    @cached_property
    def site_id(self) -> int:
        """This site's integer id in its store."""
        return self.store.ensure_site(self.name, str(self.path))

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
        """Wake the controller up."""
        self.wake_dir.mkdir(exist_ok=True)
        (self.wake_dir / "poke").touch()

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


def init_site(
    path: Path,
    name: str,
    scheduler: SchedulerKind | None = None,
    *,
    register: bool = True,
    site_id: int | None = None,
    platform: str | None = None,
) -> Site:
    """Lay out a new site at ``path`` (private to its owner) and register it (with ``site_id`` if free).

    Its scheduler, settings and job template come from a platform preset (``balsamctl/site/platforms/``): ``platform``,
    else ``scheduler``'s generic one (``generic-<scheduler>``; ``local``, the default). A ``scheduler`` given with
    a ``platform`` must be the preset's.
    """
    path = path.resolve()
    if (path / "settings.yml").exists():
        raise SiteError(f"{path} is already a site")
    registered = registry.load_registry().get(name)
    if registered is not None and registered != path:
        raise SiteError(f"a site named {name!r} is already registered at {registered}")
    if not is_valid_site_name(name):
        raise SiteError(f"invalid site name {name!r}: use letters, digits, '-', '_' and '.'")
    preset = _site_preset(platform, scheduler)
    try:  # a scheduler version its adapter cannot read is refused here, with the version found
        check_scheduler(preset.scheduler)
    except UnsupportedScheduler as exc:
        raise SiteError(f"scheduler {preset.scheduler!r}: {exc}") from None
    settings, template_text = preset.site_settings(name), preset.template
    body = settings.model_dump(mode="json", exclude={"store_url"})
    old_umask = os.umask(0o077)
    try:
        path.mkdir(parents=True, exist_ok=True)
        for sub in LAYOUT:
            (path / sub).mkdir(exist_ok=True)
        (path / "job-template.sh").write_text(template_text)
        (path / "settings.yml").write_text(_SETTINGS_HEADER + yaml.safe_dump(body, sort_keys=False))
    finally:
        os.umask(old_umask)
    site = Site.load(path)
    site_id = site.store.ensure_site(name, str(path), preferred_id=site_id or registry.next_id())
    if register:
        registry.register(name, path, site_id)
    return site


def _site_preset(platform: str | None, scheduler: SchedulerKind | None) -> platforms.Platform:
    """The preset a new site is made from: ``platform``, else ``scheduler``'s generic one (``local`` by default)."""
    try:
        preset = platforms.load_platform(platform or platforms.scheduler_platform(scheduler or "local"))
    except platforms.PlatformError as exc:
        raise SiteError(str(exc)) from None
    if scheduler is not None and scheduler != preset.scheduler:
        raise SiteError(f"platform {preset.name!r} uses scheduler {preset.scheduler!r}, not {scheduler!r}")
    return preset


_SETTINGS_HEADER = """\
# balsamctl site settings. store_url: set to a PostgreSQL URL (e.g. postgresql+psycopg://user@host/db,
# credentials as ${ENV_VARS}) when launchers on other hosts or many sites share one store.
"""


def find_site_dir(start: Path) -> Path | None:
    """The site directory containing ``start``, if any."""
    for candidate in (start, *start.parents):
        if (candidate / "settings.yml").is_file() and (candidate / ".balsam").is_dir():
            return candidate
    return None


def resolve_sites(spec: str | None, cwd: Path) -> list[Site]:
    """The sites named by ``--site``: ``NAME``, ``a,b``, ``all``, ``this`` (default: the site containing cwd)."""
    if spec in (None, "", "this"):
        here = find_site_dir(cwd)
        if here is None:
            known = ", ".join(sorted(registry.load_registry())) or "none registered"
            raise SiteError(f"not inside a site directory; pass --site NAME or --site all (sites: {known})")
        return [Site.load(here)]
    entries = registry.load_registry()
    if spec == "all":
        return [Site.load(p) for _, p in sorted(entries.items())]
    sites = []
    for name in spec.split(","):
        if name == "this":
            sites += resolve_sites("this", cwd)
        elif name in entries:
            sites.append(Site.load(entries[name]))
        else:
            raise SiteError(f"no site named {name!r} (registered: {', '.join(sorted(entries)) or 'none'})")
    return sites

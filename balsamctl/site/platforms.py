"""Platform presets: a scheduler, site settings and a job template for a known machine (``site init --platform``).

Every site is made from a preset: ``site init --scheduler X`` takes X's generic one (:func:`scheduler_platform`:
``generic-X``, ``local`` for the local scheduler), so there is one set of defaults per scheduler, in its file.
Each preset is two files shipped in ``balsamctl/site/platforms/``: ``NAME.yml`` (``description``, ``scheduler``,
``settings``: overrides of :class:`~balsamctl.schemas.settings.SiteSettings`) and, when the machine needs one of its
own,
``NAME.sh`` (the site's Jinja2 job template; otherwise the scheduler's generic one from ``templates/``).
Only :func:`load_platform` and :func:`platform_names` read the preset files; parsing and merging are pure functions,
but for a preset without a template of its own, whose generic template :func:`parse_preset` reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from balsamctl.schedulers import scheduler_class
from balsamctl.schemas.settings import SchedulerKind, SiteSettings

PLATFORMS_DIR = Path(__file__).parent / "platforms"
GENERIC_TEMPLATES = Path(__file__).parent / "templates"
PRESET_KEYS = frozenset({"description", "scheduler", "settings"})
PER_SITE_KEYS = frozenset({"name", "scheduler", "store_url", "job_template_path"})
"""Settings a preset may not set: they belong to one site (or, for the scheduler, to the preset's top level)."""
CHECK_NAME = "preset-check"
"""The site name a preset's settings are validated under."""


class PlatformError(ValueError):
    """A platform that does not exist, or a preset that is not valid."""


@dataclass(frozen=True)
class Platform:
    """One preset: what ``site init --platform NAME`` lays out."""

    name: str
    description: str
    scheduler: SchedulerKind
    settings: Mapping[str, Any]
    """Overrides of the SiteSettings defaults (validated)."""
    template: str
    """The job template, copied to the site's ``job-template.sh``."""

    def site_settings(self, site_name: str) -> SiteSettings:
        """SiteSettings for ``site_name``: the defaults, overridden by the preset, with the preset's scheduler.

        :class:`pydantic.ValidationError` if ``site_name`` is not a valid name.
        """
        return SiteSettings.model_validate(
            {**self.settings, "name": site_name, "scheduler": self.scheduler, "platform": self.name}
        )


def parse_preset(name: str, text: str, template: str | None) -> Platform:
    """The preset ``name`` from its YAML ``text`` and job ``template``; :class:`PlatformError` names the field.

    ``template`` None: the preset has none of its own and gets its scheduler's generic one (the only file read).
    """
    where = f"platform {name!r}"
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PlatformError(f"{where}: invalid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise PlatformError(f"{where}: expected a mapping with {', '.join(sorted(PRESET_KEYS))}")
    unknown = sorted(set(raw) - PRESET_KEYS)
    if unknown:
        raise PlatformError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(PRESET_KEYS))}")
    description = raw.get("description")
    if not isinstance(description, str) or not description.strip():
        raise PlatformError(f"{where}: description: a non-empty string is required")
    try:
        scheduler = scheduler_class(raw.get("scheduler")).kind
    except ValueError as exc:
        raise PlatformError(f"{where}: scheduler: {exc}") from None
    settings = raw.get("settings") or {}
    if not isinstance(settings, dict):
        raise PlatformError(f"{where}: settings: expected a mapping of SiteSettings fields")
    per_site = sorted(PER_SITE_KEYS & set(settings))
    if per_site:
        raise PlatformError(f"{where}: settings.{per_site[0]}: set per site, not by a preset")
    if "local_nodes" in settings and scheduler != "local":
        raise PlatformError(f"{where}: settings.local_nodes: only for the local scheduler, not {scheduler}")
    if template is None:
        template = _read(name, GENERIC_TEMPLATES / f"{scheduler}.sh")
    if not template.strip():
        raise PlatformError(f"{where}: the job template is empty")
    platform = Platform(name, description.strip(), scheduler, settings, template)
    try:
        platform.site_settings(CHECK_NAME)
    except ValidationError as exc:
        lines = [f"{where}: settings.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise PlatformError("\n".join(lines)) from None
    return platform


def scheduler_platform(scheduler: SchedulerKind) -> str:
    """The preset a site of ``scheduler`` is made from when no platform is named: ``generic-<scheduler>``, or
    ``local`` for the local scheduler."""
    return "local" if scheduler == "local" else f"generic-{scheduler}"


def platform_names(directory: Path = PLATFORMS_DIR) -> list[str]:
    """The names of the shipped presets, sorted."""
    return sorted(p.stem for p in directory.glob("*.yml"))


def load_platform(name: str, directory: Path = PLATFORMS_DIR) -> Platform:
    """The preset called ``name``; :class:`PlatformError` lists the known ones when there is none."""
    known = platform_names(directory)
    if name not in known:
        raise PlatformError(f"unknown platform {name!r}; known platforms: {', '.join(known) or 'none'}")
    text = _read(name, directory / f"{name}.yml")
    own_template = directory / f"{name}.sh"
    return parse_preset(name, text, _read(name, own_template) if own_template.exists() else None)


def _read(name: str, path: Path) -> str:
    """The text of one of platform ``name``'s files; :class:`PlatformError` if it cannot be read."""
    try:
        return path.read_text()
    except OSError as exc:
        raise PlatformError(f"platform {name!r}: cannot read {exc.filename}: {exc.strerror}") from None

"""A controller publishes its site to the store: what it runs with (settings, job template, scheduler, platform),
where (host, directory), and a heartbeat, so that a site on another machine can be used, and seen to be alive,
through the store alone."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from balsamctl.site.directory import SiteDirectory

log = logging.getLogger(__name__)

HEARTBEAT_SEC = 30.0
"""How often a controller says it is alive (a site is active while its heartbeat is under two minutes old)."""


def publish(site: SiteDirectory) -> None:
    """Write the site's settings (without its store URL, which may carry credentials), job template, scheduler,
    platform, host and directory to its store, with a heartbeat."""
    site.store.publish_site(
        site.site_id,
        host=site.host,
        path=str(site.path),
        scheduler=site.settings.scheduler,
        platform=site.settings.platform,
        settings=published_settings(site),
        job_template=site.job_template,
    )


def published_settings(site: SiteDirectory) -> dict[str, Any]:
    """The settings as the controller renders job scripts with them: without the store URL (it may carry
    credentials), and with the launcher's interpreter made explicit (this controller's, when unset), so that a job
    script rendered elsewhere (``apply --dry-run`` on another machine) names the one this host runs."""
    settings = site.settings.model_dump(mode="json", exclude={"store_url"})
    settings["launcher"]["python"] = site.settings.launcher.python or sys.executable
    return settings


def heartbeat(site: SiteDirectory, stopping: threading.Event, period: float = HEARTBEAT_SEC) -> None:
    """Publish the site, then beat every ``period`` seconds until ``stopping`` is set; a failed write is logged and
    tried again at the next beat."""
    published = False
    while True:
        try:
            if published:
                site.store.site_heartbeat(site.site_id)
            else:
                publish(site)
                published = True
        except Exception:
            log.exception("cannot publish site %s to its store; trying again in %.0f s", site.name, period)
        if stopping.wait(period):
            return

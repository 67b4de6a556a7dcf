"""The GitOps reconciler: the site's ``manifests/`` folder is applied like ``apply -f``.

A file added or changed is applied once it has settled (no write for ``SETTLE_SEC``), and the objects it no
longer holds are deleted; a file gone for that long deletes what it had created. Objects remember their source
file. A bad file is logged and recorded as an event, naming the file and field, and changes nothing until it
changes; it never blocks the other files. A file the store could not take (an outage) is tried again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from balsamctl.schemas.manifest import ManifestError, parse_documents
from balsamctl.site.apply import apply_documents, manifest_files
from balsamctl.site.directory import SiteDirectory
from balsamctl.store import Conflict

log = logging.getLogger("balsamctl.controller.manifests")
SOURCE_PREFIX = "manifests/"

Fingerprint = tuple[int, int]
SETTLE_SEC = 0.5
RETRY_SEC = 5.0
"""When a file the store could not take (not a bad file: those wait for a change) is tried again."""
NO_CHANGE = frozenset({"unchanged", "deletion already requested", "not found"})


class ManifestReconciler:
    """Applies what changed in ``manifests/`` since the last pass (everything on the first)."""

    def __init__(self, site: SiteDirectory) -> None:
        self.site = site
        self.seen: dict[str, Fingerprint] = {}
        self.missing_since: dict[str, float] = {}
        self.wait: float | None = None

    def retry_after(self) -> float | None:
        """Seconds until a file still being written (or briefly gone) should be looked at again."""
        return self.wait

    def __call__(self) -> bool:
        """One pass; whether any object changed. A file is applied once it has settled (no write for SETTLE_SEC)."""
        self.wait = None
        now = time.time()
        current = {self._source(p): p for p in manifest_files(self.site.manifests_dir, recursive=True)}
        changed = False
        for source, path in sorted(current.items()):
            self.missing_since.pop(source, None)
            fingerprint = _fingerprint(path)
            if fingerprint is None or self.seen.get(source) == fingerprint:
                continue
            if not self._settled(now - fingerprint[0] / 1e9):
                continue
            applied = self._try_apply(source, path)
            if applied is None:
                continue
            changed |= applied
            self.seen[source] = fingerprint
        for source in sorted(self.site.store.sources(self.site.site_id)):
            if source.startswith(SOURCE_PREFIX) and source not in current:
                if not self._settled(now - self.missing_since.setdefault(source, now)):
                    continue  # an editor's delete-and-rename: wait before deleting what the file held
                applied = self._try_apply(source, None)
                if applied is None:
                    continue
                changed |= applied
                self.seen.pop(source, None)
                self.missing_since.pop(source, None)
        return changed

    def _settled(self, age: float) -> bool:
        if age >= SETTLE_SEC:
            return True
        self._look_again_in(SETTLE_SEC - age)
        return False

    def _look_again_in(self, seconds: float) -> None:
        """Ask for the next pass within ``seconds`` (the earliest request of this pass wins)."""
        self.wait = seconds if self.wait is None else min(self.wait, seconds)

    def _source(self, path: Path) -> str:
        return SOURCE_PREFIX + path.relative_to(self.site.manifests_dir).as_posix()

    def _try_apply(self, source: str, path: Path | None) -> bool | None:
        """:meth:`_apply`, or None when it failed for a reason that is not the file's (the store, a bug): the other
        files go on, and this one is tried again after ``RETRY_SEC``."""
        try:
            return self._apply(source, path)
        except Exception:
            log.exception("%s: not applied; tried again in %.0f s", source, RETRY_SEC)
            self._look_again_in(RETRY_SEC)
            return None

    def _apply(self, source: str, path: Path | None) -> bool:
        try:
            docs = parse_documents(path.read_text(), source) if path is not None else []
            results = apply_documents(self.site, docs, source=source, prune=True)
        except (ManifestError, Conflict, OSError, UnicodeDecodeError) as exc:
            log.error("%s: not applied: %s", source, exc)
            self.site.store.record_event(self.site.site_id, "Manifest", source, "ApplyFailed", str(exc))
            return False
        changed = [r for r in results if r.action not in NO_CHANGE]
        for r in changed:
            log.info("%s: %s %s", source, r.ref, r.action)
        return bool(changed)


def _fingerprint(path: Path) -> Fingerprint | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size

"""Applying manifest files to a site: read, validate, write all or nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from balsamctl.schemas.manifest import Document, ManifestError, Problem, parse_documents
from balsamctl.schemas.objects import AppSpec
from balsamctl.schemas.validation import check_batch
from balsamctl.site.handle import Site
from balsamctl.store import ApplyResult

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def manifest_files(path: Path, recursive: bool) -> list[Path]:
    """The manifest files at ``path``: the file itself, or the ``.yaml``/``.yml``/``.json`` files of a folder."""
    if path.is_dir():
        pattern = "**/*" if recursive else "*"
        return sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix in MANIFEST_SUFFIXES)
    return [path]


def read_documents(sources: Sequence[tuple[str, str]]) -> list[Document]:
    """Parse ``(source name, text)`` pairs; one :class:`ManifestError` lists every problem of every file."""
    docs: list[Document] = []
    problems: list[Problem] = []
    for source, text in sources:
        try:
            docs += parse_documents(text, source)
        except ManifestError as exc:
            problems += exc.problems
    if problems:
        raise ManifestError(problems)
    return docs


def load_paths(paths: Sequence[str], recursive: bool, stdin_text: str | None = None) -> list[Document]:
    """Read ``-f`` arguments (files, folders, ``-`` for standard input)."""
    sources: list[tuple[str, str]] = []
    for arg in paths:
        if arg == "-":
            sources.append(("<stdin>", stdin_text or ""))
            continue
        path = Path(arg)
        if not path.exists():
            raise ManifestError([Problem(arg, None, None, None, "no such file or directory")])
        for file in manifest_files(path, recursive):
            try:
                sources.append((str(file), file.read_text()))
            except (OSError, UnicodeDecodeError) as exc:
                raise ManifestError([Problem(str(file), None, None, None, f"cannot read: {exc}")]) from None
    return read_documents(sources)


def apply_documents(
    site: Site,
    docs: Sequence[Document],
    *,
    source: str | None = None,
    prune: bool = False,
    dry_run: bool = False,
) -> list[ApplyResult]:
    """Apply ``docs`` to ``site`` in one transaction and wake its controller; :class:`ManifestError` if invalid."""

    def check(stored_apps: Mapping[str, AppSpec], stored_parents: Mapping[str, Sequence[str]]) -> list[Problem]:
        return check_batch(docs, site=site.settings, stored_apps=stored_apps, stored_parents=stored_parents)

    results = site.store.apply(site.site_id, docs, check=check, source=source, prune=prune, dry_run=dry_run)
    if not dry_run and any(r.action != "unchanged" for r in results):
        site.poke()
    return results

"""Turning YAML text into typed manifests, with errors that name the file, the document and the field."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from balsamctl.schemas.objects import API_VERSION, KINDS, Manifest

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MIN_VALUE_BUDGET = 1_000_000
VALUES_PER_CHARACTER = 20
"""How many values (scalars, lists, mappings) the documents of one text may hold once YAML aliases are expanded:
``MIN_VALUE_BUDGET`` plus ``VALUES_PER_CHARACTER`` per character of the text. Text without aliases holds fewer
values than characters; a few aliased blocks stay far below; a "billion laughs" document (aliases of aliases)
is refused instead of being expanded by every step after parsing (validation, JSON, the store)."""
MAX_NESTING = 1000
"""libyaml's own nesting limit: only an alias can nest a value deeper."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one document."""

    source: str
    document: int | None
    object: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = [self.source]
        if self.document is not None:
            where.append(f"document {self.document}" + (f" ({self.object})" if self.object else ""))
        elif self.object:
            where.append(self.object)
        if self.field:
            where.append(self.field)
        return ": ".join([*where, self.message])


class ManifestError(ValueError):
    """One or more documents are invalid; nothing was applied."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass
class Document:
    """A manifest with where it came from."""

    manifest: Manifest
    source: str
    index: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        """``(kind, name)``, unique within a site."""
        return self.manifest.kind, self.manifest.metadata.name

    @property
    def ref(self) -> str:
        """``job/hello-1`` style reference."""
        return f"{self.manifest.kind.lower()}/{self.manifest.metadata.name}"

    def problem(self, field_path: str | None, message: str) -> Problem:
        """A :class:`Problem` located at this document."""
        return Problem(self.source, self.index, self.ref, field_path, message)


def _loc(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "PythonHook"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _object_ref(raw: dict[str, Any]) -> str | None:
    meta = raw.get("metadata")
    kind = raw.get("kind")
    if isinstance(meta, dict) and isinstance(meta.get("name"), str) and isinstance(kind, str):
        return f"{kind.lower()}/{meta['name']}"
    return None


_FieldPath = tuple[Any, int | str] | None
"""Where a value sits, as ``(parent's path, key)``: shared by siblings, so a step costs the same at any depth."""


class _Budget:
    """The values the rest of one text may still expand to."""

    def __init__(self, text: str) -> None:
        self.limit = MIN_VALUE_BUDGET + VALUES_PER_CHARACTER * len(text)
        self.left = self.limit


def _walk(raw: Any) -> Iterator[tuple[Any, _FieldPath, int]]:
    """Every value of a parsed document, with where it sits and how deep; a consumer that stops early stops the
    walk there (an alias inside itself is endless)."""
    stack: list[tuple[Any, _FieldPath, int]] = [(raw, None, 0)]
    while stack:
        value, path, depth = stack.pop()
        yield value, path, depth
        if isinstance(value, dict):
            stack.extend((item, (path, str(key)), depth + 1) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((item, (path, i), depth + 1) for i, item in enumerate(value))


def _parts(path: _FieldPath) -> list[int | str]:
    parts: list[int | str] = []
    while path is not None:
        path, key = path
        parts.append(key)
    return parts[::-1]


def _over_expanded(raw: Any, budget: _Budget) -> tuple[str | None, str] | None:
    """``(field, message)`` where ``raw`` expands past ``budget`` or nests past the parser's own limit, or None.

    Only aliases can do either (aliases of aliases, an alias inside itself); every later step (validation, JSON,
    the store, ``get -o yaml``) would walk an exponentially large or endless value.
    """
    for _, path, depth in _walk(raw):
        budget.left -= 1
        if budget.left < 0:
            message = f"the documents expand to more than {budget.limit} values (YAML aliases of aliases?)"
        elif depth > MAX_NESTING:
            message = f"nests more than {MAX_NESTING} levels deep (a YAML alias inside itself?)"
        else:
            continue
        return _loc(_parts(path)[:2]) or None, message
    return None


def _nul_field(raw: dict[str, Any]) -> str | None:
    """The first field whose name or value holds a NUL character (a YAML ``"\\0"``, a JSON ``"\\u0000"``): no store
    text column, environment variable or command line can carry one. A NUL in a name is reported at its mapping."""
    for value, path, _ in _walk(raw):
        name_has_nul = path is not None and "\x00" in str(path[1])
        if name_has_nul or (isinstance(value, str) and "\x00" in value):
            parts = _parts(path)
            return _loc(parts[:-1] if name_has_nul else parts) or "(document)"
    return None


def validate_document(raw: Any, source: str, index: int) -> tuple[Document | None, list[Problem]]:
    """Validate one parsed YAML document (a mapping) against its kind's model."""
    if not isinstance(raw, dict):
        return None, [Problem(source, index, None, None, f"expected a mapping, got {type(raw).__name__}")]
    ref = _object_ref(raw)
    nul = _nul_field(raw)
    if nul is not None:
        return None, [Problem(source, index, ref, nul, "holds a NUL character (\\0), which no field may hold")]
    if raw.get("apiVersion") != API_VERSION:
        return None, [
            Problem(source, index, ref, "apiVersion", f"must be {API_VERSION!r}, got {raw.get('apiVersion')!r}")
        ]
    kind = raw.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        return None, [Problem(source, index, ref, "kind", f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")]
    # status is observed state: a user's apply never sets it, and a round-tripped one is ignored.
    body = {k: v for k, v in raw.items() if k != "status"}
    try:
        manifest = model.model_validate(body)
    except ValidationError as exc:
        problems = [
            Problem(source, index, ref, _loc(err["loc"]) or None, err["msg"]) for err in exc.errors(include_url=False)
        ]
        return None, problems
    return Document(manifest, source, index), []


def _json_document(text: str) -> list[Any] | None:
    """``[value]`` when ``text`` is one JSON value (``-o json`` output, a ``.json`` file), else None.

    Read as JSON, not as YAML 1.1: YAML 1.1 reads a JSON number like ``1e-05`` (no ``.``) as a string.
    """
    if text.lstrip()[:1] not in ("{", "["):
        return None
    try:
        return [json.loads(text)]
    except (ValueError, RecursionError):
        return None  # YAML flow style, or broken: the YAML parser reads it or names the line


def parse_documents(text: str, source: str) -> list[Document]:
    """Parse multi-document YAML into validated documents; raise :class:`ManifestError` listing every problem."""
    problems: list[Problem] = []
    docs: list[Document] = []
    try:
        raws = _json_document(text) or [raw for raw in yaml.load_all(text, Loader=_Loader)]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError([Problem(source, None, None, None, f"invalid YAML: {where}{problem}")]) from None
    except (UnicodeError, ValueError) as exc:
        raise ManifestError([Problem(source, None, None, None, f"invalid text: {exc}")]) from None
    budget = _Budget(text) if "*" in text else None  # without an alias no value can repeat another
    index = 0
    for raw in raws:
        if raw is None:
            continue
        index += 1
        items = raw.get("items") if isinstance(raw, dict) and raw.get("kind") == "List" else None
        for sub in items if isinstance(items, list) else [raw]:
            if budget is not None and budget.left < 0:
                break  # reported once, at the document that used the budget up; the rest is not looked at
            bad = _over_expanded(sub, budget) if budget is not None else None
            if bad is not None:
                ref = _object_ref(sub) if isinstance(sub, dict) else None
                problems.append(Problem(source, index, ref, bad[0], bad[1]))
                continue
            doc, found = validate_document(sub, source, index)
            problems.extend(found)
            if doc is not None:
                docs.append(doc)
    if problems:
        raise ManifestError(problems)
    return docs

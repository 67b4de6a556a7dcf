"""What the CLI prints: tables, ages, YAML/JSON/name output, ``describe`` and ``diff`` text. Pure functions.

``get`` formats objects in their JSON form (dicts, as ``-o json`` prints them): the fast path reads them so from
the store, the typer path dumps its models (:func:`data_of`); both print through these writers. Importing this
module costs no pydantic, SQLAlchemy or YAML: the fast path prints with it.
"""

from __future__ import annotations

import json
import shlex
import textwrap
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from balsamctl.store.fastread import ObjectData, json_form

if TYPE_CHECKING:
    from pathlib import Path

    import yaml

    from balsamctl.schemas import Manifest
    from balsamctl.store import StoredObject

Format = Literal["table", "wide", "yaml", "json", "name"]
NONE = "<none>"
SITE_HEADERS = ["NAME", "ID", "HOST", "SCHEDULER", "ACTIVE", "JOBS", "BATCHJOBS", "UNSTARTED"]
SITE_WIDE_HEADERS = ["PATH", "OWNER", "STORE"]
EVENT_HEADERS = ["TIME", "OBJECT", "FROM", "TO", "REASON", "MESSAGE"]
_COLUMNS: dict[str, tuple[list[str], list[str]]] = {
    "App": (["NAME", "PARAMETERS", "AGE"], []),
    "Job": (
        ["NAME", "APP", "STATE", "NODES", "BATCHJOB", "ATTEMPTS", "AGE"],
        ["RANKS", "GPUS", "RC", "WORKDIR", "LABELS"],
    ),
    "BatchJob": (
        ["NAME", "STATE", "SCHEDULER_ID", "NODES", "QUEUE", "PROJECT", "WALLTIME", "MODE", "AGE"],
        ["PARTITIONS", "LAUNCHERS", "CONDITIONS", "MESSAGE"],
    ),
}
_UNITS = (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


# ---------------------------------------------------------------- cells


def short_duration(seconds: float) -> str:
    """kubectl's short form: ``5s``, ``3m``, ``2h``, ``4d``, ``1y`` (the largest whole unit)."""
    whole = max(int(seconds), 0)
    for suffix, size in _UNITS:
        if whole >= size:
            return f"{whole // size}{suffix}"
    return "0s"


def age(created: datetime | str | None, now: float) -> str:
    """How long ago ``created`` (a datetime, or its JSON form) was."""
    if isinstance(created, str):
        created = datetime.fromisoformat(created)
    return NONE if created is None else short_duration(now - created.timestamp())


def timestamp(when: datetime | float | None) -> str:
    """``2025-01-02T03:04:05Z`` (UTC) from a datetime or epoch seconds."""
    if when is None:
        return NONE
    dt = datetime.fromtimestamp(when, UTC) if isinstance(when, float | int) else when.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def cell(value: object) -> str:
    """One table cell: ``<none>`` for nothing, whitespace (newlines included) collapsed."""
    if value is None or value == "":
        return NONE
    return " ".join(str(value).split())


def labels_text(labels: Mapping[str, str]) -> str:
    """``k=v,k2=v2``."""
    return ",".join(f"{k}={v}" for k, v in labels.items())


def not_found(ref: str) -> str:
    """kubectl's message for a missing object, from a ``job/x`` reference."""
    kind, _, name = ref.partition("/")
    return f'Error from server (NotFound): {kind}s "{name}" not found'


# ---------------------------------------------------------------- tables


class Table:
    """Left-aligned columns two spaces apart, rendered page by page; columns widen as longer cells arrive."""

    def __init__(self, headers: Sequence[str]) -> None:
        self.headers = list(headers)
        self.widths = [len(h) for h in headers]
        self.started = False

    def render(self, rows: Sequence[Sequence[str]]) -> str:
        """The lines of ``rows`` (the header first, on the first page that has rows)."""
        if not rows:
            return ""
        lines = [*([] if self.started else [self.headers]), *rows]
        self.started = True
        self.widths = [max(w, *(len(r[i]) for r in lines)) for i, w in enumerate(self.widths)]
        return "".join(
            "  ".join(c.ljust(w) for c, w in zip(r, self.widths, strict=True)).rstrip() + "\n" for r in lines
        )


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A whole table at once."""
    return Table(headers).render(rows)


def headers(kind: str, wide: bool) -> list[str]:
    """The columns of ``get KIND``."""
    base, extra = _COLUMNS[kind]
    return base + extra if wide else list(base)


def _job_cells(job: Mapping[str, Any], now: float) -> tuple[Sequence[object], Sequence[object]]:
    meta, spec, status = job["metadata"], job["spec"], job["status"]
    ranks = spec["num_nodes"] * spec["ranks_per_node"]
    base = [meta["name"], spec["app"], status["state"], spec["num_nodes"], status["batch_job"], status["attempts"]]
    extra = [ranks, ranks * spec["gpus_per_rank"], status["return_code"], spec["workdir"], labels_text(meta["labels"])]
    return [*base, age(meta["creation_timestamp"], now)], extra


def _batchjob_cells(bj: Mapping[str, Any], now: float) -> tuple[Sequence[object], Sequence[object]]:
    meta, spec, status = bj["metadata"], bj["spec"], bj["status"]
    base = [meta["name"], status["state"], status["scheduler_id"], spec["num_nodes"], spec["queue"], spec["project"]]
    base += [f"{spec['wall_time_min']}m", spec["job_mode"], age(meta["creation_timestamp"], now)]
    partitions = ",".join(f"{p['job_mode']}:{p['num_nodes']}" for p in spec["partitions"])
    return base, [partitions, launchers_text(status["partitions"], now), conditions_text(bj), status["message"]]


def conditions_text(bj: Mapping[str, Any]) -> str:
    """The CONDITIONS cell of a BatchJob (its JSON form): what is wrong, as ``Type=Reason`` for every condition
    whose status is not True (``LauncherReady=MPICommandNotFound``); ``describe`` shows their messages."""
    return ",".join(f"{c['type']}={c['reason']}" for c in bj["status"]["conditions"] if c["status"] != "True")


def launcher_text(report: Mapping[str, Any], now: float) -> str:
    """One launcher of ``status.partitions`` as ``get batchjobs -o wide`` shows it: its mode and node count, then,
    while it runs, its running Jobs and occupancy, else ``ended`` (or ``lost``: declared lost by its lease), and
    how long ago it last heartbeated: ``mpi:2n/5run/62%/hb:3s``, ``serial:4n/ended/hb:2m``."""
    if report.get("lost"):  # a record written before "lost" existed has none
        state = "lost"
    elif report["ended"]:
        state = "ended"
    else:
        state = f"{report['running_jobs']}run/{round(report['occupancy'] * 100)}%"
    return f"{report['job_mode']}:{len(report['nodes'])}n/{state}/hb:{age(report.get('last_heartbeat'), now)}"


def launchers_text(reports: Sequence[Mapping[str, Any]], now: float) -> str:
    """The LAUNCHERS cell: every launcher of ``status.partitions`` (:func:`launcher_text`), comma-separated."""
    return ",".join(launcher_text(r, now) for r in reports)


def _app_cells(app: Mapping[str, Any], now: float) -> tuple[Sequence[object], Sequence[object]]:
    meta = app["metadata"]
    return [meta["name"], ",".join(app["spec"]["parameters"]), age(meta["creation_timestamp"], now)], []


_CELLS = {"Job": _job_cells, "BatchJob": _batchjob_cells, "App": _app_cells}


def row(obj: StoredObject | ObjectData, now: float, wide: bool) -> list[str]:
    """The cells of one object in ``get`` (matching :func:`headers`)."""
    data = data_of(obj)
    base, extra = _CELLS[data["kind"]](data, now)
    return [cell(v) for v in ([*base, *extra] if wide else base)]


def counts_text(counts: Mapping[str, int]) -> str:
    """``STATE=n,...`` of a site's objects by state, most first (``0`` when there are none)."""
    if not counts:
        return "0"
    return ",".join(f"{state or NONE}={n}" for state, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def site_row(summary: Mapping[str, Any], wide: bool) -> list[str]:
    """One row of the sites table from a site's summary (``get sites -o json`` prints the same dicts)."""
    jobs, batchjobs = summary.get("jobs"), summary.get("batchjobs")
    active = summary.get("active")
    cells = [
        summary["name"],
        cell(summary.get("id")),
        cell(summary.get("host")),
        cell(summary.get("scheduler")),
        NONE if active is None else ("yes" if active else "no"),
        NONE if jobs is None else counts_text(jobs),
        NONE if batchjobs is None else counts_text(batchjobs),
        cell(summary.get("unstarted")),
    ]
    if wide:
        cells += [cell(summary.get("path")), cell(summary.get("owner")), cell(summary.get("store"))]
    return cells


def event_row(event: Mapping[str, Any], *, with_object: bool = True) -> list[str]:
    """One event (a dict of ``Store.events``) as table cells."""
    obj = [f"{event['kind'].lower()}/{event['name']}"] if with_object else []
    cells = [event["from_state"], event["to_state"], event["reason"], event["message"]]
    return [timestamp(event["time"]), *obj, *(cell(c) for c in cells)]


# ---------------------------------------------------------------- object output


def to_dict(obj: StoredObject) -> ObjectData:
    """The full object (metadata, spec, status) as JSON-ready data; ``apply -f`` takes it back."""
    return json_form(obj.manifest)


def data_of(obj: StoredObject | ObjectData) -> ObjectData:
    """An object in its JSON form: as given (the fast path reads it so), or a stored model's, with its site."""
    if isinstance(obj, Mapping):
        return obj
    data = to_dict(obj)
    data["metadata"]["site"] = obj.site_name
    return data


_LINE_BREAKS_YAML_FOLDS = frozenset("\x85\u2028\u2029")


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    """A string holding a line break YAML folds in plain or single-quoted scalars (NEL, U+2028, U+2029) is
    double-quoted, where they are escaped."""
    style = '"' if _LINE_BREAKS_YAML_FOLDS.intersection(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


@cache
def _dumper() -> type[yaml.SafeDumper]:
    """Block-style YAML that reads back as written (``apply -f`` of ``get -o yaml`` is ``unchanged``), with libyaml's
    emitter when built (made on first use: YAML is not imported for tables)."""
    import yaml

    class Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
        """Strings as :func:`_represent_str` writes them."""

    Dumper.add_representer(str, _represent_str)
    return Dumper


def to_yaml(data: Any) -> str:
    """Block-style YAML, keys in model order."""
    import yaml

    return yaml.dump(data, Dumper=_dumper(), sort_keys=False, allow_unicode=True)


class Writer(ABC):
    """Renders a stream of objects page by page: each call returns the text to print next."""

    @abstractmethod
    def page(self, objs: Sequence[StoredObject | ObjectData]) -> str:
        """The text of one page of objects (stored ones, or in their JSON form)."""

    def end(self) -> str:
        """What follows the last page."""
        return ""


class TableWriter(Writer):
    """``get`` tables, with a SITE column first when several sites are shown."""

    def __init__(self, kind: str, *, wide: bool, with_site: bool, now: float) -> None:
        self.wide, self.with_site, self.now = wide, with_site, now
        self.table = Table((["SITE"] if with_site else []) + headers(kind, wide))

    def page(self, objs: Sequence[StoredObject | ObjectData]) -> str:
        """Rows of ``objs``."""
        rows = []
        for o in map(data_of, objs):
            rows.append(([o["metadata"]["site"]] if self.with_site else []) + row(o, self.now, self.wide))
        return self.table.render(rows)


def object_name(obj: StoredObject | ObjectData, *, with_site: bool) -> str:
    """``-o name``'s form of an object: ``job/hello-1``, or ``SITE/job/hello-1`` when many sites are listed."""
    data = data_of(obj)
    ref = f"{data['kind'].lower()}/{data['metadata']['name']}"
    return f"{data['metadata']['site']}/{ref}" if with_site else ref


def parse_name(text: str) -> tuple[str | None, str, str]:
    """``[SITE/]KIND/NAME`` (what ``-o name`` prints) as ``(site or None, kind word, name)``."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"invalid reference {text!r}: expected KIND/NAME or SITE/KIND/NAME")
    site = parts[0] if len(parts) == 3 else None
    return site, parts[-2], parts[-1]


class NameWriter(Writer):
    """``-o name``: ``job/hello-1`` per line, ``SITE/job/hello-1`` when many sites are listed."""

    def __init__(self, *, with_site: bool) -> None:
        self.with_site = with_site

    def page(self, objs: Sequence[StoredObject | ObjectData]) -> str:
        """One reference per line."""
        return "".join(object_name(o, with_site=self.with_site) + "\n" for o in objs)


class YamlWriter(Writer):
    """``-o yaml``: one YAML document per object, ``---`` between them."""

    def __init__(self) -> None:
        self.first = True

    def page(self, objs: Sequence[StoredObject | ObjectData]) -> str:
        """The documents of ``objs``."""
        parts = []
        for o in objs:
            parts.append(("" if self.first else "---\n") + to_yaml(data_of(o)))
            self.first = False
        return "".join(parts)


class JsonWriter(Writer):
    """``-o json``: the object itself when ``single``, else a ``List`` (streamed; equal to ``json.dumps(indent=2)``)."""

    def __init__(self, *, single: bool) -> None:
        self.single = single
        self.count = 0

    def page(self, objs: Sequence[StoredObject | ObjectData]) -> str:
        """Items of ``objs``."""
        parts = []
        for o in objs:
            body = json.dumps(data_of(o), indent=2)
            if self.single:
                parts.append(body + "\n")
            else:
                head = f'{{\n  "apiVersion": "{_api_version()}",\n  "kind": "List",\n  "items": [\n'
                parts.append((head if self.count == 0 else ",\n") + textwrap.indent(body, "    "))
            self.count += 1
        return "".join(parts)

    def end(self) -> str:
        """Closes the list."""
        if self.single:
            return ""
        if self.count == 0:
            return json.dumps({"apiVersion": _api_version(), "kind": "List", "items": []}, indent=2) + "\n"
        return "\n  ]\n}\n"


def _api_version() -> str:
    """The API version a ``List`` names (the schemas' constant, imported only for JSON output)."""
    from balsamctl.schemas.objects import API_VERSION

    return API_VERSION


def writer(kind: str, fmt: Format, *, with_site: bool, single: bool, now: float) -> Writer:
    """The writer for ``get KIND -o FMT``."""
    if fmt == "name":
        return NameWriter(with_site=with_site)
    if fmt == "yaml":
        return YamlWriter()
    if fmt == "json":
        return JsonWriter(single=single)
    return TableWriter(kind, wide=fmt == "wide", with_site=with_site, now=now)


# ---------------------------------------------------------------- describe, diff, dry run


def describe(obj: StoredObject, events: Sequence[Mapping[str, Any]], now: float) -> str:
    """``describe``: header fields, spec and status as YAML, then the object's events."""
    m, meta = obj.manifest, obj.manifest.metadata
    created = meta.creation_timestamp
    fields: list[tuple[str, object]] = [
        ("Name", meta.name),
        ("Kind", m.kind),
        ("Site", obj.site_name),
        ("UID", meta.uid),
        ("Labels", labels_text(meta.labels)),
        ("Annotations", labels_text(meta.annotations)),
        ("Generation", meta.generation),
        ("Resource Version", meta.resource_version),
        ("Created", f"{timestamp(created)} ({age(created, now)} ago)"),
        ("State", m.status.state),
    ]
    if meta.deletion_timestamp is not None:
        fields.append(("Deletion Requested", timestamp(meta.deletion_timestamp)))
    width = max(len(k) for k, _ in fields) + 2
    lines = [f"{k + ':':<{width}}{cell(v)}\n" for k, v in fields]
    status = m.status.model_dump(mode="json", exclude_none=True)
    lines += ["Spec:\n", textwrap.indent(to_yaml(m.spec.model_dump(mode="json")), "  ")]
    lines += ["Status:\n", textwrap.indent(to_yaml(status), "  ")]
    rows = [event_row(e, with_object=False) for e in events]
    events_text = table([h for h in EVENT_HEADERS if h != "OBJECT"], rows) if rows else f"{NONE}\n"
    lines += ["Events:\n", textwrap.indent(events_text, "  ")]
    return "".join(lines)


def diffable(manifest: Manifest) -> str:
    """What ``diff`` compares: name, labels, annotations and the spec (defaults filled), keys sorted."""
    meta = manifest.metadata
    body = {
        "apiVersion": manifest.api_version,
        "kind": manifest.kind,
        "metadata": {"name": meta.name, "labels": meta.labels, "annotations": meta.annotations},
        "spec": manifest.spec.model_dump(mode="json"),
    }
    import yaml

    return yaml.safe_dump(body, sort_keys=True, allow_unicode=True)


def unified_diff(ref: str, live: Manifest | None, desired: Manifest) -> str:
    """A unified diff from the live object (empty if there is none) to the desired one; empty if equal."""
    import difflib

    before = diffable(live).splitlines(keepends=True) if live is not None else []
    after = diffable(desired).splitlines(keepends=True)
    return "".join(difflib.unified_diff(before, after, f"live/{ref}", f"file/{ref}"))


def submit_plan(ref: str, script_path: Path, script: str, argv: Sequence[str]) -> str:
    """What ``apply --dry-run`` shows for a BatchJob: its job script and the scheduler command."""
    script = script if script.endswith("\n") else script + "\n"
    return f"# {ref}: job script {script_path}\n{script}# {ref}: submit command\n{shlex.join(argv)}\n"

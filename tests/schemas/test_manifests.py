"""Parsing manifests: valid documents, round trips, and invalid input always reported as a ManifestError."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from balsamctl.schemas.manifest import ManifestError, parse_documents
from balsamctl.schemas.objects import (
    KINDS,
    MAX_WALL_TIME_MIN,
    NAME_PATTERN,
    App,
    BatchJob,
    Job,
    JobStatus,
    is_valid_name,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- strategies for VALID manifests

# Short members of each pattern (the full patterns allow up to 253 characters, which only slows generation).
names = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,12}[a-z0-9])?", fullmatch=True)
identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
label_keys = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_./-]{0,8}[A-Za-z0-9])?", fullmatch=True)
label_values = st.from_regex(r"([A-Za-z0-9]([A-Za-z0-9_.:+@-]{0,8}[A-Za-z0-9])?)?", fullmatch=True)
labels = st.dictionaries(label_keys, label_values, max_size=4)
characters = st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"])
"""Any character a manifest may hold (a NUL is refused: PostgreSQL and exec cannot take one)."""
texts = st.text(characters, max_size=20)
param_values = st.one_of(
    texts,
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
segments = st.text(
    st.characters(blacklist_characters="/\\\x00", blacklist_categories=["Cs"]), min_size=1, max_size=10
).filter(lambda s: s != "..")
workdirs = st.lists(segments, min_size=1, max_size=4).map("/".join)
hooks = st.one_of(
    st.text(characters, min_size=1, max_size=30),
    st.builds(
        lambda m, f: {"python": f"{m}:{f}"}, st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,10}", fullmatch=True), identifiers
    ),
)
queue_words = st.from_regex(r"[A-Za-z0-9_.@-]{1,20}", fullmatch=True)
JOB_RANGES = {
    "num_nodes": (1, 100_000),
    "ranks_per_node": (1, 4096),
    "threads_per_rank": (1, 4096),
    "threads_per_core": (1, 16),
    "gpus_per_rank": (0, 1024),
    "node_packing_count": (1, 4096),
    "wall_time_min": (0, MAX_WALL_TIME_MIN),
}
"""The valid range of each numeric JobSpec field (what the schema documents)."""


def _maybe(d: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        d[key] = value


@st.composite
def metadata(draw: st.DrawFn) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": draw(names)}
    _maybe(meta, "labels", draw(st.none() | labels))
    _maybe(meta, "annotations", draw(st.none() | st.dictionaries(texts, texts, max_size=3)))
    _maybe(meta, "site", draw(st.none() | names))
    return meta


@st.composite
def app_docs(draw: st.DrawFn) -> dict[str, Any]:
    params = draw(
        st.dictionaries(
            identifiers,
            st.fixed_dictionaries(
                {},
                optional={"required": st.booleans(), "default": st.none() | param_values, "help": texts},
            ),
            max_size=4,
        )
    )
    spec: dict[str, Any] = {"command": draw(st.text(characters, min_size=1, max_size=40)), "parameters": params}
    spec["environment"] = draw(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), texts))
    for hook in ("preprocess", "postprocess", "handle_error", "handle_timeout"):
        _maybe(spec, hook, draw(st.none() | hooks))
    _maybe(spec, "preamble", draw(st.none() | texts))
    return {"apiVersion": "balsam/v1", "kind": "App", "metadata": draw(metadata()), "spec": spec}


@st.composite
def job_docs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "app": draw(names),
        "workdir": draw(workdirs),
        "parameters": draw(st.dictionaries(identifiers, param_values, max_size=4)),
        "parents": draw(st.lists(names, unique=True, max_size=3)),
    }
    for key, (lo, hi) in JOB_RANGES.items():
        _maybe(spec, key, draw(st.none() | st.integers(lo, hi)))
    _maybe(spec, "launch_params", draw(st.none() | st.dictionaries(identifiers, texts, max_size=3)))
    _maybe(spec, "data", draw(st.none() | st.dictionaries(texts, json_values, max_size=3)))
    return {"apiVersion": "balsam/v1", "kind": "Job", "metadata": draw(metadata()), "spec": spec}


@st.composite
def batchjob_docs(draw: st.DrawFn) -> dict[str, Any]:
    partitions: list[dict[str, Any]] = draw(
        st.lists(
            st.fixed_dictionaries(
                {"job_mode": st.sampled_from(["mpi", "serial"]), "num_nodes": st.integers(1, 1000)},
                optional={"filter_tags": labels},
            ),
            max_size=3,
        )
    )
    num_nodes = sum(p["num_nodes"] for p in partitions) if partitions else draw(st.integers(1, 1_000_000))
    filter_tags = draw(labels)
    for part in partitions:  # a partition's tags add to the BatchJob's, never contradict them
        part["filter_tags"] = {k: v for k, v in part.get("filter_tags", {}).items() if filter_tags.get(k, v) == v}
    spec: dict[str, Any] = {
        "num_nodes": num_nodes,
        "wall_time_min": draw(st.integers(1, MAX_WALL_TIME_MIN)),
        "queue": draw(queue_words),
        "project": draw(queue_words),
        "job_mode": draw(st.sampled_from(["mpi", "serial"])),
        "filter_tags": filter_tags,
        "partitions": partitions,
        "optional_params": draw(
            st.dictionaries(identifiers, st.from_regex(r"[A-Za-z0-9_.:,=@/+-]{0,20}", fullmatch=True), max_size=3)
        ),
    }
    return {"apiVersion": "balsam/v1", "kind": "BatchJob", "metadata": draw(metadata()), "spec": spec}


any_docs = st.one_of(app_docs(), job_docs(), batchjob_docs())


def to_yaml(raws: list[Any]) -> str:
    return yaml.safe_dump_all(raws, sort_keys=False)


def dump(model: App | Job | BatchJob) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True)


# ---------------------------------------------------------------- valid documents

HELLO = """\
apiVersion: balsam/v1
kind: App
metadata: {name: hello}
spec:
  command: echo "Hello, {{ name }}!"
  parameters:
    name: {default: world}
    greeting: {help: required}
  postprocess: {python: "mymod.hooks:post"}
---
# a comment between documents
apiVersion: balsam/v1
kind: Job
metadata:
  name: hello-1
  labels: {experiment: greetings, size: "1"}
spec:
  app: hello
  workdir: ./hello//1
  parameters: {name: Balsam, greeting: hi}
  num_nodes: 2
  parents: [hello-0]
---
apiVersion: balsam/v1
kind: BatchJob
metadata: {name: bj-1}
spec:
  num_nodes: 3
  wall_time_min: 10
  queue: debug
  project: proj
  partitions:
    - {job_mode: mpi, num_nodes: 2}
    - {job_mode: serial, num_nodes: 1, filter_tags: {size: "1"}}
"""


def test_valid_documents_parse_with_their_source_and_position() -> None:
    # the "./hello//1" workdir has an empty part: it is rejected, so fix it first
    with pytest.raises(ManifestError):
        parse_documents(HELLO, "hello.yaml")
    docs = parse_documents(HELLO.replace("./hello//1", "hello/1"), "hello.yaml")
    assert [(d.key, d.index, d.source) for d in docs] == [
        (("App", "hello"), 1, "hello.yaml"),
        (("Job", "hello-1"), 2, "hello.yaml"),
        (("BatchJob", "bj-1"), 3, "hello.yaml"),
    ]
    app, job, bj = (d.manifest for d in docs)
    assert isinstance(app, App) and isinstance(job, Job) and isinstance(bj, BatchJob)
    # a parameter with a default is optional, one without is required
    assert app.spec.parameters["name"].required is False
    assert app.spec.parameters["greeting"].required is True
    assert job.metadata.labels == {"experiment": "greetings", "size": "1"}
    assert (job.spec.num_nodes, job.spec.ranks_per_node, job.spec.parents) == (2, 1, ["hello-0"])
    assert [p.num_nodes for p in bj.spec.launcher_partitions()] == [2, 1]
    assert docs[1].ref == "job/hello-1"


def test_a_partition_runs_only_jobs_with_the_batchjobs_tags_and_its_own() -> None:
    text = HELLO.replace("./hello//1", "hello/1").replace(
        "  project: proj\n", "  project: proj\n  filter_tags: {exp: a}\n"
    )
    bj = parse_documents(text, "bj.yaml")[2].manifest
    assert isinstance(bj, BatchJob)
    assert [p.filter_tags for p in bj.spec.launcher_partitions()] == [{"exp": "a"}, {"exp": "a", "size": "1"}]
    assert bj.spec.partitions[1].filter_tags == {"size": "1"}, "the manifest's own partition stays as written"
    with pytest.raises(ManifestError) as info:
        parse_documents(text.replace('filter_tags: {size: "1"}', "filter_tags: {exp: b}"), "bj.yaml")
    assert "bj.yaml" in str(info.value) and "batchjob/bj-1" in str(info.value)
    assert "partitions[1].filter_tags.exp: 'b' contradicts the BatchJob's filter_tags.exp 'a'" in str(info.value)


def test_workdir_is_normalised() -> None:
    text = "apiVersion: balsam/v1\nkind: Job\nmetadata: {name: j}\nspec: {app: a, workdir: ./x/./y}\n"
    (doc,) = parse_documents(text, "f.yaml")
    assert isinstance(doc.manifest, Job)
    assert doc.manifest.spec.workdir == "x/y"


def test_empty_and_comment_only_input_has_no_documents() -> None:
    assert parse_documents("", "empty.yaml") == []
    assert parse_documents("# nothing here\n---\n---\n", "empty.yaml") == []


def test_json_manifests_parse() -> None:
    raw = {"apiVersion": "balsam/v1", "kind": "App", "metadata": {"name": "a"}, "spec": {"command": "true"}}
    (doc,) = parse_documents(json.dumps(raw), "app.json")
    assert doc.key == ("App", "a")


@FAST
@given(st.lists(any_docs, min_size=1, max_size=4))
def test_round_trip_dump_yaml_parse_gives_equal_models(raws: list[dict[str, Any]]) -> None:
    models = [KINDS[r["kind"]].model_validate(r) for r in raws]
    # the user's own YAML parses into the same models
    assert [d.manifest for d in parse_documents(to_yaml(raws), "gen.yaml")] == models
    # and so does a dump of the models (what `get -o yaml` prints), status included
    docs = parse_documents(to_yaml([dump(m) for m in models]), "dumped.yaml")
    assert [d.manifest for d in docs] == models
    assert [d.index for d in docs] == list(range(1, len(models) + 1))


@FAST
@given(st.lists(any_docs, min_size=1, max_size=4))
def test_kind_list_items_parse_like_separate_documents(raws: list[dict[str, Any]]) -> None:
    separate = [d.manifest for d in parse_documents(to_yaml(raws), "a.yaml")]
    listed = parse_documents(to_yaml([{"apiVersion": "v1", "kind": "List", "items": raws}]), "b.yaml")
    assert [d.manifest for d in listed] == separate
    assert {d.index for d in listed} == {1}


def test_status_given_by_a_user_is_ignored() -> None:
    text = """\
apiVersion: balsam/v1
kind: Job
metadata: {name: j, uid: forged}
spec: {app: a, workdir: w}
status:
  state: JOB_FINISHED
  return_code: 0
  attempts: 7
"""
    (doc,) = parse_documents(text, "f.yaml")
    assert isinstance(doc.manifest, Job)
    assert doc.manifest.status == JobStatus()
    assert doc.manifest.status.state is None
    # even a status that would not validate is ignored rather than reported
    (doc,) = parse_documents(text.replace("  state: JOB_FINISHED", "  state: NOT_A_STATE"), "f.yaml")
    assert doc.manifest.status.state is None


# ---------------------------------------------------------------- INVALID documents

Mutation = Callable[[dict[str, Any], Any], str]
"""Breaks a valid raw document in place; returns the field path the error must name."""


def _bad_name(raw: dict[str, Any], draw: st.DrawFn) -> str:
    bad = draw(
        st.one_of(
            st.text(max_size=20).filter(lambda s: re.fullmatch(NAME_PATTERN, s) is None),
            st.sampled_from(["Upper", "-lead", "trail-", "has_underscore", "a" * 254, "", "sp ace"]),
            st.integers(),
            st.lists(st.integers(), max_size=2),
        )
    )
    raw["metadata"]["name"] = bad
    return "metadata.name"


def _unknown_field(raw: dict[str, Any], draw: st.DrawFn) -> str:
    where = draw(st.sampled_from(["", "metadata", "spec"]))
    key = draw(st.from_regex(r"[a-z]{3,10}", fullmatch=True).filter(lambda k: k not in ("status", "items")))
    target = raw[where] if where else raw
    assume(key not in target)
    model = KINDS[raw["kind"]]
    if where == "":
        assume(key not in {f.alias or n for n, f in model.model_fields.items()})
    else:
        sub = model.model_fields[where].annotation
        assume(key not in getattr(sub, "model_fields", {}))
    target[key] = draw(st.integers() | texts)
    return f"{where}.{key}" if where else key


def _bad_label(raw: dict[str, Any], draw: st.DrawFn) -> str:
    key = draw(st.sampled_from(["bad key", "-x", "x" * 64, "a$b"]))
    raw["metadata"]["labels"] = {key: "v"}
    return "metadata.labels"


def _wrong_type(raw: dict[str, Any], draw: st.DrawFn) -> str:
    fields = {
        "App": ["command", "parameters", "environment"],
        "Job": ["num_nodes", "ranks_per_node", "workdir", "parents", "parameters", "app"],
        "BatchJob": ["num_nodes", "wall_time_min", "queue", "partitions", "filter_tags"],
    }[raw["kind"]]
    name = draw(st.sampled_from(fields))
    value = draw(st.sampled_from([["a", "list"], {"a": {"nested": 1}}, "not a number", 1.5, None]))
    current = raw["spec"].get(name)
    assume(type(value) is not type(current))
    if isinstance(current, str):
        assume(not isinstance(value, str | float))  # a str field takes any string
    if isinstance(current, int):
        assume(not isinstance(value, float))  # 1.5 is refused, but keep the check simple
    if name == "num_nodes" and value is None:
        assume(False)
    raw["spec"][name] = value
    return f"spec.{name}"


def _out_of_range(raw: dict[str, Any], draw: st.DrawFn) -> str:
    if raw["kind"] == "App":
        raw["spec"]["command"] = ""
        return "spec.command"
    if raw["kind"] == "BatchJob":
        name = draw(st.sampled_from(["num_nodes", "wall_time_min"]))
        raw["spec"][name] = draw(st.integers(max_value=0))
        raw["spec"]["partitions"] = []
        return f"spec.{name}"
    name, (lo, hi) = draw(st.sampled_from(sorted(JOB_RANGES.items())))
    raw["spec"][name] = draw(st.integers(max_value=lo - 1) | st.integers(min_value=hi + 1, max_value=2**40))
    return f"spec.{name}"


def _bad_workdir(raw: dict[str, Any], draw: st.DrawFn) -> str:
    if raw["kind"] != "Job":
        assume(False)
    good = draw(workdirs)
    raw["spec"]["workdir"] = draw(
        st.sampled_from(
            [
                "/" + good,
                f"../{good}",
                f"{good}/../..",
                f"{good}/..",
                "..",
                "",
                f"{good}//x",
                f"{good}\\..\\x",
                f"{good}\x00",
            ]
        )
    )
    return "spec.workdir"


def _partitions_do_not_sum(raw: dict[str, Any], draw: st.DrawFn) -> str:
    if raw["kind"] != "BatchJob":
        assume(False)
    parts = raw["spec"]["partitions"] or [{"job_mode": "mpi", "num_nodes": 1}]
    raw["spec"]["partitions"] = parts
    total = sum(p["num_nodes"] for p in parts)
    raw["spec"]["num_nodes"] = draw(st.integers(1, 2_000_000).filter(lambda n: n != total))
    return "spec"


def _bad_api_version(raw: dict[str, Any], draw: st.DrawFn) -> str:
    raw["apiVersion"] = draw(st.sampled_from(["v1", "balsam/v2", None, 1, ["balsam/v1"]]))
    return "apiVersion"


def _bad_kind(raw: dict[str, Any], draw: st.DrawFn) -> str:
    raw["kind"] = draw(st.sampled_from(["Pod", "job", "", None, 3, ["Job"]]))
    return "kind"


def _missing_required(raw: dict[str, Any], draw: st.DrawFn) -> str:
    required = {"App": ["command"], "Job": ["app", "workdir"], "BatchJob": ["num_nodes", "queue", "project"]}
    name = draw(st.sampled_from(required[raw["kind"]]))
    del raw["spec"][name]
    return f"spec.{name}"


MUTATIONS: list[Mutation] = [
    _bad_name,
    _unknown_field,
    _bad_label,
    _wrong_type,
    _out_of_range,
    _bad_workdir,
    _partitions_do_not_sum,
    _bad_api_version,
    _bad_kind,
    _missing_required,
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(
    good=st.lists(any_docs, max_size=3),
    bad=any_docs,
    position=st.integers(0, 3),
    mutation=st.sampled_from(MUTATIONS),
    data=st.data(),
)
def test_mutated_documents_always_raise_manifest_error_naming_source_document_and_field(
    good: list[dict[str, Any]], bad: dict[str, Any], position: int, mutation: Mutation, data: st.DataObject
) -> None:
    bad = copy.deepcopy(bad)
    field = mutation(bad, data.draw)
    position = min(position, len(good))
    raws = [*good[:position], bad, *good[position:]]
    with pytest.raises(ManifestError) as info:
        parse_documents(to_yaml(raws), "jobs/batch.yaml")
    problems = info.value.problems
    assert problems
    for p in problems:
        assert p.source == "jobs/batch.yaml"
        assert p.document == position + 1, "only the broken document is reported, at its position"
        assert str(p).startswith(f"jobs/batch.yaml: document {position + 1}")
    fields = [p.field or "" for p in problems]
    assert any(f == field or f.startswith(field + ".") or f.startswith(field + "[") for f in fields), (field, fields)
    assert "jobs/batch.yaml" in str(info.value)


def test_a_broken_document_inside_a_list_names_the_list_and_the_object() -> None:
    item = {"apiVersion": "balsam/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {"app": "a", "workdir": "/x"}}
    ok = {"apiVersion": "balsam/v1", "kind": "App", "metadata": {"name": "a"}, "spec": {"command": "true"}}
    text = to_yaml([ok, {"apiVersion": "v1", "kind": "List", "items": [ok, item]}])
    with pytest.raises(ManifestError) as info:
        parse_documents(text, "l.yaml")
    (problem,) = info.value.problems
    assert (problem.source, problem.document, problem.object, problem.field) == ("l.yaml", 2, "job/j", "spec.workdir")


def test_every_problem_of_every_document_is_reported_at_once() -> None:
    raws = [
        {"apiVersion": "balsam/v1", "kind": "Job", "metadata": {"name": "BAD"}, "spec": {"app": "a", "workdir": "w"}},
        {"apiVersion": "balsam/v1", "kind": "App", "metadata": {"name": "a"}, "spec": {"command": "true"}},
        {"apiVersion": "balsam/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {"app": "a", "num_nodes": 0}},
    ]
    with pytest.raises(ManifestError) as info:
        parse_documents(to_yaml(raws), "f.yaml")
    found = {(p.document, p.field) for p in info.value.problems}
    assert found == {(1, "metadata.name"), (3, "spec.workdir"), (3, "spec.num_nodes")}


@FAST
@given(prefix=st.lists(any_docs, max_size=3))
def test_invalid_yaml_names_the_line(prefix: list[dict[str, Any]]) -> None:
    head = to_yaml(prefix) if prefix else ""
    text = head + "---\napiVersion: balsam/v1\n- not a key\n"
    bad_line = head.count("\n") + 3
    with pytest.raises(ManifestError) as info:
        parse_documents(text, "broken.yaml")
    (problem,) = info.value.problems
    assert problem.source == "broken.yaml"
    assert f"line {bad_line}," in problem.message
    assert str(info.value).startswith("broken.yaml: invalid YAML")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises_anything_but_manifest_error(text: str) -> None:
    try:
        docs = parse_documents(text, "fuzz.yaml")
    except ManifestError as exc:
        assert all(p.source == "fuzz.yaml" for p in exc.problems)
    else:
        assert all(d.source == "fuzz.yaml" for d in docs)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_arbitrary_yaml_values_never_raise_anything_but_manifest_error(value: Any) -> None:
    assume(value is not None)  # an empty document is skipped, not an error
    for doc in (value, {"apiVersion": "balsam/v1", "kind": "Job", "metadata": value, "spec": value}):
        with pytest.raises(ManifestError) as info:
            parse_documents(to_yaml([doc]), "fuzz.yaml")
        assert all(p.source == "fuzz.yaml" and p.document == 1 for p in info.value.problems)


def test_text_with_a_lone_surrogate_is_a_manifest_error() -> None:
    """Standard input decoded with ``surrogateescape`` (e.g. under LANG=C) carries lone surrogates for bad bytes."""
    broken = b"apiVersion: balsam/v1\nkind: App\nmetadata: {name: \xff}\n".decode("utf-8", "surrogateescape")
    with pytest.raises(ManifestError) as info:
        parse_documents(broken, "<stdin>")
    assert info.value.problems[0].source == "<stdin>"


def test_yaml_tags_that_would_run_code_are_refused() -> None:
    with pytest.raises(ManifestError) as info:
        parse_documents("!!python/object/apply:os.system ['true']\n", "evil.yaml")
    assert "invalid YAML" in info.value.problems[0].message


def test_non_finite_parameter_values_are_refused() -> None:
    """NaN is not equal to itself and not valid JSON: it would make every re-apply look like a change."""
    text = "apiVersion: balsam/v1\nkind: Job\nmetadata: {name: j}\nspec: {app: a, workdir: w, parameters: {x: .nan}}\n"
    with pytest.raises(ManifestError) as info:
        parse_documents(text, "f.yaml")
    assert info.value.problems[0].field == "spec.parameters.x"


@settings(max_examples=200, deadline=None)
@given(st.one_of(names, st.text(max_size=15), names.map(lambda n: n + "\n"), names.map(lambda n: n.upper())))
def test_is_valid_name_agrees_with_manifest_validation(name: str) -> None:
    """``site init --name`` checks names with is_valid_name; what it accepts must be a valid metadata.name."""
    raw = {"apiVersion": "balsam/v1", "kind": "App", "metadata": {"name": name}, "spec": {"command": "true"}}
    try:
        App.model_validate(raw)
    except ValidationError:
        valid = False
    else:
        valid = True
    assert is_valid_name(name) == valid

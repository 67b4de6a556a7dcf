"""Shell completion (bash, zsh, fish): what a TAB offers, and a fast answer to the shells' requests.

The completions are the same functions whichever path answers: the typer commands' ``autocompletion`` callbacks
call them (:mod:`balsamctl.cli.common`), and :func:`answer` calls them for the requests it knows, reading the sites
lightly (:func:`balsamctl.cli.fastpath.site_stores`), without typer. It speaks typer's completion protocol (the
scripts of ``--show-completion``: ``_BALSAMCTL_COMPLETE=complete_SHELL`` with ``COMP_WORDS``/``COMP_CWORD`` or
``_TYPER_COMPLETE_ARGS``) and prints what typer would, or raises :class:`~balsamctl.cli.fastpath.Handoff` (having
printed nothing) for typer to answer: option names, choices, subcommands of groups, anything it does not parse.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from balsamctl.cli import COMPLETE_VAR, fastpath, verbs
from balsamctl.cli.fastpath import Handoff
from balsamctl.store.fastread import Reader

MAX_COMPLETIONS = 1000
"""Names offered at most: type a few more letters to see the rest."""
KIND_WORDS = {
    "get": ("apps", "jobs", "batchjobs", "sites", "events"),
    "describe": ("apps", "jobs", "batchjobs"),
    "delete": ("apps", "jobs", "batchjobs"),
    "logs": ("job",),
    "rerun": ("jobs",),
}
"""The kind words a TAB offers for each verb's KIND."""
VALUE_OPTIONS = {
    "get": ("--site", "-l", "--selector", "-o", "--output", "--limit"),
    "describe": ("--site",),
    "delete": ("--site", "-l", "--selector"),
    "logs": ("--site",),
    "rerun": ("--site", "-l", "--selector"),
}
"""The options (each taking a value) :func:`answer` reads on each verb's line; a test checks each is the verb's."""
ONE_NAME = ("describe", "logs")
"""Verbs that take one NAME (the others take many)."""
_WHITESPACE = re.compile(r"\s")
Query = Callable[[Reader, str, list[int]], list[str]]
"""What a completion asks a store: ``(reader, kind, site ids) -> values``."""


# ---------------------------------------------------------------- the completions


def kinds(verb: str, incomplete: str) -> list[str]:
    """The kind words of ``verb`` that start with ``incomplete``."""
    return [w for w in KIND_WORDS.get(verb, ()) if w.startswith(incomplete)]


def site_names(incomplete: str, *, spec: bool = True) -> list[str]:
    """The registered sites that start with ``incomplete``; with ``spec`` (a ``--site`` value), ``all`` and
    ``active`` and ``this`` too, completing the last name of a comma-separated list."""
    from balsamctl.site import registry

    head, comma, last = incomplete.rpartition(",") if spec else ("", "", incomplete)
    try:
        names = [e.name for e in registry.entries()]
    except Exception:  # an unreadable registry offers nothing: a TAB never prints an error into the line
        names = []
    return [f"{head}{comma}{n}" for n in [*names, *(("all", "active", "this") if spec else ())] if n.startswith(last)]


def object_names(kind_word: str, site: str | None, incomplete: str) -> list[str]:
    """The names of the objects of ``kind_word`` at the sites ``site`` names (as ``--site``) that start with
    ``incomplete``, sorted, at most :data:`MAX_COMPLETIONS`."""
    return _read(kind_word, site, lambda reader, kind, ids: reader.names(kind, ids, incomplete, MAX_COMPLETIONS))


def label_terms(kind_word: str | None, site: str | None, incomplete: str) -> list[str]:
    """``-l`` values: ``key=`` for the label keys of the objects of ``kind_word`` that start with the last term of
    ``incomplete`` (comma-separated), after the terms before it."""
    head, comma, last = incomplete.rpartition(",")
    if kind_word is None or "=" in last:
        return []
    keys = _read(kind_word, site, lambda reader, kind, ids: reader.label_keys(kind, ids, last, MAX_COMPLETIONS))
    return [f"{head}{comma}{key}=" for key in keys]


def _read(kind_word: str, site: str | None, query: Query) -> list[str]:
    """What ``query(reader, kind, site ids)`` finds in each store of the sites, merged and sorted; nothing on any
    error (a TAB never prints one). Sites the light path cannot vouch for are loaded in full once (which validates
    and records their settings and registers them in their stores), then read lightly."""
    try:
        kind = fastpath.kind_of(kind_word)
        try:
            _, stores = fastpath.site_stores(site)
        except Handoff:
            from balsamctl.site.lookup import resolve_sites

            for loaded in resolve_sites(site, Path.cwd()):
                try:
                    loaded.store.ensure_site(loaded.name, str(loaded.path))
                finally:
                    loaded.close()
            _, stores = fastpath.site_stores(site)
        try:
            found = {value for reader, ids in stores for value in query(reader, kind, list(ids))}
        finally:
            fastpath.close(stores)
    except Exception:
        return []
    return sorted(found)[:MAX_COMPLETIONS]


# ---------------------------------------------------------------- the shells' requests


def split_arg_string(string: str) -> list[str]:
    """A command line split as the shell would (as click's completion splits it), an unfinished quote or escape
    taken as it is."""
    import shlex

    lex = shlex.shlex(string, posix=True)
    lex.whitespace_split = True
    lex.commenters = ""
    out: list[str] = []
    try:
        out.extend(lex)
    except ValueError:
        out.append(lex.token)
    return out


def request(environ: Mapping[str, str]) -> tuple[str, list[str], str]:
    """A completion request as typer reads it: ``(shell, complete words after balsamctl, the incomplete word)``;
    :class:`Handoff` for an instruction other than ``complete_{bash,zsh,fish}``."""
    instruction, _, shell = environ.get(COMPLETE_VAR, "").partition("_")
    if instruction != "complete" or shell not in ("bash", "zsh", "fish"):
        raise Handoff(f"completion instruction {environ.get(COMPLETE_VAR)!r}")
    if shell == "bash":
        words = split_arg_string(environ.get("COMP_WORDS", ""))
        cword = int(environ.get("COMP_CWORD", "0"))
        return shell, words[1:cword], words[cword] if cword < len(words) else ""
    line = environ.get("_TYPER_COMPLETE_ARGS", "")
    args = split_arg_string(line)[1:]
    if args and not line.endswith(" "):
        return shell, args[:-1], args[-1]
    return shell, args, ""


class Line(NamedTuple):
    """A verb's line as far as it is typed: its positional words, the options given (``--site`` and the like, each
    with its value) and the option still waiting for its value (the word being completed), if any."""

    verb: str
    positional: list[str]
    given: dict[str, str]
    pending: str | None

    @property
    def kind(self) -> str | None:
        """The KIND typed."""
        return self.positional[0] if self.positional else None

    @property
    def site(self) -> str | None:
        """The sites the line names, as ``--site`` (else ``$BALSAM_SITE``)."""
        return self.given.get("--site", os.environ.get("BALSAM_SITE") or None)


def parse_line(args: Sequence[str]) -> Line:
    """The words after ``balsamctl`` of a line to complete, read as typer reads them for the verbs whose objects a
    TAB completes; :class:`Handoff` for any other verb, or an option this does not read."""
    verb, rest = (args[0], args[1:]) if args else ("", [])
    options = VALUE_OPTIONS.get(verb)
    if options is None or "--" in rest or "=" in rest:
        raise Handoff(f"the line {list(args)}")
    positional, given, pending = [], {}, None
    for arg in rest:
        if pending is not None:
            given[pending], pending = arg, None
        elif arg in options:
            pending = arg
        elif arg.startswith("-"):
            raise Handoff(f"option {arg!r}")
        else:
            positional.append(arg)
    return Line(verb, positional, given, pending)


def kind_on_line(environ: Mapping[str, str]) -> str | None:
    """The KIND typed on the line a shell asks to complete (typer's parse loses it when an option waits for its
    value, as ``get jobs -l <TAB>`` does); None if there is none, or no such request."""
    try:
        return parse_line(request(environ)[1]).kind
    except Handoff:
        return None


def completions(args: Sequence[str], incomplete: str) -> list[tuple[str, str | None]]:
    """What a TAB offers after ``balsamctl ARGS`` for ``incomplete``, as ``(value, help)``, for the requests this
    module knows (verbs, kinds, names, ``--site`` and ``-l`` values); :class:`Handoff` for any other."""
    if incomplete.startswith("-") or incomplete == "=":
        raise Handoff("an option")
    if not args:
        if incomplete and not incomplete[0].isalnum():
            raise Handoff("options of the root")
        return [(name, text) for name, text, _ in verbs.VERBS if name.startswith(incomplete)]
    line = parse_line(args)
    if line.pending == "--site":
        values = site_names(incomplete)
    elif line.pending in ("-l", "--selector"):
        values = label_terms(line.kind, line.site, incomplete)
    elif line.pending is not None:
        raise Handoff(f"the value of {line.pending}")
    elif line.kind is None:
        values = kinds(line.verb, incomplete)
    elif line.verb in ONE_NAME and len(line.positional) > 1:
        raise Handoff("no more arguments")
    else:
        values = object_names(line.kind, line.site, incomplete)
    return [(v, None) for v in values]


def _zsh_escape(text: str) -> str:
    return text.replace('"', '""').replace("'", "''").replace("$", "\\$").replace("`", "\\`").replace(":", r"\\:")


def formatted(shell: str, items: Sequence[tuple[str, str | None]]) -> str:
    """``items`` as typer's completion classes print them for ``shell``."""
    if shell == "bash":
        return "\n".join(value for value, _ in items)
    if shell == "zsh":
        lines = [f'"{_zsh_escape(v)}":"{_zsh_escape(h)}"' if h else f'"{_zsh_escape(v)}"' for v, h in items]
        return f"_arguments '*: :(({chr(10).join(lines)}))'" if lines else "_files"
    return "\n".join(f"{v}\t{_WHITESPACE.sub(' ', h)}" if h else v for v, h in items)


def answer(environ: Mapping[str, str]) -> int:
    """Answer the shell's completion request in ``environ`` as typer would; the exit code. :class:`Handoff` (having
    printed nothing) for a request it does not know."""
    shell, args, incomplete = request(environ)
    items = completions(args, incomplete)
    if shell == "fish":
        action = environ.get("_TYPER_COMPLETE_FISH_ACTION", "")
        if action == "is-args":
            return 0 if items else 1
        if action != "get-args" or not items:
            fastpath.write(sys.stdout, "\n")
            return 0
    fastpath.write(sys.stdout, formatted(shell, items) + "\n")
    return 0

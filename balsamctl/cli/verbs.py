"""The verbs of ``balsamctl``: one light table that the fast top-level help, the fast completion of verbs and the
typer app are all made from, so that they cannot drift apart. Importing it costs nothing: typer is imported by
:func:`build` only."""

from __future__ import annotations

import os
from collections.abc import Iterable
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

ROOT_HELP = "Declarative control of HPC pilot jobs: Apps, Jobs and BatchJobs at one or more sites."
VERBS: tuple[tuple[str, str, str], ...] = (
    # (verb, its one-line help, "module:attribute" of its command function or its group's typer app)
    ("apply", "Create or update objects from manifests, all or nothing.", "balsamctl.cli.change:apply"),
    ("delete", "Delete objects by name, by reference, by manifest or by label.", "balsamctl.cli.change:delete"),
    ("rerun", "Reset chosen FAILED (or JOB_FINISHED) Jobs to READY for another go.", "balsamctl.cli.change:rerun"),
    ("diff", "Show how applying manifests would change the live objects.", "balsamctl.cli.change:diff"),
    ("get", "List objects as a table, or as YAML, JSON or names.", "balsamctl.cli.read:get"),
    ("describe", "Show one object in detail: fields, spec, status and its events.", "balsamctl.cli.read:describe"),
    ("logs", "Print a Job's output, every attempt in order (or one with --attempt).", "balsamctl.cli.read:logs"),
    ("schema", "Print a kind's JSON Schema.", "balsamctl.cli.read:schema"),
    ("version", "Print balsamctl's version.", "balsamctl.cli.read:version"),
    ("site", "Create, add, move, list, share and forget sites.", "balsamctl.cli.sites:site_app"),
    ("store", "Prepare a shared PostgreSQL store for its users (its owner).", "balsamctl.cli.access:store_app"),
    ("controller", "Run, start, stop or check a site's controller.", "balsamctl.cli.controller:controller_app"),
    ("queue", "Submit and list BatchJobs with the reference text's flags.", "balsamctl.cli.queue:queue_app"),
)
ROOT_OPTIONS = (
    ("-h, --help", "Show this message and exit."),
    ("--install-completion", "Install completion for the current shell."),
    ("--show-completion", "Show completion for the current shell, to copy it or customize the installation."),
)
"""The root's options as typer makes them (a test compares): help, and shell completion."""


def verb_names() -> list[str]:
    """Every verb, in the order of the help."""
    return [name for name, _, _ in VERBS]


def top_help() -> str:
    """The top-level help, as ``balsamctl --help`` prints it (wrapped to the terminal, as click wraps help)."""
    import textwrap

    width = max(50, min(_columns(), 80) - 2)

    def listing(rows: Iterable[tuple[str, str]]) -> list[str]:
        rows = list(rows)
        lead = max(len(name) for name, _ in rows) + 4
        return [
            line
            for name, text in rows
            for line in textwrap.wrap(text, width, initial_indent=f"  {name}".ljust(lead), subsequent_indent=" " * lead)
        ]

    lines = ["Usage: balsamctl [OPTIONS] COMMAND [ARGS]...", ""]
    lines += textwrap.wrap(ROOT_HELP, width, initial_indent="  ", subsequent_indent="  ")
    lines += ["", "Options:", *listing(ROOT_OPTIONS), "", "Commands:", *listing((n, h) for n, h, _ in VERBS)]
    return "\n".join(lines) + "\n"


def _columns() -> int:
    """The terminal's width: ``$COLUMNS``, else the terminal's, else 80."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 80


def build(names: Iterable[str] | None = None) -> typer.Typer:
    """The typer app with the verbs ``names`` (default: all): a call that names its verb loads that verb's module
    only, with the same root (help, completion and the error reporting of :class:`balsamctl.cli.common.Root`)."""
    import typer

    from balsamctl.cli.common import Root

    wanted = set(verb_names() if names is None else names)
    root_only = {"help_option_names": ["--help", "-h"]}  # -h at the root; the verbs keep --help alone
    verb_settings = {"help_option_names": ["--help"]}
    app = typer.Typer(
        cls=Root, no_args_is_help=True, pretty_exceptions_enable=False, context_settings=root_only, help=ROOT_HELP
    )
    app.callback(help=ROOT_HELP)(_root)  # a group even when it holds one verb
    for name, short_help, target in VERBS:
        if name not in wanted:
            continue
        module, _, attribute = target.partition(":")
        found = getattr(import_module(module), attribute)
        if isinstance(found, typer.Typer):
            app.add_typer(found, name=name, help=short_help, short_help=short_help, context_settings=verb_settings)
        else:
            app.command(name, short_help=short_help, context_settings=verb_settings)(found)
    return app


def _root() -> None:
    """The root takes no options of its own but help and shell completion."""


def run(args: list[str]) -> None:
    """Run ``balsamctl ARGS`` through typer (it exits): a call that names its verb (on its line, or on the line a
    shell asks to complete) loads that verb's module only."""
    from balsamctl.cli import COMPLETE_VAR, complete
    from balsamctl.cli.fastpath import Handoff

    words = args
    if COMPLETE_VAR in os.environ:
        try:
            words = complete.request(os.environ)[1]
        except Handoff:
            words = []
    verb = words[0] if words and words[0] in verb_names() else None
    build(None if verb is None else [verb])(args=args)

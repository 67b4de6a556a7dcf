"""The ``balsamctl`` command line: kubectl-like verbs over a site (the top layer, beside the Balsam API).

:func:`main` answers the calls people make most without importing typer, SQLAlchemy or pydantic: ``version``, the
top-level help, ``get`` in its common shapes (:mod:`balsamctl.cli.fastpath`) and the shells' completion requests
(:mod:`balsamctl.cli.complete`); every other call, and any of those the fast paths hand off, runs the typer app
with only the verb it names loaded (:func:`balsamctl.cli.verbs.run`). ``BALSAMCTL_NO_FASTPATH=1`` sends every call
to typer.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

NO_FASTPATH = "BALSAMCTL_NO_FASTPATH"
"""Set (non-empty), every call goes through typer: what the conformance tests compare the fast paths with."""
COMPLETE_VAR = "_BALSAMCTL_COMPLETE"
"""Set by the completion scripts of ``--show-completion``: the shell asks what a TAB offers."""


def main(argv: Sequence[str] | None = None) -> None:
    """The ``balsamctl`` entry point (``argv``: the arguments, default ``sys.argv[1:]``); it exits."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not os.environ.get(NO_FASTPATH):
        code = _fast(args)
        if code is not None:
            sys.exit(code)
    from balsamctl.cli.verbs import run

    run(args)


def _fast(args: list[str]) -> int | None:
    """The exit code of a call the fast paths answered; None if typer must answer it (nothing was printed). Each
    path imports what it needs only."""
    try:
        if COMPLETE_VAR in os.environ or args[:1] == ["get"]:
            return _fast_read(args)
        if args == ["version"]:
            from balsamctl import __version__

            return _print(f"balsamctl {__version__}\n", 0)
        if args in ([], ["--help"], ["-h"]):
            from balsamctl.cli.verbs import top_help

            return _print(top_help(), 0 if args else 2)  # no arguments: the help, as a usage error (as typer does)
    except BrokenPipeError:  # the reader went away (| head): quietly, as typer does
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (nothing to flush into the closed pipe at exit)
        return 1
    return None


def _print(text: str, code: int) -> int:
    sys.stdout.write(text)
    sys.stdout.flush()
    return code


def _fast_read(args: list[str]) -> int | None:
    """A shell's completion request, or ``get``, answered by reading the sites lightly; None: typer must."""
    from balsamctl.cli.fastpath import Handoff, get

    try:
        if COMPLETE_VAR in os.environ:
            from balsamctl.cli.complete import answer

            return answer(os.environ)
        return get(args[1:])
    except Handoff:
        return None

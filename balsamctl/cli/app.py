"""``balsamctl``: a kubectl-style command line over the balsamctl library, as one typer app with every verb.

The verbs live in modules of their own (:data:`balsamctl.cli.verbs.VERBS` names them); a call of ``balsamctl``
builds the app with the verb it names only (:func:`balsamctl.cli.verbs.run`). This module is the whole app, for
tests and for typer's tools.
"""

from __future__ import annotations

from balsamctl.cli.listing import DEFAULT_LIMIT
from balsamctl.cli.verbs import build

__all__ = ["DEFAULT_LIMIT", "app"]

app = build()

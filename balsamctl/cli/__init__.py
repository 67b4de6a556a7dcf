"""The ``balsamctl`` command line: kubectl-like verbs over a site (the top layer, beside the Balsam API)."""

from __future__ import annotations


def main() -> None:
    """The ``balsamctl`` entry point."""
    from balsamctl.cli.app import main as run

    run()

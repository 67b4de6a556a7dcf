"""``python -m balsamctl.controller run --site PATH``: the controller process (``balsamctl controller start``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from balsamctl.controller import daemon
from balsamctl.site.directory import SiteDirectory, SiteError


def main() -> int:
    """Run the controller of one site in the foreground."""
    parser = argparse.ArgumentParser(prog="python -m balsamctl.controller")
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--site", required=True, type=Path)
    args = parser.parse_args()
    try:
        daemon.run(SiteDirectory.load(args.site))
    except SiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

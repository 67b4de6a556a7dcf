"""``python -m launcher --site PATH --batch-job NAME``: what a rendered job script runs inside its allocation."""

from __future__ import annotations

import sys

from launcher.main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

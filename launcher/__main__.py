"""``python -m balsamctl.launcher --site PATH --batch-job NAME``: what a job script runs inside its allocation."""

from __future__ import annotations

import sys

from balsamctl.launcher.main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

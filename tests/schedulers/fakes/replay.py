#!/usr/bin/env python3
"""A stand-in for a batch scheduler's program (qsub, qstat, qdel, bsub, bjobs, bkill; this file, linked under that
name): it records how it was called and replays a recorded answer.

FAKE_SCHED_LOG       a file to append {"prog", "argv", "stdin"} to, one JSON line per call
FAKE_SCHED_FIXTURE   the scenario directory: the answer is <prog>.stdout, <prog>.stderr and <prog>.rc (exit code);
                     <prog>.<n>.stdout (.stderr, .rc) answer the n-th call of <prog> instead, if present.
                     A missing file means no output, or exit code 0.
FAKE_SCHED_HANG=1    never answer
"""

import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    prog = Path(sys.argv[0]).name
    log = os.environ.get("FAKE_SCHED_LOG")
    calls = 1
    if log:
        with open(log, "a+") as records:
            records.seek(0)
            calls += sum(1 for line in records if json.loads(line)["prog"] == prog)
            stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
            records.write(json.dumps({"prog": prog, "argv": sys.argv[1:], "stdin": stdin}) + "\n")
    if os.environ.get("FAKE_SCHED_HANG") == "1":
        time.sleep(3600)
    scenario = Path(os.environ.get("FAKE_SCHED_FIXTURE", "/nonexistent"))

    def answer(kind: str) -> str:
        for name in (f"{prog}.{calls}.{kind}", f"{prog}.{kind}"):
            if (scenario / name).is_file():
                return (scenario / name).read_text()
        return ""

    sys.stdout.write(answer("stdout"))
    sys.stderr.write(answer("stderr"))
    return int(answer("rc").strip() or 0)


if __name__ == "__main__":
    sys.exit(main())

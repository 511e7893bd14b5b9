"""`python -m trpo_lab.sweeper repair JOURNAL`: make a journal file with garbled lines readable again.

It keeps a copy of the original (`JOURNAL.bak-<time>`), drops every line that
is not a journal record (a torn write, a garbled line), and says what it did.
A dropped line loses what that line recorded (a trial's value, say); the
study's later lines stay. Run it while no sweeper or job has the study open:
they keep their place in the file by byte offset.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from trpo_lab.sweeper.journal import repair_journal
from trpo_lab.sweeper.storage import JOURNAL_PREFIX


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[0] != "repair":
        print("usage: python -m trpo_lab.sweeper repair JOURNAL", file=sys.stderr)
        return 2
    path = argv[1][len(JOURNAL_PREFIX):] if argv[1].startswith(JOURNAL_PREFIX) else argv[1]
    if not Path(path).is_file():
        print(f"trpo_optuna: error: {path} is not a file", file=sys.stderr)
        return 2
    for line in repair_journal(path):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

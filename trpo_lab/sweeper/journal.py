"""The journal file that holds a study on one machine: its lock, and surviving a failed write.

`CheckedJournalFile` is Optuna's JournalFileBackend (same bytes, same reading)
with two guards. A write that fails half way (disk full) leaves a torn last
line; it is cut, under the journal's lock, before the next append, so the study
stays readable. A line garbled before the end is a JournalCorrupt naming the
file, the line and the repair command, `python -m trpo_lab.sweeper repair
JOURNAL` (`repair_journal`: a backup copy first, then the bad lines dropped).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import time
from typing import Any, Generator, Optional

import optuna
from optuna.storages.journal import BaseJournalBackend


class JournalCorrupt(RuntimeError):
    """A journal line before the end is not a record: the message names the line and the repair command."""


class FlockLock:
    """An inter-process lock held with flock(2) on the file `lock_path`.

    Implements the acquire/release protocol JournalFileBackend calls its lock
    with; it guards the journal (`<journal>.flock`) and the sweepers' budget
    (`<journal>.budget`, see liveness.BudgetLock).

    The kernel drops a flock when its holder dies, even by kill -9, so a killed
    job never leaves a stale lock behind. Optuna's default symlink lock can: and
    when Ctrl-C reaches a process that is still waiting for it, its release
    renames away the lock another process holds (two writers at once). flock
    works on local disks; across machines use an RDB URL.
    """

    def __init__(self, lock_path: str):
        self._path = lock_path
        self._held = threading.local()  # the descriptor this thread holds the lock through

    def acquire(self) -> bool:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:  # interrupted while waiting: we hold nothing, release nothing
            os.close(fd)
            raise
        self._held.fd = fd
        return True

    def release(self) -> None:
        fd = getattr(self._held, "fd", None)
        self._held.fd = None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> "FlockLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def repair_command(path: str) -> str:
    return f"python -m trpo_lab.sweeper repair {path}"


def cut_torn_tail(path: str) -> int:
    """Cut a last line that has no newline (a write that failed half way); the bytes cut.

    Call it holding the journal's lock: only then is an unterminated line not a
    write in progress.
    """
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        end = size
        while end > 0:  # back to the last newline, a block at a time
            start = max(0, end - 65536)
            f.seek(start)
            nl = f.read(end - start).rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            end = start
        else:
            keep = 0
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return size - keep


class CheckedJournalFile(BaseJournalBackend):
    """Optuna's JournalFileBackend, with a torn last line cut before each append and a garbled line named.

    Reading follows JournalFileBackend (a last line without newline is a write in
    progress and waits); appending writes the same bytes, under the same lock.
    """

    def __init__(self, path: str, lock: Optional[FlockLock] = None) -> None:
        self.path = str(path)
        self._lock = lock or FlockLock(f"{self.path}.flock")
        if not os.path.exists(self.path):
            open(self.path, "ab").close()
        self._offsets: dict[int, int] = {0: 0}  # line number -> byte offset, for reading on from there

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        start = log_number_from if log_number_from in self._offsets else max(
            n for n in self._offsets if n <= log_number_from)  # JournalStorage reads on from what it read
        with open(self.path, "rb") as f:
            f.seek(self._offsets[start])
            offset = self._offsets[start]
            for number, line in enumerate(f, start=start):
                if not line.endswith(b"\n"):
                    return  # the last line, still being written (or torn: the next append cuts it)
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if not isinstance(record, dict):
                    raise JournalCorrupt(
                        f"{self.path}: line {number + 1} is not a journal record ({line[:60]!r}); "
                        f"run `{repair_command(self.path)}` (it keeps a backup of the file)")
                offset += len(line)
                self._offsets[number + 1] = offset
                if number >= log_number_from:
                    yield record

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in logs)
        with self._lock:
            cut = cut_torn_tail(self.path)
            if cut:
                optuna.logging.get_logger(__name__).warning(
                    "%s: cut a torn last line (%d bytes, a write that failed half way)", self.path, cut)
            with open(self.path, "ab") as f:
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())


def repair_journal(path: str) -> list[str]:
    """Drop the lines of journal `path` that are not records, after a backup copy; what was done, as lines."""
    path = str(path)
    backup = f"{path}.bak-{time.strftime('%Y%m%d-%H%M%S')}"
    with FlockLock(f"{path}.flock"):
        with open(path, "rb") as f:
            lines = f.readlines()
        kept, done = [], []
        for number, line in enumerate(lines, start=1):
            try:
                ok = line.endswith(b"\n") and isinstance(json.loads(line), dict)
            except ValueError:
                ok = False
            if ok:
                kept.append(line)
            else:
                what = "torn (no newline)" if not line.endswith(b"\n") else "not a record"
                done.append(f"dropped line {number} of {len(lines)}, {what}: {line[:60]!r}")
        if not done:
            return [f"{path}: all {len(lines)} lines are records; nothing to repair"]
        shutil.copy2(path, backup)
        tmp = f"{path}.repair.tmp"
        with open(tmp, "wb") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return [f"{path}: backup of the original in {backup}", *done, f"kept {len(kept)} lines"]

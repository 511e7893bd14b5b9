"""Where a study lives, and the one door to Optuna's storage layer.

The same string opens the storage in the sweeper and in every job (job.py):

    journal:/abs/path/optuna.journal   JournalStorage over a local file (default;
                                       safe for parallel processes, no server)
    postgresql://user:pw@host/db       any SQLAlchemy URL (RDBStorage)

Secrets: a URL's password never leaves the process given it (secrets.py,
docs/scaling.md); `job_storage_url` gives a job the real URL back.

Why the storage layer at all: Optuna's public API (Study, Trial) reaches a trial
only inside the process that asked it, by number. The sweeper and its jobs are
other processes (other machines) that write user attributes on a trial and
report to it by its storage id, which only `BaseStorage` offers, and Optuna
documents its methods as library-internal ("not supposed to be directly accessed
by library users"). `TrialStore` holds every such call, so an Optuna release
that changes them breaks this file alone; pyproject bounds Optuna to the
tested major.

The journal file: `CheckedJournalFile` cuts a torn last line (a write that
failed half way, disk full) under the journal's lock before it appends, and a
garbled line before the end is a JournalCorrupt naming the line and the repair
command (`python -m trpo_lab.sweeper repair JOURNAL`, `repair_journal`).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Generator, Optional

import optuna
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend
from optuna.trial import FrozenTrial

from trpo_lab.sweeper.secrets import MASK, STORAGE_ENV, has_secret, mask_text, mask_url

JOURNAL_PREFIX = "journal:"
JOURNAL_NAME = "optuna.journal"


def job_storage_url(url: str) -> str:
    """The URL a job opens: `url` itself, or, where the sweeper masked it, the real one from STORAGE_ENV."""
    if MASK not in url or has_secret(url):
        return url
    real = os.environ.get(STORAGE_ENV, "")
    if real and mask_url(real) == url:
        return real
    raise StorageError(f"the storage URL {url} reached this job with its password masked and {STORAGE_ENV} does "
                       "not hold it (a launcher that does not pass the sweeper's environment): give the password "
                       "outside the URL, e.g. PGPASSFILE or ~/.pgpass (docs/scaling.md)")


class StorageError(RuntimeError):
    """The storage cannot be opened or read; the message names it (password masked) and what to do."""


class JournalCorrupt(StorageError):
    """A journal line before the end is not a record: the message names the line and the repair command."""


# ---- the journal file -----------------------------------------------------------------------
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
        start = max(n for n in self._offsets if n <= log_number_from)
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


# ---- opening ----------------------------------------------------------------------------------
def default_storage_url(sweep_dir: Path) -> str:
    return JOURNAL_PREFIX + str((Path(sweep_dir) / JOURNAL_NAME).absolute())


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Open the storage that `url` names (see the module docstring for the forms).

    StorageError, one line with the password masked, when it cannot be opened
    (a wrong password, no server, a garbled journal).
    """
    try:
        if url.startswith(JOURNAL_PREFIX):
            path = Path(url[len(JOURNAL_PREFIX):])
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(CheckedJournalFile(str(path)))
        if url.startswith("sqlite"):
            optuna.logging.get_logger(__name__).warning(
                "SQLite storage is not safe for parallel jobs (Optuna FAQ); prefer the default journal file")
        return optuna.storages.RDBStorage(url)
    except JournalCorrupt:
        raise
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise StorageError(mask_text(f"cannot open the study storage {mask_url(url)}: "
                                     f"{type(err).__name__}: {first}", url)) from None


# ---- Optuna's storage layer -------------------------------------------------------------------
class TrialStore:
    """One study's trials by storage id: the calls Optuna's public API does not offer (module docstring)."""

    def __init__(self, storage: optuna.storages.BaseStorage, study_name: str):
        self.storage = storage
        self.study_id = storage.get_study_id_from_name(study_name)

    def trial_id(self, number: int) -> int:
        """The storage's id of trial `number` (the public API has only the number)."""
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def get(self, trial_id: int) -> FrozenTrial:
        return self.storage.get_trial(trial_id)

    def set_attr(self, trial_id: int, key: str, value: Any) -> None:
        """A user attribute on a trial this process did not ask (Trial.set_user_attr needs the asking Trial)."""
        self.storage.set_trial_user_attr(trial_id, key, value)

    @staticmethod
    def live_trial(study: optuna.Study, trial_id: int) -> optuna.trial.Trial:
        """A Trial handle on a RUNNING trial asked elsewhere, for report/should_prune in a job.

        Trial(study, trial_id) is Optuna's own constructor, documented only for
        the Trial that Study.ask returns.
        """
        return optuna.trial.Trial(study, trial_id)

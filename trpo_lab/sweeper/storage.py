"""Where a study lives: a journal file on one machine, an RDB URL across machines.

The same string opens the storage in the sweeper and in every job, so it is
passed to jobs in their TRPO_OPTUNA_TRIAL variable (job.py):

    journal:/abs/path/optuna.journal   JournalStorage over a local file (default;
                                       safe for parallel processes, no server)
    postgresql://user:pw@host/db       any SQLAlchemy URL (RDBStorage)
"""
from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import optuna

JOURNAL_PREFIX = "journal:"
JOURNAL_NAME = "optuna.journal"


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


def default_storage_url(sweep_dir: Path) -> str:
    return JOURNAL_PREFIX + str((Path(sweep_dir) / JOURNAL_NAME).absolute())


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Open the storage that `url` names (see the module docstring for the forms)."""
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX):])
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(path), lock_obj=FlockLock(f"{path}.flock"))
        return optuna.storages.JournalStorage(backend)
    if url.startswith("sqlite"):
        optuna.logging.get_logger(__name__).warning(
            "SQLite storage is not safe for parallel jobs (Optuna FAQ); prefer the default journal file")
    return optuna.storages.RDBStorage(url)

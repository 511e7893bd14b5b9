"""Where a study lives: a journal file on one machine, an RDB URL across machines.

The same string opens the storage in the sweeper and in every job, so it is
passed to jobs as the `trial.storage` override:

    journal:/abs/path/optuna.journal   JournalStorage over a local file (default;
                                       safe for parallel processes, no server)
    postgresql://user:pw@host/db       any SQLAlchemy URL (RDBStorage)
"""
from __future__ import annotations

from pathlib import Path

import optuna

JOURNAL_PREFIX = "journal:"
JOURNAL_NAME = "optuna.journal"


def default_storage_url(sweep_dir: Path) -> str:
    return JOURNAL_PREFIX + str((Path(sweep_dir) / JOURNAL_NAME).absolute())


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Open the storage that `url` names (see the module docstring for the forms)."""
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    if url.startswith("sqlite"):
        optuna.logging.get_logger(__name__).warning(
            "SQLite storage is not safe for parallel jobs (Optuna FAQ); prefer the default journal file")
    return optuna.storages.RDBStorage(url)

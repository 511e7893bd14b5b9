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

The journal file itself, its lock, its torn-line cut and its repair: journal.py.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from trpo_lab.sweeper.journal import CheckedJournalFile, JournalCorrupt
from trpo_lab.sweeper.secrets import MASK, STORAGE_ENV, has_secret, mask_text, mask_url

JOURNAL_PREFIX = "journal:"
JOURNAL_NAME = "optuna.journal"


class StorageError(RuntimeError):
    """The storage cannot be opened or read; the message names it (password masked) and what to do."""


# ---- opening ----------------------------------------------------------------------------------
def default_storage_url(sweep_dir: Path) -> str:
    return JOURNAL_PREFIX + str((Path(sweep_dir) / JOURNAL_NAME).absolute())


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Open the storage that `url` names (see the module docstring for the forms).

    StorageError, one line with the password masked, when it cannot be opened
    (a wrong password, no server); JournalCorrupt for a garbled journal line.
    """
    try:
        if url.startswith(JOURNAL_PREFIX):
            path = Path(url[len(JOURNAL_PREFIX):])
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(CheckedJournalFile(str(path)))
        return optuna.storages.RDBStorage(url)
    except JournalCorrupt:
        raise
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise StorageError(mask_text(f"cannot open the study storage {mask_url(url)}: "
                                     f"{type(err).__name__}: {first}", url)) from None


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

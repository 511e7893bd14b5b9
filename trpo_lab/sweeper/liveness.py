"""Several sweepers on one study: who owns a running trial, whether it is alive, and the budget lock.

Each sweeper process has an owner id `<host>:<pid>:<process start>` and stamps it
on every trial it asks (`owner` user attr), then refreshes the trial's `heartbeat`
user attr (Unix time) every `heartbeat_interval` seconds while the trial is open.
Optuna 5's own heartbeat exists only for RDBStorage, so the journal file would
have none; these two attributes work the same in every storage.

A RUNNING trial is stale, so failed and re-queued by whichever sweeper sees it,
when its owner is a process of this host that no longer exists (a killed
sweeper, found at once on resume), or when its heartbeat is older than
`grace_period` seconds (a killed node: found by a live sweeper or on resume), or
when it carries no owner and started more than `grace_period` ago (left by an
older version of the sweeper, or by a sweeper killed between ask and stamp).

The budget lock serialises "count the study's trials, ask one more if there is
room" between sweepers, so `n_trials` is exact however many run at once: a file
lock next to the journal (journal.FlockLock: never stale after kill -9), an advisory lock
in PostgreSQL (`pg_advisory_lock`) or MySQL (`GET_LOCK`), a file lock next to an
SQLite file.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from trpo_lab.sweeper.journal import FlockLock
from trpo_lab.sweeper.secrets import mask_text, mask_url
from trpo_lab.sweeper.storage import JOURNAL_PREFIX, StorageError, TrialStore

log = logging.getLogger(__name__)

OWNER = "owner"          # trial user attr: the sweeper process that runs the trial
HEARTBEAT = "heartbeat"  # trial user attr: Unix time of its owner's last sign of life


def _start_ticks(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid()) or 0}"


def owner_dead(owner: str) -> bool:
    """True when `owner` names a process of this host that has ended; False when alive or elsewhere."""
    try:
        host, pid_s, ticks = owner.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False  # another machine: only its heartbeat can tell
    if Path("/proc").is_dir():
        now = _start_ticks(pid)
        return now is None or (ticks != "0" and now != ticks)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def stale_reason(t: FrozenTrial, grace_period: float, me: str, now: Optional[float] = None) -> Optional[str]:
    """Why the RUNNING trial `t` counts as abandoned, or None while its owner may be alive."""
    if t.state != TrialState.RUNNING:
        return None
    now = time.time() if now is None else now
    owner = t.user_attrs.get(OWNER)
    if owner == me:
        return None
    if owner is None:
        started = t.datetime_start.timestamp() if t.datetime_start else 0.0
        if now - started > grace_period:
            return f"running with no owner for more than {grace_period:g} s"
        return None
    if owner_dead(owner):
        return f"its sweeper ({owner}) is no longer running"
    beat = float(t.user_attrs.get(HEARTBEAT, 0.0))
    if now - beat > grace_period:
        return (f"no heartbeat from its sweeper ({owner}) for {now - beat:.0f} s "
                f"(grace period {grace_period:g} s)")
    return None


class Heartbeat:
    """A daemon thread stamping `heartbeat` on the trials this sweeper has open."""

    def __init__(self, store: TrialStore, interval: float):
        self.store, self.interval = store, float(interval)
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="trial-heartbeat")

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def add(self, trial_id: int) -> None:
        with self._lock:
            self._ids.add(trial_id)

    def remove(self, trial_id: int) -> None:
        with self._lock:
            self._ids.discard(trial_id)

    def ids(self) -> set[int]:
        with self._lock:
            return set(self._ids)

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                ids = list(self._ids)
            for tid in ids:
                try:
                    self.store.set_attr(tid, HEARTBEAT, time.time())
                except optuna.exceptions.UpdateFinishedTrialError:
                    self.remove(tid)
                except Exception as err:  # a storage hiccup must not end the heartbeat
                    log.warning("heartbeat for trial id %d failed: %s", tid, err)


def _lock_key(study_name: str) -> int:
    return int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)


class BudgetLock:
    """Mutual exclusion between sweeper processes (and threads) of one study; see the module docstring."""

    def __init__(self, storage_url: str, study_name: str):
        self.url, self.study_name = storage_url, study_name
        self._thread_lock = threading.Lock()
        self._engine = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._thread_lock:
            if self.url.startswith(JOURNAL_PREFIX):
                with self._file_lock(self.url[len(JOURNAL_PREFIX):] + ".budget"):
                    yield
            elif self.url.startswith("sqlite"):
                path = self.url.split("///", 1)[-1]
                with self._file_lock(path + ".budget"):
                    yield
            elif self.url.startswith(("postgresql", "mysql")):
                with self._db_lock():
                    yield
            else:
                yield  # other databases: the thread lock only (one sweeper per study)

    @staticmethod
    @contextlib.contextmanager
    def _file_lock(path: str) -> Iterator[None]:
        lock = FlockLock(path)
        lock.acquire()
        try:
            yield
        finally:
            lock.release()

    @contextlib.contextmanager
    def _db_lock(self) -> Iterator[None]:
        import sqlalchemy as sa

        if self._engine is None:
            self._engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        pg = self.url.startswith("postgresql")
        key = _lock_key(self.study_name)
        try:
            conn = self._engine.connect()
        except sa.exc.SQLAlchemyError as err:  # the server went away since the study was opened
            first = (str(err).strip().splitlines() or [""])[0]
            raise StorageError(mask_text(f"the budget lock cannot reach {mask_url(self.url)}: "
                                         f"{type(err).__name__}: {first}", self.url)) from None
        with conn:  # the lock dies with the connection if this process does
            if pg:
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            else:
                conn.execute(sa.text("SELECT GET_LOCK(:k, -1)"), {"k": f"trpo_lab:{key}"})
            try:
                yield
            finally:
                if pg:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                else:
                    conn.execute(sa.text("SELECT RELEASE_LOCK(:k)"), {"k": f"trpo_lab:{key}"})

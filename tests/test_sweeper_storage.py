"""The journal file survives what Optuna's own does not: kill -9 and Ctrl-C (its lock), a failed write.

A write that fails half way (disk full) leaves a torn last line: it is cut,
under the lock, before the next append, so the study stays readable. A garbled
line before the end is one clear error naming the line and
`python -m trpo_lab.sweeper repair JOURNAL`, which keeps a backup and drops it;
the sweeper and the report say the same.
"""
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend

from conftest import cli_env
from test_sweeper_any_app import SPHERE, SPHERE_CONF, run_app, write_app
from trpo_lab.report.discovery import collect_inputs
from trpo_lab.sweeper.journal import JournalCorrupt
from trpo_lab.sweeper.storage import default_storage_url, open_storage

HOLD = """
import sys, time
from trpo_lab.sweeper.journal import FlockLock
lock = FlockLock(sys.argv[1] + ".flock")
lock.acquire()
print("held", flush=True)
time.sleep(120)
"""


def _start_holder(journal: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, journal], env=cli_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _lock_is_free(journal: str) -> bool:
    fd = os.open(journal + ".flock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_a_holder_killed_with_sigkill_leaves_no_stale_lock(tmp_path):
    journal = str(tmp_path / "optuna.journal")
    holder = _start_holder(journal)
    try:
        assert not _lock_is_free(journal)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert _lock_is_free(journal)


def test_ctrl_c_while_waiting_does_not_release_the_holders_lock(tmp_path):
    journal = str(tmp_path / "optuna.journal")
    holder = _start_holder(journal)
    try:
        waiter = subprocess.Popen([sys.executable, "-c", HOLD, journal], env=cli_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        time.sleep(2.0)  # the waiter has imported and now blocks in acquire()
        assert waiter.poll() is None
        waiter.send_signal(signal.SIGINT)
        _, err = waiter.communicate(timeout=30)
        assert "KeyboardInterrupt" in err
        assert not _lock_is_free(journal)  # still the holder's
    finally:
        holder.kill()
        holder.wait()


# ---- a failed write -------------------------------------------------------------------------------
def _journal_with_trials(tmp_path: Path, n: int = 3) -> Path:
    url = default_storage_url(tmp_path)
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    for i in range(n):
        t = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        study.tell(t, float(i))
    return Path(url.split(":", 1)[1])


def _plain_optuna_reads(journal: Path) -> int:
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    return len(optuna.load_study(study_name="s", storage=storage).trials)


def test_a_torn_last_line_is_cut_before_the_next_append(tmp_path):
    journal = _journal_with_trials(tmp_path)
    with open(journal, "ab") as f:  # what a write that failed with ENOSPC leaves
        f.write(b'{"op_code":4,"worker_id":"TORN","study_id":0,"datetime_sta')
    study = optuna.load_study(study_name="s", storage=open_storage(default_storage_url(tmp_path)))
    study.set_user_attr("after", "the torn write")  # the next append
    assert journal.read_bytes().endswith(b"\n") and b'"TORN"' not in journal.read_bytes()
    assert _plain_optuna_reads(journal) == 3  # Optuna itself reads it again, as do resume and the report
    assert optuna.load_study(study_name="s", storage=open_storage(default_storage_url(tmp_path))
                             ).user_attrs["after"] == "the torn write"


def test_a_garbled_line_names_itself_and_the_repair_command_which_fixes_it(tmp_path):
    journal = _journal_with_trials(tmp_path)
    lines = journal.read_bytes().splitlines(keepends=True)
    original = b"".join(lines[:3] + [b'{"op_code": 5, "study_id\x00\x00garbage\n'] + lines[3:])
    journal.write_bytes(original)
    with pytest.raises(JournalCorrupt) as err:
        optuna.load_study(study_name="s", storage=open_storage(default_storage_url(tmp_path)))
    repair = f"python -m trpo_lab.sweeper repair {journal}"
    assert "line 4 " in str(err.value) and repair in str(err.value) and "\n" not in str(err.value)

    # The sweeper on that journal: the same one line, no traceback.
    app = write_app(tmp_path / "app", SPHERE, SPHERE_CONF)
    r = run_app(app, f"hydra.sweep.dir={tmp_path}", "hydra.sweeper.study_name=s", timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"trpo_optuna: error: {journal}: line 4 ")
    # The report skips it for that reason.
    ((_, why),) = collect_inputs([str(journal)]).skipped
    assert "line 4" in why and repair in why

    r = subprocess.run([sys.executable, "-m", "trpo_lab.sweeper", "repair", str(journal)], env=cli_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    (backup,) = journal.parent.glob("optuna.journal.bak-*")
    assert backup.read_bytes() == original
    assert "dropped line 4 of" in r.stdout and str(backup) in r.stdout
    assert _plain_optuna_reads(journal) == 3
    r = subprocess.run([sys.executable, "-m", "trpo_lab.sweeper", "repair", str(journal)], env=cli_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "nothing to repair" in r.stdout

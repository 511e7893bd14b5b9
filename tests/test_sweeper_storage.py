"""The journal file's lock survives what Optuna's default lock does not: kill -9 and Ctrl-C."""
import fcntl
import os
import signal
import subprocess
import sys
import time

from conftest import cli_env

HOLD = """
import sys, time
from trpo_lab.sweeper.storage import FlockLock
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

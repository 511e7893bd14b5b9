"""What the worker processes share: the start method and the wait on a semaphore.

trpo_lab's worker processes (environment workers, `envs.SubprocVecEnv`; the
critic-fit worker, `value_fit.FitWorker`) exchange arrays through shared memory
and hand work back and forth with two semaphores per worker: the parent
releases `go` once the inputs are written, the worker releases `done` once
the outputs are. Both sides wait by polling their semaphore for up to SPIN_S
before blocking on it, because waking a process blocked in the kernel costs
tens of microseconds on a VM, a large part of a 150 us MuJoCo step. Polling
a semaphore needs no system call, and semaphore operations are memory
barriers: what one side wrote before a release is visible to the other after
the matching acquire. Pipes carry only rare payloads and error messages.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from typing import Callable

SPIN_S = 0.002


def context():
    """The multiprocessing context for workers: forkserver where there is one (no fork of a torch process)."""
    return mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")


def wait(sem, alive: Callable[[], bool] | None = None, spin_s: float = SPIN_S) -> None:
    """Acquire `sem`: poll for up to spin_s, then block, checking `alive()` every second.

    Raises EOFError when `alive()` says the process that should release it is gone.
    """
    if sem.acquire(False):
        return
    deadline = time.perf_counter() + spin_s
    while time.perf_counter() < deadline:
        if sem.acquire(False):
            return
        os.sched_yield()  # let a process that shares this core run
    while not sem.acquire(timeout=1.0):
        if alive is not None and not alive():
            raise EOFError("the process that should release the semaphore is gone")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def parent_alive(parent_pid: int) -> Callable[[], bool]:
    """For a worker's `wait`: whether the process that started it still runs."""
    return lambda: pid_alive(parent_pid)

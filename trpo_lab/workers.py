"""What the worker processes share: the start method and the wait on a semaphore.

trpo_lab's worker processes (environment workers, `vec_env.SubprocVecEnv`;
rollout workers, `rollout_worker.py`; the critic-fit worker,
`value_fit.FitWorker`) exchange arrays through shared memory
and hand work back and forth with two semaphores per worker: the parent
releases `go` once the inputs are written, the worker releases `done` once
the outputs are. Both sides wait by polling their semaphore for a while (`Waiter`)
before blocking on it, because waking a process blocked in the kernel costs
tens of microseconds on a VM, a large part of a 150 us MuJoCo step. Polling
a semaphore needs no system call, and semaphore operations are memory
barriers: what one side wrote before a release is visible to the other after
the matching acquire. Pipes carry only rare payloads and error messages.

The worker's side of the protocol is one loop, `serve`; each worker supplies
what it builds at start-up and its step (a batch of environment steps, a
critic fit, a vector-env command). A worker reports each step's outcome as
OK or FAILED in a status word in shared memory, with the error's message on
its pipe.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from typing import Any, Callable

import numpy as np
from threadpoolctl import threadpool_limits

SPIN_S = 0.002
OK, FAILED = 0, 1  # a worker's status word after each hand-back


def context():
    """The multiprocessing context for workers: forkserver where there is one (no fork of a torch process)."""
    return mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")


class SharedArrays:
    """Named numpy arrays in shared memory, each of its own shape and dtype: made by the parent
    from spec {name: (shape, dtype)}, passed to workers as process arguments, viewed as arrays
    on both sides (`views`)."""

    def __init__(self, ctx, spec: dict[str, tuple[tuple[int, ...], Any]]):
        self.spec = {name: (tuple(shape), np.dtype(dtype).str) for name, (shape, dtype) in spec.items()}
        self.raw = {name: ctx.RawArray("B", max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize))
                    for name, (shape, dtype) in self.spec.items()}

    def views(self) -> dict[str, np.ndarray]:
        return {name: np.frombuffer(self.raw[name], dtype=dtype, count=int(np.prod(shape))).reshape(shape)
                for name, (shape, dtype) in self.spec.items()}


class Waiter:
    """Acquires one semaphore: polls it for up to `spin_s`, then blocks on it.

    The polling time adapts: it doubles (up to SPIN_S) after a wait that
    polling ended, and halves (down to MIN_SPIN_S) after one that had to
    block. A peer that answers within microseconds, as the other side of a
    step does when both have a core, is caught by polling; on an oversubscribed
    machine, where the peer may not run for a scheduler slice, the waits block
    almost at once instead of burning the core the peer is waiting for.
    `alive()` is checked every second of blocking; EOFError when it says the
    process that should release the semaphore is gone.
    """

    MIN_SPIN_S = 20e-6

    def __init__(self, sem, alive: Callable[[], bool] | None = None):
        self.sem, self.alive, self.spin_s = sem, alive, SPIN_S

    def wait(self) -> None:
        sem = self.sem
        if sem.acquire(False):
            return
        deadline = time.perf_counter() + self.spin_s
        while time.perf_counter() < deadline:
            os.sched_yield()  # let a process that shares this core run
            if sem.acquire(False):
                self.spin_s = min(SPIN_S, 2.0 * self.spin_s)
                return
        self.spin_s = max(self.MIN_SPIN_S, 0.5 * self.spin_s)
        while not sem.acquire(timeout=1.0):
            if self.alive is not None and not self.alive():
                raise EOFError("the process that should release the semaphore is gone")


def blas_threads(n: int):
    """numpy's BLAS limited to n threads (restored when used as a context manager, and left
    so otherwise): trpo_lab's products are small, and OpenBLAS's default, a thread per core,
    keeps its threads spinning for a while after each product, on the cores that the
    other processes of a run (or the other jobs of a sweep) are stepping environments on."""
    return threadpool_limits(limits=n, user_api="blas")


def describe(err: BaseException) -> bytes:
    """A worker's exception as the message its parent raises (bounded: it travels on a pipe)."""
    return f"{type(err).__name__}: {err}"[:4000].encode()


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


def serve(start: Callable[[], Callable[[], bool]], go, done, status, slot: int, errors, parent_pid: int,
          stop_on_error: bool = False) -> None:
    """A worker process's life: start up, then one step per release of `go`, until a step says stop.

    `start()` builds what the worker needs (its environments, buffers) and
    returns its step; `step()` reads its command from shared memory, does the
    work, writes its results there and returns False to stop the worker
    (nothing is handed back then). After start-up and after each step the
    worker writes OK or FAILED to `status[slot]` (with the error's message on
    `errors`) and releases `done`. A failed start-up ends the worker, and so
    does a failed step with `stop_on_error`. Ctrl-C (it reaches the whole
    process group) and a parent that is gone (EOFError) end it quietly; the
    caller closes what start built.
    """
    try:
        try:
            step = start()
            status[slot] = OK
        except (KeyboardInterrupt, EOFError):
            raise
        except Exception as err:
            status[slot] = FAILED
            errors.send_bytes(describe(err))
            return
        finally:
            done.release()  # ready, or failed: the parent waits for this before its first command
        wait_go = Waiter(go, alive=parent_alive(parent_pid))
        while True:
            wait_go.wait()  # EOFError when the parent is gone
            try:
                if not step():
                    return
                status[slot] = OK
            except (KeyboardInterrupt, EOFError):
                raise
            except Exception as err:  # reported to the parent, which raises it
                status[slot] = FAILED
                errors.send_bytes(describe(err))
                if stop_on_error:
                    done.release()
                    return
            done.release()
    except (KeyboardInterrupt, EOFError):
        pass

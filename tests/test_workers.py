"""The handover wait of the worker processes: polls, then blocks, and adapts how long it polls."""
import threading
import time

import pytest

from trpo_lab import workers


def _release_after(sem, seconds: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), sem.release()))
    thread.start()
    return thread


def test_a_wait_that_had_to_block_halves_the_polling_and_a_quick_one_doubles_it():
    sem = workers.context().Semaphore(0)
    waiter = workers.Waiter(sem)
    assert waiter.spin_s == workers.SPIN_S
    _release_after(sem, 0.05).join(0)  # released long after the 2 ms of polling
    waiter.wait()
    assert waiter.spin_s == pytest.approx(workers.SPIN_S / 2)
    for _ in range(20):  # an oversubscribed machine: polling shrinks to its floor, never to nothing
        _release_after(sem, 0.01)
        waiter.wait()
    assert waiter.spin_s == pytest.approx(workers.Waiter.MIN_SPIN_S)
    sem.release()
    waiter.wait()  # already released: taken at once, the polling time unchanged
    assert waiter.spin_s == pytest.approx(workers.Waiter.MIN_SPIN_S)
    waiter.spin_s = 1.0  # a generous window: released within it by another thread
    thread = _release_after(sem, 0.001)
    waiter.wait()
    thread.join()
    assert waiter.spin_s == workers.SPIN_S  # doubled, capped


def test_a_wait_for_a_dead_peer_ends_with_eof_not_a_hang():
    waiter = workers.Waiter(workers.context().Semaphore(0), alive=lambda: False)
    start = time.perf_counter()
    with pytest.raises(EOFError):
        waiter.wait()
    assert time.perf_counter() - start < 5

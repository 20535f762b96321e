"""The worker pool: every worker runs once, worker 0 on the caller, errors surface."""
import threading
import time

import pytest

from tapejit._runtime.threads import run_workers


def test_every_worker_runs_once_and_the_caller_runs_worker_zero():
    seen = []
    lock = threading.Lock()

    def work(worker, n_workers, tag):
        with lock:
            seen.append((worker, n_workers, tag, threading.get_ident()))

    run_workers(work, 3, "x")
    assert sorted(s[:3] for s in seen) == [(0, 3, "x"), (1, 3, "x"), (2, 3, "x")]
    by_worker = {s[0]: s[3] for s in seen}
    assert by_worker[0] == threading.get_ident()
    assert by_worker[1] != threading.get_ident()


@pytest.mark.parametrize("failing", [0, 1])
def test_an_error_in_any_worker_is_raised_after_all_have_ended(failing):
    finished = []

    def work(worker, n_workers):
        if worker == failing:
            raise ValueError(f"worker {worker} failed")
        time.sleep(0.05)                   # still running when the failure happens
        finished.append(worker)

    with pytest.raises(ValueError, match=f"worker {failing} failed"):
        run_workers(work, 2)
    assert finished == [1 - failing]

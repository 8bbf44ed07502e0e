"""Process helpers (procutil) on this real process."""

import os
import threading

from voxfleet.procutil import can_renice_back, set_threads_nice


def nices() -> set[int]:
    return {os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir("/proc/self/task")}


def test_every_thread_is_reniced_and_back():
    if not can_renice_back(5):
        import pytest

        pytest.skip("this user may not raise a thread's priority again")
    release = threading.Event()
    worker = threading.Thread(target=release.wait)  # a thread started before: Linux nices per thread
    worker.start()
    try:
        assert set_threads_nice(5) >= 2 and nices() == {5}
        late = threading.Thread(target=release.wait)  # a thread started meanwhile inherits its creator's
        late.start()
        assert nices() == {5}
        assert set_threads_nice(0) >= 3 and nices() == {0}
    finally:
        release.set()
        worker.join()
        late.join()

"""The liveness verdict (runtime/liveness.py), pure; and the /proc state it is fed, for real."""

import os
import signal
import subprocess
import time

from voxfleet.procutil import proc_state
from voxfleet.runtime.liveness import Liveness, LivenessLimits


def test_a_process_stopped_for_the_limit_is_dead_a_brief_stop_is_not():
    live = Liveness(LivenessLimits(stopped_s=3, unresponsive_s=15))
    assert live.sample(0.0, "S") is None
    assert live.sample(1.0, "T") is None and live.sample(3.9, "t") is None
    assert live.sample(4.0, "T") == "stopped (state T) for 3s"
    live = Liveness(LivenessLimits(stopped_s=3))
    assert live.sample(0.0, "T") is None and live.sample(2.0, "R") is None  # resumed: the clock restarts
    assert live.sample(4.0, "T") is None and live.sample(6.9, "T") is None and live.sample(7.0, "T")


def test_a_bot_that_sends_nothing_for_the_limit_is_hung():
    live = Liveness(LivenessLimits(unresponsive_s=15))
    assert live.sample(100.0, "S", last_heard=90.0) is None
    assert live.sample(105.0, "R", last_heard=90.0) == "sent nothing for 15s (its event loop is blocked)"
    assert live.sample(105.0, "S", last_heard=None) is None  # not connected yet: nothing to expect
    assert live.sample(105.0, None, last_heard=0.0) is None  # gone: reported by whoever reaps it


def test_proc_state_reads_a_real_process():
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert proc_state(child.pid) in ("S", "R")
        os.kill(child.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while proc_state(child.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc_state(child.pid) == "T"
    finally:
        child.kill()
        child.wait()
    assert proc_state(child.pid) is None

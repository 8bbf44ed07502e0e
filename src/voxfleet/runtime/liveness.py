"""Is a process of ours still alive in any useful sense? (pure: state in, verdict out)

A bot (or template) that is killed is reported at once by whoever reaps it; one that is
*stopped* (SIGSTOP, a debugger that never detached) or whose event loop hangs is not, and its
caller would hear silence for as long as the call lasts. The local backend samples each
process's scheduler state (``/proc/PID/stat``) and when it last heard from each bot about once a
second, and kills what this judges dead; the kill is then reported like any other crash, so the
caller is told and the reservation freed.
"""

from __future__ import annotations

from dataclasses import dataclass

STOPPED_STATES = frozenset("Tt")  # stopped by a signal, or by a tracer


@dataclass(frozen=True)
class LivenessLimits:
    stopped_s: float = 3.0  # stopped this long: dead (a profiler's attach stops it for milliseconds)
    unresponsive_s: float = 15.0  # a bot that sent nothing (not even its heartbeat) this long: hung


class Liveness:
    """One process's liveness, fed a sample at a time."""

    def __init__(self, limits: LivenessLimits) -> None:
        self.limits = limits
        self.stopped_since: float | None = None

    def sample(self, now: float, state: str | None, last_heard: float | None = None) -> str | None:
        """Why the process should be killed now (None: it is fine). `state`: its /proc state
        letter (None: gone); `last_heard`: when it last sent anything (None: not a bot, or not
        connected yet)."""
        if state is None:
            return None  # gone: its exit is reported elsewhere
        if state in STOPPED_STATES:
            self.stopped_since = self.stopped_since if self.stopped_since is not None else now
            if now - self.stopped_since >= self.limits.stopped_s:
                return f"stopped (state {state}) for {now - self.stopped_since:.0f}s"
            return None
        self.stopped_since = None
        if last_heard is not None and now - last_heard >= self.limits.unresponsive_s:
            return f"sent nothing for {now - last_heard:.0f}s (its event loop is blocked)"
        return None

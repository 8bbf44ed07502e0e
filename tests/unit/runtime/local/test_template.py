"""The template process when os.fork() fails: it reports ForkFailed for that bot and serves on.

A real Template runs in its own process, held to one process so that its fork fails with
EAGAIN: in a pids cgroup with pids.max 1 when the tests run as root (root is exempt from
RLIMIT_NPROC), else under RLIMIT_NPROC 0. The test plays the control plane's end of its socket.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from voxfleet.runtime import messages as m

SPEC = m.BotSpec(agent="tone", bot="tone.py", log_level="INFO", log_format="text", idle_timeout_s=5.0,
                 reconnect_s=1.0, memory_check_s=1.0)
SERVE = ("import sys; from voxfleet.runtime.local.template import Template; "
         "from voxfleet.runtime.messages import BotSpec; "
         "Template(sys.argv[1], BotSpec.from_json(sys.argv[2])).serve({'import_s': 0.0, 'preload_s': 0.0})")
PIDS = Path("/sys/fs/cgroup/pids")  # cgroup v1's pids controller


def no_process_of_its_own() -> None:
    """Before exec, in the template's process (not root): its user may start no more processes."""
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))


@contextlib.contextmanager
def held_to_one_process(pid: int) -> Iterator[None]:
    """As root: `pid` in a pids cgroup where it is the only process allowed."""
    if os.geteuid() != 0:
        yield  # RLIMIT_NPROC holds it (no_process_of_its_own)
        return
    group = PIDS / f"voxfleet-test-{pid}"
    try:
        group.mkdir()
        (group / "pids.max").write_text("1")
        (group / "cgroup.procs").write_text(str(pid))
    except OSError as exc:
        if group.exists():
            group.rmdir()
        pytest.skip(f"no pids cgroup to hold the template to one process ({exc})")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            (PIDS / "cgroup.procs").write_text(str(pid))
        group.rmdir()


def test_a_fork_that_fails_is_reported_and_the_template_serves_on():
    path = os.path.join(tempfile.mkdtemp(prefix="vf-"), "control.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(30)
    template = subprocess.Popen([sys.executable, "-c", SERVE, path, SPEC.to_json()], cwd=ROOT,
                                preexec_fn=None if os.geteuid() == 0 else no_process_of_its_own,
                                stdin=subprocess.DEVNULL)
    link: socket.socket | None = None
    try:
        link, _ = listener.accept()
        link.settimeout(10)
        lines = link.makefile("rb")
        ready = m.decode(lines.readline())
        assert isinstance(ready, m.TemplateReady) and ready.pid == template.pid
        with held_to_one_process(template.pid):
            for bot_id in ("b-1", "b-2"):  # the second proves it survived the first
                link.sendall(m.encode(m.Fork(bot_id=bot_id)))
                failed = m.decode(lines.readline())
                assert isinstance(failed, m.ForkFailed) and failed.bot_id == bot_id
                assert failed.error.startswith("fork: [Errno 11]")  # EAGAIN
            link.sendall(m.encode(m.Shutdown()))
            assert template.wait(10) == 0
        lines.close()
    finally:
        if template.poll() is None:
            template.kill()
            template.wait()
        if link is not None:
            link.close()
        listener.close()

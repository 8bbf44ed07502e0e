"""The local backend when its template stalls, dies or cannot fork: every wait bounded.

A real LocalBackend listens on its real control socket; the test plays the template's end of the
link (TemplateReady, then answering each Fork, or not). Where a pid is needed, it is a real
`sleep` process standing in for the template or a forked bot, so kills and exits are real.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from voxfleet.exceptions import BotStartFailed, NotReady
from voxfleet.runtime import messages as m
from voxfleet.runtime.local.backend import KILL_CONFIRM_S, LocalBackend, LocalBot

SPEC = m.BotSpec(agent="tone", bot="tone.py", log_level="INFO", log_format="text", idle_timeout_s=5.0,
                 reconnect_s=1.0, memory_check_s=1.0)


class FakeTemplate:
    """The template's end of the control link; `process` is the real process standing in for it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 process: asyncio.subprocess.Process) -> None:
        self.reader, self.writer, self.process = reader, writer, process

    async def next_fork(self) -> m.Fork:
        message = m.decode(await asyncio.wait_for(self.reader.readline(), 5))
        assert isinstance(message, m.Fork)
        return message

    def send(self, message: m.Message) -> None:
        self.writer.write(m.encode(message))


async def sleeper() -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec("sleep", "60")


async def backend_with_template(**settings) -> tuple[LocalBackend, FakeTemplate]:
    backend = LocalBackend({"tone": SPEC}, runtime_dir=Path(tempfile.mkdtemp(prefix="vf-")), cpu_shares=False,
                           **{"bot_start_timeout": 20.0, **settings})
    await backend.listen()
    reader, writer = await asyncio.open_unix_connection(backend.socket_path)
    process = await sleeper()
    writer.write(m.encode(m.TemplateReady(agent="tone", pid=process.pid, import_s=0.0, preload_s=0.0)))
    await asyncio.wait_for(backend.templates["tone"].ready.wait(), 5)
    return backend, FakeTemplate(reader, writer, process)


async def close(backend: LocalBackend, template: FakeTemplate) -> None:
    template.writer.close()
    if template.process.returncode is None:
        template.process.kill()
    await template.process.wait()
    await backend.aclose()


async def test_a_fork_the_template_cannot_make_fails_the_launch_at_once():
    backend, template = await backend_with_template()
    try:
        launch = asyncio.create_task(backend.launch("tone", "b-1"))
        fork = await template.next_fork()
        template.send(m.ForkFailed(bot_id=fork.bot_id, error="fork: [Errno 11] Resource temporarily unavailable"))
        with pytest.raises(BotStartFailed, match="could not fork bot b-1: fork: .Errno 11."):
            await asyncio.wait_for(launch, 1)
        await asyncio.sleep(0)
        assert not backend.bots and backend.templates["tone"].ready.is_set()  # the template serves on
    finally:
        await close(backend, template)


async def test_a_stalled_template_is_killed_and_its_launch_fails_after_the_fork_timeout():
    backend, template = await backend_with_template(fork_timeout=0.5)
    try:
        started = time.monotonic()
        launch = asyncio.create_task(backend.launch("tone", "b-1", session_id="s-1"))
        await template.next_fork()  # and no answer
        with pytest.raises(BotStartFailed, match=r"template \(pid \d+\) did not fork bot b-1 within 0.5s"):
            await asyncio.wait_for(launch, 5)
        assert time.monotonic() - started < 2
        assert await asyncio.wait_for(template.process.wait(), 2) == -signal.SIGKILL
        with pytest.raises(NotReady):  # until its supervisor's new template connects
            await backend.launch("tone", "b-2")
    finally:
        await close(backend, template)


async def test_a_closed_template_link_fails_every_unforked_launch_at_once():
    backend, template = await backend_with_template()
    try:
        launches = [asyncio.create_task(backend.launch("tone", "b-1")),
                    asyncio.create_task(backend.launch("tone", "b-2", session_id="s-2"))]
        await template.next_fork()
        await template.next_fork()
        template.writer.close()  # the template died
        for launch in launches:
            with pytest.raises(BotStartFailed, match="was not forked: its template .* closed its control link"):
                await asyncio.wait_for(launch, 1)
        assert not backend.templates["tone"].ready.is_set()
    finally:
        await close(backend, template)


async def test_a_bot_forked_by_a_template_that_died_is_watched_by_its_pid():
    backend, template = await backend_with_template()
    child = await sleeper()
    try:
        launch = asyncio.create_task(backend.launch("tone", "b-1"))
        fork = await template.next_fork()
        template.send(m.Forked(bot_id=fork.bot_id, pid=child.pid))
        await asyncio.sleep(0.1)
        template.writer.close()  # no Exited will ever come for it
        await asyncio.sleep(0.1)
        child.kill()
        with pytest.raises(BotStartFailed, match="exited before it connected; its template is gone"):
            await asyncio.wait_for(launch, 2)
    finally:
        await child.wait()
        await close(backend, template)


async def test_a_fork_reported_after_its_launch_gave_up_is_killed():
    backend, template = await backend_with_template()
    child = await sleeper()
    try:
        launch = asyncio.create_task(backend.launch("tone", "b-1"))
        fork = await template.next_fork()
        await asyncio.wait_for(backend.bots["b-1"].stop("shutdown", grace=0), 1)  # not forked yet: ends at once
        with pytest.raises(BotStartFailed, match="stopped before its template forked it"):
            await launch
        template.send(m.Forked(bot_id=fork.bot_id, pid=child.pid))  # the template forked it anyway
        assert await asyncio.wait_for(child.wait(), 2) == -signal.SIGKILL
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await close(backend, template)


async def test_killing_a_bot_no_template_reaps_reports_its_exit():
    bot = LocalBot("b-1", "tone", "s-1")
    child = subprocess.Popen(["sleep", "60"])  # this test is its parent and does not reap it: a zombie
    try:
        bot.on_forked(child.pid)
        await asyncio.wait_for(bot.stop("hangup", grace=0), KILL_CONFIRM_S + 1)
        result = await bot.wait_exit()
        assert (result.reason, result.signal, result.detail) == ("hangup", signal.SIGKILL, "killed by SIGKILL")
    finally:
        child.kill()
        child.wait()


async def test_killing_a_bot_never_forked_ends_it_at_once():
    bot = LocalBot("b-1", "tone", None)
    await asyncio.wait_for(bot.stop("start_failed", grace=0), 0.1)
    result = await bot.wait_exit()
    assert (result.reason, result.exit_code, result.signal) == ("start_failed", None, None)
    assert "stopped before its template forked it" in result.detail
    with pytest.raises(BotStartFailed):
        await bot.warm_ready

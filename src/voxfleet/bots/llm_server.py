"""The local LLM: a llama.cpp server (llama-cpp-python) with a bundled GGUF, supervised.

It serves the OpenAI-compatible API on loopback; bots reach it as ``OPENAI_BASE_URL``. When
settings give an external ``base_url`` none is started and bots use that endpoint instead.

Bots in calls outlive a control plane that dies (they rejoin the next one), so their LLM must
too: the server runs in a session of its own and is described in ``llm-server.json`` in the
runtime directory (pid, port, settings, the control plane that owns it). The next control plane
adopts a healthy server with the same settings instead of starting one, and a server that dies
is started again on the same port: a bot's ``OPENAI_BASE_URL`` stays valid either way. A server
whose owner is gone for ``orphan_exit_s`` (longer than any bot waits to rejoin) exits itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from voxfleet.bots import models
from voxfleet.bots.fewshot_llm import CHAT_FORMAT
from voxfleet.exceptions import NotReady
from voxfleet.procutil import cmdline, die_with_parent, pid_alive

log = logging.getLogger(__name__)

MODULE = "voxfleet.bots.fewshot_llm"  # llama.cpp's server, with our chat format and orphan watchdog
STATE_FILE = "llm-server.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class LocalLLMServer:
    def __init__(self, *, model: str, alias: str, port: int, threads: int, ctx: int, cache_dir: Path,
                 warm_up_messages: list[dict[str, str]] | None = None, state_dir: Path | None = None,
                 orphan_exit_s: float = 120.0, health_every_s: float = 5.0) -> None:
        self.model = model
        self.alias = alias
        self.port = port
        self.threads = threads
        self.ctx = ctx
        self.cache_dir = cache_dir
        self.warm_up_messages = warm_up_messages or [{"role": "user", "content": "Hello"}]
        self.state_file = state_dir / STATE_FILE if state_dir is not None else None
        self.orphan_exit_s = orphan_exit_s
        self.health_every_s = health_every_s
        self.process: asyncio.subprocess.Process | None = None
        self.pid: int | None = None
        self.adopted = False  # the running server was started by an earlier control plane
        self.restarts = 0
        self._ready = False
        self._supervisor: asyncio.Task | None = None
        self._closing = False
        self._choose_port()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def ready(self) -> bool:
        return self._ready

    def gguf(self) -> Path:
        if self.model == "gemma3-270m":
            return models.gemma3_gguf(self.cache_dir)
        return models.smollm2_gguf()

    def status(self) -> dict[str, Any]:
        return {"ready": self._ready, "pid": self.pid, "port": self.port, "adopted": self.adopted,
                "restarts": self.restarts}

    # -- the state file: what outlives a control plane ------------------------------------------
    def settings(self) -> dict[str, Any]:
        return {"model": self.model, "alias": self.alias, "threads": self.threads, "ctx": self.ctx}

    def _read_state(self) -> dict[str, Any] | None:
        if self.state_file is None:
            return None
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    def _write_state(self) -> None:
        if self.state_file is None or self.pid is None:
            return
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": self.pid, "port": self.port, "settings": self.settings(),
                                   "owner_pid": os.getpid()}))
        tmp.replace(self.state_file)

    def _choose_port(self) -> None:
        """The configured port; else the last server's (bots that outlived it still use it)."""
        if self.port:
            return
        state = self._read_state()
        last = state.get("port") if state else None
        if isinstance(last, int) and (port_free(last) or self._ours(state)):
            self.port = last
        else:
            self.port = free_port()

    def _ours(self, state: dict[str, Any] | None) -> bool:
        """Whether `state` names a live server of ours on its port (not a reused pid)."""
        pid = state.get("pid") if state else None
        if not isinstance(pid, int) or not pid_alive(pid):
            return False
        args = cmdline(pid)
        return MODULE in args and "--port" in args and args[args.index("--port") + 1:][:1] == [str(state["port"])]

    async def _adopt(self) -> bool:
        state = self._read_state()
        if not self._ours(state) or state is None or state.get("port") != self.port:
            return False
        pid = int(state["pid"])
        if state.get("settings") != self.settings() or not await self._healthy():
            log.warning("local LLM: the running server pid %s has other settings or does not answer; replacing it",
                        pid)
            await _terminate(pid)
            return False
        self.pid, self.adopted, self._ready = pid, True, True
        self._write_state()
        log.info("local LLM %s: adopted the running server pid %s on %s (it outlived the last control plane)",
                 self.alias, pid, self.base_url)
        return True

    # -- running it -------------------------------------------------------------------------------
    async def start(self, timeout: float = 120.0) -> None:
        started = asyncio.get_running_loop().create_future()
        if await self._adopt():
            started.set_result(None)
        self._supervisor = asyncio.create_task(self._supervise(started), name="llm-server")
        try:
            await asyncio.wait_for(asyncio.shield(started), timeout)
        except asyncio.TimeoutError:
            raise NotReady(f"local LLM did not answer on {self.base_url} within {timeout:.0f}s") from None

    async def _supervise(self, started: asyncio.Future) -> None:
        backoff = 1.0
        while not self._closing:
            if self.pid is None:
                t0 = time.monotonic()
                await self._spawn()
                if await self._wait_healthy():
                    await self._warm_up()
                    self._ready = True
                    log.info("local LLM %s ready on %s in %.1fs", self.alias, self.base_url, time.monotonic() - t0)
                    if not started.done():
                        started.set_result(None)
            why = await self._watch()
            self._ready = False
            if self._closing:
                return
            self.restarts += 1
            log.error("local LLM server %s; starting it again on %s in %.0fs", why, self.base_url, backoff)
            self.pid, self.process, self.adopted = None, None, False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30)

    async def _spawn(self) -> None:
        base_model = self.model == "gemma3-270m"
        chat_format = ["--chat_format", CHAT_FORMAT] if base_model else []
        owner = ["--owner_file", str(self.state_file), "--orphan_exit_s", str(self.orphan_exit_s)] \
            if self.state_file is not None else []
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", MODULE, *owner, *chat_format, "--model", str(self.gguf()),
            "--model_alias", self.alias, "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(self.ctx), "--n_threads", str(self.threads), "--verbose", "False",
            # llama-cpp-python's default ends a streaming answer as soon as another request
            # arrives: with two calls on the node, each question cut the other's answer off
            # (one caller heard nothing). Requests wait their turn instead.
            "--interrupt_requests", "False",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            # With a state file it outlives its control plane (live bots still need it) and
            # watches for an owner; without one (a benchmark's server) it dies with its parent.
            start_new_session=self.state_file is not None,
            preexec_fn=None if self.state_file is not None else die_with_parent,
        )
        self.pid = self.process.pid
        self._write_state()

    async def _watch(self) -> str:
        """Until the server dies, or stops answering three health checks in a row: why it ended."""
        misses = 0
        while True:
            if self.process is not None:
                try:
                    code = await asyncio.wait_for(self.process.wait(), self.health_every_s)
                    return f"exited with {code}"
                except asyncio.TimeoutError:
                    pass
            else:
                await asyncio.sleep(self.health_every_s)
                if self.pid is None or not pid_alive(self.pid):
                    return "exited"
            if not self._ready:
                continue  # still loading
            misses = 0 if await self._healthy() else misses + 1
            if misses >= 3:
                assert self.pid is not None
                await _terminate(self.pid, grace=0)
                return f"did not answer {misses} health checks"

    async def _healthy(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                return (await client.get(f"{self.base_url}/models")).status_code == 200
        except httpx.HTTPError:
            return False

    async def _wait_healthy(self) -> bool:
        async with httpx.AsyncClient(timeout=2.0) as client:
            while self.process is not None and self.process.returncode is None:
                try:
                    if (await client.get(f"{self.base_url}/models")).status_code == 200:
                        return True
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        return False

    async def _warm_up(self) -> None:
        """One tiny completion, so the first caller does not pay for paging the weights in."""
        try:
            async with httpx.AsyncClient(timeout=60.0) as client:
                await client.post(f"{self.base_url}/chat/completions", json={
                    "model": self.alias, "max_tokens": 1, "messages": self.warm_up_messages})
        except httpx.HTTPError as exc:
            log.warning("local LLM warm-up failed: %s", exc)

    async def aclose(self) -> None:
        """Stop the server (an orderly shutdown ends every bot first, so none needs it)."""
        self._closing = True
        if self._supervisor:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        if self.pid is not None:
            await _terminate(self.pid)
            if self.process is not None:
                await self.process.wait()
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)


async def _terminate(pid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if grace == 0 and signum == signal.SIGTERM:
            continue
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            await asyncio.sleep(0.05)

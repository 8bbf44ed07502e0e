"""The local LLM: a llama.cpp server (llama-cpp-python) with a bundled GGUF, supervised.

It serves the OpenAI-compatible API on loopback; bots reach it as ``OPENAI_BASE_URL``. When
settings give an external ``base_url`` none is started and bots use that endpoint instead.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from pathlib import Path

import httpx

from voxfleet.bots import models
from voxfleet.bots.fewshot_llm import CHAT_FORMAT
from voxfleet.procutil import die_with_parent
from voxfleet.exceptions import NotReady

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalLLMServer:
    def __init__(self, *, model: str, alias: str, port: int, threads: int, ctx: int, cache_dir: Path,
                 warm_up_messages: list[dict[str, str]] | None = None) -> None:
        self.model = model
        self.alias = alias
        self.port = port or free_port()
        self.threads = threads
        self.ctx = ctx
        self.cache_dir = cache_dir
        self.warm_up_messages = warm_up_messages or [{"role": "user", "content": "Hello"}]
        self.process: asyncio.subprocess.Process | None = None
        self._ready = False
        self._supervisor: asyncio.Task | None = None
        self._closing = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def ready(self) -> bool:
        return self._ready

    def gguf(self) -> Path:
        if self.model == "gemma3-270m":
            return models.gemma3_gguf(self.cache_dir)
        return models.smollm2_gguf()

    async def start(self, timeout: float = 120.0) -> None:
        started = asyncio.get_running_loop().create_future()
        self._supervisor = asyncio.create_task(self._supervise(started), name="llm-server")
        try:
            await asyncio.wait_for(asyncio.shield(started), timeout)
        except asyncio.TimeoutError:
            raise NotReady(f"local LLM did not answer on {self.base_url} within {timeout:.0f}s") from None

    async def _supervise(self, started: asyncio.Future) -> None:
        backoff = 1.0
        while not self._closing:
            t0 = time.monotonic()
            base_model = self.model == "gemma3-270m"
            module = "voxfleet.bots.fewshot_llm" if base_model else "llama_cpp.server"
            chat_format = ["--chat_format", CHAT_FORMAT] if base_model else []
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", module, *chat_format, "--model", str(self.gguf()),
                "--model_alias", self.alias, "--host", "127.0.0.1", "--port", str(self.port),
                "--n_ctx", str(self.ctx), "--n_threads", str(self.threads), "--verbose", "False",
                # llama-cpp-python's default ends a streaming answer as soon as another request
                # arrives: with two calls on the node, each question cut the other's answer off
                # (one caller heard nothing). Requests wait their turn instead.
                "--interrupt_requests", "False",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
            if await self._wait_healthy():
                await self._warm_up()
                self._ready = True
                log.info("local LLM %s ready on %s in %.1fs", self.alias, self.base_url, time.monotonic() - t0)
                if not started.done():
                    started.set_result(None)
            code = await self.process.wait()
            self._ready = False
            if self._closing:
                return
            log.error("local LLM server exited with %s; restarting in %.0fs", code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30)

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
        self._closing = True
        if self.process and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except asyncio.TimeoutError:
                self.process.kill()
        if self._supervisor:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)

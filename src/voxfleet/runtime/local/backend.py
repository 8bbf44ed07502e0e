"""Local backend: one template process per agent on this machine, one forked child per session.

The control plane listens on a UNIX socket. Templates connect to it when ready; each forked bot
connects to it too and is matched to its session by id. Templates report every child's exit
(code or signal) the moment they reap it, which is how a ``kill -9`` shows up as ``crashed``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

from voxfleet.procutil import die_with_parent
from voxfleet.exceptions import BotError, BotStartFailed, NotReady, SignalingTimeout
from voxfleet.runtime import wire
from voxfleet.runtime.local.cgroups import CpuLimiter
from voxfleet.runtime.local.node import pss_mb
from voxfleet.runtime.messages import (
    REPLIES,
    BotHello,
    BotResume,
    BotSpec,
    Ended,
    Exited,
    Fork,
    Forked,
    Message,
    Preload,
    Request,
    SessionStart,
    Stop,
    TemplateReady,
    WarmReady,
    decode,
    encode,
)
from voxfleet.runtime.model_preload import ModelManifests
from voxfleet.runtime.protocol import BotExit, BotInfo, IceServersFor, no_ice_servers
from voxfleet.runtime.remote_bot import RemoteBot
from voxfleet.tasks import BackgroundTasks

log = logging.getLogger(__name__)

class LocalBot(RemoteBot):
    """A forked bot process, seen from the control plane. Warm bots have no session yet."""

    def __init__(self, bot_id: str, agent: str, session_id: str | None,
                 ice_servers: IceServersFor = no_ice_servers) -> None:
        super().__init__(bot_id, agent, session_id, ice_servers, BotInfo())
        self.hello = asyncio.get_running_loop().create_future()
        self.warm_ready = asyncio.get_running_loop().create_future()
        self.on_assigned: Callable[[], None] = lambda: None
        self._writer: asyncio.StreamWriter | None = None
        self._requests: dict[int, asyncio.Future] = {}
        self._reported: Ended | None = None

    # -- messages from the bot process ------------------------------------------------------
    def attach(self, writer: asyncio.StreamWriter, pid: int) -> None:
        self._writer = writer
        self.info.pid = pid
        self.info.events["bot_ready"] = time.time()
        if not self.hello.done():
            self.hello.set_result(None)

    def on_message(self, message: Message) -> None:
        if isinstance(message, REPLIES):
            future = self._requests.pop(message.id, None)
            if future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, Ended):
            self._reported = message
        else:
            self.observe(message)
            if isinstance(message, WarmReady) and not self.warm_ready.done():
                self.warm_ready.set_result(None)

    def on_link_closed(self) -> None:
        for future in self._requests.values():
            if not future.done():
                future.set_exception(BotError(f"bot {self.bot_id} (session {self.session_id}) went away"))
        self._requests.clear()

    def on_exit(self, exit_code: int | None, signum: int | None) -> None:
        if self._exit.done():
            return
        if signum is not None:
            name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
            result = BotExit(self._stop_reason if self._stop_reason and signum in (signal.SIGTERM, signal.SIGKILL) else "crashed",
                             exit_code, signum, f"killed by {name}")
        elif self._reported is not None:
            result = BotExit(self._reported.reason, exit_code, None, self._reported.detail)
        elif self._stop_reason:
            result = BotExit(self._stop_reason, exit_code, None, "")
        else:
            result = BotExit("crashed", exit_code, None, f"exited with code {exit_code} without reporting")
        self.on_link_closed()
        if self.stream is not None:
            self.stream.on_bot_gone()
        for waiter in (self.hello, self.warm_ready):
            if not waiter.done():
                waiter.set_exception(BotStartFailed(f"bot {self.bot_id} died at start: {result.detail}"))
                waiter.exception()  # mark retrieved; launch() reports it
        self._exit.set_result(result)

    # -- RemoteBot, over the control socket -------------------------------------------------
    async def _exchange(self, request: Request, timeout: float) -> Message:
        if self._writer is None or self._writer.is_closing() or self._exit.done():
            raise BotError(f"bot {self.bot_id} (session {self.session_id}) is not running")
        request_id = request.id
        future = asyncio.get_running_loop().create_future()
        self._requests[request_id] = future
        self._writer.write(encode(request))
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise SignalingTimeout(self.session_id or self.bot_id, timeout) from None
        finally:
            self._requests.pop(request_id, None)

    def _on_assign(self) -> None:
        self.on_assigned()

    def _send(self, message: Message) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(encode(message))

    def _ask_stop(self, reason: str) -> None:
        self._send(Stop(reason=reason))

    def preload(self, models: list[dict[str, Any]]) -> None:
        """A warm bot: hold `models` for its session (runtime.model_preload)."""
        if self.session_id is None:
            self._send(Preload(models=models))

    def memory_mb(self) -> float | None:
        return pss_mb(self.info.pid) if self.info.pid else None

    def kill(self) -> None:
        if self.info.pid:
            try:
                os.kill(self.info.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class TemplateLink:
    """The control plane's view of one agent's template process."""

    def __init__(self, spec: BotSpec) -> None:
        self.agent = spec.agent
        self.spec = spec
        self.process: asyncio.subprocess.Process | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.ready = asyncio.Event()
        self.info: TemplateReady | None = None
        self.restarts = 0

    def status(self) -> dict[str, Any]:
        info = self.info
        return {"ready": self.ready.is_set(), "pid": info.pid if info else None, "restarts": self.restarts,
                "import_s": info.import_s if info else None, "preload_s": info.preload_s if info else None}


class LocalBackend:
    """Runs bots as children of per-agent template processes on this machine."""

    def __init__(
        self,
        specs: dict[str, BotSpec],  # agent -> its bots' settings
        *,
        runtime_dir: Path,
        ice_servers: IceServersFor = no_ice_servers,
        bot_start_timeout: float,
        env: dict[str, str] | None = None,
        template_start_timeout: float = 180.0,
        cpu_limits: dict[str, int] | None = None,
        cpu_shares: bool = True,
        preload_models: set[str] | None = None,
    ) -> None:
        self.templates = {name: TemplateLink(spec) for name, spec in specs.items()}
        self.socket_path = str(runtime_dir / "control.sock")
        self.ice_servers = ice_servers  # given to each bot with its session, credentials minted for it
        self.bot_start_timeout = bot_start_timeout
        self.template_start_timeout = template_start_timeout
        self.env = env or {}  # the bots' environment (secrets: never on a command line)
        self.bots: dict[str, LocalBot] = {}
        self.cpu_limits = cpu_limits or {}
        self.cpu = CpuLimiter(enabled=cpu_shares)
        self.on_resumed: Callable[[LocalBot], None] = lambda bot: bot.kill()  # replaced by the service
        self.on_nodes_changed: Callable[[], None] = lambda: None  # one machine: its nodes never change
        self.server: asyncio.AbstractServer | None = None
        self.tasks = BackgroundTasks(log)
        self.closing = False
        # Agents whose warm bots pre-build the models their bot built in its last session.
        self.manifests = ModelManifests(set(specs) if preload_models is None else preload_models)

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        self.server = await asyncio.start_unix_server(self._on_connection, self.socket_path, limit=wire.MAX_LINE)
        for link in self.templates.values():
            self.tasks.spawn(self._supervise(link), f"template:{link.agent}")
        waits = [asyncio.wait_for(link.ready.wait(), self.template_start_timeout) for link in self.templates.values()]
        try:
            await asyncio.gather(*waits)
        except asyncio.TimeoutError:
            late = [n for n, link in self.templates.items() if not link.ready.is_set()]
            raise NotReady(f"template for agent(s) {', '.join(late)} not ready after "
                           f"{self.template_start_timeout:.0f}s; see the log above") from None

    def ready(self) -> bool:
        return all(link.ready.is_set() for link in self.templates.values())

    def nodes(self) -> None:
        return None  # this machine, with the capacity the settings give

    def status(self) -> dict[str, Any]:
        return {"backend": "local", "templates": {n: link.status() for n, link in self.templates.items()},
                "bots": len(self.bots), "cpu_limits": self.cpu.mode}

    async def aclose(self) -> None:
        self.closing = True
        await asyncio.gather(*(bot.stop("shutdown", grace=2.0) for bot in list(self.bots.values())),
                             return_exceptions=True)
        for link in self.templates.values():
            if link.process and link.process.returncode is None:
                link.process.terminate()
        for link in self.templates.values():
            if link.process:
                try:
                    await asyncio.wait_for(link.process.wait(), 5)
                except asyncio.TimeoutError:
                    link.process.kill()
        await self.tasks.cancel_all()
        if self.server:
            self.server.close()
            await self.server.wait_closed()


    async def _supervise(self, link: TemplateLink) -> None:
        """Run the agent's template; start a new one if it dies (live bots carry on)."""
        backoff = 0.5
        while not self.closing:
            started = time.monotonic()
            link.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "voxfleet.runtime.local.template", self.socket_path, link.spec.to_json(),
                env={**os.environ, **self.env}, stdin=asyncio.subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
            code = await link.process.wait()
            link.ready.clear()
            if self.closing:
                return
            link.restarts += 1
            log.error("agent %s: template exited with %s; restarting", link.agent, code)
            backoff = 0.5 if time.monotonic() - started > 30 else min(backoff * 2, 30)
            await asyncio.sleep(backoff)

    # -- sessions ---------------------------------------------------------------------------
    async def launch(self, agent: str, bot_id: str, session_id: str | None = None, body: Any = None,
                     node_id: str | None = None) -> LocalBot:
        """Fork a bot (on this machine, whatever `node_id`). With a session it starts serving it
        (cold start); without one it warms up and waits for `assign` (returns once it is warm)."""
        link = self.templates[agent]
        if not link.ready.is_set() or link.writer is None:
            raise NotReady(f"agent {agent}: template is not ready")
        bot = LocalBot(bot_id, agent, session_id, self.ice_servers)
        if agent in self.cpu_limits:
            bot.on_assigned = lambda: self.cpu.set_share(bot_id, self.cpu_limits[agent])
        self.bots[bot_id] = bot
        self.tasks.spawn(self._forget_when_done(bot), f"bot-exit:{bot_id}")
        if session_id is not None:
            start = SessionStart(session_id=session_id, body=body, ice_servers=self.ice_servers(session_id))
            link.writer.write(encode(Fork(bot_id=bot_id, start=start)))
        else:
            link.writer.write(encode(Fork(bot_id=bot_id, preload=self.manifests.for_agent(agent))))
        waiter = bot.hello if session_id is not None else bot.warm_ready
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.bot_start_timeout)
        except asyncio.TimeoutError:
            await bot.stop("start_failed", grace=0)
            raise BotStartFailed(f"bot {bot_id} did not report in {self.bot_start_timeout:.0f}s") from None
        return bot

    async def _forget_when_done(self, bot: LocalBot) -> None:
        result = await bot.wait_exit()
        self.bots.pop(bot.bot_id, None)
        self.cpu.forget(bot.bot_id)
        learn = bot.session_id is not None and result.reason not in ("bot_error", "crashed")  # not from a failure
        if learn and self.manifests.session_ended(bot.agent, bot.info.model_loads):
            models = self.manifests.for_agent(bot.agent)
            log.info("agent %s: warm bots pre-load what its bot built: %s", bot.agent,
                     ", ".join(self.manifests.status(bot.agent)["models"]))
            for other in self.bots.values():
                if other.agent == bot.agent:
                    other.preload(models)

    def preload_status(self, agent: str) -> dict[str, Any]:
        """GET /v1/agents: pre-loading on or off, the models, how many idle warm bots hold them all."""
        status = self.manifests.status(agent)
        wanted = len(status["models"])
        idle = [b for b in self.bots.values() if b.agent == agent and b.session_id is None and b.warm_ready.done()]
        status["warmBotsPreloaded"] = sum(1 for b in idle if wanted and (b.info.preloaded or 0) >= wanted)
        return status

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        bot: LocalBot | None = None
        link: TemplateLink | None = None
        try:
            first = await reader.readline()
            if not first:
                return
            message = decode(first)
            if isinstance(message, TemplateReady):
                link = self.templates.get(message.agent)
                if link is None:
                    log.error("unknown template connected: %s", message)
                    return
                link.writer = writer
                link.info = message
                link.ready.set()
                log.info("agent %s: template pid %s ready", link.agent, message.pid)
                while line := await reader.readline():
                    self._on_template_message(decode(line))
            elif isinstance(message, BotResume):
                bot = LocalBot(message.bot_id, message.agent, message.session_id)
                bot.attach(writer, message.pid)
                self.bots[bot.bot_id] = bot
                self.tasks.spawn(self._forget_when_done(bot), f"bot-exit:{bot.bot_id}")
                log.info("session %s: bot pid %s rejoined", bot.session_id, bot.info.pid)
                self.on_resumed(bot)
                while line := await reader.readline():
                    bot.on_message(decode(line))
            elif isinstance(message, BotHello):
                bot = self.bots.get(message.bot_id)
                if bot is None:
                    log.warning("unknown bot %s connected; ignoring", message.bot_id)
                    return
                bot.attach(writer, message.pid)
                while line := await reader.readline():
                    bot.on_message(decode(line))
            else:
                log.warning("control link opened with an unexpected %s message; closed", message.kind)
        except (ConnectionError, wire.WireError) as exc:
            log.warning("control link error: %s", exc)
        finally:
            if link is not None:
                link.ready.clear()
                link.writer = None
            if bot is not None:
                bot.on_link_closed()
                self.tasks.spawn(self._confirm_exit(bot), f"confirm-exit:{bot.bot_id}")
            writer.close()

    def _on_template_message(self, message: Message) -> None:
        bot = self.bots.get(getattr(message, "bot_id", None) or "")
        if bot is None:
            return
        if isinstance(message, Forked):
            bot.info.pid = message.pid
            if bot.agent in self.cpu_limits:
                # A warm bot initialises in the background so it never slows live calls; it gets
                # its profile's share when it is assigned a session.
                share = self.cpu_limits[bot.agent] if bot.session_id else 0
                self.cpu.limit(bot.bot_id, bot.info.pid, share)
        elif isinstance(message, Exited):
            bot.on_exit(message.exit_code, message.signal)
            log.info("session %s: bot %s pid %s exited (code %s, signal %s)", bot.session_id, bot.bot_id,
                     message.pid, message.exit_code, message.signal)

    async def _confirm_exit(self, bot: LocalBot) -> None:
        """The bot's link closed. Its template normally reports the exit at once; if the
        template itself is gone, poll the pid so the session still ends."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(bot.wait_exit(), 0.5)
                return
            except asyncio.TimeoutError:
                pass
            if bot.info.pid and not _pid_alive(bot.info.pid):
                bot.on_exit(None, None)
                return
        if bot.info.pid and _pid_alive(bot.info.pid):
            bot.kill()
        await asyncio.sleep(0.5)
        bot.on_exit(None, None)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False

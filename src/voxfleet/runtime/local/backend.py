"""Local backend: one template process per agent on this machine, one forked child per session.

The control plane listens on a UNIX socket. Templates connect to it when ready; each forked bot
connects to it too and is matched to its session by id. Templates report every child's exit
(code or signal) the moment they reap it, which is how a ``kill -9`` shows up as ``crashed``.

Every wait on a template is bounded: a template that does not answer a ``Fork`` within
``fork_timeout`` is taken as stalled and killed (its supervisor restarts it); one whose control
link closes fails the launches it had not forked at once; a bot whose template is gone (or that
was killed) is watched by its pid, so its exit is reported all the same.
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

from voxfleet.procutil import die_with_parent, pid_alive, proc_state
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
    ForkFailed,
    Heartbeat,
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
from voxfleet.runtime.liveness import Liveness, LivenessLimits
from voxfleet.runtime.model_preload import ModelManifests
from voxfleet.runtime.protocol import BotExit, BotInfo, IceServersFor, no_ice_servers
from voxfleet.runtime.remote_bot import RemoteBot
from voxfleet.tasks import BackgroundTasks

log = logging.getLogger(__name__)

LIVENESS_EVERY_S = 1.0  # how often each bot's and template's liveness is sampled
MAX_CONTROL_BUFFER = 8 * 1024 * 1024  # bytes queued to a bot that does not read: it is stuck
KILL_CONFIRM_S = 3.0  # a killed bot's pid still there after this long is taken as gone (logged)
EXIT_REPORT_GRACE_S = 0.3  # a bot's pid vanished: time left for its template to report the status
PID_POLL_S = 0.05


class LocalBot(RemoteBot):
    """A forked bot process, seen from the control plane. Warm bots have no session yet."""

    def __init__(self, bot_id: str, agent: str, session_id: str | None,
                 ice_servers: IceServersFor = no_ice_servers, *, tasks: BackgroundTasks | None = None) -> None:
        super().__init__(bot_id, agent, session_id, ice_servers, BotInfo())
        loop = asyncio.get_running_loop()
        self.forked: asyncio.Future[int] = loop.create_future()  # its pid, once its template forked it
        self.hello = loop.create_future()
        self.warm_ready = loop.create_future()
        self.template_pid: int | None = None  # the template its Fork went to
        self.on_assigned: Callable[[], None] = lambda: None
        self.tasks = tasks or BackgroundTasks(log)  # the backend's; its own when used alone
        self._writer: asyncio.StreamWriter | None = None
        self._requests: dict[int, asyncio.Future] = {}
        self._reported: Ended | None = None
        self._killing: asyncio.Task[None] | None = None
        self.last_heard: float | None = None  # monotonic time of its last message (None: not connected)
        self.liveness = Liveness(LivenessLimits())
        self.killed_because: str | None = None  # why the backend killed it (stopped, hung, stuck)

    @property
    def ended(self) -> bool:
        return self._exit.done()

    # -- messages from the bot process and its template -------------------------------------
    def on_forked(self, pid: int) -> None:
        self.info.pid = pid
        if not self.forked.done():
            self.forked.set_result(pid)

    def attach(self, writer: asyncio.StreamWriter, pid: int) -> None:
        self._writer = writer
        self.last_heard = time.monotonic()
        self.on_forked(pid)  # its hello may overtake its template's Forked
        self.info.events["bot_ready"] = time.time()
        if not self.hello.done():
            self.hello.set_result(None)

    def on_message(self, message: Message) -> None:
        self.last_heard = time.monotonic()
        if isinstance(message, Heartbeat):
            return
        if isinstance(message, REPLIES):
            future = self._requests.pop(message.id, None)
            if future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, Ended):
            self._reported = message
            if self._writer is not None:  # nothing more goes to it; the bot waits for this close to exit
                self._writer.close()
        else:
            self.observe(message)
            if isinstance(message, WarmReady) and not self.warm_ready.done():
                self.warm_ready.set_result(None)

    def on_link_closed(self) -> None:
        for future in self._requests.values():
            if not future.done():
                future.set_exception(BotError(f"bot {self.bot_id} (session {self.session_id}) went away"))
        self._requests.clear()

    def on_exit(self, exit_code: int | None, signum: int | None, detail: str | None = None) -> None:
        """The bot's process is gone: its exit code or signal (both None: not known)."""
        if signum is not None:
            name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
            killed = f"{self.killed_because}: killed by {name}" if self.killed_because else f"killed by {name}"
            result = BotExit(self._stop_reason if self._stop_reason and signum in (signal.SIGTERM, signal.SIGKILL) else "crashed",
                             exit_code, signum, killed)
        elif self._reported is not None:
            result = BotExit(self._reported.reason, exit_code, None, self._reported.detail)
        elif self._stop_reason:
            result = BotExit(self._stop_reason, exit_code, None, "")
        else:
            result = BotExit("crashed", exit_code, None, detail or f"exited with code {exit_code} without reporting")
        self._end(result, f"bot {self.bot_id} died at start: {result.detail}")

    def fail_start(self, detail: str) -> None:
        """End a bot that has no process: its template never forked it."""
        self._end(BotExit(self._stop_reason or "start_failed", None, None, detail), detail)

    def _end(self, result: BotExit, start_error: str) -> None:
        if self._exit.done():
            return
        self.on_link_closed()
        if self.stream is not None:
            self.stream.on_bot_gone(result)
        for waiter in (self.forked, self.hello, self.warm_ready):
            if not waiter.done():
                waiter.set_exception(BotStartFailed(start_error))
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
            queued = self._writer.transport.get_write_buffer_size()
            if queued > MAX_CONTROL_BUFFER:  # the bot reads nothing: the caller's frames would pile up here
                self.kill_because(f"not reading its control link ({queued // 1024} KiB queued)")
                return
            self._writer.write(encode(message))

    def kill_because(self, why: str) -> None:
        """Kill a bot that is alive but of no use to its caller (stopped, hung, stuck)."""
        if self.killed_because is None and not self._exit.done():
            self.killed_because = why
            log.error("session %s: bot %s pid %s %s; killing it", self.session_id, self.bot_id, self.info.pid, why)
            self.kill()

    def _ask_stop(self, reason: str) -> None:
        self._send(Stop(reason=reason))

    def preload(self, models: list[dict[str, Any]]) -> None:
        """A warm bot: hold `models` for its session (runtime.model_preload)."""
        if self.session_id is None:
            self._send(Preload(models=models))

    def memory_mb(self) -> float | None:
        return pss_mb(self.info.pid) if self.info.pid else None

    def kill(self) -> None:
        """SIGKILL the bot; its exit is reported within KILL_CONFIRM_S even when no template
        reaps it. A bot not forked yet has no process: it ends at once."""
        if self._exit.done():
            return
        pid = self.info.pid
        if not pid:
            self.fail_start(f"bot {self.bot_id} was stopped before its template forked it")
            return
        _kill(pid)
        if self._killing is None:
            self._killing = self.tasks.spawn(self._confirm_killed(pid), f"confirm-kill:{self.bot_id}")

    async def _confirm_killed(self, pid: int) -> None:
        deadline = time.monotonic() + KILL_CONFIRM_S
        while pid_alive(pid):
            if await self._exited_within(PID_POLL_S):
                return
            if time.monotonic() >= deadline:
                log.error("session %s: bot %s pid %s is still there %.0fs after SIGKILL; taken as gone",
                          self.session_id, self.bot_id, pid, KILL_CONFIRM_S)
                self.on_exit(None, None, f"still running {KILL_CONFIRM_S:.0f}s after SIGKILL")
                return
        if not await self._exited_within(EXIT_REPORT_GRACE_S):
            self.on_exit(None, signal.SIGKILL)  # no template reported it: it is gone

    async def watch_pid(self) -> None:
        """Report the exit of a bot forked by a template that is gone, until the bot connects
        (its own control link reports it from then on)."""
        pid = self.info.pid
        while pid and not self._exit.done() and not self.hello.done():
            if not pid_alive(pid):
                self.on_exit(None, None, "exited before it connected; its template is gone, so no exit status")
                return
            await asyncio.wait([self._exit, self.hello], timeout=0.1)

    async def _exited_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(asyncio.shield(self._exit), seconds)
        except asyncio.TimeoutError:
            return False
        return True


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
        self.last_exit: dict[str, Any] | None = None  # {code, signal, at}, or {error, at}: it could not start
        self.restart_at: float | None = None  # while it waits out its restart backoff (time.time())
        self.liveness = Liveness(LivenessLimits())

    def status(self) -> dict[str, Any]:
        info = self.info
        return {"ready": self.ready.is_set(), "pid": info.pid if info else None, "restarts": self.restarts,
                "import_s": info.import_s if info else None, "preload_s": info.preload_s if info else None,
                "last_exit": self.last_exit, "in_backoff": self.restart_at is not None,
                "restart_at": self.restart_at}


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
        fork_timeout: float = 5.0,
    ) -> None:
        self.templates = {name: TemplateLink(spec) for name, spec in specs.items()}
        self.socket_path = str(runtime_dir / "control.sock")
        self.ice_servers = ice_servers  # given to each bot with its session, credentials minted for it
        self.bot_start_timeout = bot_start_timeout
        self.template_start_timeout = template_start_timeout
        self.fork_timeout = fork_timeout  # a template that forks nothing this long after a Fork is stalled
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
    async def listen(self) -> None:
        """Open the control socket that templates and bots connect to."""
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        self.server = await asyncio.start_unix_server(self._on_connection, self.socket_path, limit=wire.MAX_LINE)

    async def start(self) -> None:
        await self.listen()
        for link in self.templates.values():
            self.tasks.spawn(self._supervise(link), f"template:{link.agent}")
        self.tasks.spawn(self._watch_liveness(), "liveness")
        waits = [asyncio.wait_for(link.ready.wait(), self.template_start_timeout) for link in self.templates.values()]
        try:
            await asyncio.gather(*waits)
        except asyncio.TimeoutError:
            late = [n for n, link in self.templates.items() if not link.ready.is_set()]
            raise NotReady(f"template for agent(s) {', '.join(late)} not ready after "
                           f"{self.template_start_timeout:.0f}s; see the log above") from None

    def ready(self) -> bool:
        return all(link.ready.is_set() for link in self.templates.values())

    def agent_ready(self, agent: str) -> bool:
        link = self.templates.get(agent)
        return link is not None and link.ready.is_set()

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
            try:
                link.process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "voxfleet.runtime.local.template", self.socket_path, link.spec.to_json(),
                    env={**os.environ, **self.env}, stdin=asyncio.subprocess.DEVNULL,
                    preexec_fn=die_with_parent,
                )
            except OSError as exc:  # EAGAIN, ENOMEM: try again after the backoff
                link.last_exit = {"error": str(exc), "at": time.time()}
                log.error("agent %s: cannot start its template: %s", link.agent, exc)
            else:
                code = await link.process.wait()
                link.ready.clear()
                if self.closing:
                    return
                link.last_exit = {"code": code if code >= 0 else None, "signal": -code if code < 0 else None,
                                  "at": time.time()}
                log.error("agent %s: template pid %s exited (%s); restarting", link.agent, link.process.pid,
                          _exit_text(code))
            link.restarts += 1
            backoff = 0.5 if time.monotonic() - started > 30 else min(backoff * 2, 30)
            link.restart_at = time.time() + backoff
            await asyncio.sleep(backoff)
            link.restart_at = None

    async def _watch_liveness(self) -> None:
        """Kill what is alive but useless: a bot or template stopped (SIGSTOP) for a few
        seconds, a bot that sent nothing (not even its heartbeat) for unresponsive_s. Their
        exits are then reported as crashes: the caller is told, the reservation freed."""
        while True:
            await asyncio.sleep(LIVENESS_EVERY_S)
            now = time.monotonic()
            for bot in list(self.bots.values()):
                if bot.info.pid and not bot.ended:
                    # a warm bot may starve at its low CPU share; it answers for itself at assign
                    heard = bot.last_heard if bot.session_id is not None else None
                    why = bot.liveness.sample(now, proc_state(bot.info.pid), heard)
                    if why is not None:
                        bot.kill_because(why)
            for link in self.templates.values():
                pid = link.info.pid if link.info is not None and link.writer is not None else None
                if pid and (why := link.liveness.sample(now, proc_state(pid))) is not None:
                    log.error("agent %s: template pid %s %s; killing it (it restarts)", link.agent, pid, why)
                    _kill(pid)
                    link.liveness = Liveness(LivenessLimits())

    # -- sessions ---------------------------------------------------------------------------
    async def launch(self, agent: str, bot_id: str, session_id: str | None = None, body: Any = None,
                     node_id: str | None = None) -> LocalBot:
        """Fork a bot (on this machine, whatever `node_id`). With a session it starts serving it
        (cold start); without one it warms up and waits for `assign` (returns once it is warm)."""
        link = self.templates[agent]
        writer = link.writer
        if not link.ready.is_set() or writer is None or link.info is None:
            raise NotReady(f"agent {agent}: template is not ready")
        bot = LocalBot(bot_id, agent, session_id, self.ice_servers, tasks=self.tasks)
        bot.template_pid = link.info.pid
        if agent in self.cpu_limits:
            bot.on_assigned = lambda: self.cpu.set_share(bot_id, self.cpu_limits[agent])
        self.bots[bot_id] = bot
        self.tasks.spawn(self._forget_when_done(bot), f"bot-exit:{bot_id}")
        if session_id is not None:
            start = SessionStart(session_id=session_id, body=body, ice_servers=self.ice_servers(session_id))
            writer.write(encode(Fork(bot_id=bot_id, start=start)))
        else:
            writer.write(encode(Fork(bot_id=bot_id, preload=self.manifests.for_agent(agent))))
        started = time.monotonic()
        fork_timeout = min(self.fork_timeout, self.bot_start_timeout)
        try:  # BotStartFailed at once if the template cannot fork it or goes away
            await asyncio.wait_for(asyncio.shield(bot.forked), fork_timeout)
        except asyncio.TimeoutError:
            self._fork_overdue(link, writer, bot, fork_timeout)
            raise BotStartFailed(f"agent {agent}: its template (pid {bot.template_pid}) did not fork bot {bot_id} "
                                 f"within {fork_timeout:g}s; it was killed and restarts") from None
        waiter = bot.hello if session_id is not None else bot.warm_ready
        left = max(0.0, self.bot_start_timeout - (time.monotonic() - started))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), left)
        except asyncio.TimeoutError:
            await bot.stop("start_failed", grace=0)
            raise BotStartFailed(f"bot {bot_id} did not report in {self.bot_start_timeout:.0f}s") from None
        return bot

    def _fork_overdue(self, link: TemplateLink, writer: asyncio.StreamWriter, bot: LocalBot, waited: float) -> None:
        """A Fork went unanswered: the template is stalled (stopped, stuck). Kill it; its
        supervisor starts a new one."""
        log.error("agent %s: template pid %s did not fork bot %s within %gs; killing it (it restarts)",
                  link.agent, bot.template_pid, bot.bot_id, waited)
        bot.fail_start(f"agent {link.agent}: bot {bot.bot_id} was not forked within {waited:g}s")
        if link.writer is writer and bot.template_pid:
            _kill(bot.template_pid)
            self._template_lost(link, writer, f"its template (pid {bot.template_pid}) stalled and was killed")

    def _template_lost(self, link: TemplateLink, writer: asyncio.StreamWriter, why: str) -> None:
        """The template behind `writer` is gone: the bots it was asked to fork never will be,
        and it will not report the exits of those it forked that have not connected yet."""
        if link.writer is not writer:
            return  # handled already
        link.ready.clear()
        link.writer = None
        for bot in list(self.bots.values()):
            if bot.agent != link.agent or bot.ended:
                continue
            if not bot.info.pid:
                log.error("agent %s: bot %s not forked: %s", link.agent, bot.bot_id, why)
                bot.fail_start(f"agent {link.agent}: bot {bot.bot_id} was not forked: {why}")
            elif not bot.hello.done():
                self.tasks.spawn(bot.watch_pid(), f"watch-pid:{bot.bot_id}")

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
                    self._on_template_message(link, decode(line))
            elif isinstance(message, BotResume):
                bot = LocalBot(message.bot_id, message.agent, message.session_id, tasks=self.tasks)
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
                self._template_lost(link, writer, f"its template (pid {link.info.pid if link.info else None}) "
                                                  "closed its control link")
            if bot is not None:
                bot.on_link_closed()
                self.tasks.spawn(self._confirm_exit(bot), f"confirm-exit:{bot.bot_id}")
            writer.close()

    def _on_template_message(self, link: TemplateLink, message: Message) -> None:
        bot = self.bots.get(getattr(message, "bot_id", None) or "")
        if isinstance(message, Forked) and (bot is None or bot.ended):
            log.warning("agent %s: template forked bot %s (pid %s) after its start was given up; killing it",
                        link.agent, message.bot_id, message.pid)
            _kill(message.pid)  # no orphan: its template reaps it
            return
        if bot is None:
            return
        if isinstance(message, Forked):
            bot.on_forked(message.pid)
            if bot.agent in self.cpu_limits:
                # A warm bot initialises in the background so it never slows live calls; it gets
                # its profile's share when it is assigned a session.
                share = self.cpu_limits[bot.agent] if bot.session_id else 0
                self.cpu.limit(bot.bot_id, bot.info.pid, share)
        elif isinstance(message, ForkFailed):
            log.error("agent %s: template could not fork bot %s: %s", link.agent, bot.bot_id, message.error)
            bot.fail_start(f"agent {link.agent}: its template could not fork bot {bot.bot_id}: {message.error}")
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
            if bot.info.pid and not pid_alive(bot.info.pid):
                bot.on_exit(None, None)
                return
        if bot.info.pid and pid_alive(bot.info.pid):
            bot.kill()  # reports the exit within KILL_CONFIRM_S
            await bot.wait_exit()
        bot.on_exit(None, None)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _exit_text(code: int) -> str:
    """A process's return code as asyncio gives it (-N: killed by signal N)."""
    if code >= 0:
        return f"code {code}"
    return f"signal {signal.Signals(-code).name}" if -code in signal.Signals._value2member_map_ else f"signal {-code}"

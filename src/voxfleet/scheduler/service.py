"""The asyncio service that drives a runtime backend for sessions.

It applies decisions; it holds no policy of its own beyond the session state machine in
``sessions.py``. ``/start`` returns as soon as the session exists: the bot is launched in the
background while the client builds its offer, and the offer waits for the bot.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from voxfleet.exceptions import (
    AgentNotFound,
    BotError,
    NotReady,
    SessionConflict,
    SessionNotFound,
)
from voxfleet.runtime.protocol import Backend, BotHandle
from voxfleet.scheduler.sessions import ACTIVE, ENDED, SessionRecord, SessionTable

log = logging.getLogger(__name__)


class SessionService:
    def __init__(
        self,
        backend: Backend,
        agents: list[str],
        *,
        offer_timeout: float,
        signaling_timeout: float,
        keep_ended: int = 1000,
    ) -> None:
        self.backend = backend
        self.agents = agents
        self.offer_timeout = offer_timeout
        self.signaling_timeout = signaling_timeout
        self.table = SessionTable(keep_ended)
        self.bots: dict[str, asyncio.Future[BotHandle]] = {}
        self.tasks: set[asyncio.Task] = set()
        self.accepting = True

    # -- queries ----------------------------------------------------------------------------
    def get(self, session_id: str) -> SessionRecord:
        record = self.table.get(session_id)
        if record is None:
            raise SessionNotFound(session_id)
        return record

    def ready(self) -> bool:
        return self.accepting and self.backend.ready()

    # -- commands ---------------------------------------------------------------------------
    async def start_session(self, agent: str, body: Any, transport: str = "webrtc") -> SessionRecord:
        if agent not in self.agents:
            raise AgentNotFound(agent, self.agents)
        if not self.ready():
            raise NotReady("voxfleet is not ready to serve sessions yet (templates or LLM starting)")
        record = SessionRecord(session_id=str(uuid.uuid4()), agent=agent, transport=transport)
        self.table.add(record)
        launched: asyncio.Future[BotHandle] = asyncio.get_running_loop().create_future()
        self.bots[record.session_id] = launched
        self._spawn(self._run_session(record, body, launched), f"session:{record.session_id}")
        log.info("session %s: starting agent %s", record.session_id, agent)
        return record

    async def offer(self, session_id: str, request: dict[str, Any]) -> dict[str, Any]:
        record = self.get(session_id)
        bot = await self._bot_for(record, "accept an offer")
        record.mark("offer_received")
        answer = await bot.offer(request, self.signaling_timeout)
        if record.activate():
            record.mark("answered")
        return answer

    async def add_ice_candidates(self, session_id: str, pc_id: str, candidates: list[dict[str, Any]]) -> None:
        record = self.get(session_id)
        bot = await self._bot_for(record, "add ICE candidates")
        await bot.add_ice_candidates(pc_id, candidates, self.signaling_timeout)

    async def hang_up(self, session_id: str) -> SessionRecord:
        record = self.get(session_id)
        if record.state == ENDED:
            return record
        launched = self.bots.get(session_id)
        if launched is not None and launched.done() and not launched.exception():
            await launched.result().stop("hangup")
        else:
            record.end("hangup", "hung up before the bot started")
        return record

    async def aclose(self) -> None:
        self.accepting = False
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- internals --------------------------------------------------------------------------
    async def _bot_for(self, record: SessionRecord, action: str) -> BotHandle:
        if record.state == ENDED:
            raise SessionConflict(record.session_id, f"ended ({record.end_reason})", action)
        launched = self.bots.get(record.session_id)
        if launched is None:
            raise SessionConflict(record.session_id, record.state, action)
        try:
            return await asyncio.shield(launched)
        except BotError:
            raise
        except Exception as exc:  # noqa: BLE001 - surfaced as a bot failure for this session
            raise BotError(f"bot for session {record.session_id} failed to start: {exc}") from exc

    async def _run_session(self, record: SessionRecord, body: Any, launched: asyncio.Future) -> None:
        try:
            try:
                bot = await self.backend.launch(record.agent, record.session_id, body)
            except Exception as exc:  # noqa: BLE001 - recorded as the session's end
                log.error("session %s: bot failed to start: %s", record.session_id, exc)
                launched.set_exception(exc)
                launched.exception()
                record.end("start_failed", str(exc))
                return
            record.pid = bot.info.pid
            record.timings_ms.update(bot.info.timings)
            launched.set_result(bot)
            if record.state == ENDED:  # hung up while the bot was starting
                await bot.stop(record.end_reason or "hangup")
            watchdog = self._spawn(self._offer_deadline(record, bot), f"offer-deadline:{record.session_id}")
            result = await bot.wait_exit()
            watchdog.cancel()
            record.pid = bot.info.pid
            for name, value in bot.info.timings.items():
                record.timings_ms.setdefault(name, value)
            if record.end(result.reason, result.detail, result.exit_code, result.signal):
                log.info("session %s: ended (%s) %s", record.session_id, result.reason, result.detail)
        except asyncio.CancelledError:
            record.end("shutdown")
            raise
        finally:
            self.bots.pop(record.session_id, None)
            self.table.retire(record)

    async def _offer_deadline(self, record: SessionRecord, bot: BotHandle) -> None:
        await asyncio.sleep(self.offer_timeout)
        if record.state != ACTIVE and record.state != ENDED:
            log.warning("session %s: no offer within %.0fs; ending", record.session_id, self.offer_timeout)
            await bot.stop("timeout")

    def _spawn(self, coro: Any, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

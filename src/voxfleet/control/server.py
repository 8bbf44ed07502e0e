"""Running the whole service: local LLM, templates, HTTP server, and an orderly shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from voxfleet.bots.assistant_prompts import warm_up_messages
from voxfleet import systemd
from voxfleet.bots.llm_server import LocalLLMServer
from voxfleet.bots.loader import check_bot_ref
from voxfleet.config import BUILTIN_ASSISTANT, AgentSpec, Settings, llm_threads
from voxfleet.control.app import create_app
from voxfleet.control.auth import Auth, ensure_admin_key
from voxfleet.control.recorder import SessionRecorder
from voxfleet.control.recordings import RecordingFinisher
from voxfleet.end_reasons import EndReason
from voxfleet.scheduler.sessions import SessionRecord
from voxfleet.webhooks.dispatcher import WebhookDispatcher
from voxfleet.webhooks.events import RECORDING_READY, event_for, recording_ready
from voxfleet.control.deployment import SessionIceServers, check_turn_servers, session_ice_servers, uvicorn_options
from voxfleet.observability.logs import resolve_log_format
from voxfleet.runtime.local import node
from voxfleet.runtime.local.backend import LocalBackend
from voxfleet.runtime.messages import BotSpec
from voxfleet.runtime.ray.backend import RayBackend
from voxfleet.scheduler.capacity import Resources, profile_named
from voxfleet.scheduler.placement import LOCAL_REGION, ClusterLedger, Node
from voxfleet.scheduler.admission import AgentPool
from voxfleet.scheduler.client_bounds import ClientBoundsSettings
from voxfleet.scheduler.pool import PercentagePool, PoolPolicy, WarmPoolPolicy
from voxfleet.scheduler.pool_sizing import ForecastPool, PredictiveWarmPoolPolicy
from voxfleet.scheduler.service import Limits, SessionService
from voxfleet.storage.store import Store

log = logging.getLogger(__name__)


def public_url(host: str, port: int, scheme: str = "http") -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"{scheme}://{shown}:{port}/"


async def serve(settings: Settings, announce: Callable[[str], None] = print) -> None:
    for agent in settings.agents:  # a wrong bot path stops here, naming the setting
        check_bot_ref(agent.bot, agent.name)
    settings.ensure_runtime_dir()  # fixed per port: bots in calls rejoin a restarted control plane
    llm: LocalLLMServer | None = None
    env: dict[str, str] = {}
    if settings.llm.base_url is None:
        if any(a.bot == BUILTIN_ASSISTANT for a in settings.agents):
            llm = LocalLLMServer(
                model=settings.llm.local_model, alias=settings.llm.model, port=settings.llm.local_port,
                threads=llm_threads(settings.llm.local_threads), ctx=settings.llm.local_ctx,
                cache_dir=settings.model_cache_dir, warm_up_messages=warm_up_messages(),
                # found again by the next control plane; gone once no bot can still rejoin
                state_dir=settings.runtime_dir, orphan_exit_s=settings.reconnect_s + 60,
            )
            env = {"OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "not-needed",
                   "OPENAI_MODEL": settings.llm.model}
    else:
        env = {"OPENAI_BASE_URL": settings.llm.base_url, "OPENAI_API_KEY": settings.llm.api_key,
               "OPENAI_MODEL": settings.llm.model}

    ice = session_ice_servers(settings)
    # Pipecat's carrier serializers (built by the bot's create_transport) read these; a local bot
    # inherits them, a Ray actor on another node gets them with its spec
    env.update({name: value for name, value in (("TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
                                                 ("TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
                                                 ("PLIVO_AUTH_ID", settings.plivo_auth_id),
                                                 ("PLIVO_AUTH_TOKEN", settings.plivo_auth_token),
                                                 ("TELNYX_API_KEY", settings.telnyx_api_key)) if value})
    specs = bot_specs(settings)
    backend = (ray_backend(settings, specs, ice, env) if settings.backend == "ray"
               else local_backend(settings, specs, ice, env))
    service = build_service(settings, backend)
    store = Store(settings.database_url)
    await store.migrate()
    resumable = {s["sessionId"]: s for s in await store.unfinished_sessions()}
    recorder = SessionRecorder(store)
    recorder.start()
    dispatcher = WebhookDispatcher(
        store, {a.webhook_url: a.webhook_secret or "" for a in settings.agents if a.webhook_url},
        on_result=lambda ok: service.metrics.webhooks.labels("delivered" if ok else "failed").inc())
    dispatcher.start()
    finisher = recording_finisher(settings, service, store, recorder, dispatcher)
    finisher.start()
    service.on_change = lifecycle_hook(settings, recorder, dispatcher, on_end=finisher.session_ended)
    auth = Auth(store, settings.auth, {a.name for a in settings.agents if a.public})
    app = create_app(settings, service, auth, store, ice, llm)  # TURN credentials minted per session
    server = uvicorn.Server(uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, lifespan="off",
        access_log=False, timeout_graceful_shutdown=5, **uvicorn_options(settings),
    ))
    http = asyncio.create_task(server.serve(), name="http")
    resume_window: asyncio.Task | None = None
    try:
        while not server.started:
            if http.done():
                await http  # raises the bind error
                return
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = public_url(settings.host, port, "https" if settings.https else "http")
        announce(f"voxfleet: starting on {url} (healthz answers 503 until ready)")
        resumed: set[str] = set()
        all_back = asyncio.Event()

        def on_resumed(bot) -> None:
            adopt(service, resumable, resumed, bot)
            if len(resumed) == len(resumable):
                all_back.set()

        backend.on_resumed = on_resumed
        warmups = [backend.start(), check_turn_servers(ice)] + ([llm.start()] if llm else [])
        await asyncio.gather(*warmups)
        resume_window = asyncio.create_task(
            close_resume_window(service, store, resumable, resumed, all_back, settings.resume_window_s,
                                webhook_sender(settings, dispatcher)),
            name="resume-window")
        resume_window.add_done_callback(
            lambda task: None if task.cancelled() else finisher.finish_left_over(set(service.table.live)))
        install_drain(server, service, settings.drain_timeout_s)
        if not await auth.enabled():
            announce("voxfleet: WARNING: --dev: no API key checks: anyone who can reach this port can start "
                     "sessions and read every transcript. Run without --dev to require keys.")
        elif (admin := await ensure_admin_key(store)) is not None:
            announce(f"voxfleet: created the admin API key (shown only now, stored as a hash): {admin}")
            announce(f"voxfleet: dashboard, logged in with it: {url.rstrip('/')}/dashboard#key={admin}")
        announce(f"voxfleet: ready, open {url}")
        systemd.notify("READY=1")
        await http
    finally:
        server.should_exit = True
        if resume_window is not None:
            resume_window.cancel()
        await backend.aclose()  # bots end first, so their sessions record "shutdown"
        await service.aclose()
        await finisher.aclose()  # before the recorder: it stores what it finishes
        await recorder.aclose()
        await dispatcher.aclose()
        await store.close()
        if llm:
            await llm.aclose()
        if not http.done():
            await http


def adopt(service: SessionService, resumable: dict[str, dict], resumed: set[str], bot) -> None:
    """A bot still in a call from before the restart rejoined: take its session over."""
    stored = resumable.get(bot.session_id or "")
    if stored is None or bot.session_id in resumed:
        log.warning("bot pid %s rejoined for unknown session %s; stopping it", bot.info.pid, bot.session_id)
        bot.kill()
        return
    resumed.add(bot.session_id)
    service.adopt(SessionRecord.from_public(stored), bot)
    log.info("session %s: resumed after the restart", bot.session_id)


async def close_resume_window(service: SessionService, store: Store, resumable: dict[str, dict],
                              resumed: set[str], all_back: asyncio.Event, window_s: float,
                              send_webhook: Callable[[dict[str, Any], bool], str | None]) -> None:
    """Give bots in calls `window_s` to rejoin; then record the others as ended (their
    ``session.failed`` sent) and start filling warm pools (after the resumed sessions' reservations)."""
    if resumable:
        log.info("%d session(s) were live before the restart; waiting up to %.0fs for their bots",
                 len(resumable), window_s)
        try:
            await asyncio.wait_for(all_back.wait(), window_s)
        except asyncio.TimeoutError:
            pass
        detail = "the bot did not rejoin after a restart of the control plane"
        # this run's own sessions (started while the window was open) are not the previous run's to end
        keep = resumed | set(service.table.live) | set(service.table.ended)
        lost = await store.end_unfinished(EndReason.CONTROL_RESTART, detail, keep=keep)
        if lost:
            log.warning("%d session(s) did not survive the restart (control_restart)", len(lost))
        ended_at = time.time()
        for session_id in lost:
            stored = resumable.get(session_id)
            if stored is not None:
                send_webhook({**stored, "state": "ended", "endReason": EndReason.CONTROL_RESTART,
                              "endDetail": detail, "endedAt": ended_at}, True)
    service.start()


def lifecycle_hook(settings: Settings, recorder: SessionRecorder, dispatcher: WebhookDispatcher,
                   on_end: Callable[[SessionRecord], None] | None = None):
    """Every session change is stored; those that are lifecycle events also go to the agent's webhook.
    `on_end` sees every change too (the recording finisher acts on ends)."""
    send = webhook_sender(settings, dispatcher)
    started_sent: set[str] = set()

    def on_change(record: SessionRecord) -> None:
        recorder.record(record)
        if on_end is not None:
            on_end(record)
        timings = record.timings_ms
        # answered before a restart: the previous control plane sent its session.started
        started = record.session_id in started_sent or timings.get("answered", 1e18) <= timings.get("resumed", -1.0)
        kind = send(record.to_public(), started)
        if kind == "session.started":
            started_sent.add(record.session_id)
        elif kind is not None:
            started_sent.discard(record.session_id)

    return on_change


def webhook_sender(settings: Settings, dispatcher: WebhookDispatcher) -> Callable[[dict[str, Any], bool], str | None]:
    """Queue the lifecycle webhook (if its agent has one) that a public session record calls for;
    returns the event's type."""
    urls = {a.name: a.webhook_url for a in settings.agents if a.webhook_url}

    def send(session: dict[str, Any], started_sent: bool) -> str | None:
        url = urls.get(session["agent"])
        event = None if url is None else event_for(session, started_sent)
        if url is None or event is None:
            return None
        kind, payload = event
        dispatcher.enqueue(kind, url, payload)
        return kind

    return send


def recording_finisher(settings: Settings, service: SessionService, store: Store, recorder: SessionRecorder,
                       dispatcher: WebhookDispatcher) -> RecordingFinisher:
    """Finishes recorded sessions' WAVs; their ``recording.ready`` goes to the agent's webhook."""
    urls = {a.name: a.webhook_url for a in settings.agents if a.webhook_url}
    recorded = {a.name for a in settings.agents if a.record}
    if recorded:  # a directory we cannot make stops the start, naming it
        settings.recordings_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def send_ready(session_id: str, agent: str, recording: dict[str, Any]) -> None:
        if agent in urls:
            dispatcher.enqueue(RECORDING_READY, urls[agent], recording_ready(session_id, agent, recording))

    return RecordingFinisher(settings.recordings_dir, recorded, retention_days=settings.recordings.retention_days,
                             recorder=recorder, store=store, lookup=service.table.get, send_ready=send_ready)


def bot_specs(settings: Settings) -> dict[str, BotSpec]:
    """Each agent's bot settings, built once and handed whole to its templates or bot actors."""
    return {agent.name: BotSpec(
        agent=agent.name, bot=agent.bot, log_level=settings.log_level,
        log_format=resolve_log_format(settings.log_format), idle_timeout_s=settings.idle_timeout_s,
        reconnect_s=settings.reconnect_s, memory_check_s=settings.memory_check_s, warm_nice=settings.warm_nice,
        advertised_addresses=list(settings.advertised_addresses), media_ports=settings.media_port_range,
        recordings_dir=str(settings.recordings_dir) if agent.record else None,
    ) for agent in settings.agents}


def local_backend(settings: Settings, specs: dict[str, BotSpec], ice: SessionIceServers,
                  env: dict[str, str]) -> LocalBackend:
    """Bots forked on this machine from per-agent templates."""
    return LocalBackend(
        specs,
        runtime_dir=settings.ensure_runtime_dir(),
        ice_servers=ice.for_session,
        bot_start_timeout=settings.bot_start_timeout_s,
        env=env,
        cpu_limits={a.name: profile_named(a.profile).resources.cpu_millis for a in settings.agents},
        cpu_shares=settings.cpu_shares,
        preload_models={a.name for a in settings.agents if a.preload_models},
    )


def ray_backend(settings: Settings, specs: dict[str, BotSpec], ice: SessionIceServers,
                env: dict[str, str]) -> RayBackend:
    """The session service enforces max_session_s and memory limits on Ray bots as on local ones."""
    profiles = {}
    for agent in settings.agents:
        resources = profile_named(agent.profile, agent.kbps).resources
        profiles[agent.name] = (resources.cpu_millis, resources.mem_mb, resources.kbps)
    return RayBackend(
        specs, profiles=profiles, address=settings.ray.address,
        namespace=settings.ray.namespace, region_label=settings.ray.region_label, ice_servers=ice.for_session,
        placement_timeout=settings.ray.placement_timeout_s, bot_start_timeout=settings.bot_start_timeout_s,
        node_check_s=settings.ray.node_check_s, env=env,
    )


def build_service(settings: Settings, backend: LocalBackend | RayBackend) -> SessionService:
    capacity = Resources(settings.capacity_cpu_millis or node.cpu_millis(),
                         settings.capacity_mem_mb or node.memory_mb(), settings.uplink_kbps)
    pools = [AgentPool(a.name, profile_named(a.profile, a.kbps), pool_policy(a), max_bots=a.max_bots)
             for a in settings.agents]
    limits = Limits(offer_timeout=settings.offer_timeout_s, signaling_timeout=settings.signaling_timeout_s,
                    queue_wait=settings.queue_wait_s, max_session=settings.max_session_s,
                    memory_check=settings.memory_check_s, refill_concurrency=settings.refill_concurrency,
                    bot_wait=settings.queue_wait_s + settings.bot_start_timeout_s,
                    max_candidates=settings.max_ice_candidates)
    if settings.backend == "ray":  # the cluster's nodes, as Ray reports them
        ledger = ClusterLedger(nearest=settings.ray.nearest_regions, default_region=settings.ray.default_region)
    else:
        log.info("capacity: %d mCPU, %d MiB, %d kbps", capacity.cpu_millis, capacity.mem_mb, capacity.kbps)
        ledger = ClusterLedger([Node("local", LOCAL_REGION, "127.0.0.1", capacity)])
    bounds = ClientBoundsSettings(rate_per_s=settings.client_rate_per_s, burst=settings.client_burst,
                                  max_pending=settings.client_max_pending)
    return SessionService(backend, pools, ledger, limits=limits, queue_max=settings.queue_max,
                          keep_ended=settings.ended_sessions_kept, bounds=bounds,
                          client_share=settings.client_share)


def pool_policy(agent: AgentSpec) -> PoolPolicy:
    if agent.pool_policy == "predictive":
        return ForecastPool(PredictiveWarmPoolPolicy(min_warm=agent.min_warm, warm_pct=agent.warm_pct,
                                                     max_bots=agent.max_bots,
                                                     cold_start_probability=agent.cold_start_target))
    return PercentagePool(WarmPoolPolicy(min_warm=agent.min_warm, warm_pct=agent.warm_pct, max_bots=agent.max_bots))


def install_drain(server: uvicorn.Server, service: SessionService, timeout: float) -> None:
    """SIGTERM/SIGINT: stop admitting (healthz 503), release warm bots, let live sessions finish
    within `timeout`, then stop the HTTP server. A second signal stops at once."""
    loop = asyncio.get_running_loop()
    draining: list[asyncio.Task] = []

    def on_signal() -> None:
        if draining:
            server.should_exit = True
            return
        log.info("signal received: draining (up to %.0fs); send it again to stop now", timeout)

        async def drain_then_exit() -> None:
            await service.drain(timeout)
            server.should_exit = True

        draining.append(asyncio.create_task(drain_then_exit(), name="drain"))

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)

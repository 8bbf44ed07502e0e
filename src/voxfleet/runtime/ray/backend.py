"""Ray backend: bots are actors on the nodes of a Ray cluster; voxfleet keeps its own policy.

Ray does cluster membership, resource accounting and process placement. voxfleet decides which
node a bot goes to (``scheduler.placement``: region preference, per-node ledger) and asks Ray for
exactly that node (hard node affinity) with the profile as resource requests: ``num_cpus``,
``memory`` and the custom ``bandwidth_kbps`` resource. Ray enforces the resources it accounts,
so a ledger out of step with the cluster shows up as a placement that does not happen: that is
bounded by ``placement_timeout_s`` and answered ``Unplaceable``, never left pending.

A node can run bots when it is alive and offers ``bandwidth_kbps``; its region is its
``region_label`` label. Ray gives drivers no node-change event, so the node list is read every
``node_check_s``; a node that left ends its bots at once with ``node_lost`` (the actors' own
death, reported by Ray's health check, ends them the same way if it comes first).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from voxfleet.exceptions import BotError, BotStartFailed, NotReady, SignalingTimeout, Unplaceable
from voxfleet.runtime.messages import BotSpec, Memory, Message, Request, SessionStart
from voxfleet.runtime.protocol import BotExit, BotInfo, IceServersFor, NodeInfo, no_ice_servers
from voxfleet.runtime.remote_bot import RemoteBot
from voxfleet.tasks import BackgroundTasks

log = logging.getLogger(__name__)

MiB = 1024 * 1024
BANDWIDTH = "bandwidth_kbps"  # the custom resource every bot node offers, in kbit/s


class RayBot(RemoteBot):
    """A bot actor, seen from the control plane. Warm bots have no session yet."""

    def __init__(self, actor: Any, bot_id: str, agent: str, session_id: str | None, node: NodeInfo,
                 ice_servers: IceServersFor) -> None:
        super().__init__(bot_id, agent, session_id, ice_servers, BotInfo(node=node.address, region=node.region))
        self.actor = actor
        self.node = node
        self._memory_mb: float | None = None
        self._lost: str | None = None  # set when our node left the cluster
        self._frames = itertools.count()  # a relayed media WebSocket's caller frames, numbered

    # -- RemoteBot, over actor calls --------------------------------------------------------
    async def _exchange(self, request: Request, timeout: float) -> Message:
        import ray

        if self._exit.done():
            raise BotError(f"bot {self.bot_id} (session {self.session_id}) is not running")
        try:
            return await asyncio.wait_for(self.actor.request.remote(request), timeout)
        except asyncio.TimeoutError:
            raise SignalingTimeout(self.session_id or self.bot_id, timeout) from None
        except ray.exceptions.RayActorError as exc:
            raise BotError(f"bot {self.bot_id} (session {self.session_id}) went away: {exc.error_msg[:200]}") from None

    def _send(self, message: Message) -> None:
        self.actor.ws_frame.remote(next(self._frames), message)

    def _ask_stop(self, reason: str) -> None:
        self.actor.stop.remote(reason)  # its reply is not needed: run() returns when the bot is done

    def memory_mb(self) -> float | None:
        return self._memory_mb  # sampled inside the bot; the session service holds it to the profile

    def kill(self) -> None:
        import ray

        try:
            ray.kill(self.actor, no_restart=True)
        except Exception as exc:  # noqa: BLE001 - the actor is already gone
            log.debug("bot %s: kill: %s", self.bot_id, exc)

    # -- driven by the backend --------------------------------------------------------------
    def node_lost(self) -> None:
        self._lost = f"node {self.node.address} ({self.node.region}) left the cluster"
        self._ended(BotExit("node_lost", None, None, self._lost))
        self.kill()

    def _ended(self, result: BotExit) -> None:
        if self.stream is not None:
            self.stream.on_bot_gone(result)
        if not self._exit.done():
            self._exit.set_result(result)

    async def serve(self) -> None:
        """Until the actor is done: its observations into `info`, then how it ended."""
        import ray

        pulling = asyncio.ensure_future(self._pull_events())
        try:
            while not self._exit.done():
                try:
                    reply = await self.actor.run.remote()
                    result = BotExit(reply["reason"], reply["exit_code"], None, reply["detail"])
                    break
                except ray.exceptions.ActorUnavailableError:
                    # The link broke (its node may be going): Ray says whether the actor died, and
                    # why, once it knows; a live actor answers the repeated call when it is done.
                    await asyncio.sleep(0.5)
                except ray.exceptions.RayActorError as exc:
                    result = self._why_gone(exc)
                    break
            else:
                return
            # the observations the bot made last (how its stream went) may still be in flight
            await asyncio.wait({pulling}, timeout=2.0)
        finally:
            pulling.cancel()
            self.kill()  # one session, one process: the worker ends with its actor
        self._ended(result)

    def _why_gone(self, exc: Exception) -> BotExit:
        message = getattr(exc, "error_msg", str(exc))
        if self._lost is not None or "node has died" in message or "node was terminated" in message:
            return BotExit("node_lost", None, None, self._lost or f"node {self.node.address} died")
        if self._stop_reason is not None:
            return BotExit(self._stop_reason, None, None, "actor killed after the grace period")
        return BotExit("crashed", None, None, message.strip() or "actor died")

    async def _pull_events(self) -> None:
        import ray

        cursor = 0
        while True:
            try:
                batch, finished = await self.actor.events.remote(cursor)
            except ray.exceptions.ActorUnavailableError:
                await asyncio.sleep(0.5)
                continue
            except ray.exceptions.RayActorError:
                return
            cursor += len(batch)
            for message in batch:
                if isinstance(message, Memory):
                    self._memory_mb = message.mb
                else:
                    self.observe(message)
            if finished:
                return


class RayBackend:
    """Runs bots as Ray actors on the cluster's bot nodes."""

    def __init__(
        self,
        specs: dict[str, BotSpec],  # agent -> its bots' settings
        *,
        profiles: dict[str, tuple[int, int, int]],  # agent -> (cpu_millis, mem_mb, kbps)
        address: str,
        namespace: str = "voxfleet",
        region_label: str = "region",
        ice_servers: IceServersFor = no_ice_servers,
        placement_timeout: float = 20.0,
        bot_start_timeout: float = 20.0,
        node_check_s: float = 1.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.specs = specs
        self.profiles = profiles
        self.address = address
        self.namespace = namespace
        self.region_label = region_label
        self.ice_servers = ice_servers
        self.placement_timeout = placement_timeout
        self.bot_start_timeout = bot_start_timeout
        self.node_check_s = node_check_s
        self.env = env or {}  # the bots' environment, set in each actor's process
        self.bots: dict[str, RayBot] = {}
        self._nodes: dict[str, NodeInfo] = {}
        self._actor_class: Any = None
        self._connected = False
        self.tasks = BackgroundTasks(log)
        self.on_nodes_changed: Callable[[], None] = lambda: None  # replaced by the service

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        import ray

        from voxfleet.runtime.ray.actor import BotActor

        try:
            ray.init(address=self.address, namespace=self.namespace, logging_level=logging.WARNING,
                     log_to_driver=True, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise NotReady(f"ray.address: cannot join the Ray cluster at {self.address!r}: {exc}") from None
        self._actor_class = ray.remote(BotActor)
        self._connected = True
        await self._refresh_nodes()
        log.info("ray: joined %s; bot nodes: %s", self.address,
                 ", ".join(f"{n.address} ({n.region})" for n in self._nodes.values()) or "none yet")
        self.tasks.spawn(self._watch_nodes(), "ray-nodes")

    def ready(self) -> bool:
        return self._connected and bool(self._nodes)

    def agent_ready(self, agent: str) -> bool:
        return self.ready()

    def nodes(self) -> list[NodeInfo]:
        return list(self._nodes.values())

    def status(self) -> dict[str, Any]:
        return {"backend": "ray", "address": self.address, "bots": len(self.bots),
                "nodes": [{"node_id": n.node_id, "address": n.address, "region": n.region} for n in self._nodes.values()]}

    async def aclose(self) -> None:
        import ray

        await asyncio.gather(*(bot.stop("shutdown", grace=2.0) for bot in list(self.bots.values())),
                             return_exceptions=True)
        await self.tasks.cancel_all()
        if self._connected:
            self._connected = False
            ray.shutdown()


    # -- nodes ------------------------------------------------------------------------------
    def bot_nodes(self, listed: list[dict[str, Any]]) -> dict[str, NodeInfo]:
        """The alive nodes that offer bandwidth_kbps and CPU, from ``ray.nodes()``."""
        found = {}
        for entry in listed:
            resources = entry.get("Resources") or {}
            if not entry.get("Alive") or resources.get(BANDWIDTH, 0) <= 0 or resources.get("CPU", 0) <= 0:
                continue
            region = (entry.get("Labels") or {}).get(self.region_label, "default")
            found[entry["NodeID"]] = NodeInfo(entry["NodeID"], region, entry["NodeManagerAddress"],
                                              int(resources["CPU"] * 1000), int(resources.get("memory", 0) // MiB),
                                              int(resources[BANDWIDTH]))
        return found

    async def _refresh_nodes(self) -> None:
        import ray

        current = self.bot_nodes(await asyncio.to_thread(ray.nodes))
        if current.keys() == self._nodes.keys():
            return
        gone = [node_id for node_id in self._nodes if node_id not in current]
        self._nodes = current
        for bot in list(self.bots.values()):
            if bot.node.node_id in gone:
                log.warning("session %s: node %s left the cluster; ending (node_lost)", bot.session_id,
                            bot.node.address)
                bot.node_lost()
        self.on_nodes_changed()

    async def _watch_nodes(self) -> None:
        while True:
            await asyncio.sleep(self.node_check_s)
            try:
                await self._refresh_nodes()
            except Exception as exc:  # noqa: BLE001 - the GCS may be briefly unreachable; try again
                log.warning("ray: reading the node list failed: %s", exc)

    # -- bots -------------------------------------------------------------------------------
    async def launch(self, agent: str, bot_id: str, session_id: str | None = None, body: Any = None,
                     node_id: str | None = None) -> RayBot:
        """Create the bot's actor on `node_id` and return once it is started (and warm, without
        a session). Unplaceable if Ray does not place it within placement_timeout."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node = self._nodes.get(node_id or "")
        if node is None:
            raise Unplaceable(f"node {node_id} is no longer in the cluster")
        cpu_millis, mem_mb, kbps = self.profiles[agent]
        start = (SessionStart(session_id=session_id, body=body, ice_servers=self.ice_servers(session_id))
                 if session_id is not None else None)
        actor = self._actor_class.options(
            num_cpus=cpu_millis / 1000, memory=mem_mb * MiB, resources={BANDWIDTH: kbps},
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
            max_restarts=0, max_task_retries=0, max_concurrency=64,
        ).remote(self.specs[agent], bot_id, start, self.env)
        bot = RayBot(actor, bot_id, agent, session_id, node, self.ice_servers)
        try:
            bot.info.pid = await asyncio.wait_for(actor.ping.remote(), self.placement_timeout)
        except asyncio.TimeoutError:
            bot.kill()
            raise Unplaceable(f"agent {agent}: Ray did not place the bot on node {node.address} ({node.region}) "
                              f"within {self.placement_timeout:.0f}s (placement_timeout_s)") from None
        except ray.exceptions.ActorUnschedulableError as exc:
            bot.kill()
            raise Unplaceable(f"agent {agent}: Ray cannot place the bot on node {node.address} ({node.region}): "
                              f"{str(exc).strip().splitlines()[0]}") from None
        except ray.exceptions.RayError as exc:
            bot.kill()
            raise BotStartFailed(f"bot {bot_id} on {node.address} failed to start: {_first_line(exc)}") from None
        try:
            reply = await asyncio.wait_for(actor.start.remote(), self.bot_start_timeout)
        except (asyncio.TimeoutError, ray.exceptions.RayError) as exc:
            bot.kill()
            why = (f"did not start in {self.bot_start_timeout:.0f}s" if isinstance(exc, asyncio.TimeoutError)
                   else _first_line(exc))
            raise BotStartFailed(f"bot {bot_id} on {node.address}: {why}") from None
        if not reply["ok"]:
            bot.kill()
            raise BotStartFailed(f"bot {bot_id} on {node.address}: {reply['detail']}")
        bot.info.events["bot_ready"] = time.time()
        bot.info.warmup_ms = reply.get("warmup_ms")
        self.bots[bot_id] = bot
        self.tasks.spawn(self._serve(bot), f"bot:{bot_id}")
        return bot

    async def _serve(self, bot: RayBot) -> None:
        try:
            await bot.serve()
        finally:
            self.bots.pop(bot.bot_id, None)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__

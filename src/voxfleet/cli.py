"""``voxfleet`` command line: serve, agents, bench, simulate, service."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from voxfleet.config import AgentSpec, load_settings
from voxfleet.exceptions import ConfigError
from voxfleet.extras import require_extra


def _settings_from(args: argparse.Namespace):
    overrides = {"host": args.host, "port": args.port, "log_level": args.log_level}
    if getattr(args, "bot", None):
        path = Path(args.bot)
        name = args.agent_name or path.stem.replace("_", "-").lower()
        overrides["agents"] = [AgentSpec(name=name, bot=str(path.resolve()), description=f"{path.name}")]
    if getattr(args, "advertise", None):
        overrides["advertised_addresses"] = args.advertise
    if getattr(args, "dev", False):
        overrides["auth"] = "off"
    if getattr(args, "backend", None):
        overrides["backend"] = args.backend
    if getattr(args, "ray_address", None):
        overrides["backend"] = args.backend or "ray"
        overrides["ray"] = {"address": args.ray_address}
    overrides["ssl_certfile"] = getattr(args, "ssl_certfile", None)
    overrides["ssl_keyfile"] = getattr(args, "ssl_keyfile", None)
    return load_settings(**overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    from voxfleet.control.server import serve
    from voxfleet.observability.logs import configure_logging

    settings = _settings_from(args)
    if settings.backend == "ray":
        require_extra("ray", 'backend = "ray"')
    configure_logging(settings.log_level, process="control", log_format=settings.log_format)
    try:
        asyncio.run(serve(settings, announce=lambda line: print(line, flush=True)))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_agents(args: argparse.Namespace) -> int:
    settings = _settings_from(args)
    for agent in settings.agents:
        print(f"{agent.name}\t{agent.bot}\t{agent.description}")
    return 0


def cmd_sessions(args: argparse.Namespace) -> int:
    import httpx

    if args.action == "show" and not args.session_id:
        print("voxfleet: sessions show needs a session id", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    with httpx.Client(base_url=args.url.rstrip("/"), timeout=10, headers=headers) as http:
        if args.action == "list":
            reply = http.get("/v1/sessions", params={"limit": args.limit})
        else:
            reply = http.get(f"/v1/sessions/{args.session_id}")
    if reply.status_code != 200:
        print(f"voxfleet: {reply.json().get('error', reply.text)}", file=sys.stderr)
        return 1
    if args.action == "show" or args.json:
        print(json.dumps(reply.json(), indent=2))
        return 0
    print(f"{'session':<38}{'agent':<12}{'state':<9}{'start':<6}{'ttfw ms':>8}{'v2v p50':>9}  end reason")
    for s in reply.json()["sessions"]:
        lat = s["latency"]
        print(f"{s['sessionId']:<38}{s['agent']:<12}{s['state']:<9}{s['start'] or '-':<6}"
              f"{lat['ttfwMs'] or '-':>8}{lat['v2vP50Ms'] or '-':>9}  {s['endReason'] or ''}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from voxfleet.storage.store import Store

    settings = load_settings(log_level=None)

    async def run() -> int:
        store = Store(settings.database_url)
        await store.migrate()
        try:
            if args.action == "create":
                key, row = await store.create_key(args.scope, args.name or "")
                print(f"{key}\n\nThis {row['scope']} key (id {row['id']}) is shown once; it is stored only as a hash.",
                      file=sys.stdout)
            elif args.action == "list":
                for row in await store.list_keys():
                    state = "revoked" if row["revokedAt"] else "live"
                    print(f"{row['id']}\t{row['scope']}\t{state}\t{row['name']}")
            else:
                if not args.key_id:
                    print("voxfleet: keys revoke needs a key id (see `voxfleet keys list`)", file=sys.stderr)
                    return 2
                if not await store.revoke_key(args.key_id):
                    print(f"voxfleet: no live key with id {args.key_id!r}", file=sys.stderr)
                    return 1
                print(f"revoked {args.key_id}")
        finally:
            await store.close()
        return 0

    return asyncio.run(run())


def cmd_bench(args: argparse.Namespace) -> int:
    """Every benchmark: run it (args.run), print its table, or the whole report with --json."""
    report = asyncio.run(args.run(args))
    print(json.dumps(report, indent=2) if args.json else report["text"])
    return 0


async def bench_ttfw(args: argparse.Namespace) -> dict:
    from voxfleet.bench.ttfw import run_ttfw_bench

    return await run_ttfw_bench(sessions=args.sessions, bot=args.bot, include_peer=not args.no_peer,
                                speech_text=args.question)


async def bench_turn(args: argparse.Namespace) -> dict:
    from voxfleet.bench.turn import run_turn_bench

    concurrency = [int(k) for k in args.concurrency.split(",") if k.strip()]
    return await run_turn_bench(calls=args.calls, bot=args.bot, speech_text=args.question, concurrency=concurrency,
                                include_plain=not args.no_plain, include_peer=not args.no_peer,
                                include_assistant=not args.no_assistant, record=args.record)


async def bench_capacity(args: argparse.Namespace) -> dict:
    from voxfleet.bench.capacity import run_capacity_bench

    return await run_capacity_bench(calls=args.calls, max_concurrency=args.max, speech_text=args.question)


async def bench_stt(args: argparse.Namespace) -> dict:
    from voxfleet.bench.stt import run_stt_bench

    return await asyncio.to_thread(run_stt_bench, [int(n) for n in args.threads.split(",")])


async def bench_start(args: argparse.Namespace) -> dict:
    from voxfleet.bench.start import run_start_bench

    return await run_start_bench(sessions=args.sessions)


async def bench_phone(args: argparse.Namespace) -> dict:
    from voxfleet.bench.phone import PROVIDERS, run_phone_bench

    if args.provider not in PROVIDERS:
        raise ConfigError(f"--provider {args.provider!r}: must be one of {', '.join(sorted(PROVIDERS))}")
    return await run_phone_bench(calls=args.calls, include_peer=not args.no_peer, speech_text=args.question,
                                 provider=args.provider)


async def bench_outbound(args: argparse.Namespace) -> dict:
    from voxfleet.bench.outbound import run_outbound_bench

    return await run_outbound_bench(calls=args.calls, record=args.record, question_text=args.question)


async def bench_flood(args: argparse.Namespace) -> dict:
    from voxfleet.bench.flood import run_flood_bench

    return await run_flood_bench(calls=args.calls, concurrency=args.concurrency)


async def bench_chaos(args: argparse.Namespace) -> dict:
    from voxfleet.bench.chaos import run_chaos_bench

    return await run_chaos_bench(args.faults, args.seed, concurrency=args.concurrency,
                                 restart_every=args.restart_every)


async def bench_ray(args: argparse.Namespace) -> dict:
    from voxfleet.bench.on_ray import run_ray_bench

    return await run_ray_bench(sessions=args.sessions)


def cmd_service(args: argparse.Namespace) -> int:
    import os

    from voxfleet import systemd

    config, env_file = Path(args.config).resolve(), Path(args.env_file).resolve()
    # Validate the settings the service will read: its config file, plus its secrets file if any.
    for name, value in systemd.read_env_file(env_file).items():
        os.environ.setdefault(name, value)
    os.environ["VOXFLEET_CONFIG"] = str(config)
    settings = load_settings()
    options = systemd.UnitOptions(name=args.name, user=args.user, config=config, env_file=env_file,
                                  drain_timeout_s=settings.drain_timeout_s)
    if args.service_command == "unit":
        print(systemd.render_unit(options), end="")
        return 0
    for line in systemd.install(options, Path(args.unit_dir), dict(os.environ), force=args.force):
        print(f"voxfleet: {line}")
    print(f"voxfleet: now run: systemctl daemon-reload && systemctl enable --now {args.name}\n"
          f"          logs: journalctl -u {args.name} -f; health: curl -fsS http://127.0.0.1:{settings.port}/healthz")
    return 0


def add_service_parser(sub: argparse._SubParsersAction) -> None:
    import getpass

    service = sub.add_parser("service", help="run voxfleet as a systemd service")
    service_sub = service.add_subparsers(dest="service_command", required=True)
    for name, text in (("unit", "print the systemd unit for this install"),
                       ("install", "write the systemd unit and an environment file for secrets (0600)")):
        p = service_sub.add_parser(name, help=text)
        p.add_argument("--name", default="voxfleet", help="unit name (default voxfleet)")
        p.add_argument("--user", default=getpass.getuser(), help="user the service runs as (default: you)")
        p.add_argument("--config", default="/etc/voxfleet/voxfleet.toml", help="settings file the service reads")
        p.add_argument("--env-file", default="/etc/voxfleet/voxfleet.env", help="environment file for secrets")
        if name == "install":
            p.add_argument("--unit-dir", default="/etc/systemd/system", help="where to write the unit")
            p.add_argument("--force", action="store_true", help="rewrite the environment file if it exists")
        p.set_defaults(func=cmd_service)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voxfleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", help="bind address (default 127.0.0.1)")
        p.add_argument("--port", type=int, help="HTTP port (default 7860; 0 picks a free one)")
        p.add_argument("--bot", help="serve this bot.py (async def bot(runner_args)) instead of the agents in config")
        p.add_argument("--agent-name", help="agent name for --bot (default: the file's stem)")
        p.add_argument("--advertise", action="append", metavar="IP",
                       help="IP address bots offer as ICE host candidate (repeatable)")
        p.add_argument("--log-level", help="DEBUG, INFO, WARNING (default INFO)")
        p.add_argument("--ssl-certfile", metavar="FILE", help="TLS certificate chain (PEM): serve HTTPS")
        p.add_argument("--ssl-keyfile", metavar="FILE", help="private key (PEM) of --ssl-certfile")

    serve = sub.add_parser("serve", help="run the control plane, the bots' templates and the website")
    common(serve)
    serve.add_argument("--dev", action="store_true",
                       help="no API key checks at all (local development; announced loudly at start)")
    serve.add_argument("--backend", choices=["local", "ray"],
                       help="where bots run: forked on this machine (default) or as actors on a Ray cluster")
    serve.add_argument("--ray-address", metavar="HOST:PORT",
                       help="the Ray cluster's GCS address (implies --backend ray; see docs/ray.md)")
    serve.set_defaults(func=cmd_serve)

    agents = sub.add_parser("agents", help="list the configured agents")
    common(agents)
    agents.set_defaults(func=cmd_agents)

    sessions = sub.add_parser("sessions", help="list or show sessions of a running server")
    sessions.add_argument("action", choices=["list", "show"])
    sessions.add_argument("session_id", nargs="?")
    sessions.add_argument("--url", default="http://127.0.0.1:7860", help="the server (default %(default)s)")
    sessions.add_argument("--limit", type=int, default=50)
    sessions.add_argument("--key", default=os.environ.get("VOXFLEET_API_KEY"),
                          help="private API key (default: $VOXFLEET_API_KEY)")
    sessions.add_argument("--json", action="store_true")
    sessions.set_defaults(func=cmd_sessions)

    keys = sub.add_parser("keys", help="create, list or revoke API keys")
    keys.add_argument("action", choices=["create", "list", "revoke"])
    keys.add_argument("key_id", nargs="?", help="for revoke: the key id shown by `keys list`")
    keys.add_argument("--scope", choices=["public", "private"], default="private")
    keys.add_argument("--name", help="a label for the key")
    keys.set_defaults(func=cmd_keys)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    ttfw = bench_sub.add_parser("ttfw", help="time to first word: voxfleet vs Pipecat's dev runner")
    ttfw.add_argument("-n", "--sessions", type=int, default=10)
    ttfw.add_argument("--bot", default=None, help="bot file to serve in both (default: the built-in assistant)")
    ttfw.add_argument("--no-peer", action="store_true", help="skip the Pipecat dev-runner run")
    ttfw.add_argument("--question", default="What is the capital of France?")
    ttfw.add_argument("--json", action="store_true")
    ttfw.set_defaults(func=cmd_bench, run=bench_ttfw)
    turn = bench_sub.add_parser("turn", help="voice-to-voice per turn at the caller and in the record, by stage; "
                                             "vs a plain Pipecat bot under voxfleet and Pipecat's dev runner")
    turn.add_argument("-n", "--calls", type=int, default=10)
    turn.add_argument("--bot", default=None, help="the plain bot file (default: voxfleet/testing/plain_bot.py)")
    turn.add_argument("--concurrency", default="1", metavar="K,K,...",
                      help="also call the assistant K at a time, for each K (e.g. 1,2,4)")
    turn.add_argument("--no-plain", action="store_true", help="skip the plain bot under voxfleet")
    turn.add_argument("--no-peer", action="store_true", help="skip the Pipecat dev-runner run")
    turn.add_argument("--no-assistant", action="store_true", help="skip the built-in assistant under voxfleet")
    turn.add_argument("--question", default="What is the capital of France?")
    turn.add_argument("--record", action="store_true",
                      help="the assistant's calls alternate between recording off and on (one server); "
                           "prints V2V p50/p95 of both and their ratio")
    turn.add_argument("--json", action="store_true")
    turn.set_defaults(func=cmd_bench, run=bench_turn)
    capacity = bench_sub.add_parser("capacity", help="how many concurrent assistant calls this node serves "
                                                     "within 1.3x of one call's voice-to-voice p95; the profile")
    capacity.add_argument("-n", "--calls", type=int, default=6, help="calls per level (rounded to whole batches)")
    capacity.add_argument("--max", type=int, default=None, help="the most concurrent calls to try "
                          "(default: what the node admits at the smallest profile)")
    capacity.add_argument("--question", default="What is the capital of France?")
    capacity.add_argument("--json", action="store_true")
    capacity.set_defaults(func=cmd_bench, run=bench_capacity)
    stt = bench_sub.add_parser("stt", help="Whisper: faster-whisper's 30 s window vs a window sized to the "
                                           "utterance; latency and word error rate")
    stt.add_argument("--threads", default="1,2", metavar="N,N,...", help="CPU thread counts to try")
    stt.add_argument("--json", action="store_true")
    stt.set_defaults(func=cmd_bench, run=bench_stt)
    start = bench_sub.add_parser("start", help="warm vs cold starts, assignment latency, bot PSS, a 10x burst")
    start.add_argument("-n", "--sessions", type=int, default=20)
    start.add_argument("--json", action="store_true")
    start.set_defaults(func=cmd_bench, run=bench_start)
    phone = bench_sub.add_parser("phone", help="phone calls: TTFW warm/cold, V2V, relay latency per frame, "
                                               "vs Pipecat's dev runner")
    phone.add_argument("-n", "--calls", type=int, default=10)
    phone.add_argument("--no-peer", action="store_true", help="skip the Pipecat dev-runner run")
    phone.add_argument("--question", default="What is the capital of France?")
    phone.add_argument("--provider", default="twilio",
                       help="the carrier whose protocol the calls speak (twilio, plivo, ...)")
    phone.add_argument("--json", action="store_true")
    phone.set_defaults(func=cmd_bench, run=bench_phone)
    outbound = bench_sub.add_parser("outbound", help="outbound calls: request -> callee hears the first word, "
                                                     "answer -> first word, V2V; --record: recording on vs off")
    outbound.add_argument("-n", "--calls", type=int, default=10)
    outbound.add_argument("--record", action="store_true", help="alternate with an agent that records its calls")
    outbound.add_argument("--question", default="What is the capital of France?")
    outbound.add_argument("--json", action="store_true")
    outbound.set_defaults(func=cmd_bench, run=bench_outbound)
    flood = bench_sub.add_parser("flood", help="one client floods /start: what it gets, and another caller's "
                                               "start-to-audio idle vs during the flood")
    flood.add_argument("-n", "--calls", type=int, default=10)
    flood.add_argument("--concurrency", type=int, default=8, help="the flood's requests in flight")
    flood.add_argument("--json", action="store_true")
    flood.set_defaults(func=cmd_bench, run=bench_flood)
    chaos = bench_sub.add_parser("chaos", help="random kill -9/SIGSTOP/SIGSEGV/raise of bots and templates and "
                                               "control-plane restarts during calls: was every caller told, is "
                                               "anything leaked or lost")
    chaos.add_argument("-n", "--faults", type=int, default=60)
    chaos.add_argument("--seed", type=int, default=1)
    chaos.add_argument("--concurrency", type=int, default=3, help="faulted calls side by side")
    chaos.add_argument("--restart-every", type=int, default=None, metavar="K",
                       help="one fault in K is a control-plane restart (default: max(5, n/5))")
    chaos.add_argument("--json", action="store_true")
    chaos.set_defaults(func=cmd_bench, run=bench_chaos)
    on_ray = bench_sub.add_parser("ray", help="warm and cold starts on a local Ray cluster vs the local backend")
    on_ray.add_argument("-n", "--sessions", type=int, default=10)
    on_ray.add_argument("--json", action="store_true")
    on_ray.set_defaults(func=cmd_bench, run=bench_ray)

    from voxfleet.sim.cli import add_simulate_parser

    add_simulate_parser(sub)
    add_service_parser(sub)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"voxfleet: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

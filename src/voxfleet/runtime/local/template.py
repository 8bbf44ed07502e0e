"""The template process: imports everything once, then forks one child per session.

Run as ``python -m voxfleet.runtime.local.template CONTROL_SOCKET '<BotSpec as JSON>'`` by the
local backend. It
imports Pipecat, aiortc and the agent's bot module, runs the bot's optional ``preload()``, then
connects to the control socket and waits for ``Fork`` messages. Each child hosts exactly one
session (see ``runtime/bot_host.py``) and exits; the template reaps it and reports how it ended.

The template stays single-threaded and runs no event loop, so a fork copies a clean process.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
from typing import Any

from voxfleet.runtime.messages import (
    BotSpec, Exited, Fork, Forked, ForkFailed, Message, Shutdown, TemplateReady, decode, encode,
)

log = logging.getLogger(__name__)

# Modules every session needs; importing them here is what makes a fork start fast.
WARM_IMPORTS = (
    "aiortc",
    "pipecat.pipeline.pipeline",
    "pipecat.pipeline.task",
    "pipecat.pipeline.runner",
    "pipecat.processors.frameworks.rtvi",
    "pipecat.transports.smallwebrtc.connection",
    "pipecat.transports.smallwebrtc.request_handler",
    "pipecat.transports.smallwebrtc.transport",
    "pipecat.runner.types",
    "pipecat.runner.utils",
    "voxfleet.runtime.bot_host",
)
# Imported when present: modules that libraries load lazily on a session's first request.
OPTIONAL_WARM_IMPORTS = ("openai.resources.chat.completions", "httpx", "aiohttp")


class Template:
    def __init__(self, control_socket: str, spec: BotSpec) -> None:
        self.control_socket = control_socket
        self.spec = spec
        self.agent = spec.agent
        self.children: dict[int, str] = {}  # pid -> bot_id
        self.sock: socket.socket | None = None
        self.module: Any = None  # the agent's bot module, once prepare() imported it

    def prepare(self) -> dict[str, float]:
        import importlib

        from voxfleet.bots.loader import load_bot_module

        t0 = time.monotonic()
        for name in WARM_IMPORTS:
            importlib.import_module(name)
        for name in OPTIONAL_WARM_IMPORTS:
            try:
                importlib.import_module(name)
            except ImportError:
                pass
        self.module = load_bot_module(self.spec.bot, self.agent)
        t1 = time.monotonic()
        preload = getattr(self.module, "preload", None)
        if callable(preload):
            preload()
        t2 = time.monotonic()
        if threading.active_count() > 1:
            log.warning(
                "agent %s: %d threads alive in the template before fork; children inherit none of them",
                self.agent, threading.active_count(),
            )
        return {"import_s": round(t1 - t0, 3), "preload_s": round(t2 - t1, 3)}

    def send(self, message: Message) -> None:
        assert self.sock is not None
        self.sock.sendall(encode(message))

    def serve(self, timings: dict[str, float]) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.control_socket)
        rfd, wfd = os.pipe()
        os.set_blocking(wfd, False)
        os.set_blocking(rfd, False)
        signal.set_wakeup_fd(wfd)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: None)
        self.send(TemplateReady(agent=self.agent, pid=os.getpid(), **timings))

        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ, "control")
        selector.register(rfd, selectors.EVENT_READ, "signal")
        buffer = b""
        stopping = False
        while not stopping:
            for key, _ in selector.select():
                if key.data == "signal":
                    signums = os.read(rfd, 512)
                    self.reap()
                    if signal.SIGTERM in signums:
                        stopping = True
                    continue
                data = self.sock.recv(65536)
                if not data:
                    stopping = True  # the control plane is gone
                    break
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    message = decode(line)
                    if isinstance(message, Fork):
                        self.fork(message, (rfd, wfd))
                    elif isinstance(message, Shutdown):
                        stopping = True
        self.shutdown()

    def fork(self, message: Fork, pipe: tuple[int, int]) -> None:
        try:
            pid = os.fork()
        except OSError as exc:  # EAGAIN (process limit), ENOMEM: this bot fails, the template serves on
            log.error("agent %s: cannot fork bot %s: %s", self.agent, message.bot_id, exc)
            self.send(ForkFailed(bot_id=message.bot_id, error=f"fork: {exc}"))
            return
        if pid == 0:
            self.become_bot(message, pipe)
        self.children[pid] = message.bot_id
        self.send(Forked(bot_id=message.bot_id, pid=pid))

    def become_bot(self, message: Fork, pipe: tuple[int, int]) -> None:
        code = 70
        try:
            signal.set_wakeup_fd(-1)
            for fd in pipe:
                os.close(fd)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            assert self.sock is not None
            self.sock.close()
            from voxfleet.runtime.bot_host import run_bot_host

            code = run_bot_host(
                control_socket=self.control_socket,
                spec=self.spec,
                bot_id=message.bot_id,
                start=message.start,
                bot=self.module.bot,
                warmup=getattr(self.module, "warmup", None),
                preload=message.preload,
            )
        except BaseException:  # noqa: BLE001 - a forked child must never return into the template
            log.exception("bot %s (session %s): bot host failed", message.bot_id,
                          message.start.session_id if message.start else None)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            bot_id = self.children.pop(pid, None)
            code = os.waitstatus_to_exitcode(status)
            self.send(Exited(bot_id=bot_id, pid=pid, exit_code=code if code >= 0 else None,
                             signal=-code if code < 0 else None))

    def shutdown(self) -> None:
        """Leave the children running: a bot in a call survives its template (and a restart of
        the control plane, which it rejoins on the control socket); an idle or orphaned bot ends
        itself when it finds no control plane."""
        if self.children:
            log.info("agent %s: template exits; %d bot(s) carry on", self.agent, len(self.children))


def main() -> None:
    control_socket, spec = sys.argv[1], BotSpec.from_json(sys.argv[2])
    from voxfleet.observability.logs import configure_logging

    configure_logging(spec.log_level, process=f"template:{spec.agent}", log_format=spec.log_format)
    template = Template(control_socket, spec)
    timings = template.prepare()
    log.info("agent %s: template ready in %.2fs (imports %.2fs, preload %.2fs)",
             spec.agent, sum(timings.values()), timings["import_s"], timings["preload_s"])
    template.serve(timings)


if __name__ == "__main__":
    main()

"""Run a bot under Pipecat's own dev runner (``pipecat.runner.run``), for side-by-side benchmarks.

``python -m voxfleet.testing.devrunner <bot.py | module> [runner args]``. The only change from
running the bot file directly: ICE host candidates on loopback (as voxfleet's bots are
configured for local runs), which aioice would otherwise never offer. With ``VOXFLEET_TURNS_FILE``
set, every user turn is also timed by voxfleet's own observer (``runtime/turn_observer.py``, as
voxfleet times its bots) and appended to that file as a JSON line, so a benchmark compares the
same stages under both runners.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    from voxfleet.bots.loader import load_bot_module
    from voxfleet.transports.ice import advertise_addresses

    advertise_addresses(["127.0.0.1"])
    if os.environ.get("VOXFLEET_TURNS_FILE"):
        time_turns(os.environ["VOXFLEET_TURNS_FILE"])
    module = load_bot_module(sys.argv[1])
    sys.modules["__main__"] = module  # the runner looks for `bot` in __main__
    sys.argv = [sys.argv[1], *sys.argv[2:]]
    from pipecat.runner.run import main as runner_main

    runner_main()


def time_turns(path: str) -> None:
    """Time every turn of this process's bots as voxfleet times its own; each turn is appended to
    `path` as {v2vMs, speechEndAt, stagesMs}."""
    from voxfleet.runtime.turn_observer import observe_every_worker

    def write(turn) -> None:
        with open(path, "a") as out:
            out.write(json.dumps(turn.to_public()) + "\n")

    observe_every_worker(write)


if __name__ == "__main__":
    main()

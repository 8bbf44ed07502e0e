"""Run a bot under Pipecat's own dev runner (``pipecat.runner.run``), for side-by-side benchmarks.

``python -m voxfleet.testing.devrunner <bot.py | module> [runner args]``. The only change from
running the bot file directly: ICE host candidates on loopback (as voxfleet's bots are
configured for local runs), which aioice would otherwise never offer.
"""

from __future__ import annotations

import sys


def main() -> None:
    from voxfleet.bots.loader import load_bot_module
    from voxfleet.transports.ice import advertise_addresses

    advertise_addresses(["127.0.0.1"])
    module = load_bot_module(sys.argv[1])
    sys.modules["__main__"] = module  # the runner looks for `bot` in __main__
    sys.argv = [sys.argv[1], *sys.argv[2:]]
    from pipecat.runner.run import main as runner_main

    runner_main()


if __name__ == "__main__":
    main()

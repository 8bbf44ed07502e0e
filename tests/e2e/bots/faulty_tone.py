"""voxfleet's tone bot with switches for the tests of a bot that misbehaves, read from the
session's body: ``{"fail": true}`` makes it raise before it answers, ``{"hog_mb": N}`` makes it
hold N MiB of touched memory for the whole call (to go over its profile's memory limit)."""

from pipecat.runner.types import RunnerArguments

from voxfleet.bots import tone


async def bot(runner_args: RunnerArguments):
    body = runner_args.body or {}
    if body.get("fail"):
        raise RuntimeError("tone bot was asked to fail")
    ballast = bytearray(b"\x01") * (int(body.get("hog_mb", 0)) * 1024 * 1024)  # touched pages count in PSS
    await tone.bot(runner_args)
    del ballast

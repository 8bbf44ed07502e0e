"""voxfleet's tone bot with switches for the tests of a bot that misbehaves, read from the
session's body: ``{"fail": true}`` makes it raise before it answers, ``{"fail_after_s": S}``
raise S seconds into the call (its pipeline still running), ``{"hog_mb": N}`` hold N MiB of
touched memory for the whole call (to go over its profile's memory limit). A phone call from
``FAILING_CALLER`` fails 1 s into the call (a phone call's body is its webhook's fields)."""

import asyncio

from pipecat.runner.types import RunnerArguments

from voxfleet.bots import tone

FAILING_CALLER = "+15550000666"


async def bot(runner_args: RunnerArguments):
    body = runner_args.body or {}
    if body.get("fail"):
        raise RuntimeError("tone bot was asked to fail")
    fail_after_s = body.get("fail_after_s")
    if (body.get("call") or {}).get("From") == FAILING_CALLER:
        fail_after_s = 1.0
    if fail_after_s is not None:
        running = asyncio.ensure_future(tone.bot(runner_args))  # noqa: F841 - the call goes on until the raise
        await asyncio.sleep(float(fail_after_s))
        raise RuntimeError(f"tone bot was asked to fail {fail_after_s}s into the call")
    ballast = bytearray(b"\x01") * (int(body.get("hog_mb", 0)) * 1024 * 1024)  # touched pages count in PSS
    await tone.bot(runner_args)
    del ballast

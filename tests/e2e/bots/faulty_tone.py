"""The tone bot made to misbehave, served by path (``--bot tests/e2e/bots/faulty_tone.py``) as a
user's file would be: the bot itself is ``voxfleet.testing.faulty_tone`` (one copy, also served by
``voxfleet bench chaos``)."""

from voxfleet.testing.faulty_tone import FAILING_CALLER, bot

__all__ = ["FAILING_CALLER", "bot"]

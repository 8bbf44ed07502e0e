"""Bot references checked at start (bots/loader.check_bot_ref): the setting named, nothing imported."""

import re

import pytest

from voxfleet.bots.loader import check_bot_ref
from voxfleet.exceptions import ConfigError


def test_good_references_pass(tmp_path):
    (tmp_path / "bot.py").write_text("async def bot(runner_args):\n    pass\n")
    (tmp_path / "aliased.py").write_text("from elsewhere import run as bot\n")
    check_bot_ref(str(tmp_path / "bot.py"), "a")
    check_bot_ref(str(tmp_path / "aliased.py"), "a")
    check_bot_ref("voxfleet.bots.assistant", "assistant")


@pytest.mark.parametrize("content, ref, message", [
    (None, "missing.py", "agents[a].bot: no such file"),
    ("x = 1\n", "nobot.py", "must define `async def bot(runner_args)`"),
    ("def bot(:\n", "broken.py", "is not valid Python"),
    (None, "voxfleet.bots.no_such_bot", "cannot import module 'voxfleet.bots.no_such_bot'"),
    (None, "no_such_package.bot", "cannot import module 'no_such_package.bot'"),
])
def test_bad_references_name_the_setting(tmp_path, content, ref, message):
    if ref.endswith(".py"):
        if content is not None:
            (tmp_path / ref).write_text(content)
        ref = str(tmp_path / ref)
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_bot_ref(ref, "a")

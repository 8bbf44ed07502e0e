"""Loading a user's bot: a ``bot.py`` path or a dotted module that defines ``async def bot(runner_args)``.

The contract is Pipecat Cloud's base image: the file is imported once (in voxfleet, once per
template process, before any session exists) and ``bot(runner_args)`` is called per session.
Optional extension: ``def preload()`` is called once after import, in the template, before any
fork. Put fork-safe, session-independent work there (e.g. loading ONNX models). Do not start
threads or thread pools in it: a forked child inherits none of them.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

from voxfleet.exceptions import ConfigError


def load_bot_module(ref: str, agent: str = "") -> ModuleType:
    """Import the bot named by `ref` (file path or module name) and check its contract."""
    label = f"agents[{agent}].bot" if agent else "bot"
    if ref.endswith(".py") or "/" in ref:
        path = Path(ref).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"{label}: no such file {ref!r}")
        # Import under a unique name so two agents' bot.py files do not collide, and let the
        # bot import sibling modules as it would under Pipecat's runner.
        sys.path.insert(0, str(path.parent))
        name = f"voxfleet_user_bot_{agent or path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"{label}: cannot import {ref!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(ref)
        except ModuleNotFoundError as exc:
            raise ConfigError(f"{label}: cannot import module {ref!r}: {exc}") from exc
    bot = getattr(module, "bot", None)
    if bot is None or not inspect.iscoroutinefunction(bot):
        raise ConfigError(f"{label}: {ref!r} must define `async def bot(runner_args)`")
    return module

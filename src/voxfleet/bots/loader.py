"""Loading a user's bot: a ``bot.py`` path or a dotted module that defines ``async def bot(runner_args)``.

The contract is Pipecat Cloud's base image: the file is imported once (in voxfleet, once per
template process, before any session exists) and ``bot(runner_args)`` is called per session.
Optional extension: ``def preload()`` is called once after import, in the template, before any
fork. Put fork-safe, session-independent work there (e.g. loading ONNX models). Do not start
threads or thread pools in it: a forked child inherits none of them.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

from voxfleet.exceptions import ConfigError


def check_bot_ref(ref: str, agent: str = "") -> None:
    """At start, without importing it: `ref` names a readable Python file (or an importable
    module) that defines ``bot`` at top level. ConfigError naming the setting otherwise, so a
    wrong path stops `voxfleet serve` at once instead of a template failing again and again."""
    label = f"agents[{agent}].bot" if agent else "bot"
    if ref.endswith(".py") or "/" in ref:
        path = Path(ref).expanduser()
        if not path.is_file():
            raise ConfigError(f"{label}: no such file {ref!r}")
    else:
        try:
            spec = importlib.util.find_spec(ref)
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"{label}: cannot import module {ref!r}: {exc}") from exc
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            if spec is None:
                raise ConfigError(f"{label}: cannot import module {ref!r}: no such module")
            return  # a compiled or namespace module: checked when the template imports it
        path = Path(spec.origin)
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read {ref!r}: {exc.strerror}") from exc
    except SyntaxError as exc:
        raise ConfigError(f"{label}: {ref!r} is not valid Python: {exc.msg} (line {exc.lineno})") from exc
    if "bot" not in _top_level_names(tree):
        raise ConfigError(f"{label}: {ref!r} must define `async def bot(runner_args)`")


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


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

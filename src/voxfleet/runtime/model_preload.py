"""Model pre-loading for unchanged bots: a warm bot builds, after the fork, the models its agent's
bot built in its last session, and hands each to the bot's own constructor call when the
arguments match exactly.

In a bot process (one session per process) the loaders that Pipecat's local services use are
wrapped: ``faster_whisper.WhisperModel`` (CTranslate2), ``piper.PiperVoice.load`` and
``onnxruntime.InferenceSession`` (Silero VAD, smart-turn, Kokoro and others). Each call whose
arguments can be written down (paths, strings, numbers, ``SessionOptions`` thread settings) is
reported (``model_load``: what, with which arguments, how long, prebuilt or not), and the control
plane keeps the last session's list per agent (its *manifest*). A warm bot given a manifest builds
those models before its session; when ``bot()`` then asks for the same thing, it gets that
prebuilt instance (each instance used once; nothing is shared between sessions). Any other call,
e.g. arguments that differ per session, builds normally: the bot is never given a model it did
not ask for.

Piper's first words are learned the same way: the first text a session's Piper voice synthesizes
(its greeting, typically the same every session) is reported (``piper.phrase``),
and a warm bot synthesizes them in advance with its own prebuilt voice; when the bot's voice is
asked for exactly that text (default synthesis settings) it yields those chunks at once instead
of synthesizing them again. Only when ``bot()`` speaks a text word for word as the last session
did; anything else is synthesized as asked.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

log = logging.getLogger(__name__)

_SESSION_OPTION_FIELDS = ("intra_op_num_threads", "inter_op_num_threads", "execution_mode",
                          "graph_optimization_level", "enable_cpu_mem_arena", "enable_mem_pattern")


class NotRecordable(ValueError):
    """An argument that cannot be written down (and so cannot be matched or pre-built)."""


def _plain(value: Any) -> Any:
    """`value` as JSON-able data, or NotRecordable."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, PurePath) or type(value).__name__ in ("PosixPath", "MultiplexedPath"):
        return {"path": str(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v) for k, v in value.items()}
    if type(value).__name__ == "SessionOptions":
        return {"session_options": {f: _plain(_enum_value(getattr(value, f))) for f in _SESSION_OPTION_FIELDS}}
    raise NotRecordable(f"{type(value).__name__} argument")


def _enum_value(value: Any) -> Any:
    return int(value) if hasattr(value, "__int__") and not isinstance(value, (bool, int, float)) else value


def _live(value: Any) -> Any:
    """Inverse of _plain: the arguments to build a recorded call again."""
    if isinstance(value, list):
        return [_live(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"path"}:
            return value["path"]
        if set(value) == {"session_options"}:
            import onnxruntime as ort

            options = ort.SessionOptions()
            for name, setting in value["session_options"].items():
                if name == "execution_mode":
                    setting = ort.ExecutionMode(setting)
                elif name == "graph_optimization_level":
                    setting = ort.GraphOptimizationLevel(setting)
                setattr(options, name, setting)
            return options
        return {k: _live(v) for k, v in value.items()}
    return value


def call_key(kind: str, args: list[Any], kwargs: dict[str, Any]) -> str:
    return json.dumps([kind, args, kwargs], sort_keys=True)


PIPER_LOAD, PIPER_PHRASE = "piper.PiperVoice.load", "piper.phrase"
# per session: the first text its Piper voice speaks (the greeting; an answer is not learned, even
# when a caller asks what the last one asked: the next caller's question is not known)
MAX_PHRASES = 1
MAX_PHRASE_CHARS = 300


class ModelPreloader:
    """The wrapped loaders of one bot process, and the models pre-built for its session."""

    def __init__(self, report: Callable[[dict[str, Any]], None],
                 in_session: Callable[[], bool] = lambda: True) -> None:
        self.report = report
        self.in_session = in_session  # phrases are learned from a session's speech only
        self.prebuilt: dict[str, list[Any]] = {}
        self.originals: dict[str, Callable[..., Any]] = {}
        self.descriptors: dict[str, tuple[type, str, Any]] = {}  # what install() replaced, to put back
        self._local = threading.local()  # depth > 0 inside a wrapped call or a prebuild, per thread
        self._building = threading.Lock()  # one prebuild at a time (a top-up may meet the first)

    # -- the loaders we know ------------------------------------------------------------------
    def install(self) -> None:
        """Wrap the loaders, in this process only, of the libraries the bot imported (a library it
        does not use is neither imported nor wrapped)."""
        import sys

        if "faster_whisper" in sys.modules:
            self._wrap_init("faster_whisper.WhisperModel", sys.modules["faster_whisper"].WhisperModel)
        if "onnxruntime" in sys.modules:
            self._wrap_init("onnxruntime.InferenceSession", sys.modules["onnxruntime"].InferenceSession)
        if "piper" in sys.modules:
            self._wrap_load(PIPER_LOAD, sys.modules["piper"].PiperVoice)
            self._wrap_synthesize(sys.modules["piper"].PiperVoice)

    def uninstall(self) -> None:
        """Put the original loaders back."""
        for kind, (cls, attr, descriptor) in self.descriptors.items():
            setattr(cls, attr, descriptor)
        self.originals.clear()
        self.descriptors.clear()

    def _wrap_init(self, kind: str, cls: type) -> None:
        original = cls.__init__
        if getattr(original, "voxfleet_wrapped", False):
            return
        self.originals[kind] = original
        self.descriptors[kind] = (cls, "__init__", cls.__dict__["__init__"])
        preloader = self

        def init(obj: Any, *args: Any, **kwargs: Any) -> None:
            if preloader._inside():
                return original(obj, *args, **kwargs)
            ready = preloader._take(kind, args, kwargs)
            if ready is not None:
                obj.__dict__.update(ready.__dict__)  # the prebuilt object's state, used once
                return
            preloader._timed(kind, args, kwargs, lambda: original(obj, *args, **kwargs))

        init.voxfleet_wrapped = True  # type: ignore[attr-defined]
        cls.__init__ = init  # type: ignore[method-assign]

    def _wrap_load(self, kind: str, cls: type) -> None:
        original = cls.load
        if getattr(original, "voxfleet_wrapped", False):
            return
        self.originals[kind] = original
        self.descriptors[kind] = (cls, "load", cls.__dict__["load"])
        preloader = self

        def load(*args: Any, **kwargs: Any) -> Any:
            if preloader._inside():
                return original(*args, **kwargs)
            ready = preloader._take(kind, args, kwargs)
            if ready is not None:
                return ready
            voice = preloader._timed(kind, args, kwargs, lambda: original(*args, **kwargs))
            entry = preloader._record(kind, args, kwargs)
            # its phrases are learned under its load; a voice a warm bot built in its own warmup()
            # is no load of the session's (not in the manifest), so nothing it says is learned
            if entry is not None and preloader.in_session():
                voice.voxfleet_load = [entry["args"], entry["kwargs"]]
            return voice

        load.voxfleet_wrapped = True  # type: ignore[attr-defined]
        cls.load = staticmethod(load)  # type: ignore[method-assign]

    def _wrap_synthesize(self, cls: type) -> None:
        original = cls.synthesize
        if getattr(original, "voxfleet_wrapped", False):
            return
        self.originals[PIPER_PHRASE] = original
        self.descriptors[PIPER_PHRASE] = (cls, "synthesize", cls.__dict__["synthesize"])
        preloader = self
        learned: list[str] = []

        def synthesize(voice: Any, text: str, *args: Any, **kwargs: Any) -> Any:
            load = getattr(voice, "voxfleet_load", None)
            if preloader._inside() or load is None or args or kwargs or not isinstance(text, str):
                return original(voice, text, *args, **kwargs)
            entry = {"kind": PIPER_PHRASE, "args": [*load, text], "kwargs": {}}
            ready = preloader.prebuilt.get(call_key(PIPER_PHRASE, entry["args"], {}))
            if ready:
                preloader.report({**entry, "seconds": 0.0, "prebuilt": True})
                if preloader.in_session() and text not in learned:
                    learned.append(text)  # the session's first text, though it needed no synthesis
                return iter(ready[0])  # the same words, synthesized by this voice before the session
            if (preloader.in_session() and text not in learned and len(learned) < MAX_PHRASES
                    and len(text) <= MAX_PHRASE_CHARS):
                learned.append(text)
                preloader.report({**entry, "seconds": 0.0, "prebuilt": False})
            return original(voice, text)

        synthesize.voxfleet_wrapped = True  # type: ignore[attr-defined]
        cls.synthesize = synthesize  # type: ignore[attr-defined]

    def _depth(self) -> int:
        return getattr(self._local, "depth", 0)

    def _inside(self) -> bool:
        """A load made by another wrapped load (Piper opens an ONNX Runtime session) or by a
        prebuild is not the bot's own call."""
        return self._depth() > 0

    # -- calls --------------------------------------------------------------------------------
    def _record(self, kind: str, args: tuple, kwargs: dict) -> dict[str, Any] | None:
        try:
            return {"kind": kind, "args": _plain(list(args)), "kwargs": _plain(dict(kwargs))}
        except NotRecordable as exc:
            log.info("model load %s not pre-loadable: %s", kind, exc)
            return None

    def _take(self, kind: str, args: tuple, kwargs: dict) -> Any:
        entry = self._record(kind, args, kwargs)
        if entry is None:
            return None
        ready = self.prebuilt.get(call_key(kind, entry["args"], entry["kwargs"]))
        if not ready:
            return None
        self.report({**entry, "seconds": 0.0, "prebuilt": True})
        return ready.pop()

    def _timed(self, kind: str, args: tuple, kwargs: dict, build: Callable[[], Any]) -> Any:
        started = time.monotonic()
        self._local.depth = self._depth() + 1
        try:
            result = build()
        finally:
            self._local.depth -= 1
        entry = self._record(kind, args, kwargs)
        if entry is not None:
            self.report({**entry, "seconds": round(time.monotonic() - started, 3), "prebuilt": False})
        return result

    # -- a warm bot, before its session -------------------------------------------------------
    def prebuild(self, manifest: list[dict[str, Any]]) -> list[str]:
        """Hold exactly what `manifest` lists, built after the fork with this process's own thread
        pools: what is missing is built, what it no longer lists is dropped. Returns the problems
        met; a model that fails to build is skipped (the bot will build it itself)."""
        wanted: dict[str, list[dict[str, Any]]] = {}
        for entry in manifest:
            kind, args, kwargs = str(entry.get("kind")), entry.get("args") or [], entry.get("kwargs") or {}
            wanted.setdefault(call_key(kind, args, kwargs), []).append(
                {"kind": kind, "args": args, "kwargs": kwargs})
        for key in [k for k in self.prebuilt if k not in wanted]:
            del self.prebuilt[key]
        problems: list[str] = []
        self._local.depth = self._depth() + 1
        try:
            with self._building:
                self._build_wanted(wanted, problems)
        finally:
            self._local.depth -= 1
        return problems

    def _build_wanted(self, wanted: dict[str, list[dict[str, Any]]], problems: list[str]) -> None:
        for key, entries in wanted.items():
            have = self.prebuilt.setdefault(key, [])
            del have[len(entries):]
            for entry in entries[len(have):]:
                try:
                    if entry["kind"] == PIPER_PHRASE:
                        built = self._phrase(entry["args"])
                    else:
                        built = self._build(entry["kind"], _live(entry["args"]), _live(entry["kwargs"]))
                        if entry["kind"] == PIPER_LOAD:  # its phrases are keyed by its load as recorded
                            built.voxfleet_load = [entry["args"], entry["kwargs"]]
                    have.append(built)
                except Exception as exc:  # noqa: BLE001 - reported; the bot builds it itself
                    problems.append(f"{entry['kind']}: {type(exc).__name__}: {exc}")
                    break

    def _build(self, kind: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if kind == "faster_whisper.WhisperModel":
            from faster_whisper import WhisperModel

            obj = WhisperModel.__new__(WhisperModel)
        elif kind == "onnxruntime.InferenceSession":
            import onnxruntime

            obj = onnxruntime.InferenceSession.__new__(onnxruntime.InferenceSession)
        elif kind == PIPER_LOAD:
            return self.originals[kind](*args, **kwargs)
        else:
            raise ValueError(f"unknown model loader {kind!r}")
        self.originals[kind](obj, *args, **kwargs)
        return obj

    def _phrase(self, args: list[Any]) -> list[Any]:
        """A learned phrase, synthesized by the prebuilt voice it was spoken with (listed before
        it in the manifest, so built first): its chunks, to be handed out as they are."""
        load_args, load_kwargs, text = args
        voices = self.prebuilt.get(call_key(PIPER_LOAD, load_args, load_kwargs))
        if not voices:
            raise ValueError("its voice is not prebuilt")
        return list(self.originals[PIPER_PHRASE](voices[0], text))

    def prebuilt_count(self) -> int:
        return sum(len(v) for v in self.prebuilt.values())


class ModelManifests:
    """Control-plane side, pure: per agent, the models its bot built in its most recent session
    that built any (what warm bots pre-build). Loads a warm bot made in its own ``warmup()``
    before any session are not the bot's per-session work and are not learned."""

    def __init__(self, enabled: set[str], max_models: int = 16) -> None:
        self.enabled = set(enabled)
        self.max_models = max_models
        self.models: dict[str, list[dict[str, Any]]] = {}

    def session_ended(self, agent: str, loads: list[dict[str, Any]]) -> bool:
        """A session of `agent` ended having reported `loads`; True if its manifest changed."""
        if agent not in self.enabled:
            return False
        built = [{"kind": e["kind"], "args": e.get("args") or [], "kwargs": e.get("kwargs") or {}}
                 for e in loads if e.get("in_session") and "kind" in e][: self.max_models]
        if not built or built == self.models.get(agent):
            return False
        self.models[agent] = built
        return True

    def for_agent(self, agent: str) -> list[dict[str, Any]]:
        return list(self.models.get(agent, [])) if agent in self.enabled else []

    def status(self, agent: str) -> dict[str, Any]:
        """What GET /v1/agents shows: on or off, and what a warm bot builds before its session."""
        return {"enabled": agent in self.enabled,
                "models": [f"{m['kind']}({_first_arg(m)})" for m in self.for_agent(agent)]}


def _first_arg(entry: dict[str, Any]) -> str:
    args = entry.get("args") or []
    if entry.get("kind") == PIPER_PHRASE and len(args) == 3:
        return repr(str(args[2])[:40])
    first = args[0] if args else next(iter((entry.get("kwargs") or {}).values()), "")
    if isinstance(first, dict) and "path" in first:
        first = first["path"]
    return str(first)

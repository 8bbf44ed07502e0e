"""A control-plane restart keeps calls talking: a question asked after it is answered aloud."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.conftest import Server, wait_for
from voxfleet.bench.speech import speak
from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.procutil import pid_alive
from voxfleet.transports.ice import advertise_addresses

pytestmark = pytest.mark.e2e


async def test_a_question_asked_after_a_control_plane_restart_is_answered(tmp_path):
    advertise_addresses(["127.0.0.1"])
    run_dir = tmp_path / "run"
    env = {"VOXFLEET_RUNTIME_DIR": str(run_dir)}
    first = Server(env=env)
    caller = WebRTCCaller(first.url)
    second: Server | None = None
    llm_pid = None
    try:
        result = await caller.connect()
        await caller.wait_first_audio(timeout=30)
        await caller.wait_bot_quiet(quiet_for=0.8, timeout=30)
        llm_pid = json.loads((run_dir / "llm-server.json").read_text())["pid"]
        first.proc.kill()  # kill -9: no drain, nothing stopped
        first.proc.wait()
        assert pid_alive(llm_pid)  # the bot's LLM outlives the control plane

        second = Server(env={**env, "VOXFLEET_DATABASE_URL": first.database_url}, key=first.key)
        with second.client() as http:
            wait_for(lambda: http.get(f"/v1/sessions/{result.session_id}").json()
                     .get("timingsMs", {}).get("resumed"), timeout=15)
            llm = http.get("/healthz").json()["llm"]
            assert llm["adopted"] and llm["pid"] == llm_pid, llm

        spoken_at = await caller.say(speak("What is the capital of France?"))
        heard = await caller.wait_rtvi(
            lambda m: m.get("type") == "user-transcription" and m["data"].get("final"), timeout=30)
        assert "france" in heard["data"]["text"].lower(), heard
        assert await caller.wait_bot_audio_after(spoken_at, timeout=30) > 0
        answer = await caller.wait_rtvi(lambda m: m.get("type") == "bot-output"
                                        and "paris" in m["data"].get("text", "").lower(), timeout=30)
        assert answer
    finally:
        await caller.close()
        if second is not None:
            second.stop()  # an orderly stop ends the bots, then the LLM server
        if llm_pid is not None and pid_alive(llm_pid):
            os.kill(llm_pid, signal.SIGKILL)
            pytest.fail("the LLM server outlived an orderly stop")

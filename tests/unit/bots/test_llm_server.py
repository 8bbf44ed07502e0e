"""The local LLM server (bots/llm_server.py), started for real with the bundled Gemma 3 270M."""

import asyncio
import json
from pathlib import Path

import httpx

from voxfleet.bots.assistant_prompts import warm_up_messages
from voxfleet.bots.llm_server import LocalLLMServer


async def answer(client: httpx.AsyncClient, url: str, question: str) -> str:
    messages = warm_up_messages()[:2] + [{"role": "user", "content": question}]
    text = ""
    async with client.stream("POST", f"{url}/chat/completions", json={
            "model": "gemma3-270m", "max_tokens": 40, "messages": messages, "stream": True}) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line[6:] != "[DONE]":
                text += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
    return text.strip()


async def test_two_calls_asking_at_once_both_get_their_whole_answer():
    # llama-cpp-python's default would end the first stream when the second request arrives
    server = LocalLLMServer(model="gemma3-270m", alias="gemma3-270m", port=0, threads=1, ctx=1024,
                            cache_dir=Path.home() / ".cache" / "voxfleet" / "models")
    await server.start()
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            first, second = await asyncio.gather(answer(client, server.base_url, "What is the capital of France?"),
                                                 answer(client, server.base_url, "What is the capital of Italy?"))
    finally:
        await server.aclose()
    assert "Paris" in first and first.endswith("."), first
    assert "Rome" in second and second.endswith("."), second


def llm_with_state(state_dir: Path, **kwargs) -> LocalLLMServer:
    return LocalLLMServer(model="gemma3-270m", alias="gemma3-270m", port=0, threads=1, ctx=1024,
                          cache_dir=Path.home() / ".cache" / "voxfleet" / "models", state_dir=state_dir, **kwargs)


async def test_the_next_control_plane_adopts_the_running_server_and_one_that_dies_comes_back_on_its_port(tmp_path):
    import os
    import signal

    from voxfleet.procutil import pid_alive

    first = llm_with_state(tmp_path)
    await first.start()
    pid, port = first.pid, first.port
    assert first.status()["adopted"] is False
    # the control plane that started it dies without stopping it (kill -9): the next one adopts it
    first._supervisor.cancel()
    second = llm_with_state(tmp_path, health_every_s=0.5)
    try:
        await second.start()
        assert (second.pid, second.port, second.status()["adopted"]) == (pid, port, True)
        os.kill(pid, signal.SIGKILL)  # the server itself dies: started again where bots look for it
        async with httpx.AsyncClient(timeout=60) as client:
            deadline = asyncio.get_running_loop().time() + 60
            while not (second.ready() and second.pid != pid):
                assert asyncio.get_running_loop().time() < deadline, second.status()
                await asyncio.sleep(0.2)
            assert second.port == port and second.restarts == 1
            assert "Paris" in await answer(client, f"http://127.0.0.1:{port}/v1", "What is the capital of France?")
        new_pid = second.pid
    finally:
        await second.aclose()
    assert not pid_alive(new_pid) and not (tmp_path / "llm-server.json").exists()


def test_an_orphaned_server_knows_when_its_owner_is_gone(tmp_path):
    import json
    import subprocess
    import sys

    from voxfleet.bots.fewshot_llm import owner_gone_for, take_option

    owner = tmp_path / "llm-server.json"
    owner.write_text(json.dumps({"owner_pid": __import__("os").getpid()}))
    assert owner_gone_for(str(owner), None, 100.0) is None
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner.write_text(json.dumps({"owner_pid": int(gone.stdout)}))
    assert owner_gone_for(str(owner), None, 100.0) == 100.0
    assert owner_gone_for(str(owner), 90.0, 100.0) == 90.0  # gone since it was first seen gone
    owner.write_text("not json")
    assert owner_gone_for(str(owner), None, 5.0) == 5.0
    argv = ["prog", "--owner_file", "F", "--port", "1"]
    assert take_option(argv, "--owner_file") == "F" and argv == ["prog", "--port", "1"]
    assert take_option(argv, "--orphan_exit_s") is None


async def test_a_server_whose_control_plane_is_gone_for_good_exits_by_itself(tmp_path):
    import json
    import subprocess
    import sys

    from voxfleet.procutil import pid_alive

    server = llm_with_state(tmp_path, orphan_exit_s=1.0)
    await server.start()
    try:
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        state = json.loads((tmp_path / "llm-server.json").read_text())
        (tmp_path / "llm-server.json").write_text(json.dumps({**state, "owner_pid": int(gone.stdout)}))
        code = await asyncio.wait_for(server.process.wait(), 15)  # owner checked every 2 s, then 1 s of grace
        assert code == 0 and not pid_alive(state["pid"])
    finally:
        await server.aclose()

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

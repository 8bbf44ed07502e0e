"""llama.cpp's OpenAI-compatible server, plus a few-shot chat format for base models.

Gemma 3 270M in the bundled GGUF is a base (pre-trained) model: through a chat template it
rambles and loops, but given a short few-shot dialogue as plain text it answers in one
sentence. The ``voxfleet-fewshot`` chat format renders the chat messages that way, so bots keep
using the ordinary chat-completions API. Run as
``python -m voxfleet.bots.fewshot_llm [--owner_file F --orphan_exit_s S] <llama_cpp.server arguments>``:
with an owner file (``bots/llm_server.py`` writes it), the server exits once the control plane
named there has been gone for S seconds, so a control plane that dies for good leaves no server.
"""

from __future__ import annotations

import sys
from typing import Any

CHAT_FORMAT = "voxfleet-fewshot"

EXAMPLES = (
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("Can you help me plan my day?", "Of course, tell me what you need to get done and I will help you plan it."),
)
STOP = ["\nUser:", "\n"]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def render(messages: list[dict[str, Any]]) -> str:
    """The prompt for `messages`: instructions, example turns, the conversation, 'Assistant:'."""
    system = " ".join(_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
    lines = [(system + " " if system else "") + "The following is a conversation with a friendly voice "
             "assistant. The assistant answers in one short sentence.", ""]
    for question, answer in EXAMPLES:
        lines += [f"User: {question}", f"Assistant: {answer}"]
    for message in messages:
        text = " ".join(_text(message.get("content")).split())
        if not text:
            continue
        if message.get("role") == "user":
            lines.append(f"User: {text}")
        elif message.get("role") == "assistant":
            lines.append(f"Assistant: {text}")
    return "\n".join(lines) + "\nAssistant:"


def owner_gone_for(owner_file: str, since: float | None, now: float) -> float | None:
    """When the owner named in `owner_file` was first seen gone (None: it runs)."""
    import json

    from voxfleet.procutil import pid_alive

    try:
        owner = json.loads(open(owner_file).read()).get("owner_pid")
    except (OSError, ValueError, AttributeError):
        owner = None
    if isinstance(owner, int) and pid_alive(owner):
        return None
    return since if since is not None else now


def watch_owner(owner_file: str, orphan_exit_s: float, every_s: float = 2.0) -> None:
    """A daemon thread that ends this process once its owner is gone for `orphan_exit_s`."""
    import os
    import threading
    import time

    def run() -> None:
        since: float | None = None
        while True:
            time.sleep(every_s)
            since = owner_gone_for(owner_file, since, time.monotonic())
            if since is not None and time.monotonic() - since >= orphan_exit_s:
                print(f"voxfleet LLM server: no control plane for {orphan_exit_s:.0f}s; exiting", file=sys.stderr)
                os._exit(0)

    threading.Thread(target=run, name="owner-watch", daemon=True).start()


def take_option(argv: list[str], name: str) -> str | None:
    """Remove ``name VALUE`` from `argv`; the value (None if absent)."""
    if name not in argv:
        return None
    at = argv.index(name)
    value = argv[at + 1]
    del argv[at:at + 2]
    return value


def main() -> None:
    owner_file = take_option(sys.argv, "--owner_file")
    orphan_exit_s = take_option(sys.argv, "--orphan_exit_s")
    if owner_file is not None:
        watch_owner(owner_file, float(orphan_exit_s or 120))

    from llama_cpp.llama_chat_format import ChatFormatterResponse, register_chat_format
    from llama_cpp.server.__main__ import main as server_main

    @register_chat_format(CHAT_FORMAT)
    def format_fewshot(messages: list[dict[str, Any]], **_: Any) -> ChatFormatterResponse:
        return ChatFormatterResponse(prompt=render(messages), stop=STOP)

    server_main()


if __name__ == "__main__":
    main()

"""llama.cpp's OpenAI-compatible server, plus a few-shot chat format for base models.

Gemma 3 270M in the bundled GGUF is a base (pre-trained) model: through a chat template it
rambles and loops, but given a short few-shot dialogue as plain text it answers in one
sentence. The ``voxfleet-fewshot`` chat format renders the chat messages that way, so bots keep
using the ordinary chat-completions API. Run as
``python -m voxfleet.bots.fewshot_llm <llama_cpp.server arguments>``.
"""

from __future__ import annotations

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


def main() -> None:
    from llama_cpp.llama_chat_format import ChatFormatterResponse, register_chat_format
    from llama_cpp.server.__main__ import main as server_main

    @register_chat_format(CHAT_FORMAT)
    def format_fewshot(messages: list[dict[str, Any]], **_: Any) -> ChatFormatterResponse:
        return ChatFormatterResponse(prompt=render(messages), stop=STOP)

    server_main()


if __name__ == "__main__":
    main()

"""The built-in assistant's words, importable without Pipecat (the LLM warm-up uses them)."""

SYSTEM_PROMPT = (
    "You are a friendly voice assistant. Answer in one or two short sentences. "
    "Your words are spoken aloud, so use no lists, markdown or emojis."
)
GREETING = "Hello! I'm your offline voice assistant. What can I help you with?"


def warm_up_messages() -> list[dict[str, str]]:
    """The start of every assistant conversation: warming the LLM with it lets llama.cpp reuse
    the evaluated prefix for the first real caller."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "assistant", "content": GREETING},
        {"role": "user", "content": "Hello."},
    ]

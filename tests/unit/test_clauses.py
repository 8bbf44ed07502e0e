"""TTS text in clauses (bots/clauses.py) and Piper's silences trimmed (bots/assistant.py)."""

import asyncio

import numpy as np

from voxfleet.bots.assistant import trim_silence
from voxfleet.bots.clauses import ClauseTextAggregator


def pieces(tokens: list[str], **options) -> list[str]:
    async def run() -> list[str]:
        aggregator, out = ClauseTextAggregator(**options), []
        for token in tokens:
            async for aggregation in aggregator.aggregate(token):
                out.append(aggregation.text)
        rest = await aggregator.flush()
        if rest is not None and rest.text:
            out.append(rest.text)
        return out

    return asyncio.run(run())


def test_the_first_words_of_an_answer_go_to_tts_before_its_sentence_ends():
    tokens = [" The", " capital", " of", " France", " is", " Paris", ".", " It", " is", " lovely", "."]
    assert pieces(tokens) == ["The capital of France is", "Paris.", "It is lovely."]
    assert pieces(tokens, first_words=None) == ["The capital of France is Paris.", "It is lovely."]


def test_clauses_break_at_commas_but_not_inside_numbers_or_after_one_word():
    tokens = [" Well", ",", " the", " moon", " is", " about", " 384", ",", "400", " km", " away", ",", " roughly", "."]
    assert pieces(tokens, first_words=None) == ["Well, the moon is about 384,400 km away,", "roughly."]


def test_a_pending_sentence_end_is_left_to_pipecat():
    tokens = [" Dr", ".", " Smith", " said", " hello", ",", " and", " left", "."]
    assert pieces(tokens) == ["Dr. Smith said hello, and left."]


def test_each_answer_gets_its_own_early_first_piece():
    async def run() -> list[str]:
        aggregator, out = ClauseTextAggregator(first_words=3), []
        for answer in ([" One", " two", " three", " four", "."], [" Five", " six", " seven", " eight", "."]):
            for token in answer:
                async for aggregation in aggregator.aggregate(token):
                    out.append(aggregation.text)
            out.append((await aggregator.flush()).text)
        return [p for p in out if p]

    assert asyncio.run(run()) == ["One two three", "four.", "Five six seven", "eight."]


def test_trim_silence_keeps_the_sound_and_cuts_the_edges():
    rate = 1000
    pcm = np.concatenate([np.zeros(100), np.full(50, 5000), np.zeros(300)]).astype(np.int16).tobytes()
    out = np.frombuffer(trim_silence(pcm, rate, lead_s=0.01, trail_s=0.02), dtype=np.int16)
    assert len(out) == 10 + 50 + 20 and (out[10:60] == 5000).all()
    assert trim_silence(bytes(200), rate, lead_s=0.0) == bytes(200)  # all silence: left alone

"""TTS text in clauses (bots/clauses.py)."""

import asyncio

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
    assert pieces(tokens) == ["The capital of France", "is Paris.", "It is lovely."]
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

"""The test caller's TwiML parsing (bench/twilio_caller.py)."""

from voxfleet.bench.twilio_caller import parse_twiml


def test_twiml_parsing_of_what_we_answer():
    answer = parse_twiml('<?xml version="1.0" encoding="UTF-8"?><Response><Say>Busy</Say><Pause length="2" />'
                         '<Redirect method="POST">https://x/v1/telephony/twilio/a?session=1</Redirect></Response>')
    assert answer.says == ["Busy"] and answer.pause_s == 2 and answer.redirect.endswith("session=1")
    assert not answer.hangup and answer.stream_url is None

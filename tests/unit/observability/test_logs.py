"""Log lines (observability/logs.py): JSON with the session id, journald with priorities."""

from __future__ import annotations

import io
import logging
import sys


def test_json_logs_carry_the_session_id(capsys):
    import json
    import logging

    from voxfleet.observability.logs import configure_logging

    configure_logging("INFO", process="bot:abc-123", log_format="json")
    try:
        logging.getLogger("voxfleet.test").warning("hello %s", "world")
        from loguru import logger

        logger.info("from pipecat")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    finally:
        configure_logging("INFO", process="control", log_format="text")
    assert lines[0]["msg"] == "hello world" and lines[0]["session_id"] == "abc-123" and lines[0]["level"] == "WARNING"
    assert lines[1]["msg"] == "from pipecat" and lines[1]["session_id"] == "abc-123"


def test_journald_lines_carry_priority_and_no_timestamp(monkeypatch):
    from voxfleet.observability.logs import configure_logging

    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    from loguru import logger

    configure_logging("INFO", process="control", log_format="journald")
    try:
        logging.getLogger("voxfleet.test").warning("session %s: no media", "s1")
        logging.getLogger("voxfleet.test").info("ready")
        logger.error("pipecat says <b>{x}</b>")  # Pipecat logs through loguru
    finally:
        configure_logging("INFO", process="control", log_format="text")
    assert out.getvalue().splitlines() == [
        "<4>[control] WARNING voxfleet.test: session s1: no media",
        "<6>[control] INFO voxfleet.test: ready",
        f"<3>[control] ERROR {__name__}: pipecat says <b>{{x}}</b>",
    ]

"""Log output for voxfleet's processes (the CLI and the processes it starts configure it).

Every line names its process: ``control``, ``template:<agent>`` or ``bot:<session_id>``, so
each line a bot writes carries its session id. Pipecat logs through loguru; it is routed into
the same format.

Under systemd (``log_format = "journald"``, or ``auto`` when the journal is attached) lines
go to stdout without a timestamp (the journal adds its own) and start with the sd-daemon
priority prefix ``<3>``..``<7>``, so ``journalctl -p warning -u voxfleet`` filters by level.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loguru import Message

_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-5s [%(process_label)s] %(name)s: %(message)s"
_JOURNAL_FORMAT = "<%(syslog_priority)d>[%(process_label)s] %(levelname)s %(name)s: %(message)s"
# sd-daemon(3) priorities: err, warning, notice/info, debug.
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
_LOGURU_PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "SUCCESS": 5, "INFO": 6, "DEBUG": 7, "TRACE": 7}
_format_in_force = "text"  # a forked bot re-labels its lines in the format its template chose


def _json_line(ts: float, level: str, process: str, logger_name: str, message: str) -> str:
    """One JSON object per line: ts, level, process, session_id (for a bot's lines), logger, msg."""
    entry = {"ts": round(ts, 3), "level": level, "process": process, "logger": logger_name, "msg": message}
    if process.startswith("bot:"):
        entry["session_id"] = process[4:]
    return json.dumps(entry, ensure_ascii=False)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return _json_line(record.created, record.levelname, getattr(record, "process_label"), record.name,
                          message)


class _ProcessLabel(logging.Filter):
    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def filter(self, record: logging.LogRecord) -> bool:
        record.process_label = self.label
        record.syslog_priority = _PRIORITY.get(record.levelno, 6 if record.levelno > logging.DEBUG else 7)
        return True


def journal_attached() -> bool:
    """True when systemd connected our stderr to the journal (it sets JOURNAL_STREAM=dev:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(x) for x in stream.split(":"))
        info = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


def resolve_log_format(log_format: str) -> str:
    """The format to use for a `log_format` setting: auto -> journald or text."""
    if log_format == "auto":
        return "journald" if journal_attached() else "text"
    return log_format


def configure_logging(level: str = "INFO", process: str = "control", log_format: str | None = None) -> None:
    """Send stdlib logging and Pipecat's loguru output to stderr (text) or stdout (journald),
    labelled with `process`. `log_format` None keeps the format of the previous call."""
    global _format_in_force
    if log_format is not None:
        _format_in_force = resolve_log_format(log_format)
    journald = _format_in_force == "journald"
    as_json = _format_in_force == "json"
    handler = logging.StreamHandler(sys.stdout if journald else sys.stderr)
    if journald:
        handler.setFormatter(logging.Formatter(_JOURNAL_FORMAT))
    elif as_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    handler.addFilter(_ProcessLabel(process))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("aioice", "aiortc", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    try:
        from loguru import logger
    except ImportError:  # pipecat not installed in this process
        return
    logger.remove()
    if as_json:
        def write_json(message: Message) -> None:
            record = message.record
            text = record["message"] + (f"\n{record['exception']}" if record["exception"] else "")
            sys.stderr.write(_json_line(record["time"].timestamp(), record["level"].name, process,
                                        record["name"] or "", text) + "\n")

        logger.add(write_json, level=level.upper())
        return
    if journald:
        logger.add(
            sys.stdout,
            level=level.upper(),
            format=lambda record: "\\<" + str(_LOGURU_PRIORITY.get(record["level"].name, 6)) + ">["
            + process + "] {level} {name}: {message}\n{exception}",
            colorize=False,
        )
        return
    logger.add(
        sys.stderr,
        level=level.upper(),
        format="{time:HH:mm:ss.SSS} {level: <5} [" + process + "] {name}: {message}",
        colorize=False,
    )

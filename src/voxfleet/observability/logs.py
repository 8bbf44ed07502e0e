"""Log output for voxfleet's processes (the CLI and the processes it starts configure it).

Every line names its process: ``control``, ``template:<agent>`` or ``bot:<session_id>``, so
each line a bot writes carries its session id. Pipecat logs through loguru; it is routed into
the same format.
"""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-5s [%(process_label)s] %(name)s: %(message)s"


class _ProcessLabel(logging.Filter):
    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def filter(self, record: logging.LogRecord) -> bool:
        record.process_label = self.label
        return True


def configure_logging(level: str = "INFO", process: str = "control") -> None:
    """Send stdlib logging and Pipecat's loguru output to stderr, labelled with `process`."""
    handler = logging.StreamHandler(sys.stderr)
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
    logger.add(
        sys.stderr,
        level=level.upper(),
        format="{time:HH:mm:ss.SSS} {level: <5} [" + process + "] {name}: {message}",
        colorize=False,
    )

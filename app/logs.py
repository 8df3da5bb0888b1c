"""Process logging: one handler on the root logger writing text or JSON lines to stderr, with uvicorn's
server and access logs routed through it, so `RAICES_LOG_FORMAT=json` gives one JSON object per line for
everything the service logs.

Logging is process-wide: `configure` (called by `create_app`) sets it for the whole process, and
`uvicorn_config` gives `raices serve` the same set-up before uvicorn starts, so its own start-up lines
(and a multi-worker parent's) are in the chosen format too.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

from app.settings import Settings

HANDLER_NAME = "raices"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# uvicorn gives these two their own handlers (the access log on stdout); "uvicorn.error" propagates to
# "uvicorn".
UVICORN_LOGGERS = ("uvicorn", "uvicorn.access")
# the arguments of uvicorn's access-log record, in order
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message, plus the record's `fields` (the app's
    access log) or, for uvicorn's access log, client, method, path, HTTP version and status."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == len(_ACCESS_FIELDS):
            data.update(zip(_ACCESS_FIELDS, args, strict=True))
        data.update(getattr(record, "fields", {}))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler on whatever `sys.stderr` is at the time of each record (as `logging.lastResort`
    does), so redirections after start-up (pytest's capture, a supervisor) are followed."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        logging.Handler.__init__(self, level)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        """Ignored: the stream is always the current stderr."""


def formatter(settings: Settings) -> logging.Formatter:
    """The formatter RAICES_LOG_FORMAT asks for: JSON lines, or plain text."""
    return JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure(settings: Settings) -> None:
    """Set the root level, give the root logger its one handler (added once, re-formatted on every call)
    and route uvicorn's loggers through it. Other handlers on the root (a test runner's) are left alone."""
    root = logging.getLogger()
    root.setLevel(settings.log_level.upper())
    handler = next((h for h in root.handlers if h.name == HANDLER_NAME), None)
    if handler is None:
        handler = StderrHandler()
        handler.name = HANDLER_NAME
        root.addHandler(handler)
    handler.setFormatter(formatter(settings))
    # procrastinate logs each job's arguments at INFO, here a whole scoring profile (kilobytes) per line;
    # its warnings and errors still come through, and everything at DEBUG
    quiet = logging.DEBUG if settings.log_level.upper() == "DEBUG" else logging.WARNING
    logging.getLogger("procrastinate").setLevel(quiet)
    logging.getLogger("lark").setLevel(quiet)  # "Loading grammar from cache" on every start
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        if logger.handlers:  # uvicorn configured it (a disabled access log has none: left disabled)
            for own in list(logger.handlers):
                logger.removeHandler(own)
            logger.propagate = True


def uvicorn_config(settings: Settings) -> dict[str, Any]:
    """The same set-up as a `logging.config.dictConfig` document, for uvicorn's `log_config`."""
    json_lines = settings.log_format == "json"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "raices": {"()": JsonFormatter} if json_lines else {"format": TEXT_FORMAT},
        },
        "handlers": {HANDLER_NAME: {"()": StderrHandler, "formatter": "raices"}},
        "root": {"level": settings.log_level.upper(), "handlers": [HANDLER_NAME]},
        "loggers": {
            name: {"handlers": [], "propagate": True} for name in (*UVICORN_LOGGERS, "uvicorn.error")
        },
    }

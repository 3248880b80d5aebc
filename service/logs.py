"""Structured logs: one JSON object a line, with the request id of the request being served."""

from __future__ import annotations

import json
import logging
import logging.config
import sys
import threading
import time
from contextvars import ContextVar
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("fbil_request_id", default=None)

# attributes every LogRecord has; anything else was passed with ``extra=`` and is logged
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "request_id", ...extra, "exc_info"}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get() or getattr(record, "request_id", None)
        if request_id and request_id != "-":
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "request_id":
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to plain-text records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get() or "-"
        return True


def logging_config(level: str = "info", json_logs: bool = True) -> dict[str, Any]:
    """A ``dictConfig`` for our loggers and uvicorn's (its access log is replaced by ours)."""
    formatter = (
        {"()": JsonFormatter}
        if json_logs
        else {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
    )
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "default",
        "filters": ["request_id"],
        "stream": "ext://sys.stderr",
    }
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "loggers": {
            "fbil": {"handlers": ["default"], "level": upper, "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": upper, "propagate": False},
            "uvicorn.error": {"level": upper},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
        # everyone else's loggers (asyncio's "Task exception was never retrieved", libraries')
        # in the same format: no plain-text line in a JSON log
        "root": {"handlers": ["default"], "level": "WARNING"},
    }


def configure_logging(level: str = "info", json_logs: bool = True) -> None:
    logging.config.dictConfig(logging_config(level, json_logs))
    install_excepthooks()


def install_excepthooks() -> None:
    """Uncaught exceptions (the main thread's, e.g. at shutdown, and other threads') are
    logged records, not tracebacks printed past the log's format."""
    log = logging.getLogger("fbil.uncaught")

    def main_hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if issubclass(kind, KeyboardInterrupt):
            log.info("interrupted")
            return
        log.critical("uncaught exception", exc_info=(kind, value, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
        log.error("uncaught exception in thread %s", name, exc_info=exc_info)  # type: ignore[arg-type]

    sys.excepthook = main_hook
    threading.excepthook = thread_hook

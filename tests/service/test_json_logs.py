"""Issue 27: with JSON logs, every line is JSON: other libraries' loggers (asyncio's "Task
exception was never retrieved" at shutdown), uncaught exceptions of the main thread and of
other threads are logged records, not plain tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def test_every_line_of_a_json_log_is_json():
    script = textwrap.dedent(
        """
        import asyncio, logging, threading
        from fbil.service.logs import configure_logging
        configure_logging("info", json_logs=True)
        logging.getLogger("asyncio").error("Task exception was never retrieved")
        logging.getLogger("some.library").warning("a library's warning")
        def fail():
            raise RuntimeError("in a thread")
        t = threading.Thread(target=fail, name="worker-1"); t.start(); t.join()
        raise RuntimeError("at shutdown")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # before: tracebacks and plain lines
    messages = [r["message"] for r in records]
    assert "Task exception was never retrieved" in messages
    assert "a library's warning" in messages
    assert "uncaught exception in thread worker-1" in messages
    assert "uncaught exception" in messages
    shutdown = next(r for r in records if r["message"] == "uncaught exception")
    assert "RuntimeError: at shutdown" in shutdown["exc_info"]
    assert all(r["level"] in {"warning", "error", "critical"} for r in records)

"""A private ``fbil-serve`` on a free loopback port, for demos, tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fbil.client.client import Client
from fbil.client.errors import FBILConnectionError

__all__ = ["LocalService", "LocalServiceError", "local_service"]

# uvicorn drains the requests in flight on SIGTERM, then re-raises the signal it handled
GRACEFUL_EXIT_CODES = (0, -signal.SIGTERM)


class LocalServiceError(RuntimeError):
    """The local ``fbil-serve`` exited or did not become ready."""


@dataclass
class LocalService:
    """A running local service: ``url``; once the block has ended, its ``returncode``."""

    url: str
    process: subprocess.Popen[bytes]
    log_file: Path | None = None
    returncode: int | None = None

    @property
    def graceful(self) -> bool:
        """It stopped on its SIGTERM (requests drained), not killed or crashed."""
        return self.returncode in GRACEFUL_EXIT_CODES

    def client(self, **kwargs: Any) -> Client:
        """A :class:`~fbil.client.Client` of this service (``api_key``, ``timeout``)."""
        return Client(self.url, **kwargs)


@contextmanager
def local_service(
    model_path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    hermetic: bool = False,
    log_file: str | os.PathLike[str] | None = None,
    log_level: str | None = "warning",
    startup_timeout: float = 180.0,
    shutdown_timeout: float = 60.0,
) -> Iterator[LocalService]:
    """Run ``python -m fbil.service.cli`` on ``127.0.0.1`` (a free port) until the block ends.

    Yields once ``/readyz`` answers 200. The service reads its settings from this process's
    environment, without the ``FBIL_*`` variables when ``hermetic``, then ``FBIL_LOG_LEVEL`` =
    ``log_level`` (``None``: the service's default), then ``env``, then ``model_path``; host and
    port are always the launcher's. Its output goes to ``log_file`` (else to this process's), and
    the tail of that file is in the error when it fails to start. On exit it gets SIGTERM and
    ``shutdown_timeout`` seconds to drain (then SIGKILL); ``returncode`` and ``graceful`` say how
    it ended.
    """
    port = _free_port()
    child_env = {k: v for k, v in os.environ.items() if not (hermetic and k.startswith("FBIL_"))}
    if log_level is not None:
        child_env["FBIL_LOG_LEVEL"] = log_level
    child_env.update(env or {})
    if model_path is not None:
        child_env["FBIL_MODEL_PATH"] = str(model_path)
    child_env.update(FBIL_HOST="127.0.0.1", FBIL_PORT=str(port))
    log = Path(log_file) if log_file is not None else None
    with ExitStack() as stack:
        out = stack.enter_context(log.open("ab")) if log is not None else None
        process = subprocess.Popen(
            [sys.executable, "-m", "fbil.service.cli"],
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
        )
    service = LocalService(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_ready(service, startup_timeout)
        yield service
    finally:
        service.returncode = _stop(process, shutdown_timeout)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(service: LocalService, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with Client(service.url, timeout=2.0) as client:
        while True:
            if service.process.poll() is not None:
                raise LocalServiceError(
                    f"the local fbil-serve exited with code {service.process.returncode}"
                    + _log_tail(service.log_file)
                )
            try:
                if client.ready():
                    return
            except FBILConnectionError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise LocalServiceError(
                    f"the local fbil-serve was not ready in {timeout:g} s"
                    + _log_tail(service.log_file)
                )
            time.sleep(0.3)


def _stop(process: subprocess.Popen[bytes], timeout: float) -> int:
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def _log_tail(log: Path | None, chars: int = 2000) -> str:
    if log is None or not log.is_file():
        return ""
    return f"; the end of {log}:\n{log.read_text(errors='replace')[-chars:]}"

"""``fbil-serve``: run the service with uvicorn (settings from ``FBIL_*`` and the flags)."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence

import uvicorn
from pydantic import ValidationError

from fbil.service.logs import configure_logging, logging_config
from fbil.service.settings import Settings, SettingsError

# flag -> FBIL_ variable it sets (flags win over the environment)
FLAGS = {
    "model": "FBIL_MODEL_PATH",
    "config": "FBIL_CONFIG_PATH",
    "backend": "FBIL_BACKEND",
    "device": "FBIL_DEVICE",
    "host": "FBIL_HOST",
    "port": "FBIL_PORT",
    "workers": "FBIL_WORKERS",
    "max_batch_size": "FBIL_MAX_BATCH_SIZE",
    "max_batch_delay_ms": "FBIL_MAX_BATCH_DELAY_MS",
    "log_level": "FBIL_LOG_LEVEL",
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="fbil-serve",
        description="Serve FBIL action detection over HTTP. Every setting can also be given as "
        "an FBIL_* environment variable (flags override them).",
    )
    p.add_argument("--model", help="model file (FBIL_MODEL_PATH)")
    p.add_argument("--config", help="YAML config of a published checkpoint (FBIL_CONFIG_PATH)")
    p.add_argument("--backend", choices=["auto", "onnx", "torchscript", "eager"])
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, help="processes, each with its own model copy")
    p.add_argument("--max-batch-size", type=int)
    p.add_argument("--max-batch-delay-ms", type=float)
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for flag, variable in FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            os.environ[variable] = str(value)
    try:
        settings = Settings()
        settings.resolved_model_path()
        settings.api_key_values()
    except (SettingsError, ValidationError) as e:
        print(f"fbil-serve: {e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_json)
    # imported here: --help answers without importing torch or PyAV (the error module does)
    from fbil.service.http_limits import HeaderLimits, LimitedHttpToolsProtocol

    uvicorn.run(
        "fbil.service.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=logging_config(settings.log_level, settings.log_json),
        access_log=False,
        # a float works (asyncio.timeout); int() made 0.5 s no grace at all
        timeout_graceful_shutdown=settings.graceful_shutdown_s,  # type: ignore[arg-type]
        proxy_headers=True,
        # header size and time limits (431/408); a partial pickles for FBIL_WORKERS > 1
        http=functools.partial(  # type: ignore[arg-type]
            LimitedHttpToolsProtocol, limits=HeaderLimits.from_settings(settings)
        ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``fbil-detect --ray``: an archive of videos across a Ray cluster (the ``fbil[ray]`` extra).

A Ray Data actor pool of ``workers`` :class:`VideoWorker` s, each holding one
:class:`~fbil.service.engine.Engine` (model and person detector loaded once per worker) and
running one video at a time through :func:`fbil.service.archive.process_video`, the pipeline of
plain ``fbil-detect``. Only paths and manifest records travel between the driver and the
workers: each worker decodes its own video and writes its files under ``DIR``, which every node
must see (a shared volume). The driver keeps the manifest and the progress bar.

A worker that dies mid-video (killed, out of memory) is restarted by Ray and the video run
again from the start, by that worker or another; each try is counted under ``DIR/.attempts``,
and after ``retries`` tries again the video is recorded as ``worker_lost`` instead of run (a
video that kills its worker every time cannot stall the archive). Files are written then
renamed, so a killed try leaves none under a final name. Notebooks call :func:`detect_archive`.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fbil.service.archive import (
    Manifest,
    VideoInput,
    VideoRecord,
    begin_attempt,
    clear_attempts,
    expand_inputs,
    process_video,
    remove_partials,
    summary,
    worker_lost,
)
from fbil.service.jobs.schemas import JobRequest

EXTRA_MISSING = "--ray needs Ray Data: pip install 'fbil[ray]'"
ENV_PREFIX = "FBIL_"  # the driver's settings travel to the workers as these variables


class RayMissingError(ImportError):
    """``ray[data]`` is not installed."""


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RayMissingError(EXTRA_MISSING) from e
    return ray


def worker_env(
    cpus_per_worker: float, gpus_per_worker: float, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The ``FBIL_*`` variables of a worker: the driver's (or ``env``), and what is unset
    sized to the worker: runtime threads to its CPUs, the device to whether it has a GPU."""
    source = os.environ if env is None else env
    out = {k: v for k, v in source.items() if k.startswith(ENV_PREFIX)}
    out.setdefault("FBIL_NUM_THREADS", str(max(1, math.floor(cpus_per_worker))))
    out.setdefault("FBIL_DEVICE", "cuda" if gpus_per_worker > 0 else "cpu")
    return out


class VideoWorker:
    """One actor of the pool: an engine on its own event loop, videos one at a time."""

    def __init__(
        self,
        out_dir: str,
        request: dict[str, Any],
        env: dict[str, str],
        model_path: str | None = None,
        retries: int = 2,
    ) -> None:
        os.environ.update(env)
        from fbil.service.engine import Engine
        from fbil.service.settings import Settings

        self.out_dir, self.retries = Path(out_dir), retries
        self.request = JobRequest.model_validate(request)
        settings = Settings(**({"model_path": Path(model_path)} if model_path else {}))
        self.loop = asyncio.new_event_loop()
        self.engine = Engine.load(settings)
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        self.engine.start()

    def __del__(self) -> None:
        """Stop the batcher when Ray Data retires the actor (no warning about its task)."""
        loop, engine = getattr(self, "loop", None), getattr(self, "engine", None)
        if loop is not None and engine is not None and not loop.is_closed():
            loop.run_until_complete(engine.stop(wait_s=None))
            loop.close()

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list[str]]:
        stems, records = [], []
        for source, stem in zip(batch["source"], batch["stem"], strict=True):
            video = VideoInput(str(source), str(stem))
            tries = begin_attempt(self.out_dir, video.stem)
            if tries > self.retries + 1:
                remove_partials(self.out_dir, video.stem)
                record = worker_lost(video, self.request, tries - 1)
            else:
                record = self.loop.run_until_complete(
                    process_video(self.engine, video, self.out_dir, self.request)
                )
                record.tries = tries
            clear_attempts(self.out_dir, video.stem)
            stems.append(video.stem)
            records.append(record.to_json())
        return {"stem": stems, "record": records}


def detect_archive(
    videos: Iterable[str | Path],
    out_dir: str | Path,
    *,
    request: JobRequest | Mapping[str, Any] | None = None,
    model: str | Path | None = None,
    address: str | None = None,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    retries: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Detect actions over ``videos`` (files, globs, ``.txt`` lists, URLs) on Ray into
    ``out_dir``, skipping those a previous run completed; the run's :func:`summary`.

    ``address``: None joins the Ray this process already started, or starts a local one;
    ``"auto"`` joins the cluster this machine belongs to; else a cluster's address.
    ``request``: a job's request (default: JSON lines and the AVA CSV)."""
    ray = import_ray()
    out = Path(out_dir).resolve()
    inputs = expand_inputs(videos)
    if not isinstance(request, JobRequest):
        request = JobRequest.model_validate(request or {"outputs": ["json", "ava_csv"]})
    manifest = Manifest.load(out)
    todo = manifest.pending(inputs, request)
    if todo:
        out.mkdir(parents=True, exist_ok=True)
        for video in todo:  # tries of an interrupted run start over
            clear_attempts(out, video.stem)
        if not ray.is_initialized():
            ray.init(address=address, logging_level="warning")
        _run(ray, todo, out, request, manifest, model, workers, cpus_per_worker,
             gpus_per_worker, retries, progress)  # fmt: skip
    return {**summary(manifest, inputs), "skipped": len(inputs) - len(todo)}


def _run(
    ray: Any,
    todo: list[VideoInput],
    out: Path,
    request: JobRequest,
    manifest: Manifest,
    model: str | Path | None,
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
    retries: int,
    progress: bool,
) -> None:
    from tqdm import tqdm

    context = ray.data.DataContext.get_current()
    saved = context.max_errored_blocks, context.enable_progress_bars
    # a video whose block fails in Ray itself fails alone: the others go on
    context.max_errored_blocks, context.enable_progress_bars = len(todo), False
    items = [{"source": v.source, "stem": v.stem} for v in todo]
    results = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        VideoWorker,
        batch_size=1,  # one video a call, a free worker takes the next
        compute=ray.data.ActorPoolStrategy(
            size=min(workers, len(todo)), max_tasks_in_flight_per_actor=1
        ),
        num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker or None,
        fn_constructor_kwargs={
            "out_dir": str(out),
            "request": request.model_dump(mode="json"),
            "env": worker_env(cpus_per_worker, gpus_per_worker),
            "model_path": str(Path(model).resolve()) if model else None,
            "retries": retries,
        },
    )  # Ray Data restarts a dead actor and retries its video (max_restarts=-1 by default)
    seen = set()
    try:
        with tqdm(total=len(todo), unit="video", file=sys.stderr, disable=not progress) as bar:
            for row in results.iter_rows():
                record = VideoRecord.from_json(row["record"])
                manifest.record(row["stem"], record)
                seen.add(row["stem"])
                bar.set_postfix_str(f"{row['stem']}: {record.status}")
                bar.update()
    finally:
        context.max_errored_blocks, context.enable_progress_bars = saved
    for video in todo:
        if video.stem not in seen:
            manifest.record(video.stem, worker_lost(video, request, retries + 1))

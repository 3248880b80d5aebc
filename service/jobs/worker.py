"""Runs queued jobs on the service's batcher, resumes jobs a stopped process left running,
deletes finished jobs past their TTL, and refuses writes beyond the disk quota."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fbil.model.tracking import DetectCancelledError
from fbil.model.video import DecodeCancelledError, VideoError
from fbil.service.errors import (
    JobStorageUnavailableError,
    OverloadedError,
    ServiceError,
    StorageQuotaError,
)
from fbil.service.jobs.schemas import JobRequest
from fbil.service.jobs.store import (
    ANNOTATED_FILE,
    DB_FILE,
    VIDEO_FILE,
    Job,
    JobStore,
    ResultsWriter,
)
from fbil.service.keyframes import Answered, job_plan, request_options, run_video
from fbil.service.outputs import write_annotated_video
from fbil.service.state import ServiceState

log = logging.getLogger(__name__)

IDLE_POLL_S = 1.0  # the worker looks for work at least this often
PURGE_EVERY_S = 60.0
BROKEN_POLL_S = 30.0  # a database that cannot be used is logged at most this often


@dataclass
class _Running:
    task: asyncio.Task[None]
    cancel: threading.Event = field(default_factory=threading.Event)


class JobWorker:
    """The jobs of one service process (one ``FBIL_DATA_DIR`` per process)."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self.settings = state.settings
        self._store: JobStore | None = None
        self._running: dict[str, _Running] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._purged = 0.0
        self.usage = 0  # bytes under the data directory, kept up to date by writers
        # what submissions still uploading hold (reserved before anything is accepted, so
        # concurrent ones cannot all pass the same check): bytes and queue places
        self.reserved_bytes = 0
        self.reserved_jobs = 0
        self.broken: JobStorageUnavailableError | None = None  # the database cannot be used

    # ------------------------------------------------------------------ store

    @property
    def store(self) -> JobStore:
        """The store, opened (and the data directory made) on first use:
        :class:`JobStorageUnavailableError` when its database cannot be used."""
        if self.broken is not None:
            raise self.broken
        if self._store is None:
            self._store = JobStore(self.settings.data_dir)
            self.usage = self._store.disk_usage()
        return self._store

    def ready_store(self) -> JobStore:
        """The store for a request: also refused when its database file was removed."""
        store = self.store
        store.check_present()
        return store

    def check_space(self, adding: int) -> None:
        """:class:`StorageQuotaError` unless ``adding`` more bytes fit quota and free space."""
        s = self.settings
        used = self.usage + self.reserved_bytes
        if used + adding > s.job_disk_quota_bytes:
            raise StorageQuotaError(
                f"job files would take {used + adding} bytes, the quota is "
                f"{s.job_disk_quota_bytes}",
                {"job_disk_quota_bytes": s.job_disk_quota_bytes, "used_bytes": used},
            )
        free = shutil.disk_usage(self.store.data_dir).free
        if free - adding < s.job_min_free_disk_bytes:
            raise StorageQuotaError(
                f"the disk has {free} bytes free, jobs leave {s.job_min_free_disk_bytes}",
                {"job_min_free_disk_bytes": s.job_min_free_disk_bytes, "free_bytes": free},
            )

    def reserve(self) -> Reservation:
        """A queue place for a submission, held until its job is stored or it fails:
        :class:`OverloadedError` when queued jobs and other submissions fill
        ``FBIL_MAX_QUEUED_JOBS``."""
        limit = self.settings.max_queued_jobs
        waiting = self.ready_store().count("queued") + self.reserved_jobs
        if waiting >= limit:
            raise OverloadedError(f"{limit} jobs are waiting; retry later")
        self.reserved_jobs += 1  # no await between the check and this: one event loop
        return Reservation(self)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        data_dir = self.settings.data_dir
        if (data_dir / DB_FILE).exists() or any_files(data_dir / "jobs"):
            try:
                resumed = self.store.requeue_running()
                if resumed:
                    log.info("%d jobs left running by the last process will resume", resumed)
                self._reclaim_orphans()
                self._update_gauges()  # what the last process left, before the first round
            except JobStorageUnavailableError as e:
                self.broken, self._store = e, None  # jobs answer 503, /detect goes on
                log.error("jobs are unavailable: %s", e.message)
        self._task = asyncio.create_task(self._loop(), name="fbil-jobs")

    def _reclaim_orphans(self) -> None:
        """Delete the job folders no row names (their database was deleted or replaced):
        nobody can reach them, and they would count against the quota for ever. A folder
        touched within ``FBIL_JOB_UPLOAD_TIMEOUT_S`` may be an upload another process (of the
        same data directory) has not stored yet: it is left."""
        cutoff = time.time() - self.settings.job_upload_timeout_s
        reclaimed = 0
        for folder in self.store.orphans():
            if _last_touched(folder) > cutoff:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            reclaimed += 1
            log.warning(
                "job folder %s has no row in %s (the database was deleted or replaced): deleted",
                folder,
                self.store.db_path,
            )
        if reclaimed:
            self.usage = self.store.disk_usage()

    async def stop(self) -> None:
        """Stop running jobs where they are (they resume on the next start)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for running in list(self._running.values()):
            running.cancel.set()
            running.task.cancel()
        for running in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await running.task
        if self._store is not None:
            self._store.close()

    def wake(self) -> None:
        self._wake.set()

    async def cancel(self, job: Job) -> None:
        """Stop ``job`` if it runs, mark it cancelled if it has not finished."""
        running = self._running.get(job.id)
        if running is not None:
            running.cancel.set()
            running.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await running.task
        self.store.finish(job.id, "cancelled")
        self._update_gauges()

    # ------------------------------------------------------------------ loop

    async def _loop(self) -> None:
        while True:
            try:
                self._purge()
                if self.state.ready and self._store is not None:
                    self._start_queued()
            except JobStorageUnavailableError as e:
                log.error("the job worker cannot use its database: %s", e.message)
                await asyncio.sleep(BROKEN_POLL_S)
            except Exception:
                log.exception("the job worker failed a round; it goes on")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)

    def _purge(self) -> None:
        now = time.monotonic()
        if self._store is None or now - self._purged < PURGE_EVERY_S:
            return
        self._purged = now
        for job_id in self.store.expired(self.settings.job_ttl_s):
            self.store.delete(job_id)
            log.info("job %s deleted: finished over FBIL_JOB_TTL_S ago", job_id)
        self.usage = self.store.disk_usage()

    def _start_queued(self) -> None:
        free = self.settings.max_running_jobs - len(self._running)
        if free <= 0:
            return
        for job in self.store.with_state("queued")[:free]:
            running = _Running(asyncio.create_task(self._run(job.id), name=f"fbil-job-{job.id}"))
            self._running[job.id] = running
        self._update_gauges()

    def update_gauges(self) -> None:
        """``fbil_jobs{state}`` as the store has it now."""
        self._update_gauges()

    def _update_gauges(self) -> None:
        if self._store is None:
            return
        counts = self.store.counts()
        for state in ("queued", "running", "succeeded", "failed", "cancelled"):
            self.state.metrics.jobs.labels(state).set(counts.get(state, 0))

    # ------------------------------------------------------------------ one job

    async def _run(self, job_id: str) -> None:
        store = self.store
        try:
            job = store.get(job_id)
            if job is None or job.state != "queued":
                return
            store.start(job_id)
            self._update_gauges()
            await self._execute(job, self._running[job_id].cancel)
            store.finish(job_id, "succeeded")
        except (asyncio.CancelledError, DecodeCancelledError, DetectCancelledError):
            pass  # cancelled (marked by cancel()) or stopping (resumes on the next start)
        except VideoError as e:
            store.finish(job_id, "failed", e.code, str(e))
        except ServiceError as e:
            store.finish(job_id, "failed", e.code, e.message)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                log.exception("job %s failed", job_id)
                store.finish(job_id, "failed", "internal_error", "the service log says why")
            else:
                store.finish(job_id, "failed", StorageQuotaError.code, f"the disk is full: {e}")
        except Exception:
            log.exception("job %s failed", job_id)
            store.finish(job_id, "failed", "internal_error", "the service log says why")
        finally:
            self._running.pop(job_id, None)
            self._update_gauges()
            self.wake()

    async def _execute(self, job: Job, cancel: threading.Event) -> None:
        s, engine = self.settings, self.state.engine
        assert engine is not None
        request = await asyncio.to_thread(JobRequest.model_validate, job.request)
        video = self.store.job_dir(job.id) / VIDEO_FILE
        # up to FBIL_JOB_MAX_KEYFRAMES keyframes and their detector frames: off the event loop
        plan = await asyncio.to_thread(job_plan, request, job.times, s)
        options = request_options(request, s)
        writer = await asyncio.to_thread(ResultsWriter, self.store, job)
        metrics = self.state.metrics

        async def on_keyframe(done: Answered) -> None:
            self.check_space(4096)
            before = writer.size
            line = done.answer.model_dump(mode="json")
            await asyncio.to_thread(writer.append, line, done.tracker)
            self.usage += writer.size - before
            metrics.job_keyframes.inc()

        try:
            await run_video(
                engine,
                video,
                plan,
                options,
                on_keyframe,
                limits=s.job_video_limits(),
                in_flight=s.job_max_clips_in_flight,
                wait_if_full=True,
                start=job.done,
                tracker=job.tracker,
                cancel=cancel,
            )
        finally:
            writer.close()
        if "video" in request.outputs:  # drawn once all keyframes are in (redone on resume)
            done = self.store.get(job.id)
            assert done is not None
            out = self.store.job_dir(job.id) / ANNOTATED_FILE
            self.check_space(self.store.results_path(job.id).stat().st_size)
            await asyncio.to_thread(
                write_annotated_video,
                video,
                self.store.lines(done),
                request.box_format,
                job.width,
                job.height,
                out,
            )
            self.usage += out.stat().st_size


def _last_touched(folder: Path) -> float:
    """The newest modification time of ``folder`` and the files in it."""
    times = [folder.stat().st_mtime]
    for path in folder.iterdir():
        with contextlib.suppress(OSError):
            times.append(path.stat().st_mtime)
    return max(times)


def any_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


class Reservation:
    """What one submission holds while it uploads: a queue place and the bytes written so far
    (grown before they are written). :meth:`accept` turns them into the stored job's; leaving
    without it (any failure) gives them back."""

    def __init__(self, worker: JobWorker) -> None:
        self.worker = worker
        self.bytes = 0
        self._open = True

    def grow(self, size: int) -> None:
        """Hold ``size`` bytes more (:class:`StorageQuotaError` when they do not fit)."""
        if size > 0:
            self.worker.check_space(size)
            self.worker.reserved_bytes += size
            self.bytes += size

    def accept(self, written: int) -> None:
        """The job is stored with ``written`` bytes of files: they count as used now."""
        self._release()
        self.worker.usage += written
        self.worker.update_gauges()

    def _release(self) -> None:
        if self._open:
            self._open = False
            self.worker.reserved_bytes -= self.bytes
            self.worker.reserved_jobs -= 1
            self.bytes = 0

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self._release()

"""Job state in SQLite (WAL) under the data directory, each job's files in a folder beside it.

A job's results are JSON lines appended to ``results.jsonl``. A line is written and fsynced
before the job's row records it (``done``, ``results_bytes`` and ``results_crc``, the CRC-32 of
the file's first ``results_bytes``), in one transaction: after a crash the row names the last
complete keyframe, and anything past ``results_bytes`` in the file (a line cut short, or one
written but not recorded) is cut off on resume. No gap, no duplicate. A file shorter than its
row says, or whose checksum differs, is damaged: :class:`JobResultsDamagedError`, never a
cut or altered body.

A database that cannot be read raises :class:`JobStorageUnavailableError` naming the file;
job folders with no row (a database deleted or replaced) are found by :meth:`JobStore.orphans`.

Owners are SHA-256 digests of the API key that created the job (never the key); ids come from
:func:`secrets.token_urlsafe` (128 bits).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fbil.service.errors import JobResultsDamagedError, JobStorageUnavailableError

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: tuple[JobState, ...] = ("succeeded", "failed", "cancelled")
VIDEO_FILE, RESULTS_FILE, ANNOTATED_FILE = "video", "results.jsonl", "annotated.mp4"
DB_FILE = "jobs.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    request TEXT NOT NULL,
    times TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    total INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    results_bytes INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error_code TEXT,
    error_message TEXT,
    tracker TEXT,
    results_crc INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created);
"""


def new_job_id() -> str:
    return secrets.token_urlsafe(16)


@dataclass(frozen=True)
class Job:
    """One row of the ``jobs`` table."""

    id: str
    owner: str
    state: JobState
    request: dict[str, Any]
    times: list[float]
    width: int
    height: int
    total: int
    done: int
    results_bytes: int
    created: float
    started: float | None
    finished: float | None
    error_code: str | None
    error_message: str | None
    tracker: dict[str, Any] | None = None  # automatic boxes: the tracker after ``done``
    results_crc: int | None = None  # CRC-32 of the first results_bytes (None: an older row)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        values = dict(row)
        values["request"] = json.loads(values["request"])
        values["times"] = json.loads(values["times"])
        values["tracker"] = json.loads(values["tracker"]) if values.get("tracker") else None
        return cls(**values)


class JobStore:
    """The jobs database and folders under ``data_dir`` (made when first opened)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.jobs_dir = self.data_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_dir / DB_FILE
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a committed row survives power loss
            self._db.executescript(_SCHEMA)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)")}
            for column, kind in (("tracker", "TEXT"), ("results_crc", "INTEGER")):
                if column not in columns:  # a database made by an older version
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        except sqlite3.Error as e:
            raise self.unreadable(e) from None

    def unreadable(self, e: Exception) -> JobStorageUnavailableError:
        """The error of a database that cannot be used, naming it and what to do."""
        return JobStorageUnavailableError(
            f"the jobs database {self.db_path} cannot be used ({e}): move it aside and restart "
            f"the service (a new one is made; job folders under {self.jobs_dir} without a row "
            "are then reclaimed). /detect is not affected",
            {"file": str(self.db_path)},
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def results_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / RESULTS_FILE

    # ------------------------------------------------------------------ rows

    def _execute(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as e:
                raise self.unreadable(e) from None

    def check_present(self) -> None:
        """:class:`JobStorageUnavailableError` when the open database's file was removed (the
        connection still sees the deleted file: its jobs would be forgotten at restart)."""
        if not self.db_path.exists():
            raise JobStorageUnavailableError(
                f"the jobs database {self.db_path} was removed while the service ran: restart "
                f"the service (job folders under {self.jobs_dir} without a row are reclaimed "
                "then). /detect is not affected",
                {"file": str(self.db_path)},
            )

    def create(
        self,
        job_id: str,
        owner: str,
        request: dict[str, Any],
        times: list[float],
        width: int,
        height: int,
    ) -> Job:
        self._execute(
            "INSERT INTO jobs (id, owner, state, request, times, width, height, total, created)"
            " VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
            job_id,
            owner,
            json.dumps(request),
            json.dumps(times),
            width,
            height,
            len(times),
            time.time(),
        )
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        """The job, or ``None`` (also when ``owner`` is given and is not the job's)."""
        rows = self._execute("SELECT * FROM jobs WHERE id = ?", job_id)
        if not rows:
            return None
        job = Job.from_row(rows[0])
        return job if owner is None or secrets.compare_digest(job.owner, owner) else None

    def list(self, owner: str, limit: int = 1000) -> list[Job]:
        rows = self._execute(
            "SELECT * FROM jobs WHERE owner = ? ORDER BY created DESC LIMIT ?", owner, limit
        )
        return [Job.from_row(r) for r in rows]

    def with_state(self, *states: JobState) -> list[Job]:
        marks = ", ".join("?" for _ in states)
        rows = self._execute(
            f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created", *states
        )
        return [Job.from_row(r) for r in rows]

    def count(self, state: JobState) -> int:
        return self._execute("SELECT COUNT(*) FROM jobs WHERE state = ?", state)[0][0]

    def counts(self) -> dict[str, int]:
        rows = self._execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {r[0]: r[1] for r in rows}

    def start(self, job_id: str) -> None:
        self._execute(
            "UPDATE jobs SET state = 'running', started = COALESCE(started, ?) "
            "WHERE id = ? AND state = 'queued'",
            time.time(),
            job_id,
        )

    def requeue_running(self) -> int:
        """Jobs a stopped process left running wait again (they resume where they were)."""
        with self._lock:
            try:
                cursor = self._db.execute(
                    "UPDATE jobs SET state = 'queued' WHERE state = 'running'"
                )
            except sqlite3.DatabaseError as e:
                raise self.unreadable(e) from None
            return cursor.rowcount

    def orphans(self) -> list[Path]:
        """Job folders no row names (left by a database that was deleted or replaced)."""
        if not self.jobs_dir.is_dir():
            return []
        known = {r[0] for r in self._execute("SELECT id FROM jobs")}
        return sorted(p for p in self.jobs_dir.iterdir() if p.name not in known)

    def record(
        self,
        job_id: str,
        done: int,
        results_bytes: int,
        tracker: dict[str, Any] | None = None,
        results_crc: int | None = None,
    ) -> None:
        """Keyframes up to ``done`` are in the results file, which is ``results_bytes`` long
        with CRC-32 ``results_crc``; ``tracker`` is the state automatic boxes resume from (in
        the same transaction)."""
        self._execute(
            "UPDATE jobs SET done = ?, results_bytes = ?, tracker = ?, results_crc = ? "
            "WHERE id = ?",
            done,
            results_bytes,
            None if tracker is None else json.dumps(tracker),
            results_crc,
            job_id,
        )

    def finish(
        self, job_id: str, state: JobState, code: str | None = None, message: str | None = None
    ) -> None:
        """Set a final state (a job already finished keeps its own)."""
        self._execute(
            "UPDATE jobs SET state = ?, finished = ?, error_code = ?, error_message = ? "
            "WHERE id = ? AND state IN ('queued', 'running')",
            state,
            time.time(),
            code,
            message,
            job_id,
        )

    def delete(self, job_id: str) -> None:
        """The row and the job's folder."""
        self._execute("DELETE FROM jobs WHERE id = ?", job_id)
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def expired(self, ttl_s: float, now: float | None = None) -> list[str]:
        """Ids of the jobs that finished over ``ttl_s`` seconds ago."""
        cutoff = (now if now is not None else time.time()) - ttl_s
        rows = self._execute(
            "SELECT id FROM jobs WHERE finished IS NOT NULL AND finished < ?", cutoff
        )
        return [r[0] for r in rows]

    # ------------------------------------------------------------------ files

    def disk_usage(self) -> int:
        """Bytes of every file under the data directory."""
        total = 0
        for root, _, files in os.walk(self.data_dir):
            for name in files:
                try:
                    total += os.stat(os.path.join(root, name)).st_size
                except FileNotFoundError:
                    continue
        return total

    def verify(self, job: Job) -> int:
        """The CRC-32 of the results file's recorded bytes: :class:`JobResultsDamagedError`
        unless it holds the ``results_bytes`` its row records, with their checksum."""
        if job.results_bytes <= 0:
            return 0
        path = self.results_path(job.id)
        crc, remaining = 0, job.results_bytes
        try:
            with path.open("rb") as f:
                while remaining > 0:
                    chunk = f.read(min(remaining, READ_CHUNK))
                    if not chunk:
                        break
                    crc = zlib.crc32(chunk, crc)
                    remaining -= len(chunk)
        except FileNotFoundError:
            raise _damaged(job, path, "is missing") from None
        if remaining > 0:
            raise _damaged(
                job, path, f"is {job.results_bytes - remaining} bytes, not {job.results_bytes}"
            )
        if job.results_crc is not None and crc != job.results_crc:
            raise _damaged(job, path, "does not match its checksum (altered)")
        return crc

    def lines(self, job: Job) -> Iterator[bytes]:
        """The recorded results lines of ``job`` (without any unrecorded tail): call
        :meth:`verify` first; a file found short while read raises
        :class:`JobResultsDamagedError`."""
        path = self.results_path(job.id)
        remaining = job.results_bytes
        if remaining <= 0:
            return
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise _damaged(job, path, "is missing") from None
        with f:
            for line in f:
                if remaining <= 0:
                    return
                yield line[:remaining]
                remaining -= len(line)
        if remaining > 0:
            raise _damaged(job, path, "was cut short")


READ_CHUNK = 1024 * 1024


def _damaged(job: Job, path: Path, what: str) -> JobResultsDamagedError:
    return JobResultsDamagedError(
        f"the results of job {job.id} ({path}) {what}: its {job.done} keyframes cannot be "
        "served; delete the job and submit it again",
        {"job_id": job.id, "keyframes": job.done},
    )


class ResultsWriter:
    """Appends a job's JSON lines durably and records each in the store (see the module doc)."""

    def __init__(self, store: JobStore, job: Job) -> None:
        self.store, self.job_id = store, job.id
        self.done, self.size = job.done, job.results_bytes
        self.crc = store.verify(job)  # resume only on the keyframes recorded
        path = store.results_path(job.id)
        path.touch()
        self._file = path.open("r+b")
        self._file.truncate(self.size)  # a line not recorded before a crash goes
        self._file.seek(self.size)

    def append(self, keyframe: dict[str, Any], tracker: dict[str, Any] | None = None) -> None:
        line = (json.dumps(keyframe, separators=(",", ":")) + "\n").encode()
        self._file.write(line)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done += 1
        self.size += len(line)
        self.crc = zlib.crc32(line, self.crc)
        self.store.record(self.job_id, self.done, self.size, tracker, self.crc)

    def close(self) -> None:
        self._file.close()

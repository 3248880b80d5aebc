"""Job state in SQLite (WAL) under the data directory, each job's files in a folder beside it.

A job's results are JSON lines appended to ``results.jsonl``. A line is written and fsynced
before the job's row records it (``done``, ``results_bytes``), in one transaction: after a
crash the row names the last complete keyframe, and anything past ``results_bytes`` in the file
(a line cut short, or one written but not recorded) is cut off on resume. No gap, no duplicate.

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: tuple[JobState, ...] = ("succeeded", "failed", "cancelled")
VIDEO_FILE, RESULTS_FILE, ANNOTATED_FILE = "video", "results.jsonl", "annotated.mp4"

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
    tracker TEXT
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
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.data_dir / "jobs.sqlite3", check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a committed row survives power loss
        self._db.executescript(_SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)")}
        if "tracker" not in columns:  # a database made before automatic boxes in jobs
            self._db.execute("ALTER TABLE jobs ADD COLUMN tracker TEXT")

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
            return self._db.execute(sql, args).fetchall()

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
            cursor = self._db.execute("UPDATE jobs SET state = 'queued' WHERE state = 'running'")
            return cursor.rowcount

    def record(
        self,
        job_id: str,
        done: int,
        results_bytes: int,
        tracker: dict[str, Any] | None = None,
    ) -> None:
        """Keyframes up to ``done`` are in the results file, which is ``results_bytes`` long;
        ``tracker`` is the state automatic boxes resume from (in the same transaction)."""
        self._execute(
            "UPDATE jobs SET done = ?, results_bytes = ?, tracker = ? WHERE id = ?",
            done,
            results_bytes,
            None if tracker is None else json.dumps(tracker),
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

    def lines(self, job: Job) -> Iterator[bytes]:
        """The recorded results lines of ``job`` (without any unrecorded tail)."""
        path = self.results_path(job.id)
        remaining = job.results_bytes
        if remaining <= 0 or not path.exists():
            return
        with path.open("rb") as f:
            for line in f:
                if remaining <= 0:
                    return
                yield line[:remaining]
                remaining -= len(line)


class ResultsWriter:
    """Appends a job's JSON lines durably and records each in the store (see the module doc)."""

    def __init__(self, store: JobStore, job: Job) -> None:
        self.store, self.job_id = store, job.id
        self.done, self.size = job.done, job.results_bytes
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
        self.store.record(self.job_id, self.done, self.size, tracker)

    def close(self) -> None:
        self._file.close()

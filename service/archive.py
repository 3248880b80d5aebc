"""Archives of videos for ``fbil-detect``, plain or on a Ray cluster: the inputs, the manifest
and the work on one video.

- :func:`expand_inputs`: files, globs and ``.txt`` lists (one path or ``http(s)`` URL a line,
  ``#`` comments; relative paths are relative to the list) to :class:`VideoInput` s, refusing
  two videos whose outputs would share a name.
- :class:`Manifest`: ``DIR/manifest.json``, per video its source, status (``done`` or
  ``failed``), keyframes, seconds, error code and files, rewritten (write then rename) after
  each video. A video is complete when the manifest says ``done`` for the same request and its
  files are there: a rerun skips it and retries the failed ones.
- :func:`process_video`: one video through :func:`fbil.service.batch.detect_video` (a URL is
  fetched first), its failure recorded instead of raised, so the others go on.

The outputs are those of plain ``fbil-detect``: ``DIR/<stem>.jsonl``, ``.csv``, ``.mp4``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from fbil.service.engine import Engine
    from fbil.service.jobs.schemas import JobRequest

MANIFEST = "manifest.json"
DOWNLOADS = ".downloads"  # URL inputs are fetched here, under DIR, and deleted when done
ATTEMPTS = ".attempts"  # DIR/.attempts/<stem>: tries of a video begun on cluster workers
URL_SCHEMES = ("http", "https")
GLOB_CHARS = set("*?[")
# manifest error codes besides the videos' own (fbil.model.video.VideoError.code) and the
# service's (ServiceError.code)
DOWNLOAD_FAILED = "download_failed"  # a URL input could not be fetched
WORKER_LOST = "worker_lost"  # the worker died on every try (cluster runs)
INTERNAL_ERROR = "internal_error"  # anything else; the message says what
DOWNLOAD_TIMEOUT_S = 60.0  # seconds without a byte from a URL input


class InputError(ValueError):
    """The inputs name no video, or two videos that would write the same files."""


@dataclass(frozen=True)
class VideoInput:
    """One video of an archive: ``source`` (an absolute path or a URL) and ``stem``, the name
    of its output files."""

    source: str
    stem: str

    @property
    def is_url(self) -> bool:
        return is_url(self.source)


def is_url(text: str) -> bool:
    return urlsplit(text).scheme in URL_SCHEMES


def input_stem(source: str) -> str:
    """The outputs' name of ``source``: a file's stem, or the stem of a URL's last segment."""
    if is_url(source):
        return Path(unquote(urlsplit(source).path)).stem or "video"
    return Path(source).stem


def expand_inputs(specs: Iterable[str | Path]) -> list[VideoInput]:
    """The videos that ``specs`` name, in order, each once; :class:`InputError` for a file
    that is not there, a glob that matches nothing, or two videos with the same stem."""
    sources: list[str] = []
    for spec in map(str, specs):
        sources += _expand(spec)
    videos: dict[str, VideoInput] = {}
    for source in dict.fromkeys(sources):
        video = VideoInput(source, input_stem(source))
        if (other := videos.get(video.stem)) is not None:
            raise InputError(
                f"{other.source} and {source} would both write {video.stem}.*: "
                "rename one or run them into separate --out folders"
            )
        videos[video.stem] = video
    if not videos:
        raise InputError("no video to process")
    return list(videos.values())


def _expand(spec: str) -> list[str]:
    if is_url(spec):
        return [spec]
    if GLOB_CHARS & set(spec):
        matches = sorted(p for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not matches:
            raise InputError(f"{spec} matches no file")
        return [str(Path(p).resolve()) for p in matches]
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"{spec} is not a file")
    if path.suffix.lower() == ".txt":
        return _read_list(path)
    return [str(path.resolve())]


def _read_list(path: Path) -> list[str]:
    """A ``.txt`` list: one path or URL a line; blank lines and ``#`` comments skipped."""
    sources = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if is_url(line):
            sources.append(line)
            continue
        entry = path.parent / line
        if not entry.is_file():
            raise InputError(f"{path}:{number}: {line} is not a file")
        sources.append(str(entry.resolve()))
    return sources


def request_fingerprint(request: JobRequest) -> str:
    """What makes two runs' outputs of a video the same: the request's fields."""
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()[:16]


@dataclass
class VideoRecord:
    """The manifest's entry of one video."""

    source: str
    status: str  # "done" or "failed"
    request: str  # request_fingerprint of the run
    keyframes: int | None = None
    seconds: float | None = None
    error: str | None = None  # the error code of a failed video
    message: str | None = None
    files: list[str] = field(default_factory=list)  # names under DIR
    tries: int = 1  # runs begun (a cluster worker killed mid-video makes another)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> VideoRecord:
        return cls(**json.loads(text))


class Manifest:
    """``DIR/manifest.json``: ``{"videos": {stem: VideoRecord}}``, rewritten whole (write then
    rename) by :meth:`save`."""

    def __init__(self, out_dir: Path, videos: dict[str, VideoRecord] | None = None) -> None:
        self.out_dir = out_dir
        self.videos = videos or {}

    @property
    def path(self) -> Path:
        return self.out_dir / MANIFEST

    @classmethod
    def load(cls, out_dir: Path) -> Manifest:
        """The manifest of ``out_dir`` (empty when there is none)."""
        path = out_dir / MANIFEST
        if not path.is_file():
            return cls(out_dir)
        document = json.loads(path.read_text())
        videos = {stem: VideoRecord(**entry) for stem, entry in document["videos"].items()}
        return cls(out_dir, videos)

    def record(self, stem: str, record: VideoRecord) -> None:
        """Set ``stem``'s entry and save."""
        self.videos[stem] = record
        self.save()

    def save(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        document = {"videos": {stem: asdict(r) for stem, r in sorted(self.videos.items())}}
        partial = self.path.with_name(MANIFEST + ".partial")
        partial.write_text(json.dumps(document, indent=1) + "\n")
        partial.replace(self.path)

    def is_complete(self, video: VideoInput, request: JobRequest) -> bool:
        """``video`` is done for this request and all its files are there."""
        record = self.videos.get(video.stem)
        return (
            record is not None
            and record.status == "done"
            and record.source == video.source
            and record.request == request_fingerprint(request)
            and all((self.out_dir / name).is_file() for name in record.files)
        )

    def pending(self, videos: Sequence[VideoInput], request: JobRequest) -> list[VideoInput]:
        """The videos of ``videos`` a run still has to do."""
        return [v for v in videos if not self.is_complete(v, request)]

    def counts(self) -> dict[str, int]:
        statuses = [r.status for r in self.videos.values()]
        return {status: statuses.count(status) for status in sorted(set(statuses))}


async def process_video(
    engine: Engine,
    video: VideoInput,
    out_dir: Path,
    request: JobRequest,
    *,
    on_keyframe: Callable[[int, int], None] | None = None,
) -> VideoRecord:
    """Run ``video`` through :func:`~fbil.service.batch.detect_video` into ``out_dir``; a
    failure (the video's, a download's, anything else but cancellation) is its record's
    ``error``, and leaves no partial file."""
    import asyncio

    from fbil.model.video import VideoError
    from fbil.service.batch import detect_video
    from fbil.service.errors import ServiceError

    fingerprint = request_fingerprint(request)
    local = out_dir / DOWNLOADS / f"{video.stem}{Path(urlsplit(video.source).path).suffix}"
    try:
        if video.is_url:
            await asyncio.to_thread(download, video.source, local)
            path = local
        else:
            path = Path(video.source)
        result = await detect_video(engine, path, out_dir, request, on_keyframe=on_keyframe)
    except (VideoError, ServiceError, DownloadError) as e:
        error, message = e.code, str(e)
    except Exception as e:  # the others go on; the manifest says what happened
        error, message = INTERNAL_ERROR, f"{type(e).__name__}: {e}"
    else:
        return VideoRecord(
            video.source,
            "done",
            fingerprint,
            keyframes=result.keyframes,
            seconds=round(result.seconds, 3),
            files=[p.name for p in result.files],
        )
    finally:
        local.unlink(missing_ok=True)
    remove_partials(out_dir, video.stem)
    return VideoRecord(video.source, "failed", fingerprint, error=error, message=message)


def begin_attempt(out_dir: Path, stem: str) -> int:
    """Count one more try of ``stem`` (in ``DIR/.attempts``, which every worker sees) and
    return the count: a worker killed mid-video never gets to say so, its next try does."""
    path = out_dir / ATTEMPTS / stem
    path.parent.mkdir(parents=True, exist_ok=True)
    tries = int(path.read_text()) + 1 if path.is_file() else 1
    partial = path.with_name(f"{stem}.{os.getpid()}.partial")
    partial.write_text(str(tries))
    partial.replace(path)
    return tries


def clear_attempts(out_dir: Path, stem: str) -> None:
    (out_dir / ATTEMPTS / stem).unlink(missing_ok=True)


def worker_lost(video: VideoInput, request: JobRequest, tries: int) -> VideoRecord:
    """The record of a video whose worker died on each of its ``tries``."""
    message = f"its worker died on each of {tries} tries"
    return VideoRecord(video.source, "failed", request_fingerprint(request), error=WORKER_LOST,
                       message=message, tries=tries)  # fmt: skip


def remove_partials(out_dir: Path, stem: str) -> None:
    """Delete what a stopped or failed run of ``stem`` left half-written."""
    for partial in out_dir.glob(f"{glob.escape(stem)}.*.partial"):
        partial.unlink(missing_ok=True)


class DownloadError(Exception):
    code = DOWNLOAD_FAILED


def download(url: str, path: Path, *, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Fetch ``url`` to ``path`` (written beside it, renamed when complete)."""
    import httpx

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        with (
            httpx.stream("GET", url, timeout=timeout_s, follow_redirects=True) as response,
            partial.open("wb") as f,
        ):
            if response.status_code != 200:
                raise DownloadError(f"{url}: HTTP {response.status_code}")
            for chunk in response.iter_bytes():
                f.write(chunk)
        partial.replace(path)
    except httpx.HTTPError as e:
        raise DownloadError(f"{url}: {e}") from e
    finally:
        partial.unlink(missing_ok=True)


def summary(manifest: Manifest, videos: Sequence[VideoInput]) -> dict[str, Any]:
    """Counts of this run's videos by status, and the failed ones' errors."""
    records = {v.stem: manifest.videos.get(v.stem) for v in videos}
    failed = {s: r.error for s, r in records.items() if r is not None and r.status == "failed"}
    done = sum(1 for r in records.values() if r is not None and r.status == "done")
    return {"videos": len(videos), "done": done, "failed": failed}

"""The synchronous HTTP client of ``fbil-serve`` (httpx)."""

from __future__ import annotations

import json
import mimetypes
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from fbil.client.errors import connection_error, error_from_response
from fbil.client.schemas import BoxFormat, DetectResult, Keyframe, ModelInfo

__all__ = ["DEFAULT_TIMEOUT_S", "Client", "StreamEvent", "VideoInput"]

VideoInput = str | os.PathLike[str] | bytes | IO[bytes]
"""A video file's path, its bytes, or a binary file object."""

DEFAULT_TIMEOUT_S = 300.0  # a long segment on a CPU service takes a while


class Client:
    """Talks to one ``fbil-serve`` at ``base_url`` (``http://host:port``).

    ``api_key`` is sent as ``Authorization: Bearer KEY``; ``timeout`` (seconds) bounds each
    request. Every error answer raises an :class:`~fbil.client.errors.FBILError` subclass that
    carries the service's error ``code``. Use it as a context manager (or call :meth:`close`);
    one client may be shared by threads.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ endpoints

    def detect(
        self,
        video: VideoInput,
        keyframes: Sequence[Keyframe | Mapping[str, Any]] | None = None,
        *,
        keyframe_interval: float | None = None,
        person_threshold: float | None = None,
        box_format: BoxFormat = "pixels",
        top_k: int | None = None,
        min_score: float | None = None,
        all_scores: bool = False,
    ) -> DetectResult:
        """``POST /detect``: the actions of the actors on each keyframe of ``video``.

        ``keyframes`` are :class:`~fbil.client.schemas.Keyframe` s or their JSON form
        (``{"time": 2.0, "boxes": [{"box": [x1, y1, x2, y2], "id": "a"}]}``); a keyframe
        without boxes gets the people the service's detector finds, and ``None`` asks for
        keyframes every ``keyframe_interval`` seconds (the service's default: 1.0). ``top_k``,
        ``min_score`` and ``person_threshold`` default to the service's.
        """
        request: dict[str, Any] = {"box_format": box_format}
        if keyframes is not None:
            request["keyframes"] = [
                k.to_json() if isinstance(k, Keyframe) else dict(k) for k in keyframes
            ]
        if keyframe_interval is not None:
            request["keyframe_interval"] = keyframe_interval
        if person_threshold is not None:
            request["person_threshold"] = person_threshold
        if all_scores:
            request["all_scores"] = True
        if top_k is not None:
            request["top_k"] = top_k
        if min_score is not None:
            request["min_score"] = min_score
        with _video_part(video) as part:
            response = self._send(
                "POST", "/detect", data={"request": json.dumps(request)}, files={"video": part}
            )
        return DetectResult.from_json(response.json())

    # ------------------------------------------------------------------ long-video jobs

    def submit_job(self, video: VideoInput, request: Mapping[str, Any] | None = None) -> dict:
        """``POST /v1/jobs``: a whole video as a job (``request``: see JobRequest; its
        ``keyframes`` may be :class:`~fbil.client.schemas.Keyframe` s, as for :meth:`detect`);
        its state document (``id``, ``state``, ``progress``, ``links``)."""
        document = dict(request or {})
        if document.get("keyframes") is not None:
            document["keyframes"] = [
                k.to_json() if isinstance(k, Keyframe) else dict(k) for k in document["keyframes"]
            ]
        with _video_part(video) as part:
            response = self._send(
                "POST",
                "/v1/jobs",
                data={"request": json.dumps(document)},
                files={"video": part},
            )
        return response.json()

    def job(self, job_id: str) -> dict:
        """``GET /v1/jobs/{id}``: state, progress (keyframes done / total), times, error."""
        return self._send("GET", f"/v1/jobs/{job_id}").json()

    def jobs(self) -> list[dict]:
        """``GET /v1/jobs``: this key's jobs, newest first."""
        return self._send("GET", "/v1/jobs").json()["jobs"]

    def job_results(self, job_id: str) -> list[dict]:
        """``GET /v1/jobs/{id}/results``: the keyframes done so far, in time order."""
        text = self._send("GET", f"/v1/jobs/{job_id}/results").text
        return [json.loads(line) for line in text.splitlines() if line]

    def job_results_csv(self, job_id: str) -> str:
        """``GET /v1/jobs/{id}/results.csv``: the results so far as AVA detections CSV."""
        return self._send("GET", f"/v1/jobs/{job_id}/results.csv").text

    def delete_job(self, job_id: str) -> dict:
        """``DELETE /v1/jobs/{id}``: cancel it if it runs and delete it with its files."""
        return self._send("DELETE", f"/v1/jobs/{job_id}").json()

    def wait_job(self, job_id: str, *, poll_s: float = 1.0, timeout: float | None = None) -> dict:
        """Poll until the job has finished (``succeeded``, ``failed`` or ``cancelled``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] not in ("queued", "running"):
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s")
            time.sleep(poll_s)

    def create_stream(self, url: str, **request: Any) -> dict:
        """``POST /v1/streams``: watch the live source ``url`` (``keyframe_interval``,
        ``person_threshold``, ``top_k``, ``min_score``, ``rules``, ``rtsp_transport``... as
        keywords); its state document (``id``, ``state``, ``links``)."""
        return self._send("POST", "/v1/streams", json={"url": url, **request}).json()

    def stream(self, stream_id: str) -> dict:
        """``GET /v1/streams/{id}``: state, lag_s, keyframes, dropped_keyframes, reconnects,
        last_error."""
        return self._send("GET", f"/v1/streams/{stream_id}").json()

    def streams(self) -> list[dict]:
        """``GET /v1/streams``: this key's streams, newest first."""
        return self._send("GET", "/v1/streams").json()["streams"]

    def stop_stream(self, stream_id: str) -> dict:
        """``DELETE /v1/streams/{id}``: stop the stream and close its source."""
        return self._send("DELETE", f"/v1/streams/{stream_id}").json()

    def stream_events(
        self, stream_id: str, *, last_event_id: int | None = None, resume: bool = True
    ) -> Iterator[StreamEvent]:
        """``GET /v1/streams/{id}/events``: the stream's events as they happen (``keyframe``,
        ``rule``, ``state``; ``gap`` when the service no longer held some), until the stream
        ends. A dropped connection is resumed with ``Last-Event-ID`` when ``resume``."""
        last = last_event_id
        while True:
            headers = {} if last is None else {"Last-Event-ID": str(last)}
            try:
                with self._http.stream(
                    "GET",
                    f"/v1/streams/{stream_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(self._http.timeout.connect, read=None),
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        _raise_for_error(response)
                    for event in _sse(response.iter_lines()):
                        last = event.id if event.id is not None else last
                        yield event
                return  # the stream ended
            except httpx.TransportError as e:
                if not resume:
                    raise connection_error(self.base_url, e) from e

    def model_info(self) -> ModelInfo:
        """``GET /v1/model``: the served model, its labels, preprocessing and limits."""
        return ModelInfo.from_json(self._send("GET", "/v1/model").json())

    def health(self) -> bool:
        """``GET /healthz``: False when the model failed to load (restart the service)."""
        return self._probe("/healthz")

    def ready(self) -> bool:
        """``GET /readyz``: True once the model has run its warm-up forward."""
        return self._probe("/readyz")

    def metrics(self) -> str:
        """``GET /metrics``: the Prometheus text."""
        return self._send("GET", "/metrics").text

    # ------------------------------------------------------------------ transport

    def _probe(self, path: str) -> bool:
        response = self._request("GET", path)
        if response.status_code == 503:
            return False
        _raise_for_error(response)
        return True

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._request(method, path, **kwargs)
        _raise_for_error(response)
        return response

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise connection_error(self.base_url, e) from e


@dataclass(frozen=True)
class StreamEvent:
    """One Server-Sent Event of a stream: its ``id`` (None for ``gap``), ``kind``
    (``keyframe``, ``rule``, ``state``, ``gap``) and JSON ``data``."""

    id: int | None
    kind: str
    data: dict[str, Any]


def _sse(lines: Iterator[str]) -> Iterator[StreamEvent]:
    """Events of SSE text lines (comments and ``retry`` skipped)."""
    fields: dict[str, str] = {}
    for line in lines:
        if line:
            if not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            continue
        if "data" in fields:
            event_id = int(fields["id"]) if "id" in fields else None
            yield StreamEvent(event_id, fields.get("event", "message"), json.loads(fields["data"]))
        fields = {}


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise error_from_response(response)


@contextmanager
def _video_part(video: VideoInput) -> Iterator[tuple[str, Any, str]]:
    """httpx's ``(filename, content, content type)`` of the ``video`` part; a path is streamed
    from its open file."""
    with ExitStack() as stack:
        if isinstance(video, bytes):
            name, content = "video", video
        elif isinstance(video, (str, os.PathLike)):
            path = Path(video)
            name, content = path.name, stack.enter_context(path.open("rb"))
        else:
            named = getattr(video, "name", None)  # an open file's path; BytesIO has none
            name, content = Path(named).name if isinstance(named, str) else "video", video
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        yield name, content, kind

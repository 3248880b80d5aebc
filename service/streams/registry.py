"""The streams of a process: each one a reader thread on its source and a task that runs its
keyframes through the one keyframe pipeline (:func:`~fbil.service.keyframes.run_keyframes`
with an :class:`~fbil.service.keyframes.ActorSource` of detected people, one tracker for the
stream's whole life), publishing every keyframe and rule event to the stream's event log.

States: ``connecting`` (until the first frame), ``running``, ``reconnecting`` (the source
dropped, ended or stalled; retried with backoff), ``stopped`` (deleted, or the service
stopped), ``failed`` (``FBIL_STREAM_MAX_RECONNECTS`` attempts in a row failed; ``last_error``
says why). A stream belongs to the API key that created it; another key gets 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fbil.model.labels import LabelMap
from fbil.model.tracking import Tracker
from fbil.model.video.stream import LiveWindows
from fbil.service.errors import (
    BoxesRequiredError,
    StreamNotFoundError,
    TooManyStreamsError,
    UnknownActionError,
)
from fbil.service.keyframes import ActorSource, Answered, KeyframeOptions, run_keyframes
from fbil.service.state import ServiceState
from fbil.service.streams.events import EventLog
from fbil.service.streams.rules import RuleEngine, RuleSpec
from fbil.service.streams.schemas import (
    STATES,
    RuleIn,
    StreamErrorOut,
    StreamLinks,
    StreamOut,
    StreamRequest,
)
from fbil.service.streams.source import LiveReader, SourceOptions, SourceProblem
from fbil.service.streams.url_policy import StreamURL, check_url

log = logging.getLogger(__name__)

STOP_WAIT_S = 5.0  # the longest wait for a stopped stream's reader to close its source


def resolve_rules(rules: Sequence[RuleIn], labels: LabelMap) -> list[RuleSpec]:
    """Rules with their action found in the model's labels (400 ``unknown_action``)."""
    by_name = {c.name.lower(): (i, c) for i, c in enumerate(labels)}
    by_id = {c.id: (i, c) for i, c in enumerate(labels)}
    out = []
    for k, rule in enumerate(rules):
        found = (
            by_id.get(rule.action)
            if isinstance(rule.action, int)
            else by_name.get(rule.action.strip().lower())
        )
        if found is None:
            raise UnknownActionError(
                f"rule {k}: the model has no action {rule.action!r}",
                {"pointer": f"/rules/{k}/action"},
            )
        index, cls = found
        out.append(
            RuleSpec(
                rule.name or cls.name,
                index,
                cls.id,
                cls.name,
                rule.threshold,
                rule.start_n,
                rule.start_m,
                rule.end_n,
                rule.end_m,
            )
        )
    return out


@dataclass
class Stream:
    """One live stream: its request, its state and counters, its event log and what runs it."""

    id: str
    owner: str
    source: StreamURL
    request: StreamRequest
    events: EventLog
    created: float = field(default_factory=time.time)
    state: str = "connecting"
    keyframes: int = 0
    lag_s: float | None = None
    reconnects: int = 0
    last_error: SourceProblem | None = None
    windows: LiveWindows | None = None
    reader: LiveReader | None = None
    task: asyncio.Task[None] | None = None

    @property
    def dropped(self) -> int:
        return self.windows.dropped if self.windows is not None else 0

    @property
    def finished(self) -> bool:
        return self.state in ("stopped", "failed")

    def out(self) -> StreamOut:
        base = f"/v1/streams/{self.id}"
        error = self.last_error
        return StreamOut(
            id=self.id,
            url=self.source.shown,
            state=self.state,  # type: ignore[arg-type]
            created=self.created,
            keyframe_interval=self.request.keyframe_interval,
            lag_s=None if self.lag_s is None else round(self.lag_s, 3),
            keyframes=self.keyframes,
            dropped_keyframes=self.dropped,
            reconnects=self.reconnects,
            last_error=StreamErrorOut(code=error.code, message=error.message) if error else None,
            links=StreamLinks(self=base, events=f"{base}/events"),
        )


class StreamRegistry:
    """Creates, finds and stops the streams of the service (``app.state.streams``)."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self.streams: dict[str, Stream] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def settings(self):  # noqa: ANN201
        return self.state.settings

    def running(self, owner: str | None = None) -> list[Stream]:
        return [
            s
            for s in self.streams.values()
            if not s.finished and (owner is None or s.owner == owner)
        ]

    async def create(self, owner: str, body: StreamRequest) -> Stream:
        """Check the request (URL policy, limits, rules) and start the stream."""
        s, engine = self.settings, self.state.engine
        assert engine is not None  # the route checked readiness
        # (in a thread: a host name is resolved)
        source = await asyncio.to_thread(
            check_url, body.url, s.stream_allowed_schemes, s.stream_allowed_hosts
        )
        if engine.detector is None:
            raise BoxesRequiredError(
                "streams find people with the person detector, which is off (FBIL_DETECTOR=none)"
            )
        rules = resolve_rules(body.rules, engine.metadata.labels)
        if len(self.running()) >= s.max_streams:
            raise TooManyStreamsError(
                f"{s.max_streams} streams run, the limit (FBIL_MAX_STREAMS)",
                {"max_streams": s.max_streams},
            )
        if len(self.running(owner)) >= s.max_streams_per_key:
            raise TooManyStreamsError(
                f"this key runs {s.max_streams_per_key} streams, the limit "
                "(FBIL_MAX_STREAMS_PER_KEY)",
                {"max_streams_per_key": s.max_streams_per_key},
            )
        self._forget_finished()
        stream = Stream(
            "str_" + secrets.token_hex(12),
            owner,
            source,
            body,
            EventLog(s.stream_event_buffer),
        )
        self.streams[stream.id] = stream
        self._loop = asyncio.get_running_loop()
        stream.task = asyncio.create_task(self._run(stream, rules))
        self._count_states()
        log.info("stream %s: watching %s", stream.id, source.shown)
        return stream

    def get(self, stream_id: str, owner: str) -> Stream:
        stream = self.streams.get(stream_id)
        if stream is None or stream.owner != owner:
            raise StreamNotFoundError(f"no stream {stream_id[:64]!r}")
        return stream

    def list(self, owner: str) -> list[Stream]:
        return sorted(
            (s for s in self.streams.values() if s.owner == owner),
            key=lambda s: s.created,
            reverse=True,
        )

    async def delete(self, stream_id: str, owner: str) -> Stream:
        """Stop the stream, close its source and forget it (then 404)."""
        stream = self.get(stream_id, owner)
        await self._stop(stream)
        self.streams.pop(stream.id, None)
        self._count_states()
        return stream

    async def stop_all(self) -> None:
        await asyncio.gather(*(self._stop(s) for s in list(self.streams.values())))

    def _forget_finished(self) -> None:
        """Finished streams are kept for their owners to read until as many are kept as run."""
        finished = [s for s in self.streams.values() if s.finished]
        for stream in sorted(finished, key=lambda s: s.created)[
            : -max(self.settings.max_streams, 1)
        ]:
            self.streams.pop(stream.id, None)

    async def _stop(self, stream: Stream) -> None:
        if stream.windows is not None:
            stream.windows.close()
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
            with contextlib.suppress(BaseException):
                await stream.task
        if stream.reader is not None:
            await asyncio.to_thread(stream.reader.join, STOP_WAIT_S)
        if stream.state != "failed":
            self._set_state(stream, "stopped", None)
        stream.events.close()

    # the run

    def _set_state(self, stream: Stream, state: str, problem: SourceProblem | None) -> None:
        if stream.finished:
            return
        if problem is not None:
            stream.last_error = problem
        if state == stream.state:
            return
        stream.state = state
        data: dict[str, Any] = {"state": state}
        if problem is not None:
            data["error"] = {"code": problem.code, "message": problem.message}
        stream.events.add("state", data)
        self._count_states()

    def _count_states(self) -> None:
        gauge = self.state.metrics.streams
        for name in STATES:
            gauge.labels(name).set(sum(1 for s in self.streams.values() if s.state == name))

    def _from_reader(self, stream: Stream):  # noqa: ANN202
        loop = asyncio.get_running_loop()

        def on_state(state: str, problem: SourceProblem | None) -> None:
            loop.call_soon_threadsafe(self._set_state, stream, state, problem)

        def on_reconnect() -> None:
            stream.reconnects += 1
            self.state.metrics.stream_reconnects.inc()

        return on_state, on_reconnect

    async def _run(self, stream: Stream, rules: list[RuleSpec]) -> None:
        s, engine, body = self.settings, self.state.engine, stream.request
        assert engine is not None
        metrics = self.state.metrics
        windows = LiveWindows(
            engine.metadata.preprocess,
            body.keyframe_interval,
            step_s=s.track_interval_s,
            max_frames_per_gap=s.max_detect_frames,
            frame_fit=getattr(engine.detector, "needed_size", None),  # held as the detector needs
        )
        stream.windows = windows
        on_state, on_reconnect = self._from_reader(stream)
        stream.reader = LiveReader(
            stream.source.url,
            stream.source.scheme,
            windows,
            SourceOptions(
                rtsp_transport=body.rtsp_transport,
                open_timeout_s=s.stream_open_timeout_s,
                read_timeout_s=s.stream_read_timeout_s,
                max_reconnects=s.stream_max_reconnects,
                backoff_s=s.stream_reconnect_backoff_s,
            ),
            on_state,
            on_reconnect,
        )
        threshold = body.person_threshold
        options = KeyframeOptions(
            person_threshold=s.person_threshold if threshold is None else threshold,
            box_format=body.box_format,
            top_k=body.top_k,
            min_score=body.min_score,
            all_scores=True,  # the rules read every score; left out of events unless asked
        )
        actors = ActorSource(
            None,
            options,
            detector=engine.detector,
            max_boxes=s.max_boxes_per_keyframe,
            tracker=Tracker(
                max_age_s=s.stream_track_keep_s, reid_distance=s.track_reid_distance
            ).state(),
            track_low_score=s.track_low_score,
        )
        rule_engine = RuleEngine(rules)
        dropped_seen = 0

        async def on_keyframe(done: Answered) -> None:
            nonlocal dropped_seen
            now = time.time()
            _, seen, arrived = windows.taken.get_nowait()
            answer = done.answer
            scores = answer.actors and [a.scores for a in answer.actors]
            data = answer.model_dump(mode="json", exclude_none=True)
            if not body.all_scores:
                for actor in data["actors"]:
                    actor.pop("scores", None)
            stream_time = round(answer.time, 3)
            wall = round(seen, 3)
            stream.keyframes += 1
            stream.lag_s = max(now - arrived, 0.0)
            data.update(stream_time=stream_time, wall_time=wall, lag_s=round(stream.lag_s, 3))
            metrics.stream_keyframes.inc()
            metrics.stream_lag.observe(stream.lag_s)
            if windows.dropped > dropped_seen:
                metrics.stream_dropped.inc(windows.dropped - dropped_seen)
                dropped_seen = windows.dropped
            stream.events.add("keyframe", data)
            if rules:
                matrix = np.asarray(scores, dtype=np.float32) if scores else None
                ids = [a.track_id for a in answer.actors]
                for event in rule_engine.update(ids, matrix, answer.time):
                    event["wall_time"] = wall
                    stream.events.add("rule", event)

        stream.reader.start()
        try:
            await run_keyframes(
                engine,
                windows,
                actors,
                options,
                on_keyframe,
                in_flight=s.stream_clips_in_flight,
                wait_if_full=True,
            )
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the source failed for good, or a keyframe could not run
            problem = getattr(e, "problem", None) or SourceProblem(
                "stream_error", f"{type(e).__name__}"
            )
            if not isinstance(getattr(e, "problem", None), SourceProblem):
                log.exception("stream %s failed", stream.id)
            self._set_state(stream, "failed", problem)
        finally:
            windows.close()
            if stream.state != "failed":
                self._set_state(stream, "stopped", None)
            stream.events.close()

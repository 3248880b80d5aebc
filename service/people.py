"""People on keyframes sent without boxes: the detector the settings choose, the keyframe times
of a request without keyframes, and the work one request's detection does (in a thread).

Detected people become actors like client boxes: their normalised boxes go to the batcher, and
the answer carries their box in the request's ``box_format``, the detector's score and a track
id that stays with the person across the request's keyframes (:mod:`fbil.model.tracking`).
"""

from __future__ import annotations

import logging
import threading
from typing import Literal

import numpy as np

from fbil.model import stream
from fbil.model.persons import PersonDetector, load_person_detector
from fbil.model.tracking import TrackedPeople, plan_frames, track_people
from fbil.model.video import VideoLimits, read_frames
from fbil.service.errors import TooManyKeyframesError
from fbil.service.settings import Settings, SettingsError

log = logging.getLogger(__name__)

WARMUP_SIZE = (576, 768)  # a blank frame of this size runs through the detector at start


def load_detector(settings: Settings) -> PersonDetector | None:
    """The person detector of ``FBIL_DETECTOR``/``FBIL_DETECTOR_PATH`` (None: detection off),
    on the model's ONNX Runtime providers and threads, warmed up on a blank frame."""
    if settings.detector == "none":
        return None
    detector = load_person_detector(
        settings.detector_path,
        providers=settings.onnx_providers or None,
        num_threads=settings.num_threads,
    )
    detector.detect([np.zeros((*WARMUP_SIZE, 3), np.uint8)], settings.person_threshold)
    return detector


def check_detector_path(settings: Settings) -> None:
    """:class:`SettingsError` naming the variable when ``FBIL_DETECTOR_PATH`` is no file."""
    path = settings.detector_path
    if settings.detector != "none" and path is not None and not path.is_file():
        raise SettingsError(f"FBIL_DETECTOR_PATH={path} is not a file")


def keyframe_times(end: float, interval: float, max_keyframes: int) -> list[float]:
    """:func:`fbil.model.stream.keyframe_times`, refused beyond ``max_keyframes``
    (:class:`TooManyKeyframesError`)."""
    times = stream.keyframe_times(end, interval)
    if len(times) > max_keyframes:
        raise TooManyKeyframesError(
            f"a {end:.2f} s segment at keyframe_interval {interval} s has {len(times)} keyframes, "
            f"the limit is {max_keyframes}: send a larger keyframe_interval (at least "
            f"{end / max_keyframes:.3g} s) or a shorter segment",
            {"max_keyframes": max_keyframes, "keyframes": len(times)},
        )
    return times


def detect_people(
    data: bytes,
    times: list[float | None],
    detector: PersonDetector,
    *,
    threshold: float,
    settings: Settings,
    limits: VideoLimits,
    cancel: threading.Event,
) -> list[TrackedPeople]:
    """The people on the keyframes at ``times`` (in that order), tracked across them: reads
    the keyframes' frames and those between (``FBIL_TRACK_INTERVAL_S``, at most
    ``FBIL_MAX_DETECT_FRAMES``) in one decoding pass, then detects and tracks."""
    plan = plan_frames(times, settings.track_interval_s, settings.max_detect_frames)
    _, frames = read_frames(data, list(plan.times), limits, cancel=cancel)
    return track_people([(f.time, f.rgb) for f in frames], plan, detector, threshold, cancel=cancel)


def box_out(
    box: np.ndarray, box_format: Literal["pixels", "normalized"], width: int, height: int
) -> list[float]:
    """A detected person's normalised box in the request's ``box_format``."""
    if box_format == "normalized":
        return [round(float(v), 5) for v in box]
    scale = (width, height, width, height)
    return [round(float(v) * s, 1) for v, s in zip(box, scale, strict=True)]

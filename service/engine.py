"""The engine every entry point runs on: the model's runtime, the person detector, the batcher
that lets concurrent keyframes share runtime calls, and the threads that decode and detect,
all built from :class:`~fbil.service.settings.Settings`.

What it adds to the bare runtime (as detectron2's ``DefaultPredictor`` lists): loading from
settings with a real warm-up forward, the detector warmed up on a blank frame, dynamic
batching, and a check that a clip fits the runtime's engine before it is queued. The app's
lifespan, the jobs worker and ``fbil-detect`` build one; everything per keyframe is
:mod:`fbil.service.keyframes`.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from fbil.model import ModelMetadata
from fbil.model.persons import PersonDetector, load_bundled_detector, load_person_detector
from fbil.service.batching import Batcher
from fbil.service.errors import OutsideEngineProfileError, OverloadedError
from fbil.service.metrics import Metrics
from fbil.service.runtimes import Runtime, TensorRTProfile, load_runtime
from fbil.service.settings import Settings, SettingsError

log = logging.getLogger(__name__)

DETECTOR_WARMUP_SIZE = (576, 768)  # a blank frame of this size runs through the detector
BATCHER_STOP_S = 0.5  # at shutdown, the longest wait for the batch worker to stop
RETRY_FULL_QUEUE_S = 0.02  # a clip refused by a full queue is offered again after this


def tensorrt_profile(settings: Settings) -> TensorRTProfile:
    """What a TensorRT engine must cover: a full batch of clips with every box a keyframe may
    carry, frames up to ``trt_max_aspect``; kept in ``trt_engine_cache_path``."""
    s = settings
    return TensorRTProfile(
        max_batch_size=s.max_batch_size,
        max_rois=s.max_batch_size * s.max_boxes_per_keyframe,
        max_aspect=s.trt_max_aspect,
        cache_path=s.trt_engine_cache_path,
    )


def runtime_from_settings(settings: Settings) -> Runtime:
    """:func:`~fbil.service.runtimes.load_runtime` of the model the settings name, as they
    configure it (not warmed up)."""
    s = settings
    return load_runtime(
        s.resolved_model_path(),
        s.backend,
        device=s.device,
        config_path=s.config_path,
        labelmap_path=s.labelmap_path,
        onnx_providers=s.onnx_providers or None,
        num_threads=s.num_threads,
        precision=s.precision,
        tensorrt=tensorrt_profile(s),
    )


def check_detector_path(settings: Settings) -> None:
    """:class:`SettingsError` naming the variable when ``FBIL_DETECTOR_PATH`` is no file."""
    path = settings.detector_path
    if settings.detector != "none" and path is not None and not path.is_file():
        raise SettingsError(f"FBIL_DETECTOR_PATH={path} is not a file")


def detector_from_settings(settings: Settings) -> PersonDetector | None:
    """The person detector of ``FBIL_DETECTOR``/``FBIL_DETECTOR_PATH`` (None: detection off),
    on the model's ONNX Runtime providers and threads, warmed up on a blank frame."""
    if settings.detector == "none":
        return None
    providers, threads = settings.onnx_providers or None, settings.num_threads
    if settings.detector_path is None and settings.detector != "bundled":
        name = settings.detector
        detector = load_bundled_detector(name, providers=providers, num_threads=threads)
    else:
        detector = load_person_detector(
            settings.detector_path, providers=providers, num_threads=threads
        )
    detector.detect([np.zeros((*DETECTOR_WARMUP_SIZE, 3), np.uint8)], settings.person_threshold)
    return detector


@dataclass(frozen=True)
class Scored:
    """One clip's scores ``(n, C)`` and what producing them cost (seconds)."""

    scores: np.ndarray
    queue_s: float
    inference_s: float
    batch_id: int


class Engine:
    """The runtime, the person detector, the batcher and the decode/detect threads of one
    process. :meth:`load` builds it (blocking: run it in a thread), :meth:`start` starts the
    batcher on the running event loop, :meth:`stop` drains it."""

    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        detector: PersonDetector | None,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        s = settings
        self.settings, self.runtime, self.detector = s, runtime, detector
        self.batcher = Batcher(
            runtime.predict,
            max_batch_size=s.max_batch_size,
            max_batch_delay_ms=s.max_batch_delay_ms,
            max_queue_size=s.max_queue_size,
            metrics=metrics,
        )
        self.decode_pool = ThreadPoolExecutor(s.decode_workers, thread_name_prefix="fbil-decode")
        self.detect_pool = ThreadPoolExecutor(s.detect_workers, thread_name_prefix="fbil-detect")

    @classmethod
    def load(cls, settings: Settings, *, metrics: Metrics | None = None) -> Engine:
        """Load the model and run a real warm-up forward, then load and warm up the person
        detector (blocking)."""
        runtime = runtime_from_settings(settings)
        runtime.warmup()
        return cls(settings, runtime, detector_from_settings(settings), metrics=metrics)

    @property
    def metadata(self) -> ModelMetadata:
        return self.runtime.metadata

    def start(self) -> None:
        """Start the batcher on the running event loop."""
        self.batcher.start()

    async def stop(self, wait_s: float | None = BATCHER_STOP_S) -> None:
        """Refuse new clips, run those queued (at most ``wait_s`` for a running batch: it is
        abandoned then) and stop the threads (a running decode or detection ends with the
        process: nobody waits for it)."""
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        self.detect_pool.shutdown(wait=False, cancel_futures=True)
        try:
            await asyncio.wait_for(self.batcher.stop(), wait_s)
        except TimeoutError:
            log.warning("a batch was still running at shutdown; it was abandoned")

    def check_input(self, height: int, width: int, boxes: int) -> None:
        """422 ``outside_engine_profile`` when a clip ``height`` x ``width`` (after resizing)
        with ``boxes`` boxes lies outside what the runtime's engine covers (TensorRT's
        profile): it would fail inside the engine."""
        shapes = self.runtime.input_shapes()
        if shapes is not None and (problem := shapes.problem(height, width, boxes)) is not None:
            raise OutsideEngineProfileError(
                problem, {"max_side": shapes.max_side, "max_rois": shapes.max_rois}
            )

    async def score(self, clip: Any, boxes: np.ndarray, *, wait_if_full: bool) -> Scored:
        """Scores of the actors ``boxes`` (float32 ``(n, 4)`` normalised) on ``clip``
        ``(3, T, H, W)`` (a numpy array, or a torch tensor when torch is loaded), through the
        batcher. A full queue raises
        :class:`~fbil.service.errors.OverloadedError`, or with ``wait_if_full`` is tried again
        until the clip fits (background work gives way to requests)."""
        self.check_input(clip.shape[-2], clip.shape[-1], len(boxes))
        rois = boxes
        if not isinstance(clip, np.ndarray):
            import torch  # a torch clip: torch is loaded

            rois = torch.from_numpy(np.ascontiguousarray(boxes, np.float32))
        while True:
            try:
                (result,) = await self.batcher.submit([clip], [rois])
                break
            except OverloadedError:
                if not wait_if_full or self.batcher.stopping:
                    raise
                await asyncio.sleep(RETRY_FULL_QUEUE_S)
        return Scored(
            np.asarray(result.scores),
            result.queue_ms / 1000,
            result.inference_ms / 1000,
            result.batch_id,
        )

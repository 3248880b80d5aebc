"""Dynamic batching: clips from concurrent requests share one runtime call.

Every clip is queued on its own with its rois. One worker takes the oldest clip and the queued
clips of the same ``(T, H, W)`` (FIFO), up to ``max_batch_size``, waiting at most
``max_batch_delay_ms`` after the oldest clip arrived for the batch to fill (Triton's
``max_queue_delay``). Rois' clip indices are re-based for the concatenated batch and the scores
are split back per clip. The queue is bounded: a request whose clips do not fit is refused at
once (:class:`~service.errors.OverloadedError`); a caller that goes away takes its clips out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fbil.service.errors import OverloadedError
from fbil.service.metrics import Metrics

log = logging.getLogger(__name__)

# clips and rois are numpy arrays (ONNX Runtime without torch) or torch tensors (torch loaded:
# fbil.model.preprocess.torch_available); a batch is of one kind and so are its scores
Tensor = Any
Predict = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ClipResult:
    """One clip's scores ``(n, C)`` and what producing them cost (milliseconds)."""

    scores: Tensor
    queue_ms: float
    inference_ms: float
    batch_id: int


@dataclass(eq=False)
class _Item:
    clip: Tensor  # (3, T, H, W)
    rois: Tensor  # (n, 4) normalised boxes of this clip
    future: asyncio.Future[ClipResult]
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.clip.shape)


class Batcher:
    """Bounded queue + one worker feeding ``predict`` with batches of same-shape clips."""

    def __init__(
        self,
        predict: Predict,
        *,
        max_batch_size: int = 8,
        max_batch_delay_ms: float = 5.0,
        max_queue_size: int = 64,
        metrics: Metrics | None = None,
    ) -> None:
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_batch_delay = max_batch_delay_ms / 1000
        self.max_queue_size = max_queue_size
        self.metrics = metrics
        self._queue: deque[_Item] = deque()
        self._arrived = asyncio.Event()
        self._stopping = False
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="fbil-infer")
        self._batches = 0

    @property
    def stopping(self) -> bool:
        """:meth:`stop` was called: no clip is accepted any more."""
        return self._stopping

    @property
    def depth(self) -> int:
        """Clips waiting (including a batch still being filled)."""
        return len(self._queue)

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="fbil-batcher")

    async def stop(self) -> None:
        """Run what is queued (no new clips are accepted), then stop the worker."""
        self._stopping = True
        self._arrived.set()
        if self._worker is not None:
            await self._worker
        self._executor.shutdown(wait=True)

    async def submit(self, clips: Sequence[Tensor], rois: Sequence[Tensor]) -> list[ClipResult]:
        """Scores for each clip ``(3,T,H,W)`` with its boxes ``(n_i, 4)``, in order.

        All clips are queued or none: :class:`OverloadedError` when they do not fit. If the
        caller is cancelled, its clips still queued are dropped.
        """
        if self._stopping:
            raise OverloadedError("the service is shutting down")
        if len(self._queue) + len(clips) > self.max_queue_size:
            if self.metrics:
                self.metrics.rejected.labels("queue_full").inc()
            raise OverloadedError(
                f"the queue is full ({len(self._queue)} of {self.max_queue_size} clips waiting)",
                {"queue_depth": len(self._queue), "max_queue_size": self.max_queue_size},
            )
        loop = asyncio.get_running_loop()
        items = [
            _Item(clip, boxes, loop.create_future())
            for clip, boxes in zip(clips, rois, strict=True)
        ]
        self._queue.extend(items)
        self._update_depth()
        self._arrived.set()
        try:
            return list(await asyncio.gather(*(item.future for item in items)))
        finally:
            self._withdraw(items)

    def _withdraw(self, items: list[_Item]) -> None:
        """Take a caller's clips that did not run out of the queue."""
        for item in items:
            item.future.cancel()  # no-op for those done
        mine = {id(item) for item in items}
        if any(id(item) in mine for item in self._queue):
            self._queue = deque(item for item in self._queue if id(item) not in mine)
            self._update_depth()

    def _update_depth(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.set(len(self._queue))

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            batch = await self._gather()
            if batch:
                await self._execute(batch)

    def _same_shape(self, shape: tuple[int, ...]) -> list[_Item]:
        return [item for item in self._queue if item.shape == shape][: self.max_batch_size]

    async def _gather(self) -> list[_Item]:
        """The oldest clip and same-shape clips, waiting up to the delay for a full batch."""
        oldest = self._queue[0]
        deadline = oldest.enqueued + self.max_batch_delay
        while not self._stopping and len(self._same_shape(oldest.shape)) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or oldest not in self._queue:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        if not self._queue:
            return []
        batch = self._same_shape(self._queue[0].shape)
        taken = {id(item) for item in batch}
        self._queue = deque(item for item in self._queue if id(item) not in taken)
        self._update_depth()
        return batch

    async def _execute(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        clips, rois = _batch([item.clip for item in batch], [item.rois for item in batch])
        loop = asyncio.get_running_loop()
        try:
            scores = await loop.run_in_executor(self._executor, self.predict, clips, rois)
        except Exception as e:  # the runtime failed: every caller of this batch fails
            log.exception("runtime failed on a batch of %d clips", len(batch))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(e)
            return
        elapsed = time.perf_counter() - started
        self._batches += 1
        if self.metrics:
            self.metrics.batch_size.observe(len(batch))
            self.metrics.inference_latency.observe(elapsed)
        parts = _split(scores, [len(item.rois) for item in batch])
        for item, part in zip(batch, parts, strict=True):
            queue_s = started - item.enqueued
            if self.metrics:
                self.metrics.queue_wait.observe(queue_s)
            if not item.future.done():
                item.future.set_result(
                    ClipResult(part, queue_s * 1000, elapsed * 1000, self._batches)
                )


def _batch(clips: list[Tensor], rois: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Clips stacked ``(B, 3, T, H, W)`` and rois ``(N, 5)`` with their clip's index first."""
    if all(isinstance(c, np.ndarray) for c in clips):
        rows = [
            np.concatenate(
                (np.full((len(r), 1), float(i), np.float32), np.asarray(r, np.float32)), 1
            )
            for i, r in enumerate(rois)
        ]
        return np.stack(clips), np.concatenate(rows)
    import torch

    stacked = torch.stack([torch.as_tensor(c) for c in clips])
    rows = [
        torch.cat((torch.full((len(r), 1), float(i)), torch.as_tensor(r)), dim=1)
        for i, r in enumerate(rois)
    ]
    return stacked, torch.cat(rows)


def _split(scores: Tensor, sizes: list[int]) -> list[Tensor]:
    """``scores`` cut into consecutive parts of ``sizes`` rows."""
    if isinstance(scores, np.ndarray):
        return np.split(scores, np.cumsum(sizes)[:-1])
    import torch

    return list(torch.split(scores, sizes))

"""Timing shared by the benchmarks: the median of repeated calls, and a stopwatch."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


class Stopwatch:
    """Wall time since it was made (``time.perf_counter``)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the stopwatch was made."""
        return time.perf_counter() - self.start


def median_seconds(fn: Callable[[], object], repeats: int, *, warmup: int = 1) -> float:
    """Median wall time in seconds of ``repeats`` calls of ``fn``, after ``warmup`` untimed
    calls (codecs, thread pools and kernels started; caches filled)."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(max(1, repeats)):
        watch = Stopwatch()
        fn()
        runs.append(watch.elapsed())
    return statistics.median(runs)

"""Prometheus metrics, in a registry of the app's own (several apps can live in one process).

With ``FBIL_WORKERS > 1`` every worker process exports its own numbers.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The service's metrics: requests, stage latencies, queue depth, batch, actor and detected
    people counts."""

    def __init__(self, max_batch_size: int = 8) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "fbil_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.request_latency = Histogram(
            "fbil_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.decode_latency = Histogram(
            "fbil_decode_seconds", "video decode per request", buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "fbil_queue_wait_seconds",
            "time a clip waits in the queue before its batch runs",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_latency = Histogram(
            "fbil_inference_seconds",
            "runtime call per batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("fbil_queue_depth", "clips waiting for the runtime", registry=r)
        self.inflight = Gauge(
            "fbil_inflight_requests",
            "/detect requests being decoded or run (their upload is in)",
            registry=r,
        )
        self.batch_size = Histogram(
            "fbil_batch_size",
            "clips per runtime call",
            buckets=_count_buckets(max_batch_size),
            registry=r,
        )
        self.actors = Histogram(
            "fbil_actors_per_request",
            "boxes (actors) per /detect request",
            buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.jobs = Gauge("fbil_jobs", "long-video jobs by state", ["state"], registry=r)
        self.job_keyframes = Counter(
            "fbil_job_keyframes",
            "keyframes jobs have finished (its rate: keyframes per second)",
            registry=r,
        )
        self.detect_latency = Histogram(
            "fbil_detect_seconds",
            "reading frames, detecting and tracking people per request (keyframes without boxes)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.people = Histogram(
            "fbil_detected_people",
            "people the detector found per keyframe",
            buckets=(0, 1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.rejected = Counter(
            "fbil_rejected", "requests refused by admission control", ["reason"], registry=r
        )

        # live streams (/v1/streams)
        self.streams = Gauge("fbil_streams", "live streams by state", ["state"], registry=r)
        self.stream_lag = Histogram(
            "fbil_stream_lag_seconds",
            "a stream keyframe's answer time minus the arrival of its window's last frame",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stream_keyframes = Counter(
            "fbil_stream_keyframes", "keyframes answered on live streams", registry=r
        )
        self.stream_dropped = Counter(
            "fbil_stream_dropped_keyframes",
            "keyframe windows live streams dropped because the model was behind",
            registry=r,
        )
        self.stream_reconnects = Counter(
            "fbil_stream_reconnects", "reconnections of live streams to their sources", registry=r
        )


def _count_buckets(largest: int) -> tuple[float, ...]:
    buckets = sorted({1, 2, 4, 8, 16, 32, 64, 128, largest})
    return tuple(float(b) for b in buckets if b <= largest)

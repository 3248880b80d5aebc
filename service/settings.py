"""Service settings: one pydantic-settings class, environment variables prefixed ``FBIL_``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from fbil.model.video import VideoLimits

Backend = Literal["auto", "onnx", "torchscript", "eager"]
Precision = Literal["fp32", "fp16", "bf16"]
MIB = 1024 * 1024


class SettingsError(ValueError):
    """Settings that cannot start the service (message names the ``FBIL_`` variable)."""


DEMO_MODEL = "data/demo/model.onnx"
# the value docker/fbil.env.example ships: a key anyone can read
PLACEHOLDER_API_KEY = "replace-with-output-of-openssl-rand-hex-32"
MIN_API_KEY_CHARS = 16


def default_model_path() -> Path | None:
    """The model served when ``FBIL_MODEL_PATH`` is unset: the bundled demo model (trained on
    synthetic data only; see configs/demo_synth.yaml), if this installation has it."""
    path = Path(str(resources.files("fbil.model").joinpath(DEMO_MODEL)))
    return path if path.is_file() else None


class Settings(BaseSettings):
    """Everything the service reads from its environment (``FBIL_<NAME>``)."""

    model_config = SettingsConfigDict(env_prefix="FBIL_", extra="ignore")

    # model and runtime
    model_path: Path | None = Field(None, description="model file (.safetensors/.onnx/.pt...)")
    config_path: Path | None = Field(None, description="YAML config for published checkpoints")
    labelmap_path: Path | None = Field(
        None,
        description="label map (.pbtxt/.json) of the model's classes: needed for a published "
        "checkpoint of other than 60/80 AVA classes; renames an artifact's classes",
    )
    backend: Backend = Field("auto", description="runtime; auto picks by the file's suffix")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    onnx_providers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="ONNX Runtime providers, comma-separated (auto if empty)"
    )
    num_threads: int | None = Field(None, ge=1, description="intra-op threads of the runtime")
    precision: Precision = Field(
        "fp32",
        description="fp32 | fp16 | bf16: torch.autocast for eager/TorchScript (fp16 on CUDA "
        "only), TensorRT's precision for ONNX (other providers: export with --fp16)",
    )
    trt_engine_cache_path: Path | None = Field(
        None,
        description="folder where TensorRT keeps its engines and timing cache between starts "
        "(unset: every start builds the engine anew, minutes)",
    )
    trt_max_aspect: float = Field(
        2.4,
        ge=1.0,
        le=8.0,
        description="longest frame side / shortest the TensorRT engine's profile covers "
        "(either orientation); wider videos get 422 outside_engine_profile on TensorRT",
    )

    # people on keyframes sent without boxes
    detector: Literal["bundled", "ssdlite", "oidv4", "both", "none"] = Field(
        "bundled",
        description="person detector for keyframes without boxes: bundled (the default bundled "
        "choice, both; or the ONNX file of FBIL_DETECTOR_PATH) | ssdlite | oidv4 | both (the two "
        "bundled detectors merged) | none (every keyframe needs boxes, else 400 boxes_required)",
    )
    detector_path: Path | None = Field(
        None, description="an ONNX person detector used instead of the bundled one"
    )
    person_threshold: float = Field(
        0.3,
        ge=0,
        le=1,
        description="detected people scored below are left out (per request: person_threshold)",
    )
    track_interval_s: float = Field(
        0.25,
        ge=0,
        description="longest gap between the frames the detector looks at to follow people "
        "from keyframe to keyframe (0: keyframes only)",
    )
    max_detect_frames: int = Field(
        64,
        ge=1,
        description="frames the detector looks at per request (keyframes and frames between "
        "them; the gaps widen to fit)",
    )
    detect_workers: int = Field(1, ge=1, description="threads reading frames and detecting people")
    # tracking people through weak detections and misses (fbil.model.tracking.Tracker)
    track_low_score: float = Field(
        0.1,
        ge=0,
        le=1,
        description="detected people scored from this up to the person threshold continue a "
        "track (never start one, never reported): a person whose score dips keeps their id",
    )
    track_buffer_s: float = Field(
        2.0,
        ge=0,
        description="seconds a person unseen keeps their track id (at least 1.5 times the "
        "widest gap between frames looked at)",
    )
    track_reid_distance: float = Field(
        0.3,  # fbil.model.tracking.REID_DISTANCE (settings import nothing of the model)
        ge=0,
        le=1,
        description="a person found again away from where their track expected them takes a "
        "lost track's id back when their colours are this close (0: never)",
    )

    # limits: decoding (fbil.model.video.VideoLimits), the request, uploads
    max_video_bytes: int = Field(200 * MIB, ge=1)
    max_upload_bytes: int | None = Field(
        None, ge=1, description="whole request body; default max_video_bytes + 1 MiB"
    )
    max_duration_s: float = Field(60.0, gt=0)
    max_frame_pixels: int = Field(3840 * 2160, ge=1)
    max_request_json_bytes: int = Field(MIB, ge=1, description="the request part of /detect")
    max_decoded_pixels: int = Field(
        1800 * 1920 * 1080,
        ge=1,
        description="frame pixels summed over the frames one request decodes (default: 60 s "
        "of 1080p at 30 fps, 15 s of 4K); else 413",
    )
    max_decode_s: float = Field(
        60.0, gt=0, description="seconds one request may spend decoding (a backstop); else 413"
    )
    max_keyframes: int = Field(16, ge=1)
    max_boxes_per_keyframe: int = Field(32, ge=1)

    # batching and admission
    max_batch_size: int = Field(8, ge=1, description="clips per runtime call")
    max_batch_delay_ms: float = Field(5.0, ge=0, description="longest wait to fill a batch")
    max_queue_size: int = Field(64, ge=1, description="clips waiting for the runtime")
    max_inflight_requests: int = Field(64, ge=1, description="concurrent /detect requests")
    decode_workers: int = Field(2, ge=1, description="threads decoding videos")
    retry_after_s: int = Field(1, ge=0, description="Retry-After of 503 responses")
    max_pending_uploads: int = Field(
        128, ge=1, description="request bodies arriving at once (they hold no /detect slot)"
    )

    # slow clients: headers (431/408) and bodies (408), from the request's first byte
    max_header_bytes: int = Field(32 * 1024, ge=1024, description="request line and headers")
    header_timeout_s: float = Field(10.0, gt=0, description="time for a request's headers")
    upload_idle_timeout_s: float = Field(10.0, gt=0, description="longest pause in a body")
    min_upload_bytes_per_s: float = Field(
        1024.0, ge=0, description="slowest average body rate once upload_grace_s has passed"
    )
    upload_grace_s: float = Field(5.0, ge=0, description="time before the rate is checked")
    request_timeout_s: float = Field(
        30.0, gt=0, description="time for a whole request (headers and body) to arrive"
    )

    # long-video jobs (/v1/jobs): their own limits, state in SQLite under data_dir
    data_dir: Path = Field(
        Path("fbil-data"), description="job state (jobs.sqlite3) and files; made on first job"
    )
    job_max_video_bytes: int = Field(4 * 1024 * MIB, ge=1, description="a job's video")
    job_max_duration_s: float = Field(4 * 3600.0, gt=0, description="a job's video duration")
    job_upload_timeout_s: float = Field(
        3600.0, gt=0, description="time for a job's whole upload (instead of request_timeout_s)"
    )
    job_max_keyframes: int = Field(20_000, ge=1, description="keyframes of one job")
    job_max_clips_in_flight: int = Field(
        4, ge=1, description="clips one job has queued or running at once (/detect stays served)"
    )
    max_running_jobs: int = Field(1, ge=1, description="jobs decoded and run at once")
    max_queued_jobs: int = Field(100, ge=1, description="jobs waiting; beyond: 503 overloaded")
    job_ttl_s: float = Field(
        7 * 86400.0, gt=0, description="a finished job and its files are deleted this long after"
    )
    job_disk_quota_bytes: int = Field(
        50 * 1024 * MIB, ge=1, description="all job files together; beyond: 507"
    )
    job_min_free_disk_bytes: int = Field(
        1024 * MIB, ge=0, description="free disk space jobs always leave; beyond: 507"
    )

    # live streams (/v1/streams): which sources the service may open, and their limits
    stream_allowed_schemes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["rtsp", "rtsps", "rtmp", "rtmps", "http", "https"],
        description="URL schemes a stream may use, comma-separated (network protocols only: "
        "file, concat, subfile, data, pipe... are always refused)",
    )
    stream_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="hosts and networks streams may connect to, comma-separated host names "
        "and IP networks (10.0.0.0/8, 127.0.0.1); empty: every stream URL is refused",
    )
    max_streams: int = Field(4, ge=0, description="live streams at once, all keys together")
    max_streams_per_key: int = Field(2, ge=1, description="live streams at once per API key")
    stream_open_timeout_s: float = Field(10.0, gt=0, description="time to open a source")
    stream_read_timeout_s: float = Field(
        5.0, gt=0, description="a source silent this long has stalled: reconnect"
    )
    stream_max_reconnects: int = Field(
        5, ge=0, description="failed connection attempts in a row before a stream is failed"
    )
    stream_reconnect_backoff_s: float = Field(
        0.5, ge=0, description="wait before the first reconnect; doubles, at most 30 s"
    )
    stream_track_keep_s: float = Field(
        5.0, gt=0, description="a person unseen this long (also across a reconnect) gets a new id"
    )
    stream_event_buffer: int = Field(
        1000, ge=1, description="events a stream keeps for clients resuming with Last-Event-ID"
    )
    stream_clips_in_flight: int = Field(
        2, ge=1, description="clips one stream has queued or running at once (/detect stays served)"
    )

    # security, server, logs
    api_keys: SecretStr | None = Field(
        None,
        description=f"comma-separated keys of {MIN_API_KEY_CHARS}+ characters; unset: no keys "
        "(set but holding no key, or the placeholder of docker/fbil.env.example: refused)",
    )
    public_metrics: bool = Field(False, description="/metrics answers without a key")
    public_docs: bool = Field(
        False, description="/docs, /redoc and /openapi.json answer without a key"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    graceful_shutdown_s: float = Field(30.0, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = True

    @field_validator(
        "model_path",
        "config_path",
        "labelmap_path",
        "detector_path",
        "trt_engine_cache_path",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "onnx_providers", "stream_allowed_schemes", "stream_allowed_hosts", mode="before"
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.max_queue_size < self.max_keyframes:
            raise ValueError(
                f"max_queue_size ({self.max_queue_size}) must hold one request's clips "
                f"(max_keyframes={self.max_keyframes})"
            )
        if self.precision == "fp16" and self.device == "cpu":
            raise ValueError("precision fp16 needs a CUDA device (FBIL_DEVICE=cpu): fp32 or bf16")
        return self

    @property
    def upload_limit(self) -> int:
        """Bytes a request body may have (multipart overhead and the JSON included)."""
        return self.max_upload_bytes or self.max_video_bytes + MIB

    def video_limits(self) -> VideoLimits:
        """What decoding one uploaded video may cost."""
        # the decoder imports torch and PyAV: not needed to read settings (fbil-serve --help)
        from fbil.model.video import VideoLimits

        return VideoLimits(
            max_bytes=self.max_video_bytes,
            max_duration_s=self.max_duration_s,
            max_frame_pixels=self.max_frame_pixels,
            max_decoded_pixels=self.max_decoded_pixels,
            max_decode_s=self.max_decode_s,
        )

    def job_video_limits(self) -> VideoLimits:
        """What decoding one job's video may cost (no per-call budget: it runs as a job)."""
        from fbil.model.video import VideoLimits

        return VideoLimits(
            max_bytes=self.job_max_video_bytes,
            max_duration_s=self.job_max_duration_s,
            max_frame_pixels=self.max_frame_pixels,
        )

    def resolved_model_path(self) -> Path:
        """The model file to serve; :class:`SettingsError` naming the variable otherwise."""
        path = self.model_path or default_model_path()
        if path is None:
            raise SettingsError(
                "no model to serve: set FBIL_MODEL_PATH to a model file "
                "(.safetensors, .onnx, .pt/.torchscript or a published checkpoint)"
            )
        if not Path(path).is_file():
            raise SettingsError(f"FBIL_MODEL_PATH={path} is not a file")
        return Path(path)

    def api_key_values(self) -> list[bytes]:
        """The API keys (empty: keys are off, ``FBIL_API_KEYS`` unset).

        :class:`SettingsError` naming the variable when it is set but holds no key, holds the
        placeholder of docker/fbil.env.example, or a key shorter than ``MIN_API_KEY_CHARS``.
        """
        if self.api_keys is None:
            return []
        keys = [k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()]
        if not keys:
            raise SettingsError(
                "FBIL_API_KEYS is set but holds no key: set it to comma-separated keys "
                "(openssl rand -hex 32), or unset it to serve without API keys"
            )
        for number, key in enumerate(keys, 1):
            if key == PLACEHOLDER_API_KEY:
                raise SettingsError(
                    "FBIL_API_KEYS holds the placeholder of docker/fbil.env.example: replace it "
                    "with a key of your own (openssl rand -hex 32)"
                )
            if len(key) < MIN_API_KEY_CHARS:
                raise SettingsError(
                    f"FBIL_API_KEYS: key {number} has {len(key)} characters, at least "
                    f"{MIN_API_KEY_CHARS} are needed (openssl rand -hex 32 makes 64)"
                )
        return [k.encode() for k in keys]

"""Runtimes: run a model file on clips and rois. They know nothing about HTTP.

Three implementations of one small interface (``warmup()``, ``predict(clips, rois)``):
ONNX Runtime (production; TensorRT/CUDA providers when available, else CPU), TorchScript and the
eager PyTorch model. Each reads the model's metadata (labels, preprocessing) from the artifact.

Precision (``fp32``, ``fp16``, ``bf16``): the torch runtimes run under ``torch.autocast`` (fp16
only on CUDA); ONNX Runtime passes it to TensorRT (the CUDA and CPU providers run the graph's own
precision: export with ``fbil-export --fp16`` for a half-precision graph). TensorRT gets an
optimisation profile (min/opt/max input shapes) from :class:`TensorRTProfile` and the model's
preprocessing, so one engine serves every request shape instead of one built per new shape.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fbil.model import ModelMetadata, artifact
from fbil.model.device import cuda_device_count
from fbil.model.extras import MissingExtraError, require
from fbil.model.labels import LabelMap, read_label_map
from fbil.model.preprocess import PreprocessSpec, torch_available

if TYPE_CHECKING:  # torch is imported by the torch runtimes only (the `torch` extra)
    import torch
    from torch import Tensor

log = logging.getLogger(__name__)
ONNX_SUFFIXES = {".onnx"}
TORCHSCRIPT_SUFFIXES = {".torchscript", ".ts"}
PRECISIONS = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}  # torch dtype names
TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT_LIBRARY = "libnvinfer.so.10"  # what ONNX Runtime's TensorRT provider loads


class RuntimeLoadError(RuntimeError):
    """A model file that no runtime can serve."""


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The ``torch.autocast`` dtype of ``precision`` on ``device`` (None: fp32, no autocast).

    fp16 needs CUDA (CPU kernels in half precision are slow and partial); bf16 runs on both.
    """
    import torch

    if precision not in PRECISIONS:
        raise RuntimeLoadError(f"FBIL_PRECISION={precision!r}: use fp32, fp16 or bf16")
    if precision == "fp16" and device.type != "cuda":
        raise RuntimeLoadError(
            f"FBIL_PRECISION=fp16 needs a CUDA device, the runtime runs on {device}: "
            "use fp32, or bf16 (CPUs with AVX512-BF16/AMX)"
        )
    name = PRECISIONS[precision]
    return None if name is None else getattr(torch, name)


@dataclass(frozen=True)
class InputShapes:
    """The inputs a runtime's engine was built for, beyond the model's preprocessing (TensorRT:
    its optimisation profile): clips at most ``max_side`` high and wide, ``max_rois`` rois in
    one call. Inputs outside it fail inside the engine."""

    max_side: int
    max_rois: int

    def problem(self, height: int, width: int, rois: int) -> str | None:
        """Why a clip ``height`` x ``width`` (after resizing) with ``rois`` boxes does not fit
        (None: it fits)."""
        if max(height, width) > self.max_side:
            return (
                f"the clip is {width}x{height} after resizing: the TensorRT engine covers frames "
                f"up to {self.max_side} pixels on the long side (FBIL_TRT_MAX_ASPECT)"
            )
        if rois > self.max_rois:
            return f"{rois} boxes on a keyframe: the TensorRT engine covers {self.max_rois}"
        return None


@dataclass(frozen=True)
class TensorRTProfile:
    """What the TensorRT engine must cover beyond the model's preprocessing, and where it is
    kept between starts (``cache_path``; None: built at every start)."""

    max_batch_size: int = 8
    max_rois: int = 256
    max_aspect: float = 2.4
    cache_path: Path | None = None

    def input_shapes(self, spec: PreprocessSpec) -> InputShapes:
        """What the profile's max shape admits for a model of preprocessing ``spec``."""
        return InputShapes(int(spec.short_side * self.max_aspect), self.max_rois)

    def shapes(self, spec: PreprocessSpec) -> dict[str, str]:
        """``trt_profile_{min,opt,max}_shapes`` for inputs ``clips`` (B,3,T,H,W) and ``rois``
        (N,5): T fixed; the short side fixed, the long side up to ``max_aspect`` times it, in
        either orientation; the optimum a full batch of 16:9 clips with 4 actors each."""
        t, side = spec.num_frames, spec.short_side
        longest = self.input_shapes(spec).max_side
        b = self.max_batch_size
        rows = {
            "min": (1, side, side, 1),
            "opt": (b, side, min(side * 16 // 9, longest), min(4 * b, self.max_rois)),
            "max": (b, longest, longest, self.max_rois),
        }
        return {
            f"trt_profile_{key}_shapes": f"clips:{n}x3x{t}x{h}x{w},rois:{r}x5"
            for key, (n, h, w, r) in rows.items()
        }


def tensorrt_options(
    profile: TensorRTProfile, spec: PreprocessSpec, precision: str = "fp32"
) -> dict[str, str]:
    """ONNX Runtime's TensorRT provider options: the profile shapes, the precision, and the
    engine and timing caches when ``profile.cache_path`` is set."""
    if precision not in PRECISIONS:
        raise RuntimeLoadError(f"FBIL_PRECISION={precision!r}: use fp32, fp16 or bf16")
    options = profile.shapes(spec)
    options["trt_fp16_enable"] = str(precision == "fp16")
    if precision == "bf16":  # an option of ONNX Runtime 1.23+; older releases refuse the key
        options["trt_bf16_enable"] = "True"
    if profile.cache_path is not None:
        cache = str(profile.cache_path)
        options |= {
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": cache,
        }
    return options


def onnx_provider_options(
    providers: list[str],
    spec: PreprocessSpec,
    profile: TensorRTProfile | None = None,
    precision: str = "fp32",
) -> list[str | tuple[str, dict[str, str]]]:
    """``providers`` as ``InferenceSession(providers=...)`` takes them: TensorRT with its
    options (:func:`tensorrt_options`); fp16/bf16 without TensorRT: :class:`RuntimeLoadError`."""
    if precision != "fp32" and TENSORRT not in providers:
        raise RuntimeLoadError(
            f"FBIL_PRECISION={precision} takes effect in ONNX Runtime through TensorRT only "
            f"(providers: {', '.join(providers)}): export a half-precision graph "
            "(fbil-export --fp16) and keep FBIL_PRECISION=fp32"
        )
    options = tensorrt_options(profile or TensorRTProfile(), spec, precision)
    return [(p, options) if p == TENSORRT else p for p in providers]


class Runtime(ABC):
    """Run the detector: ``predict(clips (B,3,T,H,W), rois (N,5)) -> scores (N, C)``; clips
    and rois are numpy arrays or torch tensors (:func:`fbil.model.preprocess.torch_available`)."""

    backend: str

    def __init__(self, metadata: ModelMetadata) -> None:
        self.metadata = metadata

    @abstractmethod
    def predict(self, clips: Tensor | np.ndarray, rois: Tensor | np.ndarray) -> Tensor | np.ndarray:
        """AVA scores in [0, 1], float32 on the CPU (a numpy array from ONNX Runtime when given
        numpy arrays, else a torch tensor).

        Args:
            clips: float32 ``(B, 3, T, H, W)`` normalised as the metadata's preprocessing says.
            rois: float32 ``(N, 5)`` rows ``[clip_index, x1, y1, x2, y2]`` in 0..1, grouped by
                ascending clip index, every clip with at least one roi.
        """

    def describe(self) -> dict[str, Any]:
        """Where it runs (device, providers) for ``/v1/model``."""
        return {}

    def input_shapes(self) -> InputShapes | None:
        """The clip sizes and roi counts the runtime can run (None: any the model takes)."""
        return None

    def warmup(self) -> None:
        """One real forward on a blank 16:9 clip (narrower if :meth:`input_shapes` says so) of
        the model's input size; checks the output."""
        spec = self.metadata.preprocess
        side = spec.short_side
        width = side * 16 // 9
        if (shapes := self.input_shapes()) is not None:
            width = min(width, shapes.max_side)
        clips = np.zeros((1, 3, spec.num_frames, side, width), np.float32)
        rois = np.array([[0.0, 0.25, 0.25, 0.75, 0.75]], np.float32)
        scores = np.asarray(self.predict(clips, rois))
        expected = (1, len(self.metadata.labels))
        finite = bool(np.isfinite(scores).all())
        if tuple(scores.shape) != expected or not finite:
            raise RuntimeLoadError(
                f"warm-up produced {tuple(scores.shape)} scores (finite: {finite}), "
                f"expected {expected}"
            )


class EagerRuntime(Runtime):
    """The PyTorch model, loaded from our safetensors format or a published checkpoint."""

    backend = "eager"

    def __init__(
        self,
        path: Path,
        config_path: Path | None = None,
        device: str = "auto",
        labels: LabelMap | None = None,
        precision: str = "fp32",
    ) -> None:
        _require_torch("the eager runtime")
        from fbil.model import load_model
        from fbil.model.device import resolve_device

        self.device = resolve_device(device)
        self.precision, self.dtype = precision, autocast_dtype(precision, self.device)
        detector, metadata = load_model(
            path, config_path, labels=labels, labels_option="FBIL_LABELMAP_PATH"
        )
        super().__init__(metadata)
        self.detector = detector.to(self.device).eval()

    def predict(self, clips: Tensor | np.ndarray, rois: Tensor | np.ndarray) -> Tensor:
        import torch

        clips, rois = torch.as_tensor(clips), torch.as_tensor(rois)
        with torch.inference_mode(), _autocast(self.device, self.dtype):
            logits = self.detector(clips.to(self.device), rois.to(self.device))
            return self.detector.scores(logits).float().cpu()

    def describe(self) -> dict[str, Any]:
        return {"device": str(self.device), "precision": self.precision}


class TorchScriptRuntime(Runtime):
    """A TorchScript export whose ``forward(clips, rois)`` returns ``(logits, scores)``."""

    backend = "torchscript"

    def __init__(self, path: Path, device: str = "auto", precision: str = "fp32") -> None:
        _require_torch("the TorchScript runtime")
        import torch

        from fbil.model.device import resolve_device

        self.device = resolve_device(device)
        self.precision, self.dtype = precision, autocast_dtype(precision, self.device)
        files = {artifact.TORCHSCRIPT_FILE: ""}
        try:
            self.module = torch.jit.load(str(path), map_location=self.device, _extra_files=files)
        except RuntimeError as e:
            raise RuntimeLoadError(f"{path} is not a loadable TorchScript file: {e}") from e
        super().__init__(_metadata(path, lambda: artifact.document_from_extra_files(files, path)))
        self.module.eval()

    def predict(self, clips: Tensor | np.ndarray, rois: Tensor | np.ndarray) -> Tensor:
        import torch

        clips, rois = torch.as_tensor(clips), torch.as_tensor(rois)
        with torch.inference_mode(), _autocast(self.device, self.dtype):
            _, scores = self.module(clips.to(self.device), rois.to(self.device))
            return scores.float().cpu()

    def describe(self) -> dict[str, Any]:
        return {"device": str(self.device), "precision": self.precision}


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` (None: a no-op context, fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device.type, dtype=dtype)


def _require_torch(what: str) -> None:
    """:class:`RuntimeLoadError` naming the ``torch`` extra when torch is not installed."""
    try:
        require("torch", what)
    except MissingExtraError as e:
        raise RuntimeLoadError(str(e)) from None


class OnnxRuntime(Runtime):
    """An ONNX export run by ONNX Runtime (inputs ``clips``, ``rois``; output ``scores``)."""

    backend = "onnx"

    def __init__(
        self,
        path: Path,
        device: str = "auto",
        providers: list[str] | None = None,
        num_threads: int | None = None,
        precision: str = "fp32",
        tensorrt: TensorRTProfile | None = None,
    ) -> None:
        import onnxruntime as ort

        # ONNX Runtime sends usage telemetry by default (ETW events, on Windows): not from here
        ort.disable_telemetry_events()
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        chosen = providers or default_onnx_providers(device, ort.get_available_providers())
        if CUDA in chosen or TENSORRT in chosen:
            preload_cuda_libraries(ort)
        if TENSORRT in chosen or precision != "fp32":
            # TensorRT's profile needs the preprocessing before the session exists
            spec = _onnx_file_metadata(path).preprocess
            entries = onnx_provider_options(chosen, spec, tensorrt, precision)
            log.info("ONNX Runtime providers and options: %s", entries)
        else:
            entries = list(chosen)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=entries)
        except Exception as e:  # onnxruntime raises its own exception types
            raise RuntimeLoadError(f"{path} is not a loadable ONNX model: {e}") from e
        running = self.session.get_providers()
        if device.startswith("cuda") and CUDA not in running and TENSORRT not in running:
            # ONNX Runtime falls back to the CPU when CUDA cannot start: not what was asked for
            raise RuntimeLoadError(
                f"FBIL_DEVICE={device}: CUDA could not start in ONNX Runtime (it runs "
                f"{', '.join(running)}; its log above says why): check the GPU and driver, or "
                "set FBIL_DEVICE=cpu"
            )
        props = self.session.get_modelmeta().custom_metadata_map
        metadata = _metadata(
            path,
            lambda: artifact.onnx_document(path, props),
            f" (ONNX metadata_props {artifact.METADATA_KEY!r}) and has no "
            f"{artifact.SIDECAR} next to it",
        )
        super().__init__(metadata)
        self.precision = precision
        self._input_shapes = None
        if TENSORRT in self.session.get_providers():
            profile = tensorrt or TensorRTProfile()
            self._input_shapes = profile.input_shapes(metadata.preprocess)

    def input_shapes(self) -> InputShapes | None:
        """TensorRT's profile when TensorRT runs the model (CUDA and CPU take any shape)."""
        return self._input_shapes

    def predict(self, clips: Tensor | np.ndarray, rois: Tensor | np.ndarray) -> Tensor | np.ndarray:
        feeds = {
            "clips": np.ascontiguousarray(np.asarray(clips), dtype=np.float32),
            "rois": np.ascontiguousarray(np.asarray(rois), dtype=np.float32),
        }
        (scores,) = self.session.run(["scores"], feeds)
        scores = scores.astype(np.float32, copy=False)
        if isinstance(clips, np.ndarray):
            return scores
        import torch  # given torch tensors (torch is loaded): answer with one

        return torch.from_numpy(scores)

    def describe(self) -> dict[str, Any]:
        return {"providers": self.session.get_providers(), "precision": self.precision}


def default_onnx_providers(device: str, available: list[str]) -> list[str]:
    """TensorRT, CUDA, CPU in that order, those available and allowed by ``device``.

    ``auto`` takes CUDA when ONNX Runtime has it and a CUDA device answers (else the CPU);
    ``cuda`` without a CUDA provider is a :class:`RuntimeLoadError` (``pip install
    'fbil[gpu]'``), not a quiet CPU. TensorRT only when its library loads
    (:func:`tensorrt_loadable`): ONNX Runtime logs an error at every start otherwise.
    """
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise RuntimeLoadError(f"device {device!r} is not usable with ONNX Runtime")
    cpu = ["CPUExecutionProvider"]
    if device == "cpu" or (device == "auto" and (CUDA not in available or not cuda_present())):
        return cpu
    if CUDA not in available:
        raise RuntimeLoadError(
            f"FBIL_DEVICE={device}: this ONNX Runtime has no CUDA provider (it has "
            f"{', '.join(available)}): install the 'gpu' extra (onnxruntime-gpu) or set "
            "FBIL_DEVICE=cpu"
        )
    wanted = [TENSORRT, CUDA] if tensorrt_loadable() else [CUDA]
    return [p for p in wanted if p in available] + cpu


def cuda_present() -> bool:
    """Whether the CUDA driver answers with at least one device (without torch)."""
    return cuda_device_count() > 0


def tensorrt_loadable() -> bool:
    """Whether TensorRT's library (which ONNX Runtime's TensorRT provider needs) loads here."""
    try:
        ctypes.CDLL(TENSORRT_LIBRARY)
    except OSError:
        return False
    return True


def preload_cuda_libraries(ort: Any) -> None:
    """Load the CUDA and cuDNN libraries of the pip ``nvidia-*`` packages (the ``gpu`` extra)
    before a CUDA session, so that the image needs no CUDA base of its own
    (``onnxruntime.preload_dlls``, ONNX Runtime 1.21+)."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None or importlib.util.find_spec("nvidia") is None:
        return  # no pip CUDA packages: the system's (the GPU image's base) are used
    try:
        preload(cuda=True, cudnn=True, msvc=False)
    except Exception as e:  # a missing package: the session's own loading says more
        log.warning("could not preload the CUDA libraries: %s", e)


def _onnx_file_metadata(path: Path) -> ModelMetadata:
    """The metadata of the ONNX file ``path`` read with ``onnx`` (no session needed)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and others
        raise RuntimeLoadError(f"{path} is not a loadable ONNX model: {e}") from e
    props = {p.key: p.value for p in proto.metadata_props}
    return _metadata(path, lambda: artifact.onnx_document(path, props))


def _metadata(
    path: Path, read: Callable[[], artifact.Document | None], where: str = ""
) -> ModelMetadata:
    """The metadata ``read()`` finds for the model file ``path``, else :class:`RuntimeLoadError`
    (``where``: where it was looked for)."""
    try:
        doc = read()
        if doc is None:
            raise RuntimeLoadError(f"{path} carries no FBIL metadata{where}")
        return artifact.to_metadata(doc, path)
    except artifact.MetadataError as e:
        raise RuntimeLoadError(str(e)) from e


def backend_for(path: Path) -> str:
    """The runtime a file's suffix (and, for ``.pt``, its content) calls for."""
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in TORCHSCRIPT_SUFFIXES or _is_torchscript_archive(path):
        return "torchscript"
    return "eager"


def _is_torchscript_archive(path: Path) -> bool:
    """TorchScript files are zip archives with a ``code/`` folder (weights files have none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in name for name in z.namelist())


def load_runtime(
    path: Path,
    backend: str = "auto",
    *,
    device: str = "auto",
    config_path: Path | None = None,
    labelmap_path: Path | None = None,
    onnx_providers: list[str] | None = None,
    num_threads: int | None = None,
    precision: str = "fp32",
    tensorrt: TensorRTProfile | None = None,
) -> Runtime:
    """Build the runtime ``backend`` names (``auto``: by the file's suffix); a label map
    ``labelmap_path`` names the model's classes (instead of the embedded or built-in ones);
    ``precision`` and ``tensorrt`` as :func:`autocast_dtype` and :func:`tensorrt_options` say."""
    labels = read_label_map(labelmap_path) if labelmap_path else None
    runtime = _runtime(
        path,
        backend,
        device,
        config_path,
        labels,
        onnx_providers,
        num_threads,
        precision,
        tensorrt,
    )
    if labels is not None and runtime.metadata.labels != labels:
        # ModelMetadata checks that the label map has the model's class count
        runtime.metadata = replace(runtime.metadata, labels=labels)
    return runtime


def _runtime(
    path: Path,
    backend: str,
    device: str,
    config_path: Path | None,
    labels: LabelMap | None,
    onnx_providers: list[str] | None,
    num_threads: int | None,
    precision: str = "fp32",
    tensorrt: TensorRTProfile | None = None,
) -> Runtime:
    backend = backend_for(path) if backend == "auto" else backend
    if num_threads and (backend != "onnx" or torch_available()):
        _require_torch(f"the {backend} runtime")
        import torch

        torch.set_num_threads(num_threads)
    log.info("loading %s with the %s runtime", path, backend)
    if backend == "onnx":
        return OnnxRuntime(path, device, onnx_providers, num_threads, precision, tensorrt)
    if backend == "torchscript":
        return TorchScriptRuntime(path, device, precision)
    if backend == "eager":
        return EagerRuntime(path, config_path, device, labels, precision)
    raise RuntimeLoadError(f"unknown backend {backend!r} (onnx, torchscript or eager)")

"""Runtimes: chosen by suffix, same scores from eager, TorchScript and ONNX (within 1e-4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fbil.export.check import FP16_TOLERANCE
from fbil.export.onnx_export import export_onnx
from fbil.export.torchscript_export import export_torchscript
from fbil.model.preprocess import PreprocessSpec
from fbil.service.engine import tensorrt_profile
from fbil.service.runtimes import (
    RuntimeLoadError,
    TensorRTProfile,
    autocast_dtype,
    backend_for,
    default_onnx_providers,
    load_runtime,
    onnx_provider_options,
)
from fbil.service.settings import Settings, default_model_path
from tests.support.serving import TinyModel, detect_files, serve

REQUEST = {
    "keyframes": [
        {"time": 2.0, "boxes": [{"box": [100, 40, 300, 500]}, {"box": [350, 30, 700, 520]}]},
        {"time": 7.5, "boxes": [{"box": [0, 0, 720, 528], "id": "all"}]},
    ],
    "all_scores": True,
}


@pytest.fixture(scope="module")
def artifacts(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model exported by the export package (the production artifacts)."""
    folder = tmp_path_factory.mktemp("artifacts")
    return {
        "eager": tiny_model.path,
        "torchscript": export_torchscript(
            tiny_model.detector, tiny_model.metadata, folder / "tiny.torchscript"
        ),
        "onnx": export_onnx(tiny_model.detector, tiny_model.metadata, folder / "tiny.onnx"),
    }


def test_backend_by_suffix_and_content(tmp_path: Path, artifacts: dict[str, Path]):
    assert backend_for(artifacts["onnx"]) == "onnx"
    assert backend_for(artifacts["torchscript"]) == "torchscript"
    assert backend_for(artifacts["eager"]) == "eager"
    scripted_pt = tmp_path / "model.pt"
    scripted_pt.write_bytes(artifacts["torchscript"].read_bytes())
    assert backend_for(scripted_pt) == "torchscript"
    weights_pt = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, weights_pt)
    assert backend_for(weights_pt) == "eager"


def test_onnx_providers_follow_the_device(monkeypatch: pytest.MonkeyPatch):
    from fbil.service import runtimes

    every = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(runtimes, "tensorrt_loadable", lambda: True)
    assert default_onnx_providers("cpu", every) == ["CPUExecutionProvider"]
    assert default_onnx_providers("cuda", every) == every
    # FBIL_DEVICE=cuda on an ONNX Runtime without CUDA fails loudly (no quiet CPU)
    with pytest.raises(RuntimeLoadError, match="gpu' extra"):
        default_onnx_providers("cuda:0", ["CPUExecutionProvider"])
    monkeypatch.setattr(runtimes, "cuda_present", lambda: False)
    assert default_onnx_providers("auto", every) == ["CPUExecutionProvider"]
    monkeypatch.setattr(runtimes, "cuda_present", lambda: True)
    assert default_onnx_providers("auto", every) == every
    # without TensorRT's library its provider is not asked for (it logs an ERROR at start)
    monkeypatch.setattr(runtimes, "tensorrt_loadable", lambda: False)
    assert default_onnx_providers("cuda", every) == every[1:]


def test_tensorrt_is_not_loadable_here():
    from fbil.service.runtimes import tensorrt_loadable

    assert tensorrt_loadable() is False  # no TensorRT on the test machines


def test_onnx_runtime_turns_telemetry_off_before_its_session(monkeypatch: pytest.MonkeyPatch):
    import onnxruntime as ort

    calls: list[str] = []
    disable, session = ort.disable_telemetry_events, ort.InferenceSession

    def spy_disable() -> None:
        calls.append("telemetry off")
        disable()

    def spy_session(*args, **kwargs):
        calls.append("session")
        return session(*args, **kwargs)

    monkeypatch.setattr(ort, "disable_telemetry_events", spy_disable)
    monkeypatch.setattr(ort, "InferenceSession", spy_session)
    model = default_model_path()  # the bundled demo model: an ONNX file
    assert model is not None
    runtime = load_runtime(model, device="cpu")
    assert runtime.backend == "onnx"
    assert calls == ["telemetry off", "session"]


@pytest.mark.parametrize("backend", ["eager", "torchscript", "onnx"])
def test_predict_matches_the_model(tiny_model: TinyModel, artifacts: dict, backend: str):
    runtime = load_runtime(artifacts[backend], device="cpu")
    assert runtime.backend == backend
    assert runtime.metadata == tiny_model.metadata
    runtime.warmup()
    torch.manual_seed(3)
    clips = torch.randn(2, 3, 8, 64, 85)
    rois = torch.tensor([[0, 0.1, 0.1, 0.6, 0.9], [1, 0.0, 0.2, 0.5, 0.7], [1, 0.3, 0.3, 1.0, 1.0]])
    with torch.inference_mode():
        expected = tiny_model.detector.scores(tiny_model.detector(clips, rois))
    assert torch.allclose(runtime.predict(clips, rois), expected, atol=1e-4)


@pytest.mark.anyio
async def test_same_request_same_scores_on_every_runtime(artifacts: dict, megamind: Path):
    scores, cards = {}, {}
    for backend, path in artifacts.items():
        async with serve(path, device="cpu") as s:
            r = await s.client.post("/detect", files=detect_files(megamind, REQUEST))
            cards[backend] = (await s.client.get("/v1/model")).json()
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"]["backend"] == backend
        scores[backend] = torch.tensor(
            [a["scores"] for k in body["keyframes"] for a in k["actors"]]
        )
    assert scores["eager"].shape == (3, 60)
    for backend in ("torchscript", "onnx"):
        assert torch.allclose(scores[backend], scores["eager"], atol=1e-4), backend
    assert cards["onnx"]["runtime"] == {"providers": ["CPUExecutionProvider"], "precision": "fp32"}
    assert cards["torchscript"]["runtime"] == {"device": "cpu", "precision": "fp32"}


TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"


def test_tensorrt_gets_a_profile_from_the_settings_and_the_preprocessing(tmp_path: Path):
    settings = Settings(
        max_batch_size=4,
        max_boxes_per_keyframe=8,
        trt_max_aspect=2.0,
        trt_engine_cache_path=tmp_path,
        precision="fp16",
    )
    spec = PreprocessSpec(num_frames=16, short_side=128)
    entries = onnx_provider_options([TRT, CUDA, CPU], spec, tensorrt_profile(settings), "fp16")
    assert entries[1:] == [CUDA, CPU]
    name, options = entries[0]
    assert name == TRT
    assert options == {
        "trt_profile_min_shapes": "clips:1x3x16x128x128,rois:1x5",
        "trt_profile_opt_shapes": "clips:4x3x16x128x227,rois:16x5",
        "trt_profile_max_shapes": "clips:4x3x16x256x256,rois:32x5",
        "trt_fp16_enable": "True",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(tmp_path),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(tmp_path),
    }


def test_tensorrt_precision_and_cache_options():
    spec = PreprocessSpec()
    (_, fp32), _ = onnx_provider_options([TRT, CPU], spec)
    assert fp32["trt_fp16_enable"] == "False" and "trt_bf16_enable" not in fp32
    assert not any(key.startswith("trt_engine_cache") for key in fp32)  # no cache path: none
    (_, bf16), _ = onnx_provider_options([TRT, CPU], spec, TensorRTProfile(), "bf16")
    assert bf16["trt_bf16_enable"] == "True" and bf16["trt_fp16_enable"] == "False"
    # without TensorRT the providers run the graph's precision: half precision is refused
    assert onnx_provider_options([CUDA, CPU], spec) == [CUDA, CPU]
    with pytest.raises(RuntimeLoadError, match="through TensorRT only"):
        onnx_provider_options([CUDA, CPU], spec, TensorRTProfile(), "fp16")


def test_onnx_runtime_hands_tensorrt_the_model_s_profile(monkeypatch: pytest.MonkeyPatch):
    import onnxruntime as ort

    seen: list = []
    session = ort.InferenceSession

    def spy_session(path, options, providers):
        seen.append(providers)
        return session(path, options, providers=[CPU])  # no TensorRT on this machine

    monkeypatch.setattr(ort, "InferenceSession", spy_session)
    model = default_model_path()  # the demo model: 16 frames at short side 128
    assert model is not None
    load_runtime(model, onnx_providers=[TRT, CPU], tensorrt=TensorRTProfile(max_batch_size=2))
    load_runtime(model, onnx_providers=[CPU])
    (name, options), cpu = seen[0]
    assert (name, cpu) == (TRT, CPU)
    assert options["trt_profile_min_shapes"] == "clips:1x3x16x128x128,rois:1x5"
    assert options["trt_profile_max_shapes"] == "clips:2x3x16x307x307,rois:256x5"
    assert seen[1] == [CPU]  # no TensorRT, no options


def test_precision_sets_the_autocast_dtype():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    assert autocast_dtype("fp16", cuda) is torch.float16
    assert autocast_dtype("bf16", cuda) is torch.bfloat16
    with pytest.raises(RuntimeLoadError, match="fp16 needs a CUDA device"):
        autocast_dtype("fp16", cpu)
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        Settings(precision="fp16", device="cpu")


def test_fp16_on_cpu_is_refused_before_loading(artifacts: dict):
    for backend in ("eager", "torchscript"):
        with pytest.raises(RuntimeLoadError, match="FBIL_PRECISION=fp16 needs a CUDA device"):
            load_runtime(artifacts[backend], device="cpu", precision="fp16")


@pytest.mark.parametrize("backend", ["eager", "torchscript"])
def test_bf16_runs_the_network_in_bf16_within_tolerance(artifacts: dict, backend: str):
    fp32 = load_runtime(artifacts[backend], device="cpu")
    bf16 = load_runtime(artifacts[backend], device="cpu", precision="bf16")
    assert bf16.describe()["precision"] == "bf16"
    torch.manual_seed(4)
    clips = torch.randn(2, 3, 8, 64, 85)
    rois = torch.tensor([[0, 0.1, 0.1, 0.6, 0.9], [1, 0.0, 0.2, 0.5, 0.7], [1, 0.3, 0.3, 1.0, 1.0]])
    expected, got = fp32.predict(clips, rois), bf16.predict(clips, rois)
    assert got.dtype == torch.float32
    diff = (got - expected).abs().max().item()
    assert 0 < diff <= FP16_TOLERANCE  # reduced precision did run, and stays within tolerance


def test_bf16_autocast_reaches_the_convolutions(artifacts: dict):
    runtime = load_runtime(artifacts["eager"], device="cpu", precision="bf16")
    dtypes: list[torch.dtype] = []
    stem = next(m for m in runtime.detector.modules() if isinstance(m, torch.nn.Conv3d))
    stem.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    runtime.warmup()
    assert dtypes == [torch.bfloat16]

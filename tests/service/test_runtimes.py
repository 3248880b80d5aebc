"""Runtimes: chosen by suffix, same scores from eager, TorchScript and ONNX (within 1e-4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from serving import TinyModel, detect_files, serve

from fbil.export.onnx_export import export_onnx
from fbil.export.torchscript_export import export_torchscript
from fbil.service.runtimes import backend_for, default_onnx_providers, load_runtime
from fbil.service.settings import default_model_path

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
    every = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert default_onnx_providers("cpu", every) == ["CPUExecutionProvider"]
    assert default_onnx_providers("cuda", every) == every
    assert default_onnx_providers("cuda:0", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_onnx_providers("auto", every) == ["CPUExecutionProvider"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_onnx_providers("auto", every) == every


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
    assert cards["onnx"]["runtime"] == {"providers": ["CPUExecutionProvider"]}
    assert cards["torchscript"]["runtime"] == {"device": "cpu"}

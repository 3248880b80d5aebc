"""Inputs outside the TensorRT engine's profile are refused before inference (422
``outside_engine_profile``), not failed inside the engine (500).

No GPU here: ONNX Runtime's CPU session stands in for TensorRT, wrapped so that it reports the
TensorRT provider and, as a TensorRT engine does, fails on inputs over its profile's max shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fbil.export.onnx_export import export_onnx
from fbil.model.preprocess import PreprocessSpec
from fbil.service.runtimes import InputShapes, TensorRTProfile, load_runtime
from tests.support.serving import TinyModel, detect_files, serve

TRT, CPU = "TensorrtExecutionProvider", "CPUExecutionProvider"
# Megamind.avi is 720x528: 87x64 at the tiny model's short side 64 (aspect 1.36)
REQUEST = {"keyframes": [{"time": 2.0, "boxes": [{"box": [100, 40, 300, 500]}]}]}


class TensorRTLike:
    """A CPU ``InferenceSession`` that says it runs on TensorRT and refuses, as the engine
    would, inputs larger than ``trt_profile_max_shapes``."""

    def __init__(self, session_class, path: str, options, trt_options: dict[str, str]) -> None:
        self.max_shapes = {
            entry.split(":")[0]: tuple(int(n) for n in entry.split(":")[1].split("x"))
            for entry in trt_options["trt_profile_max_shapes"].split(",")
        }
        self.session = session_class(path, options, providers=[CPU])

    def get_providers(self) -> list[str]:
        return [TRT, CPU]

    def get_modelmeta(self):
        return self.session.get_modelmeta()

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        for key, value in feeds.items():
            if any(n > m for n, m in zip(value.shape, self.max_shapes[key], strict=True)):
                raise RuntimeError(f"TensorRT EP: {key} {value.shape} is outside the profile")
        return self.session.run(names, feeds)


@pytest.fixture
def tensorrt_like(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    real = ort.InferenceSession

    def session(path, options=None, providers=None, **kwargs):
        if providers and isinstance(providers[0], tuple) and providers[0][0] == TRT:
            return TensorRTLike(real, path, options, providers[0][1])
        return real(path, options, providers=providers, **kwargs)  # others: the person detector

    monkeypatch.setattr(ort, "InferenceSession", session)


@pytest.fixture(scope="module")
def onnx_model(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("onnx")
    return export_onnx(tiny_model.detector, tiny_model.metadata, folder / "tiny.onnx")


def test_the_profile_admits_what_its_max_shape_says():
    spec = PreprocessSpec(num_frames=16, short_side=128)
    profile = TensorRTProfile(max_batch_size=2, max_rois=6, max_aspect=2.0)
    shapes = profile.input_shapes(spec)
    assert shapes == InputShapes(max_side=256, max_rois=6)
    assert profile.shapes(spec)["trt_profile_max_shapes"] == "clips:2x3x16x256x256,rois:6x5"
    assert shapes.problem(128, 256, 6) is None
    assert shapes.problem(256, 128, 1) is None  # portrait: the same bound
    assert "257x128" in shapes.problem(128, 257, 1)
    assert "FBIL_TRT_MAX_ASPECT" in shapes.problem(257, 128, 1)
    assert "7 boxes" in shapes.problem(128, 128, 7)


def test_a_narrow_profile_keeps_the_optimum_and_the_warm_up_inside(
    onnx_model: Path, tensorrt_like: None
):
    # aspect 1.2 is narrower than the 16:9 clip warm-up and the profile's optimum use
    profile = TensorRTProfile(max_batch_size=2, max_rois=4, max_aspect=1.2)
    runtime = load_runtime(onnx_model, onnx_providers=[TRT, CPU], tensorrt=profile)
    assert runtime.input_shapes() == InputShapes(max_side=76, max_rois=4)
    runtime.warmup()  # TensorRTLike raises for a clip over 76 pixels wide
    opt = profile.shapes(runtime.metadata.preprocess)["trt_profile_opt_shapes"]
    assert opt == "clips:2x3x8x64x76,rois:4x5"


def test_other_providers_take_any_shape(onnx_model: Path):
    assert load_runtime(onnx_model, onnx_providers=[CPU]).input_shapes() is None


@pytest.mark.anyio
async def test_a_video_wider_than_the_profile_is_a_422(
    onnx_model: Path, megamind: Path, tensorrt_like: None, tmp_path: Path
):
    async with serve(
        onnx_model,
        onnx_providers=[TRT, CPU],
        trt_max_aspect=1.2,
        data_dir=tmp_path,
        detector="none",
    ) as served:
        assert served.state.engine.runtime.input_shapes() == InputShapes(76, 8 * 32)
        response = await served.client.post("/detect", files=detect_files(megamind, REQUEST))
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "outside_engine_profile"
        assert "87x64" in error["message"] and "FBIL_TRT_MAX_ASPECT" in error["message"]
        assert error["details"] == {"max_side": 76, "max_rois": 256}
        # a job of the same video is refused at submission, before it is queued
        job = await served.client.post(
            "/v1/jobs",
            files={
                "video": ("m.avi", megamind.read_bytes(), "video/x-msvideo"),
                "request": (None, json.dumps(REQUEST)),
            },
        )
        assert job.status_code == 422, job.text
        assert job.json()["error"]["code"] == "outside_engine_profile"
        jobs = tmp_path / "jobs"
        assert not jobs.exists() or not any(jobs.iterdir())


@pytest.mark.anyio
async def test_a_video_inside_the_profile_is_answered(
    onnx_model: Path, megamind: Path, tensorrt_like: None
):
    async with serve(
        onnx_model, onnx_providers=[TRT, CPU], trt_max_aspect=1.4, detector="none"
    ) as served:
        response = await served.client.post("/detect", files=detect_files(megamind, REQUEST))
        assert response.status_code == 200, response.text
        assert len(response.json()["keyframes"][0]["actors"][0]["actions"]) > 0

"""Triton repository mirrors the ONNX signature; CLI errors are clear."""

from __future__ import annotations

import re

import onnx

from fbil.export.cli import main as export_main


def _parse_config(text: str) -> dict[str, dict[str, tuple[str, list[int]]]]:
    sections = {}
    for section in ("input", "output"):
        body = re.search(rf"^{section} \[(.*?)^\]", text, re.S | re.M).group(1)
        entries = {}
        for name, dtype, dims in re.findall(
            r'name: "([^"]+)"\s+data_type: (\w+)\s+dims: \[([^\]]*)\]', body
        ):
            entries[name] = (dtype, [int(d) for d in dims.split(",")])
        sections[section] = entries
    return sections


def test_triton_config_names_real_signature(parity_artifacts):
    model_dir = parity_artifacts / "triton" / "fbil-slowfast"
    text = (model_dir / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in text and "KIND_GPU" in text
    graph = onnx.load(str(model_dir / "1" / "model.onnx")).graph
    parsed = _parse_config(text)
    for section, values in (("input", graph.input), ("output", graph.output)):
        expected = {}
        for v in values:
            t = v.type.tensor_type
            assert t.elem_type == onnx.TensorProto.FLOAT
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            expected[v.name] = ("TYPE_FP32", dims)
        assert parsed[section] == expected
    assert parsed["input"]["clips"][1] == [-1, 3, -1, -1, -1]
    assert parsed["input"]["rois"][1] == [-1, 5]
    assert parsed["output"]["scores"][1] == [-1, 60]


def test_cli_bad_checkpoint_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert export_main(["--checkpoint", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err  # not "embeds no config"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {backbone: {arch: slowfast101}, head: {type: fbil}}\n")
    assert (
        export_main(["--checkpoint", str(bad), "--config", str(cfg), "--out", str(tmp_path)]) == 2
    )
    assert "not a readable checkpoint" in capsys.readouterr().err

"""``benchmarks/gpu.py --smoke``: the GPU benchmark's code path on CPU with a tiny model, so that
the script a GPU host runs once does not rot between those runs."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def rows(lines: list[str], header: str) -> list[list[str]]:
    """The cells of the markdown table whose header row starts with ``header``."""
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    table = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    return table


@pytest.fixture(scope="module")
def report() -> list[str]:
    from benchmarks import gpu

    return gpu.main(["--smoke"]).lines


def test_every_runtime_row_is_measured_or_says_why(report: list[str]):
    table = rows(report, "| config | runtime |")
    measured = {(r[1], r[2], r[3]): r for r in table if r[2] != "all"}
    shapes = {("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")}
    for runtime in ("eager fp32", "eager bf16", "torchscript fp32", "ort fp32"):
        assert {(b, a) for (name, b, a) in measured if name == runtime} == shapes, runtime
    for (runtime, batch, _), row in measured.items():
        clips_per_s, p50_ms = float(row[4]), float(row[5])
        assert clips_per_s == pytest.approx(int(batch) / p50_ms * 1e3, rel=0.01), runtime
        diff = float(row[9].split()[0])
        if runtime == "eager fp32":
            assert diff == 0.0
        elif runtime == "eager bf16":  # reduced precision ran, within the documented tolerance
            assert 0.0 < diff <= 0.05
        else:
            assert diff <= 1e-4, runtime  # the same fp32 network exported
    [fp16] = [r for r in table if r[1] == "eager fp16"]
    assert fp16[2:4] == ["all", "all"] and "needs a CUDA device" in fp16[4]


def test_backbone_head_split_and_decode_table(report: list[str]):
    [split] = rows(report, "| config | batch | actors | backbone ms")
    assert split[0] == "tiny" and float(split[3]) > 0 and float(split[4]) > 0
    # the share is computed before rounding: it lies within what the printed ms allow
    backbone, head = (_with_rounding(cell) for cell in (split[3], split[4]))
    share = float(split[5].rstrip("%"))
    assert 100 * head[0] / backbone[1] - 0.6 <= share <= 100 * head[1] / backbone[0] + 0.6
    [decode] = rows(report, "| video | windows/s, 1 core")
    assert decode[0] == "tiny" and float(decode[1]) > 0
    best = float(next(line for line in report if "GPU clips/s:" in line).rsplit(" ", 1)[1])
    assert float(decode[3]) == pytest.approx(best / float(decode[1]), rel=0.05)


def _with_rounding(cell: str) -> tuple[float, float]:
    """The interval a printed number stands for (half a unit of its last digit either side)."""
    decimals = len(cell.partition(".")[2])
    half = 0.5 * 10.0**-decimals
    return float(cell) - half, float(cell) + half

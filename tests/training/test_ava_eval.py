"""AVA frame-mAP: the reference fixture, and one targeted test per rule of the definition."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fbil.model.training.ava_eval import (
    CLASS_KEY_PREFIX,
    MAP_KEY,
    EvalRow,
    average_precision,
    evaluate_csv,
    evaluate_rows,
    pairwise_iou,
    read_eval_csv,
    run_evaluation,
)

LABELMAP = [(1, "one"), (2, "two")]
G1 = (0.0, 0.0, 0.4, 1.0)
G2 = (0.1, 0.0, 0.5, 1.0)  # IoU(G1, G2) = 0.6
FAR = (0.6, 0.0, 0.9, 0.5)  # no overlap with G1 / G2


def gt(key: str, box: tuple[float, ...], action: int) -> EvalRow:
    return EvalRow(key, box, action, 1.0)


def det(key: str, box: tuple[float, ...], action: int, score: float) -> EvalRow:
    return EvalRow(key, box, action, score)


def by_id(result, class_id: int):
    return next(c for c in result.per_class if c.class_id == class_id)


# --------------------------------------------------------------------------------------------
# Reference fixture


@pytest.fixture(scope="module")
def expected(ava_case1: Path) -> dict:
    return json.loads((ava_case1 / "expected_metrics.json").read_text())


@pytest.fixture(scope="module")
def fixture_result(ava_case1: Path):
    return evaluate_csv(
        ava_case1 / "labelmap.pbtxt",
        ava_case1 / "groundtruth.csv",
        ava_case1 / "detections.csv",
        ava_case1 / "exclusions.csv",
    )


def test_fixture_metrics_match_reference(fixture_result, expected) -> None:
    metrics = fixture_result.metrics()
    assert list(metrics) == expected["metric_keys_in_original_order"]
    assert metrics[MAP_KEY] == pytest.approx(0.5980194149017162, abs=1e-12)
    for key, value in expected["metrics"].items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key


def test_fixture_per_class_counts_match_reference(fixture_result, expected) -> None:
    got = [
        (c.class_id, c.name, c.num_gt, c.num_detections, c.num_true_positives)
        for c in fixture_result.per_class
    ]
    want = [
        (c["id"], c["name"], c["num_gt_instances"], c["num_detections_evaluated"])
        + (c["num_true_positives"],)
        for c in expected["per_class"]
    ]
    assert got == want
    assert [c.ap for c in fixture_result.per_class] == pytest.approx(
        [c["AP"] for c in expected["per_class"]], abs=1e-12
    )


def test_run_evaluation_returns_the_metrics_dict(ava_case1: Path, expected) -> None:
    metrics = run_evaluation(
        ava_case1 / "labelmap.pbtxt",
        ava_case1 / "groundtruth.csv",
        ava_case1 / "detections.csv",
        ava_case1 / "exclusions.csv",
    )
    assert list(metrics) == expected["metric_keys_in_original_order"]
    assert all(type(v) is float for v in metrics.values())


# --------------------------------------------------------------------------------------------
# Rules


def test_cap_keeps_50_rows_and_equal_score_does_not_replace() -> None:
    rows = [det("v,0902", FAR, 2, 0.5) for _ in range(50)]
    rows.append(det("v,0902", G1, 1, 0.5))  # equal to the heap minimum: not kept
    result = evaluate_rows(LABELMAP, [gt("v,0902", G1, 1), gt("v,0902", FAR, 2)], rows)
    assert by_id(result, 1).num_detections == 0
    assert by_id(result, 1).ap == 0.0
    assert by_id(result, 2).num_detections == 50


def test_cap_replaces_minimum_with_strictly_higher_score() -> None:
    rows = [det("v,0902", FAR, 2, 0.5 + i / 1000) for i in range(50)]
    rows.append(det("v,0902", G1, 1, 0.51))
    result = evaluate_rows(LABELMAP, [gt("v,0902", G1, 1), gt("v,0902", FAR, 2)], rows)
    assert by_id(result, 1).ap == 1.0
    kept = by_id(result, 2)
    assert kept.num_detections == 49  # the lowest (0.500) was evicted
    assert kept.num_true_positives == 1


def test_cap_is_per_frame_and_counts_only_whitelisted_rows() -> None:
    rows = [det("v,0902", FAR, 99, 0.9) for _ in range(60)]  # not in the label map
    rows += [det("v,0903", FAR, 2, 0.9) for _ in range(50)]  # another frame
    rows += [det("v,0902", FAR, 2, 0.9) for _ in range(49)]
    rows.append(det("v,0902", G1, 1, 0.1))
    result = evaluate_rows(LABELMAP, [gt("v,0902", G1, 1), gt("v,0902", FAR, 2)], rows)
    assert by_id(result, 1).num_detections == 1
    assert by_id(result, 1).ap == 1.0
    assert by_id(result, 2).num_detections == 99


def test_cap_applies_before_degenerate_boxes_are_discarded() -> None:
    degenerate = (0.5, 0.5, 0.5, 0.9)
    rows = [det("v,0902", degenerate, 2, 0.9) for _ in range(50)]
    rows.append(det("v,0902", G1, 1, 0.1))  # cut by the cap although the 50 above are dropped
    result = evaluate_rows(LABELMAP, [gt("v,0902", G1, 1), gt("v,0902", FAR, 2)], rows)
    assert by_id(result, 1).num_detections == 0
    assert by_id(result, 1).ap == 0.0
    assert by_id(result, 2).num_detections == 0


def test_ground_truth_is_not_capped() -> None:
    gts = [gt("v,0902", (i / 100, 0.0, i / 100 + 0.005, 1.0), 1) for i in range(60)]
    result = evaluate_rows(LABELMAP, gts, [det("v,0902", gts[0].box, 1, 0.9)])
    assert by_id(result, 1).num_gt == 60
    assert by_id(result, 1).ap == pytest.approx(1 / 60, abs=1e-15)


def test_excluded_frames_are_dropped_from_ground_truth_and_detections() -> None:
    gts = [gt("v,0902", G1, 1), gt("v,0903", G1, 1)]
    dets = [det("v,0902", G1, 1, 0.5), det("v,0903", FAR, 1, 0.9)]
    included = evaluate_rows(LABELMAP, gts, dets)
    assert (by_id(included, 1).num_gt, by_id(included, 1).num_detections) == (2, 2)
    assert by_id(included, 1).ap == 0.25
    excluded = evaluate_rows(LABELMAP, gts, dets, {"v,0903"})
    assert (by_id(excluded, 1).num_gt, by_id(excluded, 1).num_detections) == (1, 1)
    assert by_id(excluded, 1).ap == 1.0


def test_classes_outside_the_label_map_are_dropped() -> None:
    labelmap = [(8, "eight"), (1, "one")]  # unsorted on purpose
    gts = [gt("v,0902", G1, 1), gt("v,0902", G1, 8), gt("v,0902", G2, 5)]
    dets = [det("v,0902", G1, 1, 0.9), det("v,0902", G1, 8, 0.8), det("v,0902", G2, 5, 0.99)]
    result = evaluate_rows(labelmap, gts, dets)
    assert list(result.metrics()) == [MAP_KEY, CLASS_KEY_PREFIX + "one", CLASS_KEY_PREFIX + "eight"]
    assert [c.class_id for c in result.per_class] == [1, 8]
    assert result.mean_ap == 1.0


def test_greedy_match_to_already_matched_best_box_is_false_positive() -> None:
    # both detections have their best IoU with G1; the second one is FP even though its
    # IoU with the unmatched G2 is 0.6
    gts = [gt("v,0902", G1, 1), gt("v,0902", G2, 1)]
    dets = [det("v,0902", G1, 1, 0.9), det("v,0902", G1, 1, 0.8)]
    assert pairwise_iou([G1], [G1, G2]).tolist() == [[1.0, pytest.approx(0.6)]]
    result = evaluate_rows(LABELMAP, gts, dets)
    assert by_id(result, 1).num_true_positives == 1
    assert by_id(result, 1).ap == 0.5


def test_frame_detections_are_matched_in_descending_score_order() -> None:
    gts = [gt("v,0902", G1, 1), gt("v,0903", FAR, 1)]
    dets = [det("v,0902", G1, 1, 0.3), det("v,0902", G1, 1, 0.9)]  # low score first in file
    result = evaluate_rows(LABELMAP, gts, dets)
    assert by_id(result, 1).ap == 0.5  # 0.9 is the TP; file order would give 0.25


def test_iou_threshold_is_inclusive() -> None:
    box = (0.0, 0.0, 1.0, 1.0)
    half, below = (0.0, 0.0, 0.5, 1.0), (0.0, 0.0, 0.49, 1.0)
    assert pairwise_iou([half, below], [box])[:, 0].tolist() == [0.5, pytest.approx(0.49)]
    at = evaluate_rows(LABELMAP, [gt("v,0902", box, 1)], [det("v,0902", half, 1, 0.9)])
    assert by_id(at, 1).ap == 1.0
    under = evaluate_rows(LABELMAP, [gt("v,0902", box, 1)], [det("v,0902", below, 1, 0.9)])
    assert by_id(under, 1).ap == 0.0


def test_degenerate_detections_are_discarded() -> None:
    gts = [gt("v,0902", G1, 1)]
    dets = [
        det("v,0902", (0.5, 0.0, 0.5, 1.0), 1, 0.99),  # x2 == x1
        det("v,0902", (0.0, 0.6, 0.4, 0.2), 1, 0.98),  # y2 < y1
        det("v,0902", G1, 1, 0.5),
    ]
    result = evaluate_rows(LABELMAP, gts, dets)
    assert by_id(result, 1).num_detections == 1
    assert by_id(result, 1).ap == 1.0


def test_detections_on_frames_without_ground_truth_are_false_positives() -> None:
    gts = [gt("v,0902", G1, 1)]
    dets = [det("v,0910", G1, 1, 0.9), det("v,0902", G1, 1, 0.8)]
    assert by_id(evaluate_rows(LABELMAP, gts, dets), 1).ap == 0.5


def test_class_without_ground_truth_is_nan_and_class_without_detections_is_zero() -> None:
    labelmap = [(1, "one"), (2, "two"), (3, "three")]
    gts = [gt("v,0902", G1, 1), gt("v,0902", G2, 2)]
    dets = [det("v,0902", G1, 1, 0.9), det("v,0902", G2, 3, 0.8)]
    result = evaluate_rows(labelmap, gts, dets)
    assert by_id(result, 1).ap == 1.0
    assert (by_id(result, 2).ap, by_id(result, 2).num_detections) == (0.0, 0)
    assert math.isnan(by_id(result, 3).ap)
    assert result.mean_ap == 0.5  # the 0.0 counts, the NaN does not
    assert math.isnan(result.metrics()[CLASS_KEY_PREFIX + "three"])
    assert result.to_json_dict()["metrics"][CLASS_KEY_PREFIX + "three"] is None


def test_no_ground_truth_at_all_gives_nan_map() -> None:
    result = evaluate_rows(LABELMAP, [], [det("v,0902", G1, 1, 0.9)])
    assert math.isnan(result.mean_ap)
    assert result.to_json_dict()["mAP"] is None


def test_every_ground_truth_row_is_one_instance() -> None:
    gts = [gt("v,0902", G1, 1), gt("v,0902", G1, 1)]  # same person listed twice
    result = evaluate_rows(LABELMAP, gts, [det("v,0902", G1, 1, 0.9)])
    assert by_id(result, 1).num_gt == 2
    assert by_id(result, 1).ap == 0.5


def test_timestamp_902_and_0902_are_the_same_frame(tmp_path: Path) -> None:
    labelmap = tmp_path / "labelmap.pbtxt"
    labelmap.write_text('item {\n  name: "one"\n  id: 1\n}\n')
    (tmp_path / "gt.csv").write_text("v,902,0.0,0.0,0.4,1.0,1,0\nv,0903,0.0,0.0,0.4,1.0,1,0\n")
    (tmp_path / "det.csv").write_text("v,0902,0.0,0.0,0.4,1.0,1,0.9\nv,903,0.6,0,0.9,0.5,1,0.8\n")
    (tmp_path / "excl.csv").write_text("v,903\n")
    rows = read_eval_csv(tmp_path / "gt.csv")
    assert [r.key for r in rows] == ["v,0902", "v,0903"]
    result = evaluate_csv(
        labelmap, tmp_path / "gt.csv", tmp_path / "det.csv", tmp_path / "excl.csv"
    )
    assert (result.per_class[0].num_gt, result.per_class[0].num_detections) == (1, 1)
    assert result.mean_ap == 1.0


def test_average_precision_is_voc_all_point() -> None:
    # ranked TP, FP, TP, FP with 3 GT: 1/3 * 1 + 1/3 * 2/3 (monotone envelope); recall stays < 1
    ap = average_precision([0.6, 0.9, 0.7, 0.8], [False, True, True, False], num_gt=3)
    assert ap == pytest.approx(5 / 9, abs=1e-15)
    assert average_precision([], [], num_gt=4) == 0.0
    with pytest.raises(ValueError):
        average_precision([0.5], [True], num_gt=0)


def test_detections_without_score_column_score_one(tmp_path: Path) -> None:
    (tmp_path / "det.csv").write_text("v,0902,0.0,0.0,0.4,1.0,1\n")
    assert read_eval_csv(tmp_path / "det.csv") == [EvalRow("v,0902", G1, 1, 1.0)]

"""What a lab reads off a run on labelled images: accuracy, cost, and what the review flag
did, with the unflagged errors named by file; and the robustness suite built on it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from leukedge.modelkit.evaluation.labelled import LabelledSet
from leukedge.modelkit.evaluation.review_scores import review_scores
from leukedge.runtime.classifier import Prediction
from leukedge.runtime.input_checks import ReviewReason, low_confidence

CLASSES = ("Benign", "Early", "Pre", "Pro")


def _prediction(label: str, confidence: float, reasons=()) -> Prediction:
    rest = (1 - confidence) / 3
    probs = {c: (confidence if c == label else rest) for c in CLASSES}
    return Prediction(label, confidence, probs, bool(reasons), tuple(reasons))


def test_the_flag_and_the_errors_it_lets_through():
    labels = [0, 1, 2, 3, 0]
    preds = [_prediction("Benign", 0.99),
             _prediction("Benign", 0.60, [low_confidence(0.6, 0.9)]),  # caught
             _prediction("Pro", 0.97),  # an error the flag missed
             _prediction("Pro", 0.95, [ReviewReason("unlike_training", "unlike the training")]),
             _prediction("Benign", 0.99)]
    s = review_scores(labels, preds, CLASSES, ["a", "b", "c", "d", "e"])
    assert s["n"] == 5 and s["accuracy"] == pytest.approx(0.6)
    assert s["errors"] == 2 and s["errors_caught"] == 1 and s["unflagged_errors"] == 1
    assert s["unflagged"] == [{"path": "c", "true": "Pre", "predicted": "Pro",
                               "confidence": 0.97}]
    assert s["flagged_rate"] == pytest.approx(0.4)
    assert s["review_reasons"] == {"low_confidence": 1, "unlike_training": 1}
    assert s["cost_per_sample"] == pytest.approx((10 + 10) / 5)  # Early->Benign, Pre->Pro
    assert s["accuracy_ci95"][0] < 0.6 < s["accuracy_ci95"][1]
    assert 0 < s["ece"] < 1


def test_labels_and_predictions_must_pair_up():
    with pytest.raises(ValueError, match="2 labels for 1 predictions"):
        review_scores([0, 1], [_prediction("Benign", 0.9)], CLASSES)


def _robustness():
    path = Path(__file__).resolve().parents[1] / "bench" / "robustness.py"
    spec = importlib.util.spec_from_file_location("robustness_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_suite_scores_every_kind_at_every_strength(tiny_model_path, sample_images):
    suite = _robustness()
    labelled = LabelledSet(tuple(sample_images), np.repeat(np.arange(4), 2), CLASSES, "samples")
    rows = suite.run([(tiny_model_path, labelled)], ["magnification", "jpeg"])
    assert [(r["kind"], r["strength"]) for r in rows] == [
        ("none", None), ("magnification", 0.77), ("magnification", 1.25),
        ("magnification", 1.43), ("jpeg", 70), ("jpeg", 50), ("jpeg", 30)]
    assert all(r["n"] == 8 for r in rows)
    assert [r["main"] for r in rows].count(True) == 2
    assert "| magnification (main) | 1.43 |" in suite.markdown(rows)


def test_the_suite_reads_cross_validation_folds_out_of_fold(tiny_model_path, sample_images,
                                                           tmp_path):
    """--cv: each fold's model scores only its own held-out images, from its oof.json."""
    import json
    import shutil

    suite = _robustness()
    data = tmp_path / "data"
    for p in sample_images:
        (data / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, data / p.parent.name / p.name)
    relpaths = [f"{p.parent.name}/{p.name}" for p in sample_images]
    for k, held in enumerate((relpaths[::2], relpaths[1::2])):
        folder = tmp_path / "cv" / f"fold{k}"
        folder.mkdir(parents=True)
        shutil.copy(tiny_model_path, folder / "model.onnx")
        labels = [CLASSES.index(r.split("/")[0]) for r in held]
        (folder / "oof.json").write_text(json.dumps({
            "classes": list(CLASSES), "held_out": {"paths": held, "labels": labels}}))
    pairs = suite.fold_sets(tmp_path / "cv", data, "model.onnx")
    assert [len(labelled) for _, labelled in pairs] == [4, 4]
    assert sorted(str(p) for _, s in pairs for p in s.paths) == sorted(
        str(data / r) for r in relpaths)
    rows = suite.run(pairs, ["jpeg"])
    assert rows[0]["kind"] == "none" and rows[0]["n"] == 8  # pooled over both folds

"""The end of a training run: held-out evaluation, calibration, and the run folder's files.

``run.json`` is a :class:`~leukedge.modelkit.run_record.RunRecord`, the typed record export reads
(docs/ARCHITECTURE.md). The temperature and the review threshold are chosen on the validation
split; the test split is only scored.
"""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from leukedge.modelkit.confidence import (choose_review_threshold, expected_calibration_error,
                                         fit_temperature, review_outcome, softmax)
from leukedge.modelkit.metrics import REFERENCE_COST_MATRIX, evaluate
from leukedge.modelkit.run_folder import RunFolder
from leukedge.modelkit.run_record import Calibration, RunRecord
from leukedge.runtime.contract import DEFAULT_REVIEW_BELOW, leukedge_version
from leukedge.runtime.files import sha256_file

from .model import count_parameters
from .run_folder import plot_history, predictions_table, save_keras_model, write_json

MAX_REVIEW_RATE = 0.03  # flag at most 3% of images for review
# 3% of the validation images must be a few images for the threshold to mean anything: on 17
# images (a lab's 20-per-class folder) 3% is half an image, and the "fitted" threshold was the
# lowest validation confidence. Below this many the default threshold is kept, and said so.
MIN_IMAGES_TO_FIT_THRESHOLD = 100
# A temperature fitted on a validation split with (almost) no errors only sharpens: the NLL
# falls as T -> 0, and the search stops at its bound (0.05 was seen on SVM and XGBoost runs).
MIN_ERRORS_TO_FIT_TEMPERATURE = 5


def score(logits: np.ndarray, labels: np.ndarray, classes: Sequence[str],
          temperature: float = 1.0) -> dict:
    """runtime.metrics.evaluate of calibrated predictions (with the reference study's cost
    matrix when it fits); ``{"n": 0}`` when there is nothing to score (no test split)."""
    if not len(logits):
        return {"n": 0}
    cost = REFERENCE_COST_MATRIX if len(classes) == len(REFERENCE_COST_MATRIX) else None
    probs = softmax(logits, temperature) if len(logits) else np.zeros((0, len(classes)))
    return evaluate(labels, probs.argmax(axis=1) if len(probs) else [], classes, cost)


def calibrate(val_logits: np.ndarray, val_labels: np.ndarray) -> tuple[Calibration, float, dict]:
    """Temperature fitted on the validation logits, its ECE before/after, and the review
    threshold that flags at most 3% of validation images (with what it caught there).

    With fewer than ``MIN_ERRORS_TO_FIT_TEMPERATURE`` validation errors the temperature stays 1
    (a fit would only sharpen the probabilities) and the review says so: calibrate such a model
    on a cross-validation (``leukedge export --calibration``)."""
    if len(val_logits) < 10:
        return Calibration(), DEFAULT_REVIEW_BELOW, {"note": "too few validation images; defaults kept"}
    val_labels = np.asarray(val_labels)
    before = expected_calibration_error(softmax(val_logits), val_labels)
    errors = int(np.sum(np.argmax(val_logits, axis=1) != val_labels))
    note = None
    if errors < MIN_ERRORS_TO_FIT_TEMPERATURE:
        t, fitted_on = 1.0, (f"not fitted: {errors} validation errors, too few (< "
                             f"{MIN_ERRORS_TO_FIT_TEMPERATURE}); use export --calibration")
        note = (f"temperature kept at 1: the validation split holds {errors} errors, too few "
                "to fit one; the review threshold below rests on as few")
    else:
        t, fitted_on = fit_temperature(val_logits, val_labels), "val split"
    probs = softmax(val_logits, t)
    after = expected_calibration_error(probs, val_labels)
    calibration = Calibration(temperature=t, ece_before=before, ece_after=after,
                              fitted_on=fitted_on)
    correct = probs.argmax(1) == val_labels
    if len(val_logits) < MIN_IMAGES_TO_FIT_THRESHOLD:
        kept = review_outcome(probs.max(1), correct, DEFAULT_REVIEW_BELOW).to_dict()
        return calibration, DEFAULT_REVIEW_BELOW, {**kept, "note": (
            f"review threshold kept at {DEFAULT_REVIEW_BELOW:g}: {len(val_logits)} validation "
            f"images, fewer than the {MIN_IMAGES_TO_FIT_THRESHOLD} needed to fit one; calibrate "
            "on a cross-validation (leukedge export --calibration)")}
    choice = choose_review_threshold(probs.max(1), correct, MAX_REVIEW_RATE)
    review = choice.to_dict() if note is None else {**choice.to_dict(), "note": note}
    return calibration, choice.threshold, review


def versions() -> dict:
    import keras
    import tensorflow as tf

    return {"leukedge": leukedge_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "python": platform.python_version()}


def write_run(out: Path, model, history: dict, record: RunRecord, test_predictions: list[dict],
              review: dict) -> RunRecord:
    """Write the model (model.keras, or network.onnx for the classical rows), history.json,
    training_curves.png (neural networks), metrics.json and, last, run.json."""
    run = RunFolder(out)
    classical = hasattr(model, "logits")
    if classical:
        model.save(out)
    else:
        save_keras_model(model, run.keras_model)
    write_json(out / RunFolder.HISTORY, history)
    if not classical:
        plot_history(history, out / RunFolder.CURVES, title=model.name)
    write_json(out / RunFolder.METRICS, {"split": "test", **record.test_metrics,
                                         "review_on_val": review,
                                         "predictions": test_predictions})
    record = record.with_updates(model_sha256=sha256_file(run.model_file))
    record.write(run.record)
    return record


def new_record(*, model, config, settings, weights: dict, dataset, manifest, split_sha: str,
               test_metrics: dict, training: dict, calibration: Calibration,
               review_below: float, run_name: str, excluded_sha256=()) -> RunRecord:
    """The run record of a finished run (model_sha256 is filled in when the model is saved)."""
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return RunRecord(
        classes=tuple(manifest.classes), backbone=config.backbone, model=config.to_dict(),
        preprocessing=config.preprocess_spec(), input_names=config.input_names,
        settings=settings.to_dict(), weights=weights,
        data={"dir": str(Path(dataset.root).resolve()), "variant": settings.variant,
              "counts": manifest.counts(), "skipped": [list(s) for s in manifest.skipped],
              "grouping": manifest.extra.get("grouping", "sha256"),
              "excluded_sha256": list(excluded_sha256)},
        data_manifest_sha256=manifest.data_manifest_sha256, split_manifest_sha256=split_sha,
        seed=settings.seed, test_metrics=test_metrics,
        parameters=model.parameter_count() if hasattr(model, "logits") else count_parameters(model),
        training=training, versions=versions(), created=created,
        run_id=f"{run_name}-{created}", calibration=calibration, review_below=review_below)


def test_table(relpaths: Sequence[str], classes: Sequence[str], labels: np.ndarray,
               logits: np.ndarray, temperature: float) -> list[dict]:
    probs = softmax(logits, temperature) if len(logits) else np.zeros((0, len(classes)))
    return predictions_table(relpaths, classes, labels, probs)

"""Calibration and metrics from a cross-validation, applied to a model trained on all images.

A final model trained on every development image has no test split of its own, and its small
validation split (used for early stopping) holds too few errors to place a review threshold.
The cross-validation of the same recipe has one out-of-fold prediction per image:
``leukedge crossval-eval`` (:mod:`leukedge.export.fold_summary`) fits the temperature and the
review threshold on them and writes ``calibration.json``; ``leukedge export RUN --calibration
calibration.json`` puts them, and the cross-validated metrics per precision, in the model's
contract.

File format (JSON)::

    {"format": "leukedge.calibration", "version": 1,
     "source": "5-fold grouped cross-validation of recipe ..., 2604 out-of-fold images",
     "temperature": 1.4, "ece_before": 0.008, "ece_after": 0.004, "review_below": 0.88,
     "review": {"flagged_rate": 0.03, "errors": 10, "errors_caught": 9, ...},
     "metrics": {"fp32": {"accuracy": ..., "accuracy_sd": ..., ...}, "int8": {...}},
     "int8": {"method": "static", "per_channel": true, "reduce_range": false}}
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from leukedge.runtime.files import read_json_object

FORMAT = "leukedge.calibration"
VERSION = 1


@dataclass(frozen=True)
class CvCalibration:
    """What a cross-validation says about a recipe: temperature, threshold, metrics."""

    source: str
    temperature: float
    review_below: float
    ece_before: Optional[float] = None
    ece_after: Optional[float] = None
    metrics: dict = field(default_factory=dict)  # precision -> metrics dict
    int8: dict = field(default_factory=dict)  # the quantization setting the int8 row used
    review: dict = field(default_factory=dict)  # what the threshold flagged and caught there

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "source": self.source,
                "temperature": self.temperature, "ece_before": self.ece_before,
                "ece_after": self.ece_after, "review_below": self.review_below,
                "review": self.review, "metrics": self.metrics, "int8": self.int8}


def precision_metrics(rows: dict, n: int, folds: int, confusion_matrix: list) -> dict:
    """One precision's entry of ``metrics``: each metric's mean and ``<metric>_sd`` over the
    folds, from ``{metric: {"mean": ..., "sd": ...}}``, with the pooled confusion matrix."""
    out = {k: v["mean"] for k, v in rows.items()}
    out.update({f"{k}_sd": v["sd"] for k, v in rows.items()})
    return {**out, "n": n, "folds": folds, "confusion_matrix": confusion_matrix}


def read_cv_calibration(path: str | os.PathLike) -> CvCalibration:
    """Read and check a ``calibration.json``; ValueError names the file and the problem."""
    p = Path(path)
    try:
        d = read_json_object(p, "calibration file")
    except ValueError as e:
        raise ValueError(f"--calibration {e}") from e
    if d.get("format") != FORMAT or d.get("version") != VERSION:
        raise ValueError(f"--calibration {p}: not a {FORMAT} file of version {VERSION} "
                         "(leukedge crossval-eval writes one)")
    try:
        t, review = float(d["temperature"]), float(d["review_below"])
        source = str(d["source"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"--calibration {p}: missing or bad field {e}") from e
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"--calibration {p}: temperature must be a positive number, got {t}")
    if not 0.0 <= review <= 1.0:
        raise ValueError(f"--calibration {p}: review_below must be in [0, 1], got {review}")
    metrics = d.get("metrics") or {}
    if not isinstance(metrics, dict) or not all(isinstance(v, dict) for v in metrics.values()):
        raise ValueError(f"--calibration {p}: metrics must map a precision to a metrics object")
    return CvCalibration(source=source, temperature=t, review_below=review,
                         ece_before=d.get("ece_before"), ece_after=d.get("ece_after"),
                         metrics=metrics, int8=d.get("int8") or {}, review=d.get("review") or {})


def apply_cv_calibration(record, cv: CvCalibration):
    """The run record with the cross-validation's temperature, threshold and FP32 metrics."""
    from leukedge.modelkit.run_record import Calibration

    calibration = Calibration(temperature=cv.temperature, ece_before=cv.ece_before,
                              ece_after=cv.ece_after, fitted_on=cv.source)
    return record.with_updates(calibration=calibration, review_below=cv.review_below,
                               test_metrics=cv.metrics.get("fp32", record.test_metrics))


def cv_provenance(cv: CvCalibration) -> dict:
    """What the contract keeps of the cross-validation (quantize reads ``metrics_by_precision``)."""
    return {"metrics_source": cv.source, "metrics_by_precision": cv.metrics,
            "cv_int8_setting": cv.int8}

"""A training run folder -> the checked one-file model: what ``leukedge export`` does.

Reads the run (:class:`~leukedge.modelkit.run_folder.RunFolder`), decodes its held-out images
for the parity check and its training images for the input checks (through the run's split
manifest, so "the test split" means the same files as in training), applies a
cross-validation calibration when given, and exports the network the caller loaded: a Keras
model (:func:`~leukedge.export.onnx_export.export_keras`) or, for the SVM and XGBoost rows, the
run's ``network.onnx`` (:func:`~leukedge.export.onnx_export.export_classical`). The caller loads
the model because loading a Keras file needs leukedge's training layers (``leukedge.train``),
which export never imports.

Example:
    >>> run = RunFolder.of("runs/lite0")
    >>> result, record, flags = export_run(run, load_model(run.model_file), ExportRequest())
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from leukedge.modelkit.evaluation.labelled import load_labelled
from leukedge.modelkit.run_folder import RunFolder
from leukedge.modelkit.run_record import RunRecord
from leukedge.modelkit.splits import held_out_split

from .onnx_export import PARITY_TOLERANCE, ExportResult, export_classical, export_keras


@dataclass(frozen=True)
class ExportRequest:
    """The options of one export (``leukedge export``'s flags)."""

    out: Optional[Path] = None  # default: model.onnx in the run folder
    data: Optional[Path] = None  # default: the dataset run.json names
    parity_images: int = 32
    tolerance: float = PARITY_TOLERANCE
    review_below: Optional[float] = None
    input_checks: bool = True
    calibration: Optional[Path] = None  # a cross-validation's calibration.json
    overwrite: bool = False

    def target(self, run: RunFolder) -> Path:
        return self.out or run.onnx_model

    def check(self, run: RunFolder) -> None:
        """ValueError naming the flag for what would stop the export; cheap, so a caller runs
        it before loading the model."""
        target = self.target(run)
        if target.exists() and not self.overwrite:
            raise ValueError(f"{target} exists; choose another --out or pass --overwrite")
        if not run.split.is_file():
            raise ValueError(f"{run.split} is missing: export takes its parity images from the "
                             "run's held-out split")


def run_images(run: RunFolder, record: RunRecord, data: Optional[str | os.PathLike],
               parity_count: int) -> tuple[list, str, list]:
    """(parity pixels, where they come from, training pixels) through the run's split."""
    data_dir = Path(data) if data is not None else Path(record.data.get("dir", ""))
    if not data_dir.is_dir():
        raise ValueError(f"the run's dataset {str(data_dir)!r} is not here; pass --data DIR "
                         "(export checks parity on the test images and sets the input checks "
                         "on the training images)")
    split = held_out_split(run.split)
    held = load_labelled(data_dir, record.classes, run.split, split, limit=parity_count)
    train = load_labelled(data_dir, record.classes, run.split, "train")
    return held.decode(), f"{split} split ({len(held)} images)", train.decode()


def held_out_flags(path: Path, images: list) -> dict:
    """How many held-out images the exported model flags, by its input checks and in all: a
    model whose checks flag its own site's smears would flag everything in the lab."""
    from leukedge.runtime.classifier import Classifier

    predictions = Classifier(path, provider="cpu").predict_pixels(images)
    by_checks = sum(any(r.code != "low_confidence" for r in p.review_reasons)
                    for p in predictions)
    return {"images": len(images), "flagged": sum(p.needs_review for p in predictions),
            "flagged_by_input_checks": by_checks}


def export_run(run: RunFolder, model: Any, request: ExportRequest
               ) -> tuple[ExportResult, RunRecord, dict]:
    """Export the run's ``model`` (loaded by the caller); returns the result, the record it
    was exported with (the calibration applied) and :func:`held_out_flags`.

    Raises:
        ValueError: the output exists (without ``overwrite``), the dataset or split is missing.
        ExportError, ParityError: the exported model cannot be trusted; nothing was written.
    """
    from .cv_calibration import apply_cv_calibration, cv_provenance, read_cv_calibration

    request.check(run)
    record, extra = run.read_record(), None
    if request.calibration is not None:
        cv = read_cv_calibration(request.calibration)
        record, extra = apply_cv_calibration(record, cv), cv_provenance(cv)
    target = request.target(run)
    parity, where, train_pixels = run_images(run, record, request.data, request.parity_images)
    export = export_classical if run.classical else export_keras
    result = export(model, target, record, parity_images=parity, parity_source=where,
                    train_images=train_pixels if request.input_checks else (),
                    review_below=request.review_below, tolerance=request.tolerance,
                    extra_provenance=extra)
    return result, record, held_out_flags(result.path, parity)

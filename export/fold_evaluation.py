"""The folds of a cross-validation (``leukedge crossval``) evaluated as the product runs them.

Per fold (``fold<k>/eval.json``, skipped when present, so a run resumes):

1. temperature fitted on the fold's validation logits;
2. the one-file ONNX model (parity with the trained model on every 16th held-out image; input
   checks set on the fold's training images);
3. for a CNN, static INT8 per channel, 200 calibration images from the fold's training images:
   with full 8-bit weights (what VNNI CPUs run exactly) and as the ``-int8-avx2`` files are
   made (7-bit weights where CPUs without VNNI pair products in 16 bits, 8-bit depthwise: the
   setting that cannot saturate there); SVM and XGBoost rows stay FP32;
4. the held-out fold through every file, clean and under the colour jitter of docs/RESULTS.md
   (one draw per image, seed 2026), and FP32 with test-time augmentation (mean of the 8 flips
   and quarter turns);
5. the input checks on the held-out images and on images that are not smears.

Then :mod:`leukedge.export.fold_summary` writes ``summary.json``, ``summary.md`` and the
``calibration.json`` that ``leukedge export --calibration`` puts into the final model.

The trained models are handed in by a loader (``leukedge crossval-eval`` passes
:func:`leukedge.train.crossval.load_fold`), so this module never imports the training code.

Example:
    >>> result = evaluate_crossval("runs/cv/lite0-224-s3", "../shared/data/ALL", load_fold)
    >>> print(result.markdown)
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from leukedge.modelkit.acquisition import EVALUATION_JITTER, random_color
from leukedge.modelkit.confidence import fit_temperature
from leukedge.modelkit.dataset import discover_dataset
from leukedge.modelkit.evaluation.labelled import select_evenly
from leukedge.modelkit.run_folder import RunFolder
from leukedge.modelkit.run_record import Calibration, RunRecord
from leukedge.runtime.classifier import Classifier
from leukedge.runtime.decode import load_image
from leukedge.runtime.files import atomic_write_text
from leukedge.runtime.models import AVX2_VARIANT, run_folder_file
from leukedge.runtime.session import create_session

from .fold_summary import INT8_AVX2_SETTING, INT8_SETTING, fold_metrics, write_summary
from .onnx_export import export_classical, export_keras, model_probabilities
from .quantize import QuantizeOptions, quantize_model

log = logging.getLogger(__name__)
JITTER_SEED = 2026
CALIBRATION_IMAGES = 200
PARITY_STRIDE = 16  # every 16th held-out image checks the export
FoldLoader = Callable[[Path], "tuple[Any, RunRecord]"]  # fold folder -> (model, record)


@dataclass(frozen=True)
class CrossvalEvaluation:
    """What :func:`evaluate_crossval` wrote: the summary, its table and the files."""

    summary: dict
    markdown: str
    evaluated: tuple[int, ...]  # folds evaluated now (the others were done already)
    files: tuple[Path, ...]


def fold_folders(cv_dir: str | os.PathLike) -> list[Path]:
    """The finished folds (``fold<k>/oof.json``) of a cross-validation folder."""
    return sorted(p for p in Path(cv_dir).glob("fold*") if (p / "oof.json").is_file())


def evaluate_crossval(cv_dir: str | os.PathLike, data_dir: str | os.PathLike,
                      load_fold: FoldLoader) -> CrossvalEvaluation:
    """Evaluate every finished fold not evaluated yet, then write the summary files.

    Raises:
        ValueError: no finished fold under ``cv_dir``, or ``data_dir`` is not the data the
            folds were trained on.
    """
    cv_dir = Path(cv_dir)
    folders = fold_folders(cv_dir)
    if not folders:
        raise ValueError(f"CV_DIR {cv_dir}: no finished fold (fold<k>/oof.json) there; "
                         "run `leukedge crossval` first")
    folds, evaluated = [], []
    for folder in folders:
        target = folder / "eval.json"
        if not target.is_file():
            log.info("evaluating %s", folder)
            model, record = load_fold(folder)
            result = evaluate_fold(folder, model, record, data_dir)
            atomic_write_text(target, json.dumps(result) + "\n")
            evaluated.append(result["fold"])
        folds.append(json.loads(target.read_text()))
    summary, markdown, files = write_summary(cv_dir, folds)
    return CrossvalEvaluation(summary, markdown, tuple(evaluated), files)


@dataclass(frozen=True)
class FoldImages:
    """A fold's held-out images (decoded, with labels) and its training images' paths."""

    paths: list[str]
    pixels: list[np.ndarray]
    labels: np.ndarray
    train_files: list[Path]


def fold_images(oof: dict, data_dir: str | os.PathLike) -> FoldImages:
    """The held-out and training images of a fold, from ``DATA/<class>`` or the ALL layout.

    Raises:
        ValueError: ``data_dir`` lacks the fold's held-out images.
    """
    try:
        dataset = discover_dataset(data_dir, classes=oof["classes"])
    except ValueError as e:
        raise ValueError(f"--data {e}") from e
    held, root = oof["held_out"], dataset.root
    missing = [p for p in held["paths"] if not (root / p).is_file()]
    if missing:
        raise ValueError(f"--data {data_dir}: {len(missing)} of the fold's held-out images are "
                         f"not there (e.g. {missing[0]}); give the data the folds were "
                         "trained on")
    taken = set(held["paths"]) | set(oof["val"]["paths"])
    train = [dataset.path(r) for r in dataset.records if r.relpath not in taken]
    return FoldImages(list(held["paths"]), [load_image(root / p) for p in held["paths"]],
                      np.array(held["labels"]), sorted(train))


def not_smears() -> dict[str, np.ndarray]:
    """Blank frames, noise and scikit-image's natural photos (none is a blood smear)."""
    rng = np.random.default_rng(0)
    out = {"black": np.zeros((224, 224, 3), np.uint8),
           "white": np.full((224, 224, 3), 255, np.uint8),
           "grey": np.full((224, 224, 3), 128, np.uint8),
           "noise": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
           "noise_large": rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)}
    try:
        from skimage import data
    except ImportError:
        return out
    for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                 "immunohistochemistry", "retina", "camera", "coins", "moon", "page", "text"):
        im = getattr(data, name)()
        out[name] = np.ascontiguousarray(np.stack([im] * 3, -1) if im.ndim == 2 else im[..., :3])
    return out


def dihedral(images: list[np.ndarray]) -> list[list[np.ndarray]]:
    """The 8 flips and quarter turns of every image (the 4 unflipped turns first)."""
    return [[np.ascontiguousarray(np.rot90(im[:, ::-1] if flip else im, k)) for im in images]
            for flip in (False, True) for k in range(4)]


def _export_fold(folder: Path, model: Any, record: RunRecord, images: FoldImages) -> tuple:
    """(export result, INT8 result or None, export seconds, quantize seconds)."""
    run, started = RunFolder(folder), time.perf_counter()
    exporter = export_classical if run.classical else export_keras
    export = exporter(model, run.onnx_model, record,
                      parity_images=images.pixels[::PARITY_STRIDE],
                      parity_source="held-out fold",
                      train_images=[load_image(p) for p in images.train_files])
    export_s = time.perf_counter() - started
    if run.classical:  # SVM, XGBoost: no quantization
        return export, None, export_s, 0.0
    calib = tuple(select_evenly(images.train_files, CALIBRATION_IMAGES))
    started = time.perf_counter()
    quant = quantize_model(run.onnx_model, folder / run_folder_file("int8"),
                           QuantizeOptions(calib_paths=calib, **INT8_SETTING), force=True)
    quant_s = time.perf_counter() - started
    quantize_model(run.onnx_model, folder / run_folder_file(AVX2_VARIANT),
                   QuantizeOptions(calib_paths=calib, **INT8_AVX2_SETTING), force=True)
    return export, quant, export_s, quant_s


def _probabilities(folder: Path, files: dict[str, str], pixels: list[np.ndarray]) -> dict:
    """Each file's probabilities on the held-out images, clean, jittered and (FP32) TTA."""
    jittered = [random_color(im, EVALUATION_JITTER, np.random.default_rng([JITTER_SEED, i]))
                for i, im in enumerate(pixels)]
    probs = {}
    for name, file in files.items():
        session, _ = create_session(folder / file, provider="cpu")
        probs[name] = model_probabilities(session, pixels)
        probs[f"{name}_jitter"] = model_probabilities(session, jittered)
        if name == "fp32":
            views = [model_probabilities(session, view) for view in dihedral(pixels)]
            probs["fp32_tta"] = np.mean(views, axis=0)
            probs["fp32_tta4"] = np.mean(views[:4], axis=0)  # the quarter turns, no flip
    return probs


def _input_checks(model_file: Path, pixels: list[np.ndarray], export) -> dict:
    """What the input checks flag among the held-out images and the images of no smear."""
    clf = Classifier(model_file, provider="cpu")
    flagged = sum(any(r.code != "low_confidence" for r in p.review_reasons)
                  for p in clf.predict_pixels(pixels))
    outsiders = {name: clf.predict_pixels([im])[0] for name, im in not_smears().items()}
    return {"limits": export.contract.input_checks.to_dict(),
            "held_out_flagged_by_checks": int(flagged),
            "not_smears": {k: {"label": v.label, "confidence": v.confidence,
                               "needs_review": v.needs_review,
                               "reasons": [r.to_dict() for r in v.review_reasons]}
                           for k, v in outsiders.items()}}


def evaluate_fold(folder: str | os.PathLike, model: Any, record: RunRecord,
                  data_dir: str | os.PathLike) -> dict:
    """One fold exported, quantized and scored: the dict ``fold<k>/eval.json`` holds.

    Args:
        folder: the fold's folder (``oof.json`` and the trained model).
        model: the trained model, loaded: Keras, or the ONNX network of an SVM/XGBoost row.
        record: its run record (the temperature is fitted here, on the validation logits).
        data_dir: the labelled images the folds were trained on (``DIR/<class>`` or ALL).
    """
    folder = Path(folder)
    oof = json.loads((folder / "oof.json").read_text())
    images = fold_images(oof, data_dir)
    temperature = fit_temperature(np.array(oof["val"]["logits"]), np.array(oof["val"]["labels"]))
    record = record.with_updates(calibration=Calibration(temperature=temperature,
                                                         fitted_on="fold validation split"))
    export, quant, export_s, quant_s = _export_fold(folder, model, record, images)
    files = {"fp32": run_folder_file()} if quant is None else {
        "fp32": run_folder_file(), "int8": run_folder_file("int8"),
        "int8_avx2": run_folder_file(AVX2_VARIANT)}
    probs = _probabilities(folder, files, images.pixels)
    labels = images.labels
    return {
        "fold": oof["fold"], "recipe": oof["recipe"], "n": len(labels),
        "temperature": temperature, "export_seconds": round(export_s, 1),
        "quantize_seconds": round(quant_s, 1), "train_seconds": oof["seconds"],
        "train_images_per_second": oof["train_images_per_second"],
        "size_bytes": {"fp32": export.size_bytes, "int8": quant.size_bytes if quant else None},
        "parity_max_abs_diff": export.parity.max_abs_diff,
        "int8_agreement": (float(np.mean(probs["fp32"].argmax(1) == probs["int8"].argmax(1)))
                           if "int8" in probs else None),
        "rows": {name: fold_metrics(p, labels, oof["classes"]) for name, p in probs.items()},
        "probs": {k: v.round(6).tolist() for k, v in probs.items()},
        "labels": labels.tolist(), "paths": images.paths,
        "logits_keras": oof["held_out"]["logits"],
        "input_checks": _input_checks(folder / files["int8" if quant else "fp32"],
                                      images.pixels, export),
    }

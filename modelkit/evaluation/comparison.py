"""``leukedge compare``: several models (and optionally the Keras original) on the same images.

One row per model: the reference study's metrics on labelled images, agreement with the first
(reference) model, file size, precision, provider, and latency / throughput measured here.
ONNX models run through :class:`leukedge.runtime.classifier.Classifier` on the decoded pixels
(preprocessing is inside every model); a Keras model enters as a plain ``pixels ->
probabilities`` callable (this package never imports TensorFlow).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from leukedge.runtime.batching import images_per_run, model_runs
from leukedge.runtime.classifier import Classifier

from ..metrics import evaluate
from .labelled import LabelledSet
from .machine import describe_machine
from .timing import batch_of, percentiles_ms, time_calls

PixelsPredict = Callable[[np.ndarray], np.ndarray]  # uint8 [N, H, W, 3] -> probabilities


@dataclass(frozen=True)
class Candidate:
    """One model to compare, reduced to what the comparison needs."""

    name: str
    predict: PixelsPredict
    classes: tuple[str, ...]
    precision: str
    provider: str
    size_bytes: Optional[int] = None
    path: Optional[str] = None


@dataclass
class Comparison:
    """The rows (JSON-ready dicts, reference first) and where the numbers come from."""

    rows: list[dict]
    classes: tuple[str, ...]
    source: str
    n_images: int
    machine: dict = field(default_factory=describe_machine)

    def to_dict(self) -> dict:
        return {"source": self.source, "n_images": self.n_images, "classes": list(self.classes),
                "reference": self.rows[0]["model"] if self.rows else None,
                "machine": self.machine, "rows": self.rows}


def onnx_candidate(path: str | os.PathLike, provider: str = "auto",
                   threads: Optional[int] = None) -> Candidate:
    """An ONNX model through the runtime's Classifier."""
    clf = Classifier(path, provider=provider, threads=threads)
    return Candidate(name=Path(path).name, predict=lambda px: clf.run(px, ["probs"])["probs"],
                     classes=clf.classes, precision=clf.contract.precision,
                     provider=clf.session_info.provider, size_bytes=Path(path).stat().st_size,
                     path=str(path))


def _probabilities(cand: Candidate, images: Sequence[np.ndarray], batch: int = 8) -> np.ndarray:
    parts: dict[int, np.ndarray] = {}
    for run, pixels in model_runs(images, batch):
        probs = cand.predict(pixels)
        parts.update(zip(run, np.asarray(probs, np.float64)))
    return np.stack([parts[i] for i in range(len(images))])


def _timing(cand: Candidate, images: Sequence[np.ndarray], iterations: int, warmup: int) -> dict:
    same = [im for im in images if im.shape == images[0].shape]
    x1 = np.stack(same[:1])
    lat = percentiles_ms(time_calls(lambda: cand.predict(x1), iterations, warmup), (50, 95))
    n = images_per_run(images[0].shape, 8)  # 8 images, fewer when they are large
    xn = batch_of(np.stack(same[:n]), n)
    tn = time_calls(lambda: cand.predict(xn), max(3, iterations // 4), 1)
    return {"latency_p50_ms": lat["p50_ms"], "latency_p95_ms": lat["p95_ms"],
            "throughput_ips": float(n / tn.mean())}


def comparison_row(cand: Candidate, probs: np.ndarray, reference: np.ndarray, labelled: LabelledSet,
                   timing: dict) -> dict:
    """One row: metrics, agreement with the reference, size, precision, provider, timing."""
    metrics = evaluate(labelled.labels, probs.argmax(1), labelled.classes)
    diff = np.abs(probs - reference)
    return {"model": cand.name, "path": cand.path, "precision": cand.precision,
            "provider": cand.provider, "size_bytes": cand.size_bytes,
            "accuracy": metrics["accuracy"], "accuracy_ci95": metrics["accuracy_ci95"],
            "total_cost": metrics["total_cost"], "cost_per_sample": float(metrics["cost_per_sample"]),
            "cost_sensitive_accuracy": float(metrics["cost_sensitive_accuracy"]),
            "macro_f1": metrics["macro_f1"], "weighted_f1": metrics["weighted_f1"],
            "top1_agreement": float(np.mean(probs.argmax(1) == reference.argmax(1))),
            "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            **timing, "confusion_matrix": metrics["confusion_matrix"]}


def compare_candidates(candidates: Sequence[Candidate], labelled: LabelledSet, *,
                       iterations: int = 20, warmup: int = 2) -> Comparison:
    """Score every candidate on ``labelled``; the first one is the reference.

    Raises:
        ValueError: no candidate, or their class lists differ from each other or the data's.
        ImageError: labelled images that cannot be decoded (named).
    """
    if not candidates:
        raise ValueError("nothing to compare: give at least one model")
    for cand in candidates:
        if tuple(cand.classes) != tuple(labelled.classes):
            raise ValueError(f"{cand.name} has classes {list(cand.classes)}, the data "
                             f"{list(labelled.classes)}; compare models of one class set")
    images = labelled.decode()
    rows, reference = [], None
    for cand in candidates:
        probs = _probabilities(cand, images)
        reference = probs if reference is None else reference
        rows.append(comparison_row(cand, probs, reference, labelled,
                                   _timing(cand, images, iterations, warmup)))
    return Comparison(rows=rows, classes=tuple(labelled.classes), source=labelled.source,
                      n_images=len(labelled))


def compare_models(model_paths: Sequence[str | os.PathLike], labelled: LabelledSet, *,
                   keras_predict: Optional[PixelsPredict] = None, keras_name: str = "keras",
                   keras_size_bytes: Optional[int] = None, provider: str = "auto",
                   threads: Optional[int] = None, iterations: int = 20,
                   warmup: int = 2) -> Comparison:
    """Compare ONNX files (and optionally a Keras predict callable, which becomes the reference).

    Example:
        >>> data = load_labelled("/data/ALL", classes, split_manifest="runs/a/split.json")
        >>> table = compare_models(["model.onnx", "model-int8.onnx"], data)
        >>> [row["top1_agreement"] for row in table.rows]
        [1.0, 0.99]
    """
    if not model_paths:
        raise ValueError("compare needs at least one ONNX model")
    candidates = [onnx_candidate(p, provider, threads) for p in model_paths]
    if keras_predict is not None:
        first = candidates[0]
        candidates.insert(0, Candidate(name=keras_name, predict=keras_predict,
                                       classes=first.classes, precision="fp32",
                                       provider="tensorflow-cpu", size_bytes=keras_size_bytes))
    return compare_candidates(candidates, labelled, iterations=iterations, warmup=warmup)

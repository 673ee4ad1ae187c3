"""From a :class:`~.site_fit.SiteFit` to model files: the parent and its INT8 sibling, the
adapted graph with its contract, and the check that the file computes what was fitted.

A parent ``X-fp32.onnx`` (or ``X.onnx``) with ``X-int8.onnx`` and ``X-int8-avx2.onnx`` beside
it is fitted on its FP32 file and all get the same site head; naming a quantized file (or a
bundled name such as ``default``, which picks INT8 on a VNNI CPU and the AVX2 file on other x86
CPUs) finds the FP32 one the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from leukedge.runtime.batching import model_runs
from leukedge.runtime.contract import ModelContract, embed_contract, leukedge_version
from leukedge.runtime.errors import CheckRefused
from leukedge.runtime.models import AVX2_VARIANT, resolve_model

from .site_fit import SiteData, SiteFit
from .site_graph import adapted_model

PARITY_TOLERANCE = 1e-3  # max |probs(file) - probs(numpy fit)|
METHOD = ("site head: logistic regression on the members' head inputs with the parent's "
          "log-probabilities as a fixed offset, L2 chosen by stratified k-fold; temperature on "
          "out-of-fold predictions; review threshold never below the parent's; input-check "
          "limits widened only")
BATCH = 16


class ParityRefused(CheckRefused, RuntimeError):
    """The adapted graph does not compute what was fitted (exit 1)."""


# the quantized siblings adapt carries the site head into, by name suffix
SIBLINGS = ("int8", AVX2_VARIANT)


@dataclass(frozen=True)
class ParentFiles:
    """The file adapt fits on, and its quantized siblings (suffix -> file) where it has some:
    ``int8`` (full 8-bit weights) and ``int8-avx2`` (for CPUs without VNNI)."""

    fitted: Path
    siblings: dict[str, Path]

    @property
    def int8(self) -> Optional[Path]:
        return self.siblings.get("int8")


def parent_files(model: str | os.PathLike | None) -> ParentFiles:
    """``--from`` (a bundled name or a file; None: the bundled default) -> its files. A
    quantized file (``X-int8.onnx``, ``X-int8-avx2.onnx``, or a bundled name that picks one on
    this CPU) leads to its FP32 file (``X-fp32.onnx`` or ``X.onnx``) when there is one.

    Raises:
        ModelNotFoundError: no such model.
    """
    path = resolve_model(model)
    stem = path.name[:-len(".onnx")] if path.name.endswith(".onnx") else path.stem
    base = stem
    for suffix in sorted(SIBLINGS, key=len, reverse=True) + ["fp32"]:
        if stem.endswith(f"-{suffix}"):
            base = stem[:-len(suffix) - 1]
            break
    fitted = path
    if base != stem and not stem.endswith("-fp32"):
        fitted = next((f for f in (path.with_name(f"{base}-fp32.onnx"),
                                   path.with_name(f"{base}.onnx")) if f.is_file()), path)
    siblings = {s: path.with_name(f"{base}-{s}.onnx") for s in SIBLINGS}
    return ParentFiles(fitted, {s: f for s, f in siblings.items()
                                if f.is_file() and f != fitted})


def measure(classifier, images: Sequence[np.ndarray], labels: np.ndarray,
            names: Sequence[str]) -> tuple[SiteData, list]:
    """Run a probe classifier (:func:`~.site_graph.probe_model` of the parent, whose extra
    outputs are the features tensors ``names``) over the images: (what it computes, as
    :class:`SiteData`; the parent's own predictions)."""
    wanted = classifier.default_outputs + names
    rows: dict[int, dict] = {}
    for indices, batch in model_runs(list(images), BATCH):
        outputs = classifier.run(batch, wanted)
        for j, i in enumerate(indices):
            rows[i] = {k: v[j] for k, v in outputs.items()}
    ordered = [rows[i] for i in range(len(images))]
    predictions = [classifier.prediction_from_outputs(
        {k: r[k] for k in classifier.default_outputs}) for r in ordered]
    measures = {k: np.array([float(r[k]) for r in ordered])
                for k in ("contrast", "stain_coverage", "ood_score") if k in wanted}
    data = SiteData({n: np.stack([r[n] for r in ordered]).astype(np.float64) for n in names},
                    np.stack([r["probs"] for r in ordered]).astype(np.float64), measures,
                    np.asarray(labels, np.int64))
    return data, predictions


def site_contract(parent: ModelContract, fit: SiteFit, parent_sha256: str, provenance: dict,
                  metrics: Optional[dict] = None) -> ModelContract:
    """The adapted model's contract: the parent's, with the site's threshold, limits,
    temperature, calibration, provenance and (when known) held-out metrics."""
    return parent.with_updates(
        review_below=fit.review_below, input_checks=fit.input_checks,
        temperature=fit.temperature,
        calibration={"fitted_on": f"{fit.summary['images']} site images, "
                                  f"{fit.summary['folds']}-fold out-of-fold predictions",
                     "ece_before": fit.summary["out_of_fold"]["parent_ece"],
                     "ece_after": fit.summary["out_of_fold"]["ece"],
                     "site": fit.summary, "parent": dict(parent.calibration)},
        provenance={**provenance, "parent_sha256": parent_sha256,
                    "parent_precision": parent.precision, "method": METHOD},
        metrics=metrics, leukedge_version=leukedge_version(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def build_site_model(parent_proto: Any, contract: ModelContract, fit: SiteFit) -> Any:
    """The adapted ONNX model (checked by onnx.checker) with ``contract`` embedded."""
    model = adapted_model(parent_proto, fit.weights(), fit.correction.bias, fit.temperature)
    return embed_contract(model, contract)


def check_parity(classifier, images: Sequence[np.ndarray], expected: np.ndarray,
                 tolerance: float = PARITY_TOLERANCE) -> float:
    """The largest difference between the file's ``probs`` and the numpy fit's.

    Raises:
        ParityRefused: over ``tolerance`` (the graph does not compute what was fitted).
    """
    got = np.zeros(np.shape(expected))
    for indices, batch in model_runs(list(images), BATCH):
        got[indices] = classifier.run(batch, ["probs"])["probs"]
    worst = float(np.abs(got - expected).max()) if len(got) else 0.0
    if not worst <= tolerance:
        raise ParityRefused(f"{classifier.model_path}: the adapted graph's probabilities differ "
                           f"from the fitted ones by {worst:.2e} (> {tolerance:g})")
    return worst

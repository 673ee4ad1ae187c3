"""`leukedge ensemble`: several exported models joined into one file that averages them.

The members are one-file models (``leukedge export``, optionally ``leukedge quantize``d); the
result takes the same uint8 ``image``, runs every member's own preprocessing and network on it
and outputs the weighted mean of their calibrated ``probs`` (modelkit/graph/ensemble.py). The
input checks and the stain mask are the first member's, so put the CNN first. What the
ensemble is worth comes from a cross-validation of the same members (``leukedge
crossval-ensemble`` writes a ``calibration.json``: the review threshold and the metrics per precision); without
one the contract says no metrics were measured and keeps the first member's threshold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from leukedge.runtime.contract import ModelContract, embed_contract, read_contract, save_model
from leukedge.runtime.files import sha256_file
from leukedge.runtime.session import create_session

from .cv_calibration import CvCalibration
from .errors import ExportError, ParityError
from .onnx_export import model_probabilities
from .parity import ParityReport, compare_probabilities

ENSEMBLE_BACKBONE = "ensemble"
PARITY_TOLERANCE = 1e-5
_PRECISION_ORDER = ("int8", "fp16", "fp32")  # the ensemble is as low as its lowest member


@dataclass(frozen=True)
class EnsembleResult:
    path: Path
    contract: ModelContract
    size_bytes: int
    parity: Optional[ParityReport]


def _members(paths: Sequence[Path]) -> list[ModelContract]:
    contracts = [read_contract(p) for p in paths]
    first = contracts[0]
    for path, c in zip(paths[1:], contracts[1:]):
        if tuple(c.classes) != tuple(first.classes):
            raise ValueError(f"{path}: classes {list(c.classes)} differ from {paths[0]}'s "
                             f"{list(first.classes)}; members must predict the same classes in "
                             "the same order")
    return contracts


def ensemble_contract(paths: Sequence[Path], contracts: Sequence[ModelContract],
                      weights: Sequence[float], calibration: Optional[CvCalibration],
                      heatmap: bool = False) -> ModelContract:
    """The ensemble's contract: the first member's preprocessing description, outputs and input
    checks (``heatmap``: the joined graph has that output, from its CNN member); the members,
    their weights (summing to 1) and hashes; the cross-validated metrics if given."""
    first = contracts[0]
    outputs = tuple(o for o in first.outputs if o != "heatmap") + (("heatmap",) if heatmap
                                                                    else ())
    precision = next(p for p in _PRECISION_ORDER if any(c.precision == p for c in contracts))
    members = [{"file": Path(p).name, "sha256": sha256_file(p), "backbone": c.backbone,
                "precision": c.precision, "weight": round(float(w), 6),
                "input_size": list(c.preprocessing.input_size), "temperature": c.temperature}
               for p, c, w in zip(paths, contracts, weights)]
    excluded = sorted({h for c in contracts for h in c.provenance.get("excluded_sha256", [])})
    provenance = {"members": [m["sha256"] for m in members], "metrics_source": "none"}
    if excluded:
        provenance["excluded_sha256"] = excluded
    metrics, review_below, calibration_info = None, first.review_below, {}
    if calibration is not None:
        metrics = calibration.metrics.get(precision) or calibration.metrics.get("fp32")
        review_below = calibration.review_below
        provenance.update({"metrics_source": calibration.source,
                           "metrics_by_precision": calibration.metrics})
        calibration_info = {"fitted_on": calibration.source, "ece_before": calibration.ece_before,
                            "ece_after": calibration.ece_after}
    quantization = None
    if first.quantization:  # keeps the INT8 warnings of the first member's file
        quantization = {**first.quantization, "scope": "member 0 "
                        f"({first.backbone}); the other members as their own files"}
    return first.with_updates(
        precision=precision, backbone=ENSEMBLE_BACKBONE, outputs=outputs,
        model_info={"members": members, "input_size": list(first.preprocessing.input_size),
                    "parameters": sum(int(c.model_info.get("parameters") or 0)
                                      for c in contracts)},
        weights={"members": [c.weights for c in contracts]}, provenance=provenance,
        metrics=metrics, review_below=review_below, temperature=1.0,
        calibration=calibration_info, quantization=quantization,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def normalised_weights(weights: Optional[Sequence[float]], n: int) -> np.ndarray:
    """One positive weight per member, summing to 1 (equal when None).

    Raises:
        ValueError: naming ``--weights``: a count other than ``n``, or a weight that is not a
            positive finite number.
    """
    w = np.array(weights if weights is not None else [1.0] * n, float)
    if len(w) != n or not np.isfinite(w).all() or (w <= 0).any():
        raise ValueError(f"--weights: one positive number per member ({n}), got "
                         f"{list(weights or [])}")
    return w / w.sum()


def make_ensemble(member_paths: Sequence[str | os.PathLike], out_path: str | os.PathLike, *,
                  weights: Optional[Sequence[float]] = None,
                  calibration: Optional[CvCalibration] = None,
                  parity_images: Sequence[np.ndarray] = (), overwrite: bool = False
                  ) -> EnsembleResult:
    """Join exported models into one file whose ``probs`` is their weighted mean.

    Checks the joined graph against the members run one by one (on ``parity_images``) before
    anything is written; the file is written atomically.

    Raises:
        ValueError: fewer than two members, a weight missing, members with different classes,
            the output is a member, or exists without ``overwrite``.
        ParityError: the joined graph disagrees with the members' weighted mean.
    """
    import onnx

    from leukedge.modelkit.graph.ensemble import compose_ensemble
    from leukedge.modelkit.graph.heatmap import has_heatmap

    paths = [Path(p) for p in member_paths]
    out = Path(out_path)
    if len(paths) < 2:
        raise ValueError("an ensemble needs at least two member models")
    weights = [float(w) for w in normalised_weights(weights, len(paths))]
    if any(out.resolve() == p.resolve() for p in paths if p.exists()):
        raise ValueError(f"{out}: is one of the members; write the ensemble to a new file")
    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists; choose another --out or pass --overwrite")
    contracts = _members(paths)
    try:
        joined = compose_ensemble([onnx.load(str(p)) for p in paths], weights)
    except (ValueError, onnx.checker.ValidationError) as e:
        raise ExportError(f"the members cannot be joined: {e}") from e
    contract = ensemble_contract(paths, contracts, weights, calibration, has_heatmap(joined))
    embed_contract(joined, contract)
    data = joined.SerializeToString()
    parity = None
    if parity_images:
        session, _ = create_session(data, provider="cpu")
        got = model_probabilities(session, parity_images)
        parts = [model_probabilities(create_session(p, provider="cpu")[0], parity_images)
                 for p in paths]
        expected = np.tensordot(weights, parts, axes=1)
        parity = compare_probabilities(expected, got, tolerance=PARITY_TOLERANCE,
                                       source="weighted mean of the members' own runs")
        if not parity.passed:
            raise ParityError(f"the ensemble differs from its members' weighted mean: "
                              f"{parity.describe()}. Nothing was written.")
    save_model(joined, out)
    return EnsembleResult(out, contract, len(data), parity)

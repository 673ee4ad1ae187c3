"""A quantized child's contract: the parent's, with precision, quantization and lineage.

The child keeps what its parent's contract says about the data, the preprocessing and the
review rules; ``quantization`` records how it was made, ``provenance.parent_sha256`` names the
parent. Metrics are carried over only where they were measured for the child's setting: a
parent exported with a cross-validation's ``calibration.json`` knows the INT8 metrics of one
quantization setting (:mod:`leukedge.export.cv_calibration`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from leukedge.modelkit.evaluation.machine import describe_machine
from leukedge.runtime.contract import ModelContract, leukedge_version

# ``options`` below is a leukedge.export.quantize.QuantizeOptions (not imported: no circle)
PRECISION_OF = {"static": "int8", "dynamic": "int8", "fp16": "fp16"}


def child_contract(parent: ModelContract, parent_sha256: str, options: Any,
                   calib_sha256: Optional[str], extra: dict) -> ModelContract:
    """The parent's contract with precision, quantization settings and lineage updated."""
    static = options.method == "static"
    quantization = {
        "method": options.method,
        "calib_method": options.calib_method if static else None,
        "per_channel": options.per_channel if options.method != "fp16" else None,
        "calibration_set_sha256": calib_sha256,
        "calib_size": len(options.calib_paths) if static else 0,
        "excluded_nodes": list(options.exclude_nodes),
        "scope": "network only; preprocessing and postprocessing stay float32",
        "quantized_on": describe_machine()["int8_acceleration"],
        **extra,
    }
    provenance = {**parent.provenance, "parent_sha256": parent_sha256,
                  "parent_precision": parent.precision}
    provenance.pop("parity", None)  # the parent's Keras parity does not describe the child
    metrics = cross_validated_metrics(parent, options)
    if metrics is None:
        provenance["metrics_source"] = "none"
    return parent.with_updates(precision=PRECISION_OF[options.method], quantization=quantization,
                               provenance=provenance, metrics=metrics, created=_now(),
                               leukedge_version=leukedge_version())


def cross_validated_metrics(parent: ModelContract, options: Any) -> Optional[dict]:
    """The child's metrics from the parent's cross-validation, when the cross-validation
    measured this very quantization setting (else None: the child has not been scored)."""
    by_precision = parent.provenance.get("metrics_by_precision") or {}
    setting = parent.provenance.get("cv_int8_setting") or {}
    precision = PRECISION_OF[options.method]
    if precision != "int8" or "int8" not in by_precision or not setting:
        return None
    ours = {"method": options.method, "per_channel": options.per_channel,
            "reduce_range": options.reduce_range, "weight_type": options.weight_type}
    same = all(ours[k] == v for k, v in setting.items() if k in ours)
    return dict(by_precision["int8"]) if same else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

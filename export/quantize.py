"""FP32 ONNX -> INT8 (static QDQ or dynamic) or FP16, with the contract carried over and a gate.

- ``static``: INT8 QDQ through ``onnxruntime.quantization.quantize_static``, per-channel weights,
  calibrated on real images through the shared preprocessing (:mod:`.calibration`), after
  onnxruntime's ``quant_pre_process`` (shape inference + fusions). The fast one on CPU
  (TOOLCHAIN.md: 39 ms vs 68 ms FP32 for the DenseNet-201 hybrid).
- ``dynamic``: INT8 weights, activations quantized at run time. Measured 4x SLOWER than FP32 for
  these convnets (``ConvInteger``); kept for comparison.
- ``fp16``: onnxconverter-common with ``keep_io_types`` (inputs and output stay float32); halves
  the file, no speed gain on CPU.

The child keeps the parent's contract with ``precision``, ``quantization`` and
``provenance.parent_sha256`` updated. With labelled data the child must pass the accuracy gate
(:mod:`.gate`) before anything is written; on failure a per-activation sensitivity pass
(:mod:`.sensitivity`) names the nodes to keep in float.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from leukedge.runtime.contract import (ModelContract, contract_of_proto, embed_contract,
                                       leukedge_version, save_model)
from leukedge.runtime.files import sha256_file
from leukedge.runtime.session import RuntimeSetupError, create_session

from .calibration import ImageCalibrationReader, calibration_set_sha256, select_evenly
from .errors import AccuracyGateError, QuantizationError
from .evaluation import LabelledSet, input_names_of, metrics_of, session_probabilities
from .gate import DEFAULT_MAX_COST_RISE, DEFAULT_MAX_DROP_PP, GateResult, check_limits
from .machine import describe_machine
from .parity import ParityReport, compare_probabilities, preprocessed_inputs, synthetic_images
from .quant_backends import run_backend
from .sensitivity import activation_sensitivity, exclude_suggestion

METHODS = ("static", "dynamic", "fp16")
CALIB_METHODS = ("minmax", "entropy", "percentile")
WEIGHT_TYPES = ("int8", "uint8")
AGREEMENT_TOLERANCE = 0.05  # informative only: INT8 moves probabilities by a few percent
PRECISION_OF = {"static": "int8", "dynamic": "int8", "fp16": "fp16"}


@dataclass(frozen=True)
class QuantizeOptions:
    """How to quantize. ``calib_paths`` (sorted, spread evenly) are needed for ``static`` only."""

    method: str = "static"
    calib_paths: tuple[Path, ...] = ()
    calib_method: str = "minmax"
    per_channel: bool = True
    reduce_range: bool = True  # 7-bit weights: INT8 kernels of CPUs without VNNI saturate otherwise
    exclude_nodes: tuple[str, ...] = ()
    weight_type: str = "int8"  # "uint8" (u8u8 kernels) does not saturate on AVX2 CPUs either

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"Unknown method {self.method!r}. Valid: {', '.join(METHODS)}")
        if self.weight_type not in WEIGHT_TYPES:
            raise ValueError(f"Unknown weight type {self.weight_type!r}. "
                             f"Valid: {', '.join(WEIGHT_TYPES)}")
        if self.calib_method not in CALIB_METHODS:
            raise ValueError(f"Unknown calibration method {self.calib_method!r}. "
                             f"Valid: {', '.join(CALIB_METHODS)}")
        if self.method == "static" and not self.calib_paths:
            raise ValueError("static quantization needs calibration images (--calib DIR, or "
                             "--data with --split-manifest to use the manifest's train split)")


@dataclass(frozen=True)
class QuantizeResult:
    """What :func:`quantize_model` wrote and how the child compares with its parent."""

    path: Path
    contract: ModelContract
    agreement: ParityReport
    gate: Optional[GateResult]
    size_bytes: int
    parent_size_bytes: int
    seconds: float
    notes: tuple[str, ...] = ()


def child_contract(parent: ModelContract, parent_sha256: str, options: QuantizeOptions,
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
        **extra,
    }
    provenance = {**parent.provenance, "parent_sha256": parent_sha256,
                  "parent_precision": parent.precision}
    provenance.pop("parity", None)  # the parent's Keras parity does not describe the child
    return parent.with_updates(precision=PRECISION_OF[options.method], quantization=quantization,
                               provenance=provenance, metrics=None, created=_now(),
                               leukedge_version=leukedge_version())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _agreement_sources(options: QuantizeOptions, gate_data: Optional[LabelledSet],
                       spec) -> tuple[Sequence[Any], str]:
    if gate_data is not None and len(gate_data):
        return select_evenly(gate_data.paths, 32), "gate images"
    if options.calib_paths:
        return select_evenly(options.calib_paths, 32), "calibration images"
    return synthetic_images(8, spec.input_size), "synthetic"


def quantize_model(model_path: str | os.PathLike, out_path: str | os.PathLike,
                   options: QuantizeOptions, *, gate_data: Optional[LabelledSet] = None,
                   max_drop_pp: float = DEFAULT_MAX_DROP_PP,
                   max_cost_rise: float = DEFAULT_MAX_COST_RISE) -> QuantizeResult:
    """Quantize a leukedge FP32 ONNX model; write ``out_path`` only when every check passes.

    Args:
        model_path: the FP32 parent (with its contract).
        out_path: the child's path (written atomically, never on failure).
        options: method, calibration and exclusions.
        gate_data: labelled images for the accuracy gate; None skips the gate.
        max_drop_pp: largest allowed accuracy drop, percentage points.
        max_cost_rise: largest allowed rise of misclassification cost per image.

    Raises:
        AccuracyGateError: the gate refused; ``.offenders`` lists nodes to keep in float.
        QuantizationError: onnxruntime could not quantize, or the child does not run.

    Example:
        >>> opts = QuantizeOptions("static", tuple(calibration_files("calib/", 100)))
        >>> quantize_model("model.onnx", "model-int8.onnx", opts, gate_data=test_set).gate.passed
        True
    """
    import onnx

    options.validate()
    check_limits(max_drop_pp, max_cost_rise)
    started = time.perf_counter()
    parent_proto = onnx.load(str(model_path))
    parent = contract_of_proto(parent_proto, str(model_path))
    if parent.precision != "fp32":
        raise QuantizationError(f"{model_path} is already {parent.precision}; quantize the FP32 "
                                f"parent (provenance.parent_sha256 names it)")
    calib_sha = calibration_set_sha256(options.calib_paths) if options.method == "static" else None
    with tempfile.TemporaryDirectory(prefix="leukedge-quant-") as work:
        reader = (ImageCalibrationReader(options.calib_paths, parent.preprocessing,
                                         input_names_of(parent)) if options.calib_paths else None)
        backend = run_backend(Path(model_path), parent_proto, Path(work), options, reader)
        contract = child_contract(parent, sha256_file(model_path), options, calib_sha, backend.extra)
        child_bytes = embed_contract(backend.proto, contract).SerializeToString()
        agreement, gate = _check_child(model_path, child_bytes, parent, contract, options,
                                       gate_data, max_drop_pp, max_cost_rise, backend, work)
    if gate is not None:
        contract = contract.with_updates(metrics={**gate.candidate, "gate": gate.to_dict()})
    save_model(embed_contract(backend.proto, contract), out_path)
    return QuantizeResult(path=Path(out_path), contract=contract, agreement=agreement, gate=gate,
                          size_bytes=Path(out_path).stat().st_size,
                          parent_size_bytes=Path(model_path).stat().st_size,
                          seconds=time.perf_counter() - started, notes=tuple(backend.notes))


@dataclass(frozen=True)
class _Child:
    """What the checks of one child model need."""

    parent_path: Path
    parent: ModelContract
    contract: ModelContract
    data: bytes
    options: QuantizeOptions
    backend: Any
    work: str


def _check_child(model_path, child_bytes, parent, contract, options, gate_data, max_drop_pp,
                 max_cost_rise, backend, work) -> tuple[ParityReport, Optional[GateResult]]:
    """The child loads and runs, agrees with the parent, and (with data) passes the gate."""
    child = _Child(Path(model_path), parent, contract, child_bytes, options, backend, work)
    try:
        child_sess, _ = create_session(child_bytes, provider="cpu")
    except RuntimeSetupError as e:
        raise QuantizationError(f"the {options.method} model does not load in ONNX Runtime: {e}") from e
    parent_sess, _ = create_session(model_path, provider="cpu")
    sources, where = _agreement_sources(options, gate_data, parent.preprocessing)
    feeds = preprocessed_inputs(sources, parent.preprocessing, input_names_of(parent))
    try:
        child_probs = session_probabilities(child_sess, contract, feeds)
    except Exception as e:  # onnxruntime raises its own exception types at run time
        raise QuantizationError(f"the {options.method} model loads but fails to run: {e}") from e
    agreement = compare_probabilities(session_probabilities(parent_sess, parent, feeds), child_probs,
                                      tolerance=AGREEMENT_TOLERANCE, source=where)
    if gate_data is None:
        return agreement, None
    return agreement, _run_gate(child, parent_sess, child_sess, gate_data, max_drop_pp, max_cost_rise)


def _run_gate(child: _Child, parent_sess, child_sess, gate_data: LabelledSet, max_drop_pp: float,
              max_cost_rise: float) -> GateResult:
    """Score parent and child on the gate images; raise :class:`AccuracyGateError` on a refusal."""
    feeds = preprocessed_inputs(gate_data.paths, child.parent.preprocessing, input_names_of(child.parent))

    def gate_of(candidate_sess) -> GateResult:
        return GateResult(
            reference=metrics_of(session_probabilities(parent_sess, child.parent, feeds), gate_data),
            candidate=metrics_of(session_probabilities(candidate_sess, child.contract, feeds), gate_data),
            max_drop_pp=max_drop_pp, max_cost_rise=max_cost_rise, source=gate_data.source)

    gate = gate_of(child_sess)
    if gate.passed:
        return gate
    emulated = None
    if child.options.method != "fp16":  # the same QDQ graph with ORT's integer kernels off
        emulated = gate_of(create_session(child.data, provider="cpu", optimization="disable")[0])
    raise _gate_error(gate, emulated, child, feeds)


def _gate_error(gate: GateResult, emulated: Optional[GateResult], child: _Child,
                gate_feeds: dict) -> AccuracyGateError:
    """The refusal, with the most useful next step: --reduce-range, or nodes to keep in float."""
    options, offenders, names, hint = child.options, [], [], ""
    if emulated is not None and emulated.passed:
        hint = (f" Emulated in float (integer kernels off) the same model reaches "
                f"{emulated.candidate['accuracy']:.2%}: this CPU's INT8 kernels saturate "
                f"({describe_machine()['int8_acceleration']}). ")
        hint += ("Quantize with --reduce-range (7-bit weights)." if not options.reduce_range
                 else "Try --no-per-channel or --method fp16.")
    elif options.method == "static" and child.backend.float_path is not None:
        n = len(next(iter(gate_feeds.values())))
        picks = np.unique(np.linspace(0, n - 1, min(n, 8)).round().astype(int)) if n else []
        feeds = [{k: v[i:i + 1] for k, v in gate_feeds.items()} for i in picks]
        offenders = activation_sensitivity(child.backend.float_path, child.backend.quant_path,
                                           feeds, child.work)
        names = exclude_suggestion(offenders)
        hint = (" A loss spread over many layers is not fixed by exclusions: compare "
                "--no-per-channel, --calib-method percentile or a larger --calib-size.")
        if names:
            hint += f" Try keeping the worst nodes in float: --exclude-nodes {','.join(names)}"
    elif options.method == "dynamic":
        hint = " (per-node sensitivity is computed for --method static only)"
    return AccuracyGateError("Quantized model refused by the accuracy gate: " + "; ".join(gate.reasons)
                             + f". Nothing was written.{hint}", gate=gate, offenders=offenders,
                             suggested_exclude=names)

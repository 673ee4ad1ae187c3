"""FP32 ONNX -> INT8 (static QDQ or dynamic) or FP16, with the contract carried over and checks.

Only the network is quantized: the preprocessing graph in front of it and the calibrated softmax
and input checks behind it stay in float (their nodes are excluded by name,
:func:`leukedge.modelkit.graph.compose.other_node_names`), and the child takes the same uint8
pixels as its parent.

- ``static``: INT8 QDQ through ``onnxruntime.quantization.quantize_static``, per-channel weights,
  calibrated on real images (:mod:`.calibration_images`) after onnxruntime's
  ``quant_pre_process``. The fast one on CPU.
- ``dynamic``: INT8 weights, activations quantized at run time; much slower than FP32 for
  convnets (``ConvInteger``); kept for comparison.
- ``fp16``: onnxconverter-common with ``keep_io_types``; halves the file, no speed gain on CPU.

Weights: ``int8`` per channel; full range on a CPU with VNNI, 7-bit (``reduce_range``) on one
without, unless the caller says. ONNX Runtime's u8s8 matrix-product kernels on CPUs without
VNNI (AVX2 only) add pairs of products in 16 bits and can saturate with full 8-bit weights;
7-bit weights cannot. Its depthwise kernels widen to 32 bits first on every x86 CPU, so
``depthwise_full_range`` (``--depthwise-8bit``) keeps those at 8 bits: in 4 folds of the
cross-validation of the bundled CNN recipe on an AVX512-VNNI CPU that lost 0.14 points against
FP32 on average where 7-bit everywhere lost 0.43 and full range gained 0.05
(docs/RESULTS.md, "INT8 and the CPU"). The child is checked on the CPU that quantizes it, so
the default is the setting that is right there; ``--reduce-range --depthwise-8bit`` makes a
model for AVX2-only PCs on a VNNI machine (the runtime warns when a full-range model runs on
such a PC, see :mod:`leukedge.runtime.cpu`). ``uint8`` weights (u8u8 kernels) also avoid
saturation but were 10-20x slower for depthwise convolutions on the VNNI CPU.

The child keeps the parent's contract with ``precision``, ``quantization`` and
``provenance.parent_sha256`` updated. It is written only when it agrees with its parent (top-1
agreement at least ``min_agreement``) and, with labelled data, passes the accuracy gate
(:mod:`.gate`); ``force`` writes a failed child anyway, marked as failed in its contract. On a
gate failure a per-activation sensitivity pass (:mod:`.sensitivity`) names nodes to keep in
float.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from leukedge.modelkit.backbones import is_classical
from leukedge.modelkit.evaluation.labelled import LabelledSet, select_evenly
from leukedge.modelkit.evaluation.machine import describe_machine
from leukedge.modelkit.metrics import evaluate
from leukedge.runtime.contract import ModelContract, contract_of_proto, embed_contract, save_model
from leukedge.runtime.files import sha256_file
from leukedge.runtime.session import RuntimeSetupError, create_session

from .calibration_images import ImageCalibrationReader, calibration_set_sha256
from .ensemble import ENSEMBLE_BACKBONE
from .errors import AccuracyGateError, QuantizationError
from .lineage import child_contract
from .gate import DEFAULT_MAX_COST_RISE, DEFAULT_MAX_DROP_PP, GateResult, check_limits
from .onnx_export import model_probabilities
from .parity import ParityReport, compare_probabilities
from .quant_backends import run_backend
from .sensitivity import activation_sensitivity, exclude_suggestion

METHODS = ("static", "dynamic", "fp16")
CALIB_METHODS = ("minmax", "entropy", "percentile")
WEIGHT_TYPES = ("int8", "uint8")
DEFAULT_MIN_AGREEMENT = 0.98  # top-1 agreement with the FP32 parent
AGREEMENT_IMAGES = 64


@dataclass(frozen=True)
class QuantizeOptions:
    """How to quantize. ``calib_paths`` (sorted, spread evenly) are needed for ``static`` only."""

    method: str = "static"
    calib_paths: tuple[Path, ...] = ()
    calib_method: str = "minmax"
    per_channel: bool = True
    # True: 7-bit weights, no u8s8 saturation on CPUs without VNNI; None: full range on a CPU
    # with VNNI (or not x86), 7-bit without it: the child is checked on this CPU
    reduce_range: Optional[bool] = None
    exclude_nodes: tuple[str, ...] = ()
    weight_type: str = "int8"
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    # with reduce_range: depthwise convolutions keep 8-bit weights (their x86 kernels cannot
    # saturate); only matrix-product weights get 7 bits
    depthwise_full_range: bool = False

    def __post_init__(self) -> None:
        if self.reduce_range is None:
            from leukedge.runtime.cpu import has_int8_vnni

            object.__setattr__(self, "reduce_range", has_int8_vnni() is False)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"Unknown --method {self.method!r}. Valid: {', '.join(METHODS)}")
        if self.weight_type not in WEIGHT_TYPES:
            raise ValueError(f"Unknown --weight-type {self.weight_type!r}. "
                             f"Valid: {', '.join(WEIGHT_TYPES)}")
        if self.calib_method not in CALIB_METHODS:
            raise ValueError(f"Unknown --calib-method {self.calib_method!r}. "
                             f"Valid: {', '.join(CALIB_METHODS)}")
        if self.depthwise_full_range and not (self.reduce_range and self.method == "static"
                                              and self.weight_type == "int8"):
            raise ValueError("--depthwise-8bit applies to --method static with --reduce-range "
                             "and --weight-type int8")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"--min-agreement must be in [0, 1], got {self.min_agreement}")
        if self.method == "static" and not self.calib_paths:
            raise ValueError("--method static needs calibration images: --calib DIR, or --data "
                             "with --split-manifest (the manifest's train split is used)")


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
    passed: bool
    notes: tuple[str, ...] = ()


def _agreement_images(options: QuantizeOptions, gate_pixels: Optional[list]) -> tuple[list, str]:
    from leukedge.runtime.decode import load_image

    if gate_pixels:
        picks = np.unique(np.linspace(0, len(gate_pixels) - 1,
                                      min(AGREEMENT_IMAGES, len(gate_pixels))).round().astype(int))
        return [gate_pixels[i] for i in picks], "gate images"
    if options.calib_paths:
        return ([load_image(p) for p in select_evenly(options.calib_paths, AGREEMENT_IMAGES)],
                "calibration images")
    raise ValueError("checking a quantized model needs real images: give --data, or --calib "
                     "for --method static")


def quantize_model(model_path: str | os.PathLike, out_path: str | os.PathLike,
                   options: QuantizeOptions, *, gate_data: Optional[LabelledSet] = None,
                   max_drop_pp: float = DEFAULT_MAX_DROP_PP,
                   max_cost_rise: float = DEFAULT_MAX_COST_RISE,
                   force: bool = False) -> QuantizeResult:
    """Quantize a leukedge FP32 model; write ``out_path`` only when every check passes.

    Args:
        model_path: the FP32 parent (with its contract).
        out_path: the child's path (written atomically; never on failure unless ``force``).
        options: method, calibration, exclusions, minimum top-1 agreement.
        gate_data: labelled images for the accuracy gate; None skips the gate.
        max_drop_pp: largest allowed accuracy drop, percentage points.
        max_cost_rise: largest allowed rise of misclassification cost per image.
        force: write a child that failed a check anyway, marked ``checks_passed: false``.

    Raises:
        AccuracyGateError: a check refused the child (and ``force`` was not given);
            ``.offenders`` lists nodes to keep in float.
        QuantizationError: onnxruntime could not quantize, or the child does not run.

    Example:
        >>> opts = QuantizeOptions("static", tuple(calibration_files("calib/", 200)))
        >>> quantize_model("model.onnx", "model-int8.onnx", opts, gate_data=test_set).passed
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
    if parent.backbone == ENSEMBLE_BACKBONE:
        raise QuantizationError(
            f"{model_path} is an ensemble: quantize the members (those that are networks), "
            "then join them again with `leukedge ensemble`.")
    if is_classical(parent.backbone):
        raise QuantizationError(
            f"{model_path} is a {parent.backbone} model: quantization does not apply. Its "
            "network is hand-made features (histograms, gradients, co-occurrence counts) and a "
            "kernel or tree classifier, which ONNX Runtime's quantizer does not cover and which "
            "are already small and fast in float; use the FP32 file.")
    gate_pixels = gate_data.decode() if gate_data is not None else None
    calib_sha = calibration_set_sha256(options.calib_paths) if options.method == "static" else None
    with tempfile.TemporaryDirectory(prefix="leukedge-quant-") as work:
        reader = ImageCalibrationReader(options.calib_paths) if options.calib_paths else None
        backend = run_backend(Path(model_path), parent_proto, Path(work), options, reader)
        contract = child_contract(parent, sha256_file(model_path), options, calib_sha,
                                  backend.extra)
        child = _Child(Path(model_path), parent, contract,
                       embed_contract(backend.proto, contract).SerializeToString(), options,
                       backend, work)
        agreement, gate, error = _check_child(child, gate_data, gate_pixels, max_drop_pp,
                                              max_cost_rise)
    if error is not None and not force:
        raise error
    checks = {"checks_passed": error is None, "agreement": agreement.to_dict()}
    if error is not None:
        checks["failure"] = str(error)
    if gate is not None:
        checks["gate"] = gate.to_dict()
    metrics, provenance = contract.metrics, contract.provenance
    if metrics is None and gate is not None:  # no cross-validated figures: the gate's own
        metrics = dict(gate.candidate)
        provenance = {**provenance, "metrics_source": f"accuracy gate: {gate.source}"}
    contract = contract.with_updates(quantization={**contract.quantization, **checks},
                                     metrics=metrics, provenance=provenance)
    save_model(embed_contract(backend.proto, contract), out_path)
    return QuantizeResult(path=Path(out_path), contract=contract, agreement=agreement, gate=gate,
                          size_bytes=Path(out_path).stat().st_size,
                          parent_size_bytes=Path(model_path).stat().st_size,
                          seconds=time.perf_counter() - started, passed=error is None,
                          notes=tuple(backend.notes))


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


def _sessions(child: _Child) -> tuple[Any, Any]:
    try:
        child_sess, _ = create_session(child.data, provider="cpu")
    except RuntimeSetupError as e:
        raise QuantizationError(f"the {child.options.method} model does not load in ONNX "
                                f"Runtime: {e}") from e
    parent_sess, _ = create_session(child.parent_path, provider="cpu")
    return parent_sess, child_sess


def _check_child(child: _Child, gate_data: Optional[LabelledSet], gate_pixels: Optional[list],
                 max_drop_pp: float, max_cost_rise: float
                 ) -> tuple[ParityReport, Optional[GateResult], Optional[AccuracyGateError]]:
    """The child loads and runs, agrees with the parent, and (with data) passes the gate.

    Returns the agreement, the gate, and the refusal (None when every check passed).
    """
    parent_sess, child_sess = _sessions(child)
    images, where = _agreement_images(child.options, gate_pixels)
    try:
        child_probs = model_probabilities(child_sess, images)
    except Exception as e:  # onnxruntime raises its own exception types at run time
        raise QuantizationError(f"the {child.options.method} model loads but fails to run: "
                                f"{e}") from e
    agreement = compare_probabilities(model_probabilities(parent_sess, images), child_probs,
                                      tolerance=1.0, source=where)
    error = None
    if agreement.argmax_agreement < child.options.min_agreement:
        error = AccuracyGateError(
            f"Quantized model refused: top-1 agreement with the FP32 parent is "
            f"{agreement.argmax_agreement:.2%} on {agreement.n_images} {where}, under "
            f"--min-agreement {child.options.min_agreement:.2%} (max |dp| "
            f"{agreement.max_abs_diff:.3f}). Nothing was written.")
    gate = None
    if gate_data is not None:  # the gate's refusal says more (accuracy, nodes to keep in float)
        gate, gate_error = _run_gate(child, parent_sess, child_sess, gate_data, gate_pixels,
                                     max_drop_pp, max_cost_rise)
        error = gate_error or error
    return agreement, gate, error


def _gate_of(parent_sess, candidate_sess, labelled: LabelledSet, pixels: list,
             max_drop_pp: float, max_cost_rise: float) -> GateResult:
    def metrics(sess):
        return evaluate(labelled.labels, model_probabilities(sess, pixels).argmax(1),
                        labelled.classes)

    return GateResult(reference=metrics(parent_sess), candidate=metrics(candidate_sess),
                      max_drop_pp=max_drop_pp, max_cost_rise=max_cost_rise,
                      source=labelled.source)


def _run_gate(child: _Child, parent_sess, child_sess, gate_data: LabelledSet, pixels: list,
              max_drop_pp: float, max_cost_rise: float
              ) -> tuple[GateResult, Optional[AccuracyGateError]]:
    """Score parent and child on the gate images; the refusal when the child fails."""
    gate = _gate_of(parent_sess, child_sess, gate_data, pixels, max_drop_pp, max_cost_rise)
    if gate.passed:
        return gate, None
    emulated = None
    if child.options.method != "fp16":  # the same QDQ graph with ORT's integer kernels off
        emulated_sess = create_session(child.data, provider="cpu", optimization="disable")[0]
        emulated = _gate_of(parent_sess, emulated_sess, gate_data, pixels, max_drop_pp,
                            max_cost_rise)
    return gate, _gate_error(gate, emulated, child, pixels)


def _gate_error(gate: GateResult, emulated: Optional[GateResult], child: _Child,
                pixels: Sequence[np.ndarray]) -> AccuracyGateError:
    """The refusal, with the most useful next step: --reduce-range, or nodes to keep in float."""
    options, offenders, names, hint = child.options, [], [], ""
    if emulated is not None and emulated.passed:
        hint = (f" Emulated in float (integer kernels off) the same model reaches "
                f"{emulated.candidate['accuracy']:.2%}: this CPU's INT8 kernels saturate "
                f"({describe_machine()['int8_acceleration']}). ")
        hint += ("Quantize with --reduce-range --depthwise-8bit (7-bit weights where the "
                 "kernels sum pairs in 16 bits)." if not options.reduce_range
                 else "Try --no-per-channel or --method fp16.")
    elif options.method == "static" and child.backend.float_path is not None:
        picks = np.unique(np.linspace(0, len(pixels) - 1, min(len(pixels), 8)).round().astype(int))
        feeds = [{"image": pixels[i][None]} for i in picks]
        offenders = activation_sensitivity(child.backend.float_path, child.backend.quant_path,
                                           feeds, child.work)
        names = exclude_suggestion(offenders)
        hint = (" A loss spread over many layers is not fixed by exclusions: compare "
                "--no-per-channel, --calib-method percentile or a larger --calib-size.")
        if names:
            hint += f" Try keeping the worst nodes in float: --exclude-nodes {','.join(names)}"
    elif options.method == "dynamic":
        hint = " (per-node sensitivity is computed for --method static only)"
    return AccuracyGateError("Quantized model refused by the accuracy gate: "
                             + "; ".join(gate.reasons) + f". Nothing was written.{hint}",
                             gate=gate, offenders=offenders, suggested_exclude=names)


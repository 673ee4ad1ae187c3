"""Trained classifier -> the one-file ONNX model with its contract, checked before it is written.

1. Keras: size guard (before converting), then the network through tf2onnx (:mod:`.convert`).
   SVM / XGBoost: the run's ``network.onnx`` (feature graph + converted classifier, made and
   checked by :mod:`leukedge.train.classical`).
2. Input checks set on the training images (:mod:`.input_checks`): the OOD statistics of the
   network's features and the contrast / stain-coverage minimums.
3. The preprocessing graph, the network and the postprocessing graph joined into one model
   (:func:`leukedge.modelkit.graph.compose.compose_model`): uint8 RGB of any size in, calibrated
   probabilities and input measures out, and for a CNN the ``heatmap``
   (:mod:`leukedge.modelkit.graph.heatmap`).
4. Parity: ONNX Runtime on the raw pixels of real images against the source model (Keras, or
   the classical network) on the preprocessing graph's output, softmax with the same
   temperature (max |dp| <= 1e-4, same top-1).
5. The contract, from the run record; the file written atomically, and only then.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from leukedge.modelkit.confidence import softmax
from leukedge.modelkit.graph.compose import compose_model, output_names
from leukedge.modelkit.graph.heatmap import HeatmapError
from leukedge.modelkit.graph.postprocess import ood_metadata
from leukedge.modelkit.graph.runner import PreprocessRunner, network_logits
from leukedge.modelkit.run_record import RunRecord
from leukedge.runtime.batching import model_runs
from leukedge.runtime.contract import ModelContract, embed_contract, save_model
from leukedge.runtime.input_checks import InputChecks
from leukedge.runtime.session import RuntimeSetupError, create_session

from .convert import OPSET, convert_network
from .errors import ExportError, ParityError
from .memory import check_conversion_memory
from .parity import PARITY_RUN_IMAGES, ParityReport, compare_probabilities
from .input_checks import InputChecksFit, fit_input_checks

PARITY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_keras` wrote and how it was checked."""

    path: Path
    contract: ModelContract
    parity: ParityReport
    input_checks: Optional[dict]
    n_parameters: int
    estimated_memory_bytes: int
    seconds: float
    size_bytes: int


def _exporter_versions() -> dict:
    out = {}
    for pkg in ("tensorflow", "keras", "tf2onnx", "onnx"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def contract_from_record(record: RunRecord, n_parameters: int, checks: Optional[InputChecksFit],
                         review_below: Optional[float] = None,
                         extra_provenance: Optional[dict] = None,
                         heatmap: bool = False) -> ModelContract:
    """The FP32 contract of an exported model, from its run record and the export's checks
    (``heatmap``: the model has that output)."""
    provenance = {"data_manifest_sha256": record.data_manifest_sha256,
                  "split_manifest_sha256": record.split_manifest_sha256, "seed": record.seed,
                  "run_id": record.run_id, "exporter": _exporter_versions(),
                  "metrics_source": "test split" if record.test_metrics.get("n") else "none"}
    if record.data.get("excluded_sha256"):
        provenance["excluded_sha256"] = list(record.data["excluded_sha256"])
    provenance.update(extra_provenance or {})
    if record.model_sha256:
        provenance["keras_sha256"] = record.model_sha256
    if checks is not None:
        provenance["input_checks_fit"] = {**checks.summary, "ood": ood_metadata(checks.ood)}
    return ModelContract(
        classes=record.classes, preprocessing=record.preprocessing,
        outputs=output_names(checks is not None and checks.ood is not None, heatmap),
        precision="fp32",
        backbone=record.backbone,
        model_info={"parameters": n_parameters, "input_size": list(record.preprocessing.input_size),
                    "seg_features": record.model.get("seg_features"), "opset": OPSET,
                    "training": {k: record.training.get(k) for k in
                                 ("method", "epochs_run", "seconds", "train_images_per_second")}},
        weights=record.weights, provenance=provenance, metrics=record.test_metrics,
        review_below=record.review_below if review_below is None else float(review_below),
        temperature=record.calibration.temperature, calibration=asdict(record.calibration),
        input_checks=checks.limits if checks is not None else InputChecks())


def model_probabilities(session: Any, images: Sequence[np.ndarray]) -> np.ndarray:
    """``probs`` of a one-file model for decoded uint8 images (runs by size, in input order)."""
    parts = {}
    for indices, batch in model_runs(images, PARITY_RUN_IMAGES):
        parts.update(zip(indices, session.run(["probs"], {"image": batch})[0]))
    return np.stack([parts[i] for i in range(len(images))])


def check_parity(reference: np.ndarray, onnx_bytes: bytes, images: Sequence[np.ndarray],
                 source: str, tolerance: float = PARITY_TOLERANCE) -> ParityReport:
    """ONNX Runtime on raw pixels vs the source model's probabilities ``reference``."""
    try:
        session, _ = create_session(onnx_bytes, provider="cpu")
    except RuntimeSetupError as e:
        raise ExportError(f"ONNX Runtime refuses the composed model: {e}") from e
    report = compare_probabilities(reference, model_probabilities(session, images),
                                   tolerance=tolerance, source=source)
    if not report.passed:
        raise ParityError(f"ONNX output differs from the source model: {report.describe()}. "
                          "Nothing was written.")
    return report


def export_keras(model: Any, out_path: str | Path, record: RunRecord, *,
                 parity_images: Sequence[np.ndarray], parity_source: str,
                 train_images: Sequence[np.ndarray] = (), review_below: Optional[float] = None,
                 tolerance: float = PARITY_TOLERANCE,
                 available_memory: Optional[int] = None,
                 extra_provenance: Optional[dict] = None) -> ExportResult:
    """Export a trained Keras classifier to the checked one-file ONNX model.

    Args:
        model: the Keras model (inputs ``image`` [and ``masked_image``], output the logits,
            a layer named ``features``).
        out_path: where the ``.onnx`` file goes (written atomically, only when every check
            passes).
        record: the training run's record (classes, preprocessing, calibration, provenance).
        parity_images: decoded uint8 RGB images for the parity check (test split, usually).
        parity_source: a word on where they come from, kept in the contract.
        train_images: decoded training images to set the input checks on; empty: no checks
            (the contract says so, and the model has no ``ood_score``).
        review_below: override of the run record's review threshold.
        tolerance: max absolute probability difference allowed against Keras.
        available_memory: bytes available for the size guard; None reads /proc/meminfo.
        extra_provenance: more provenance for the contract (e.g. a cross-validation's metrics,
            :func:`leukedge.export.cv_calibration.cv_provenance`).

    Raises:
        ModelTooLargeError: before converting, when the conversion would not fit in memory.
        UnsupportedOpError, ExportError, ParityError: when the result cannot be trusted.
    """
    if not len(parity_images):
        raise ValueError("the parity check needs at least one real image")
    started = time.perf_counter()
    n_params = int(model.count_params())
    needed = check_conversion_memory(n_params, available_memory)
    net = convert_network(model, record.preprocessing.input_size, record.input_names)
    runner = PreprocessRunner(record.preprocessing)
    reference = softmax(network_logits(model, parity_images, runner),
                        record.calibration.temperature)
    result = _finish_export(net, n_params, reference, out_path, record, parity_images,
                            parity_source, train_images, review_below, tolerance,
                            extra_provenance, started, heatmap=True)
    return replace(result, estimated_memory_bytes=needed)


def export_classical(network: Any, out_path: str | Path, record: RunRecord, *,
                     parity_images: Sequence[np.ndarray], parity_source: str,
                     train_images: Sequence[np.ndarray] = (),
                     review_below: Optional[float] = None, tolerance: float = PARITY_TOLERANCE,
                     extra_provenance: Optional[dict] = None) -> ExportResult:
    """Export an SVM / XGBoost run (its ``network.onnx``: feature graph + classifier, checked
    against the fitted classifier when training wrote it) to the one-file model.

    The parity check compares the one-file model on raw pixels with ``network.onnx`` behind
    the preprocessing graph; arguments as :func:`export_keras`.
    """
    if not len(parity_images):
        raise ValueError("the parity check needs at least one real image")
    started = time.perf_counter()
    runner = PreprocessRunner(record.preprocessing)
    session, _ = create_session(network.SerializeToString(), provider="cpu")
    parts = {}
    for indices, batch in model_runs(parity_images, PARITY_RUN_IMAGES):
        logits = session.run(["logits"], {"image": runner(batch)["image"]})[0]
        parts.update(zip(indices, softmax(logits, record.calibration.temperature)))
    reference = np.stack([parts[i] for i in range(len(parity_images))])
    n_params = int(record.parameters.get("total", 0))
    return _finish_export(network, n_params, reference, out_path, record, parity_images,
                          parity_source, train_images, review_below, tolerance,
                          extra_provenance, started)


def _finish_export(net: Any, n_params: int, reference: np.ndarray, out_path: str | Path,
                   record: RunRecord, parity_images, parity_source: str, train_images,
                   review_below, tolerance: float, extra_provenance, started: float,
                   heatmap: bool = False) -> ExportResult:
    """Input checks, composition, contract, parity, atomic write: the common end of export.

    ``heatmap``: a CNN's model gets the ``heatmap`` output (the SVM and XGBoost networks have
    no feature map; see :mod:`leukedge.modelkit.graph.heatmap`)."""
    runner = PreprocessRunner(record.preprocessing)
    checks = None
    if len(train_images):
        net_session, _ = create_session(net.SerializeToString(), provider="cpu")
        checks = fit_input_checks(runner, net_session, train_images)
    try:
        composed = compose_model(net, record.preprocessing, record.calibration.temperature,
                                 checks.ood if checks else None, heatmap=heatmap)
    except HeatmapError as e:
        raise ExportError(f"the model cannot carry its heatmap output: {e}") from e
    contract = contract_from_record(record, n_params, checks, review_below, extra_provenance,
                                    heatmap)
    parity = check_parity(reference, embed_contract(composed, contract).SerializeToString(),
                          parity_images, parity_source, tolerance)
    contract = contract.with_updates(provenance={**contract.provenance, "parity": parity.to_dict()})
    save_model(embed_contract(composed, contract), out_path)
    return ExportResult(path=Path(out_path), contract=contract, parity=parity,
                        input_checks=checks.summary if checks else None, n_parameters=n_params,
                        estimated_memory_bytes=0, seconds=time.perf_counter() - started,
                        size_bytes=Path(out_path).stat().st_size)

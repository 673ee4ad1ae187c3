"""Keras hybrid -> ONNX with the contract embedded, checked three ways before it is written.

The route is tf2onnx's ``from_function`` on a ``tf.function`` with explicit ``TensorSpec``s
(dynamic batch) whose names are the contract's input names and whose output is a dict keyed by
the contract's output name; Keras 3.15's ``model.export(format="onnx")`` is the same route.
tf2onnx logs an unsupported op (``RGBToHSV``) and writes an invalid file anyway
(TOOLCHAIN.md), so every export ends with: no unknown op, ``onnx.checker``, a session through
:func:`leukedge.runtime.session.create_session`, and parity against the Keras model on real
images through the shared preprocessing. The file is written atomically, and only then.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from leukedge.runtime.contract import ModelContract, embed_contract, save_model
from leukedge.runtime.preprocess import ImageSource, PreprocessSpec
from leukedge.runtime.session import RuntimeSetupError, create_session

from .errors import ExportError, ParityError, UnsupportedOpError
from .memory import check_conversion_memory
from .naming import keras_io_names, rename_graph_output
from .parity import (ParityReport, compare_probabilities, predict_batched, preprocessed_inputs,
                     session_predictor, synthetic_images)
from .run_info import contract_from_run, run_defaults

log = logging.getLogger(__name__)

SUPPORTED_OPSETS = (17, 18)  # 20 fails in tf2onnx 1.17 ("Opset 20 is not supported yet")
PARITY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_keras` wrote and how it was checked."""

    path: Path
    contract: ModelContract
    parity: ParityReport
    n_parameters: int
    estimated_memory_bytes: int
    seconds: float
    size_bytes: int


def convert_keras(model: Any, input_names: dict[str, str], output_name: str,
                  input_size: tuple[int, int], opset: int) -> Any:
    """Run tf2onnx on the model; returns an ``onnx.ModelProto`` (not yet checked)."""
    import tensorflow as tf
    import tf2onnx

    h, w = input_size
    names = list(input_names.values())
    spec = [tf.TensorSpec((None, h, w, 3), tf.float32, name=n) for n in names]

    @tf.function(input_signature=spec)
    def serve(*tensors):
        out = model(dict(zip(names, tensors)), training=False)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return {output_name: out}

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)  # unsupported ops are reported below
    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset)
    except Exception as e:
        raise ExportError(f"tf2onnx could not convert the model (opset {opset}): "
                          f"{type(e).__name__}: {e}") from e
    rename_graph_output(proto, output_name)
    return proto


def check_graph(proto: Any) -> None:
    """Refuse unknown ops (tf2onnx's silent failure) and anything ``onnx.checker`` rejects."""
    import onnx

    unknown = sorted({f"{n.op_type}" + (f" ({n.domain})" if n.domain else "")
                      for n in proto.graph.node if not onnx.defs.has(n.op_type, n.domain)})
    if unknown:
        hint = (" `tf.image.rgb_to_hsv` cannot be exported by any route: compute the HSV mask "
                "outside the model (the two-input hybrid) or with elementary ops."
                if any(op.startswith("RGBToHSV") for op in unknown) else "")
        raise UnsupportedOpError(
            f"tf2onnx left operators that ONNX does not define: {', '.join(unknown)}. The file "
            f"would not load in ONNX Runtime; nothing was written.{hint}")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"onnx.checker rejected the converted model: {str(e).splitlines()[0]}") from e


def keras_predictor(model: Any):
    """The Keras model as a ``feeds -> probabilities`` callable (eager, inference mode)."""
    import numpy as np

    def predict(feeds):
        out = model(feeds, training=False)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return out.numpy() if hasattr(out, "numpy") else np.asarray(out)  # EagerTensor
    return predict


def check_parity(model: Any, model_bytes: bytes, contract: ModelContract,
                 images: Sequence[ImageSource], source: str,
                 tolerance: float = PARITY_TOLERANCE) -> ParityReport:
    """ONNX Runtime vs Keras on the same preprocessed images; raise :class:`ParityError` on a miss."""
    try:
        session, _ = create_session(model_bytes, provider="cpu")
    except RuntimeSetupError as e:
        raise ExportError(f"ONNX Runtime refuses the converted model: {e}") from e
    names = {i.content: i.name for i in contract.inputs}
    feeds = preprocessed_inputs(images, contract.preprocessing, names)
    reference = predict_batched(keras_predictor(model), feeds)
    candidate = predict_batched(session_predictor(session, contract.output_name), feeds)
    report = compare_probabilities(reference, candidate, tolerance=tolerance, source=source)
    if not report.passed:
        raise ParityError(f"ONNX output differs from Keras: {report.describe()}. Nothing was written.")
    return report


def export_keras(model: Any, out_path: str | os.PathLike, run: Optional[dict] = None, *,
                 parity_images: Optional[Sequence[ImageSource]] = None,
                 parity_source: str = "given images", opset: int = 17,
                 tolerance: float = PARITY_TOLERANCE,
                 available_memory: Optional[int] = None) -> ExportResult:
    """Export a Keras hybrid to a checked ONNX file carrying the leukedge contract.

    Args:
        model: the in-memory Keras model (inputs ``image``/``masked_image``, output ``probs``).
        out_path: where the ``.onnx`` file goes (written atomically, only when every check passes).
        run: the training run's ``run.json`` dict (classes, preprocessing, backbone, provenance,
            test metrics); None derives defaults from the model (input size only).
        parity_images: images for the parity check (paths, bytes or RGB arrays); None or empty
            uses 8 synthetic smear-like images (reported as such).
        parity_source: a word on where the images come from, kept in the report and contract.
        opset: ONNX opset, 17 or 18.
        tolerance: max absolute probability difference allowed against Keras.
        available_memory: bytes available for the size guard; None reads /proc/meminfo.

    Returns:
        An :class:`ExportResult`.

    Raises:
        ModelTooLargeError: before converting, when the conversion would not fit in memory.
        UnsupportedOpError, ExportError, ParityError: when the result cannot be trusted.

    Example:
        >>> result = export_keras(model, "runs/r1/model.onnx", json.load(open("runs/r1/run.json")),
        ...                       parity_images=test_paths[:16], parity_source="test split")
        >>> result.parity.max_abs_diff < 1e-4
        True
    """
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(f"Unsupported opset {opset}. Valid: {', '.join(map(str, SUPPORTED_OPSETS))} "
                         "(tf2onnx 1.17 fails on 20)")
    started = time.perf_counter()
    input_names, output_name = keras_io_names(model)
    run = run_defaults(model, run)
    spec = PreprocessSpec.from_dict(run["preprocessing"])
    n_params = int(model.count_params())
    needed = check_conversion_memory(n_params, available_memory)
    proto = convert_keras(model, input_names, output_name, spec.input_size, opset)
    check_graph(proto)
    if not parity_images:
        parity_images, parity_source = synthetic_images(8, spec.input_size), "synthetic"
    contract = contract_from_run(run, input_names, output_name, n_params, opset)
    parity = check_parity(model, _embedded_bytes(proto, contract), contract, parity_images,
                          parity_source, tolerance)
    contract = contract.with_updates(provenance={**contract.provenance, "parity": parity.to_dict()})
    save_model(embed_contract(proto, contract), out_path)
    return ExportResult(path=Path(out_path), contract=contract, parity=parity,
                        n_parameters=n_params, estimated_memory_bytes=needed,
                        seconds=time.perf_counter() - started,
                        size_bytes=Path(out_path).stat().st_size)


def _embedded_bytes(proto: Any, contract: ModelContract) -> bytes:
    return embed_contract(proto, contract).SerializeToString()

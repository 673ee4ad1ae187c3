"""The three ways to make a child model, each on top of onnxruntime / onnxconverter-common.

Every backend touches the network only: the preprocessing and postprocessing nodes (named
``pre/``, ``join/``, ``post/``) are excluded from quantization and kept in float32 by FP16; the
``heatmap/`` nodes are rebuilt on the child (:func:`run_backend`).
Kept apart from :mod:`.quantize` (options, contract, gate) so each backend stays a short function.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from leukedge.modelkit.graph.compose import extract_network, other_node_names, replace_network
from leukedge.modelkit.graph.heatmap import HeatmapError, add_heatmap, has_heatmap, remove_heatmap

from .errors import QuantizationError

log = logging.getLogger(__name__)


@dataclass
class BackendResult:
    """The child proto (contract not yet embedded) and what the backend did."""

    proto: Any
    extra: dict = field(default_factory=dict)  # goes into the contract's quantization block
    notes: list[str] = field(default_factory=list)
    float_path: Optional[Path] = None  # the FP32 model that was quantized (for sensitivity)
    quant_path: Optional[Path] = None


def prepare(model_path: Path, work: Path, notes: list[str]) -> Path:
    """onnxruntime's ``quant_pre_process`` (shape inference, fusions); the model as is if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = work / "prepared.onnx"
    for skip_symbolic in (False, True):
        try:
            quant_pre_process(str(model_path), str(out), skip_symbolic_shape=skip_symbolic)
            return out
        except Exception as e:  # symbolic shape inference fails on some graphs; retry without
            last = e
    notes.append(f"quant_pre_process failed ({type(last).__name__}: {last}); quantized the model as is")
    return model_path


def _static(prepared: Path, graph: Any, out: Path, options, reader) -> dict:
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[options.calib_method]
    full_range = _depthwise_weights(graph) if options.depthwise_full_range else []
    overrides = {name: [{"axis": 0, "reduce_range": False} if options.per_channel
                        else {"reduce_range": False}] for name in full_range}
    quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ,
                    per_channel=options.per_channel, reduce_range=options.reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=_weight_type(options),
                    nodes_to_exclude=_excluded(graph, options), calibrate_method=method,
                    extra_options={"TensorQuantOverrides": overrides} if overrides else None)
    extra = {"format": "QDQ", "activation_type": "uint8", "weight_type": options.weight_type,
             "reduce_range": options.reduce_range}
    if options.depthwise_full_range:
        extra["depthwise_full_range"] = len(full_range)  # weights kept at 8 bits
    return extra


def _depthwise_weights(model: Any) -> list[str]:
    """Weight initializers of the depthwise convolutions (one input channel per group) of an
    ``onnx.ModelProto``.

    ONNX Runtime runs these with its depthwise kernels, which accumulate every product in 32
    bits on any x86 CPU; the other convolutions and dense layers run as matrix products, whose
    AVX2 kernels add pairs of uint8 x int8 products in 16 bits first (``vpmaddubsw``) and can
    saturate unless the weights have 7 bits.
    """
    weights = {t.name: t for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        w = weights.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if w is not None and group > 1 and len(w.dims) == 4 and w.dims[1] == 1:
            out.append(w.name)
    return sorted(set(out))


def _excluded(model: Any, options) -> list[str]:
    """The user's exclusions plus every node outside the network."""
    return sorted(set(options.exclude_nodes) | set(other_node_names(model)))


def _weight_type(options):
    from onnxruntime.quantization import QuantType

    return QuantType.QUInt8 if options.weight_type == "uint8" else QuantType.QInt8


def _dynamic(prepared: Path, graph: Any, out: Path, options) -> dict:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(prepared), str(out), per_channel=options.per_channel,
                     reduce_range=options.reduce_range, weight_type=_weight_type(options),
                     nodes_to_exclude=_excluded(graph, options))
    return {"format": "dynamic (ConvInteger/MatMulInteger)", "weight_type": options.weight_type,
            "reduce_range": options.reduce_range}


def _fp16(parent_proto: Any, options) -> Any:
    """The network alone converted (float32 at its boundary), put back between the float32
    preprocessing and postprocessing."""
    from onnxconverter_common import float16

    network = extract_network(parent_proto)
    with warnings.catch_warnings(record=True) as caught:  # one warning per tiny weight: noise
        warnings.simplefilter("always")
        half = float16.convert_float_to_float16(network, keep_io_types=True,
                                                node_block_list=list(options.exclude_nodes) or None)
    truncated = sum("will be truncated" in str(w.message) for w in caught)
    if truncated:
        log.info("FP16: %d weights smaller than 1e-7 were rounded to +-1e-7", truncated)
    for w in caught:
        if "will be truncated" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return replace_network(parent_proto, half)


def check_node_names(proto: Any, names, where: str) -> None:
    """Refuse --exclude-nodes names the graph does not have (a typo would be silently ignored)."""
    known = {n.name for n in proto.graph.node}
    unknown = [n for n in names if n not in known]
    if unknown:
        sample = ", ".join(sorted(known)[:8])
        raise ValueError(f"--exclude-nodes: {unknown} are not nodes of {where} "
                         f"({len(known)} nodes, e.g. {sample})")


def run_backend(model_path: Path, parent_proto: Any, work: Path, options, reader) -> BackendResult:
    """Make the child model for ``options.method`` in ``work``; returns its proto.

    A parent's ``heatmap`` is taken out before quantizing (its nodes read the network's
    weights and activations and stay float) and built again on the child's graph, so the
    quantizer and its calibration never see it.
    """
    import onnx

    if not has_heatmap(parent_proto):
        return _make_child(model_path, parent_proto, work, options, reader)
    parent_proto = remove_heatmap(parent_proto)
    model_path = work / "parent-without-heatmap.onnx"
    onnx.save(parent_proto, str(model_path))
    result = _make_child(model_path, parent_proto, work, options, reader)
    try:
        result.proto = add_heatmap(result.proto)
    except (HeatmapError, onnx.checker.ValidationError) as e:
        raise QuantizationError(f"the {options.method} model cannot carry the heatmap: {e}") from e
    return result


def _make_child(model_path: Path, parent_proto: Any, work: Path, options, reader) -> BackendResult:
    import onnx

    notes: list[str] = []
    try:
        if options.method == "fp16":
            check_node_names(parent_proto, options.exclude_nodes, str(model_path))
            return BackendResult(proto=_fp16(parent_proto, options), extra={"keep_io_types": True})
        prepared = prepare(model_path, work, notes)
        graph = onnx.load(str(prepared))  # read once for the checks and the exclusions
        check_node_names(graph, options.exclude_nodes,
                         "the model after onnxruntime's pre-processing")
        out = work / "quantized.onnx"
        extra = (_static(prepared, graph, out, options, reader) if options.method == "static"
                 else _dynamic(prepared, graph, out, options))
        extra["preprocessed"] = prepared != model_path
        return BackendResult(proto=onnx.load(str(out)), extra=extra, notes=notes,
                             float_path=prepared, quant_path=out)
    except ValueError:
        raise
    except Exception as e:  # onnxruntime.quantization raises bare Exceptions and RuntimeErrors
        raise QuantizationError(f"{options.method} quantization failed: {type(e).__name__}: {e}") from e

"""Which nodes hurt when quantized: per-activation quantization noise of a QDQ model.

For every activation ``T`` that the QDQ model quantizes (``T -> QuantizeLinear -> DequantizeLinear
-> T_DequantizeLinear_Output``) this measures, over a few real images, signal-to-quantization-noise
ratios (SQNR, dB; higher is better):

- ``worst_channel``: the QDQ pair's SQNR in T's worst channel (axis 1, ONNX's channel axis).
  This is the ranking key: the usual failure of per-tensor activation scales is one channel with a
  large range crushing the small, informative ones, which the whole-tensor SQNR hides (the large
  channel dominates both norms).
- ``local``: the QDQ pair's SQNR over the whole tensor (onnxruntime's ``qdq_err``).
- ``accumulated``: the QDQ model's T against the FP32 model's T: the error that reached T from
  everything upstream (onnxruntime's ``xmodel_err``).

Same measures as onnxruntime's ``qdq_loss_debug``, accumulated image by image (a DenseNet's
activations for a batch do not fit in memory) and run through the one session door.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from leukedge.runtime.session import create_session

DEQUANT_SUFFIX = "_DequantizeLinear_Output"  # onnxruntime.quantization.quant_utils.DEQUANT_OUTPUT_SUFFIX


@dataclass(frozen=True)
class Offender:
    """One quantized activation and the nodes to keep in float if it is the culprit."""

    tensor: str
    producer: str
    op_type: str
    consumers: tuple[str, ...]
    worst_channel_sqnr_db: float
    local_sqnr_db: float
    accumulated_sqnr_db: float

    def to_dict(self) -> dict:
        return asdict(self)


def sqnr_db(signal_sq: float, noise_sq: float) -> float:
    """20 log10(|signal| / |noise|) from sums of squares; +inf when there is no noise."""
    if noise_sq <= 0.0:
        return math.inf
    return 10.0 * math.log10(max(signal_sq, 1e-30) / noise_sq)


def _with_outputs(proto, names: Iterable[str], path: Path) -> None:
    """Save a copy of ``proto`` whose graph also outputs ``names`` (float tensors)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name not in present:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    onnx.save(copy, str(path))


def quantized_activations(qdq_proto) -> list[str]:
    """Names of the activations that the QDQ model quantizes (initializers excluded)."""
    weights = {i.name for i in qdq_proto.graph.initializer}
    out = []
    for node in qdq_proto.graph.node:
        if node.op_type == "DequantizeLinear" and node.output[0].endswith(DEQUANT_SUFFIX):
            tensor = node.output[0][: -len(DEQUANT_SUFFIX)]
            if tensor not in weights and not tensor.endswith("_quantized"):
                out.append(tensor)
    return sorted(set(out))


def activation_sensitivity(float_path: str | os.PathLike, qdq_path: str | os.PathLike,
                           feeds: Sequence[dict], workdir: str | os.PathLike,
                           top: int = 10) -> list[Offender]:
    """Rank the quantized activations of ``qdq_path`` by worst-channel SQNR, worst first.

    Args:
        float_path: the FP32 model that was quantized (after onnxruntime's pre-processing, so
            tensor and node names match the QDQ model's).
        qdq_path: the QDQ model.
        feeds: a few input dicts (one image each is enough).
        workdir: a folder for the two augmented copies.
        top: how many rows to return.
    """
    import onnx

    float_proto, qdq_proto = onnx.load(str(float_path)), onnx.load(str(qdq_path))
    producers = {o: n for n in float_proto.graph.node for o in n.output}
    tensors = [t for t in quantized_activations(qdq_proto) if t in producers]
    f_aug, q_aug = Path(workdir) / "float_aug.onnx", Path(workdir) / "qdq_aug.onnx"
    _with_outputs(float_proto, tensors, f_aug)
    _with_outputs(qdq_proto, tensors + [t + DEQUANT_SUFFIX for t in tensors], q_aug)
    q_producers = {o: n.op_type for n in qdq_proto.graph.node for o in n.output}
    fused_relu = {t for t in tensors if producers[t].op_type == "Relu" and q_producers.get(t) != "Relu"}
    sums = _accumulate(f_aug, q_aug, tensors, feeds, fused_relu)
    consumers: dict[str, list[str]] = {}
    for n in float_proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.name)
    rows = [_offender(t, producers[t], consumers.get(t, ()), s) for t, s in sums.items()]
    return sorted(rows, key=lambda r: (r.worst_channel_sqnr_db, r.local_sqnr_db))[:top]


def _offender(tensor: str, producer, consumers: Sequence[str], s: dict) -> Offender:
    live = (s["pre"] > 0) | (s["qdq"] > 0)  # channels that are all zero carry no signal to lose
    channel = [sqnr_db(a, b) for a, b in zip(s["pre"][live], s["qdq"][live])]
    return Offender(tensor=tensor, producer=producer.name, op_type=producer.op_type,
                    consumers=tuple(consumers),
                    worst_channel_sqnr_db=min(channel) if channel else math.inf,
                    local_sqnr_db=sqnr_db(s["pre"].sum(), s["qdq"].sum()),
                    accumulated_sqnr_db=sqnr_db(s["float"], s["cross"]))


def _channel_sums(x: np.ndarray) -> np.ndarray:
    """Sum of squares per axis-1 channel (the whole tensor as one channel when rank < 2)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        return np.array([np.sum(x * x)])
    return np.sum(np.moveaxis(x, 1, 0).reshape(x.shape[1], -1) ** 2, axis=1)


def _accumulate(f_aug: Path, q_aug: Path, tensors: list[str], feeds: Sequence[dict],
                fused_relu: set[str]) -> dict:
    """Per tensor, summed over feeds: per-channel pre^2 and (pre-post)^2, float^2, (float-post)^2.

    ``fused_relu``: tensors whose Relu the quantizer folded into the QDQ range (the producing Conv
    now writes the pre-Relu value under the Relu's output name); their pre-QDQ value is rectified
    so that the intended clipping of negatives does not count as noise.
    """
    f_sess, _ = create_session(f_aug, provider="cpu", optimization="disable")
    q_sess, _ = create_session(q_aug, provider="cpu", optimization="disable")
    sums: dict[str, dict] = {}
    post = [t + DEQUANT_SUFFIX for t in tensors]
    for feed in feeds:
        f_vals = f_sess.run(tensors, feed)
        q_out = q_sess.run(tensors + post, feed)
        for t, fl, pre, dq in zip(tensors, f_vals, q_out[: len(tensors)], q_out[len(tensors):]):
            acc = sums.setdefault(t, {"pre": 0.0, "qdq": 0.0, "float": 0.0, "cross": 0.0})
            pre64, dq64, fl64 = (a.astype(np.float64) for a in (pre, dq, fl))
            if t in fused_relu:
                pre64 = np.maximum(pre64, 0.0)
            acc["pre"] = acc["pre"] + _channel_sums(pre64)
            acc["qdq"] = acc["qdq"] + _channel_sums(pre64 - dq64)
            acc["float"] += float(np.sum(fl64 ** 2))
            acc["cross"] += float(np.sum((fl64 - dq64) ** 2))
    return sums


def exclude_suggestion(offenders: Sequence[Offender], count: int = 3) -> list[str]:
    """Node names to keep in float for the worst ``count`` activations: each producer and the
    consumers that would otherwise re-quantize its output."""
    names: list[str] = []
    for row in offenders[:count]:
        if not math.isfinite(row.worst_channel_sqnr_db) or row.worst_channel_sqnr_db > 30.0:
            continue  # clean enough: 30 dB is ~3% noise; keeping it in float would not help
        for name in (row.producer, *row.consumers):
            if name and name not in names:
                names.append(name)
    return names

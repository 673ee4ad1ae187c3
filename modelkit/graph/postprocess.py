"""The graph behind the network: calibrated probabilities and the out-of-distribution score.

Inputs (the network's outputs): ``net/logits`` [N, K] and ``net/features`` [N, F] (the head's
input). Outputs:

- ``probs``: ``softmax(logits / T)``, T the temperature fitted on held-out predictions;
- ``ood_score``: how far the features lie from those of the training images, a Mahalanobis
  distance in the training features' principal subspace plus the residual outside it, each
  dimension standardised, averaged over the F dimensions (about 1 for a typical training image,
  large for a blank frame, noise or a photo that is not a smear). :class:`OodStats` holds the
  statistics, fitted on training images by :func:`fit_ood_stats`.

Standard ONNX ops; building needs the ``onnx`` package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

LOGITS = "net/logits"
FEATURES = "net/features"
PROBS = "probs"
OOD_SCORE = "ood_score"
DEFAULT_COMPONENTS = 64


@dataclass(frozen=True)
class OodStats:
    """Mean, principal axes and variances of training features (float64 while fitting)."""

    mean: np.ndarray  # [F]
    components: np.ndarray  # [F, k], orthonormal columns
    variances: np.ndarray  # [k]
    residual_variance: float  # mean variance per dimension outside the subspace

    @property
    def dims(self) -> int:
        return int(self.mean.shape[0])

    def score(self, features: np.ndarray) -> np.ndarray:
        """The score the graph computes, in numpy (float64)."""
        z = np.asarray(features, np.float64) - self.mean
        proj = z @ self.components
        inside = (proj ** 2 / self.variances).sum(axis=1)
        residual = np.maximum((z ** 2).sum(axis=1) - (proj ** 2).sum(axis=1), 0.0)
        return (inside + residual / self.residual_variance) / self.dims


def fit_ood_stats(features: np.ndarray, components: int = DEFAULT_COMPONENTS,
                  floor: float = 1e-6) -> OodStats:
    """Principal-subspace statistics of training features.

    Raises:
        ValueError: fewer images than 2 or features that are not finite.
    """
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or len(x) < 2 or not np.isfinite(x).all():
        raise ValueError("fit_ood_stats needs a finite N x F feature array with N >= 2")
    mean = x.mean(axis=0)
    z = x - mean
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    variances = s ** 2 / (len(x) - 1)
    k = int(min(components, len(variances) - 1, x.shape[1] - 1))
    total = float((z ** 2).sum() / (len(x) - 1))
    residual = max((total - variances[:k].sum()) / max(x.shape[1] - k, 1), floor)
    return OodStats(mean=mean, components=vt[:k].T.copy(),
                    variances=np.maximum(variances[:k], floor), residual_variance=residual)


def postprocess_nodes(temperature: float, ood: Optional[OodStats]) -> tuple[list, list, list]:
    """(nodes, initializers, output value infos) of the graph behind the network."""
    from onnx import TensorProto, helper, numpy_helper

    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    nodes, inits = [], []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), f"post/{name}"))
        return f"post/{name}"

    def op(op_type: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op_type, inputs, [output],
                                      name=f"post/{op_type}_{len(nodes)}", **attrs))
        return output

    scaled = op("Mul", [LOGITS, const("inv_temperature", [1.0 / temperature])], "post/scaled")
    op("Softmax", [scaled], PROBS, axis=1)
    outputs = [helper.make_tensor_value_info(PROBS, TensorProto.FLOAT, ["N", None])]
    if ood is not None:
        z = op("Sub", [FEATURES, const("ood_mean", ood.mean[None])], "post/centred")
        proj = op("MatMul", [z, const("ood_axes", ood.components)], "post/projected")
        white = op("Mul", [proj, const("ood_inv_std", (1.0 / np.sqrt(ood.variances))[None])],
                   "post/whitened")
        axes = "post/axis1"
        inits.append(numpy_helper.from_array(np.array([1], np.int64), axes))
        inside = op("ReduceSumSquare", [white, axes], "post/inside", keepdims=0)
        total = op("ReduceSumSquare", [z, axes], "post/total", keepdims=0)
        along = op("ReduceSumSquare", [proj, axes], "post/along", keepdims=0)
        residual = op("Relu", [op("Sub", [total, along], "post/residual_raw")], "post/residual")
        res_scaled = op("Mul", [residual, const("ood_inv_residual", [1.0 / ood.residual_variance])],
                        "post/residual_scaled")
        summed = op("Add", [inside, res_scaled], "post/distance")
        op("Mul", [summed, const("ood_inv_dims", [1.0 / ood.dims])], OOD_SCORE)
        outputs.append(helper.make_tensor_value_info(OOD_SCORE, TensorProto.FLOAT, ["N"]))
    return nodes, inits, outputs


def ood_metadata(ood: Optional[OodStats]) -> Optional[dict[str, Any]]:
    """What the contract records of the OOD statistics (the arrays live in the graph)."""
    if ood is None:
        return None
    return {"features": ood.dims, "components": int(ood.components.shape[1]),
            "residual_variance": float(ood.residual_variance),
            "score": "mean standardised squared distance of the head's input features to the "
                     "training images' (principal subspace + residual); about 1 in distribution"}

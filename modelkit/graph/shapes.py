"""Shapes that ONNX shape inference leaves open but a graph compiler needs: the probabilities
output of the ai.onnx.ml classifiers (the SVM and XGBoost rows' converted classifiers),
declared ``[N, classes]``.

ONNX Runtime hands a node after such a classifier to OpenVINO (onnxruntime-openvino 1.24)
with an input of unknown rank, and OpenVINO refuses the whole model ("Cannot get length of
dynamic dimension" at the calibrated softmax after the classifier); with the shape declared it
compiles. The declaration changes no value.
"""

from __future__ import annotations

from typing import Any

ML_CLASSIFIERS = ("TreeEnsembleClassifier", "SVMClassifier", "LinearClassifier")
_LABELS = ("classlabels_int64s", "classlabels_strings", "classlabels_ints")


def _classes(node: Any) -> int:
    for attr in node.attribute:
        if attr.name in _LABELS:
            return len(attr.ints) or len(attr.strings)
    return 0


def declare_classifier_shapes(graph: Any) -> list[str]:
    """Add ``[N, classes]`` value_info for every ai.onnx.ml classifier's probabilities output
    that has none (in place); the names declared."""
    from onnx import TensorProto, helper

    known = {v.name for v in (*graph.value_info, *graph.output)}
    declared = []
    for node in graph.node:
        if node.domain != "ai.onnx.ml" or node.op_type not in ML_CLASSIFIERS:
            continue
        n, probs = _classes(node), node.output[1] if len(node.output) > 1 else ""
        if n and probs and probs not in known:
            graph.value_info.append(helper.make_tensor_value_info(probs, TensorProto.FLOAT,
                                                                  [None, n]))
            declared.append(probs)
    return declared

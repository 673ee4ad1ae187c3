"""modelkit.graph.shapes: a converted classifier's probabilities declared [N, classes], which
OpenVINO needs to compile the softmax after them; no value changes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from leukedge.modelkit.graph.shapes import declare_classifier_shapes
from leukedge.runtime.session import create_session

CLASSES = 4


def tree_model():
    """x [N, 2] -> a one-split TreeEnsembleClassifier (4 classes) -> log -> softmax, as the
    classical rows' one-file models end."""
    tree = helper.make_node(
        "TreeEnsembleClassifier", ["x"], ["label", "probabilities"], domain="ai.onnx.ml",
        name="clf", nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2],
        nodes_featureids=[0, 0, 0], nodes_values=[0.5, 0.0, 0.0],
        nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"], nodes_truenodeids=[1, 0, 0],
        nodes_falsenodeids=[2, 0, 0], class_treeids=[0] * 8, class_nodeids=[1] * 4 + [2] * 4,
        class_ids=list(range(CLASSES)) * 2,
        class_weights=[0.1, 0.2, 0.3, 0.4, 0.4, 0.3, 0.2, 0.1],
        classlabels_int64s=list(range(CLASSES)), post_transform="NONE")
    nodes = [tree, helper.make_node("Max", ["probabilities", "floor"], ["clipped"]),
             helper.make_node("Log", ["clipped"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(
        nodes, "tree", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", CLASSES])],
        [numpy_helper.from_array(np.array(1e-6, np.float32), "floor")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 9
    return model


def probs(model, provider="cpu"):
    session, _ = create_session(model.SerializeToString(), provider=provider, threads=1)
    return session.run(["probs"], {"x": np.array([[0.2, 0.0], [0.9, 1.0]], np.float32)})[0]


def test_the_probabilities_are_declared_once_and_change_nothing():
    model = tree_model()
    before = probs(model)
    assert declare_classifier_shapes(model.graph) == ["probabilities"]
    info = {v.name: v for v in model.graph.value_info}["probabilities"]
    dims = info.type.tensor_type.shape.dim
    assert len(dims) == 2 and not dims[0].HasField("dim_value") and dims[1].dim_value == CLASSES
    assert declare_classifier_shapes(model.graph) == []
    np.testing.assert_array_equal(probs(model), before)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.skipif("OpenVINOExecutionProvider" not in ort.get_available_providers(),
                    reason="needs onnxruntime-openvino (leukedge[openvino])")
def test_openvino_compiles_the_declared_graph():
    model = tree_model()
    declare_classifier_shapes(model.graph)
    np.testing.assert_allclose(probs(model, "openvino:CPU"), probs(model), atol=1e-6)

"""Tiny one-file leukedge models, built with ``onnx.helper`` (no TensorFlow).

The network: the global mean of each channel of the preprocessed ``image`` (and of
``masked_image``) -> the ``features`` -> MatMul with fixed weights + bias -> ``logits``. It is
joined to the real preprocessing and postprocessing graphs by
:func:`leukedge.modelkit.graph.compose.compose_model`, so these models take uint8 RGB pixels of
any size, exactly like an exported one. Different images give different, deterministic
probabilities, and a batch's rows are independent, like a real classifier's.

Other test files reuse :func:`make_tiny_onnx` through the ``make_tiny_onnx`` fixture in
conftest.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from leukedge.modelkit.confidence import softmax
from leukedge.modelkit.graph.compose import compose_model, output_names
from leukedge.modelkit.graph.postprocess import OodStats
from leukedge.modelkit.graph.preprocess import OPSET
from leukedge.modelkit.graph.runner import PreprocessRunner
from leukedge.runtime.contract import (CONTRACT_KEY, DEFAULT_CLASSES, ModelContract,
                                       embed_contract, save_model)
from leukedge.runtime.input_checks import InputChecks
from leukedge.runtime.preprocessing import PreprocessSpec

TINY_INPUT_SIZE = (32, 32)
IR_VERSION = 9  # loadable by every onnxruntime leukedge supports (>= 1.17)
TINY_SPEC = PreprocessSpec(input_size=TINY_INPUT_SIZE)  # x / 255
# Mean and spread of the channel means (image R, G, B, then masked R, G, B) over the ALL smears:
# the weights whiten them so that real images spread over all classes with varied confidences.
_FEATURE_CENTER = np.array([0.82, 0.85, 0.94, 0.005, 0.0035, 0.008], np.float32)
_FEATURE_SPREAD = np.array([0.067, 0.05, 0.027, 0.008, 0.0055, 0.013], np.float32)
# Checks that pass real smears and catch blank frames and far-off colours.
TINY_INPUT_CHECKS = InputChecks(min_contrast=0.02, min_stain_coverage=0.005, max_ood_score=60.0)


def tiny_weights(n_features: int, n_classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (seeded) weights and bias of the tiny network's MatMul + Add."""
    rng = np.random.default_rng(1234)
    raw = rng.normal(0.0, 0.9, size=(6, n_classes)).astype(np.float32)[:n_features]
    weights = raw / _FEATURE_SPREAD[:n_features, None]
    bias = -(_FEATURE_CENTER[:n_features] @ weights)
    return weights.astype(np.float32), bias.astype(np.float32)


def tiny_ood(n_features: int) -> OodStats:
    """OOD statistics centred on the smears' channel means, one unit per spread."""
    spread = _FEATURE_SPREAD[:n_features].astype(np.float64)
    return OodStats(mean=_FEATURE_CENTER[:n_features].astype(np.float64),
                    components=np.eye(n_features)[:, :n_features - 1],
                    variances=spread[:n_features - 1] ** 2,
                    residual_variance=float(spread[-1] ** 2))


def tiny_network(spec: PreprocessSpec, n_classes: int) -> Any:
    """The network part (inputs image[/masked_image] float, outputs logits and features)."""
    from onnx import TensorProto, helper, numpy_helper

    h, w = spec.input_size
    names = ["image", "masked_image"] if spec.masked_input else ["image"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", h, w, 3]) for n in names]
    axes = numpy_helper.from_array(np.array([1, 2], np.int64), "axes_hw")
    nodes = [helper.make_node("ReduceMean", [n, "axes_hw"], [f"{n}_mean"], keepdims=0)
             for n in names]
    nodes.append(helper.make_node("Concat", [f"{n}_mean" for n in names], ["features"], axis=1))
    weights, bias = tiny_weights(3 * len(names), n_classes)
    inits = [axes, numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")]
    nodes += [helper.make_node("MatMul", ["features", "W"], ["logits_raw"]),
              helper.make_node("Add", ["logits_raw", "b"], ["logits"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", n_classes]),
               helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3 * len(names)])]
    graph = helper.make_graph(nodes, "leukedge_tiny", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="leukedge-tests")
    model.ir_version = IR_VERSION
    return model


def make_tiny_onnx(path: str | Path, *, input_size: tuple[int, int] = TINY_INPUT_SIZE,
                   hybrid: bool = False, temperature: float = 1.0, with_ood: bool = True,
                   contract: bool = True, raw_contract: Optional[str] = None,
                   **contract_overrides: Any) -> Path:
    """Write a tiny one-file leukedge model and return its path.

    Args:
        path: where to write the .onnx file.
        input_size: the network's (height, width).
        hybrid: the network also takes the masked image.
        temperature: the softmax temperature baked into the graph.
        with_ood: include the ``ood_score`` output.
        contract: embed a contract at all (False: a plain ONNX file leukedge must refuse).
        raw_contract: embed this string verbatim under ``leukedge.contract`` instead.
        **contract_overrides: ``ModelContract`` fields (classes, review_below, input_checks...).
    """
    spec = replace(TINY_SPEC, input_size=input_size, masked_input=hybrid)
    classes = tuple(contract_overrides.pop("classes", DEFAULT_CLASSES))
    net = tiny_network(spec, len(classes))
    n_features = 6 if hybrid else 3
    model = compose_model(net, spec, temperature, tiny_ood(n_features) if with_ood else None)
    if raw_contract is not None:
        model.metadata_props.add(key=CONTRACT_KEY, value=raw_contract)
    elif contract:
        contract_overrides.setdefault("backbone", "tiny_test_graph")
        contract_overrides.setdefault("input_checks", TINY_INPUT_CHECKS)
        contract_overrides.setdefault("review_below", 0.0)
        embed_contract(model, ModelContract(classes=classes, preprocessing=spec,
                                            outputs=output_names(with_ood),
                                            temperature=temperature, **contract_overrides))
    save_model(model, path)
    return Path(path)


def reference_probabilities(pixels: np.ndarray, input_size: tuple[int, int] = TINY_INPUT_SIZE,
                            hybrid: bool = False, temperature: float = 1.0) -> np.ndarray:
    """What the tiny model computes for a uint8 batch, with the network done in numpy."""
    spec = replace(TINY_SPEC, input_size=input_size, masked_input=hybrid)
    inputs = PreprocessRunner(spec)(pixels)
    feats = [inputs["image"].mean(axis=(1, 2))]
    if hybrid:
        feats.append(inputs["masked_image"].mean(axis=(1, 2)))
    x = np.concatenate(feats, axis=1)
    weights, bias = tiny_weights(x.shape[1], 4)
    return softmax(x @ weights + bias, temperature)

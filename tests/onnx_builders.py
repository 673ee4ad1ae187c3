"""Tiny ONNX models that honour the leukedge contract, built with ``onnx.helper`` (no TensorFlow).

The graph: the global mean of each channel of ``image`` (and of ``masked_image``) -> concat ->
MatMul with fixed weights -> + bias -> Softmax -> ``probs``. Different images give different,
deterministic probabilities, and a batch's rows are independent, like a real classifier's.

Other test files reuse :func:`make_tiny_onnx` through the ``make_tiny_onnx`` fixture in conftest.py
or ``from onnx_builders import make_tiny_onnx`` (conftest puts tests/ on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from leukedge.runtime.contract import (DEFAULT_CLASSES, CONTRACT_KEY, ModelContract, TensorSpec,
                                       embed_contract, save_model)
from leukedge.runtime.preprocess import PreprocessSpec

TINY_INPUT_SIZE = (32, 32)
OPSET = 17
IR_VERSION = 9  # loadable by every onnxruntime leukedge supports (>= 1.17)


# Mean and spread of the channel means (image R, G, B, then masked R, G, B) over the ALL smears:
# the weights whiten them so that real images spread over all classes with varied confidences.
_FEATURE_CENTER = np.array([0.82, 0.85, 0.94, 0.005, 0.0035, 0.008], np.float32)
_FEATURE_SPREAD = np.array([0.067, 0.05, 0.027, 0.008, 0.0055, 0.013], np.float32)


def tiny_weights(n_features: int, n_classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (seeded) weights and bias of the tiny model's MatMul + Add."""
    rng = np.random.default_rng(1234)
    raw = rng.normal(0.0, 0.9, size=(6, n_classes)).astype(np.float32)[:n_features]
    weights = raw / _FEATURE_SPREAD[:n_features, None]
    bias = -(_FEATURE_CENTER[:n_features] @ weights)
    return weights.astype(np.float32), bias.astype(np.float32)


def build_tiny_graph(input_names: Sequence[str], output_name: str, input_size: tuple[int, int],
                     n_classes: int, float16: bool = False) -> Any:
    """An ``onnx.ModelProto`` of the tiny classifier (no contract yet)."""
    from onnx import TensorProto, helper, numpy_helper

    elem = TensorProto.FLOAT16 if float16 else TensorProto.FLOAT
    np_dtype = np.float16 if float16 else np.float32
    h, w = input_size
    inputs = [helper.make_tensor_value_info(n, elem, ["N", h, w, 3]) for n in input_names]
    nodes = [helper.make_node("ReduceMean", [n], [f"{n}_mean"], axes=[1, 2], keepdims=0)
             for n in input_names]
    nodes.append(helper.make_node("Concat", [f"{n}_mean" for n in input_names], ["features"], axis=1))
    weights, bias = tiny_weights(3 * len(input_names), n_classes)
    inits = [numpy_helper.from_array(weights.astype(np_dtype), "W"),
             numpy_helper.from_array(bias.astype(np_dtype), "b")]
    nodes += [helper.make_node("MatMul", ["features", "W"], ["logits_raw"]),
              helper.make_node("Add", ["logits_raw", "b"], ["logits"]),
              helper.make_node("Softmax", ["logits"], [output_name], axis=-1)]
    output = helper.make_tensor_value_info(output_name, elem, ["N", n_classes])
    graph = helper.make_graph(nodes, "leukedge_tiny", inputs, [output], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="leukedge-tests")
    model.ir_version = IR_VERSION
    return model


def make_tiny_onnx(path: str | Path, *, input_size: tuple[int, int] = TINY_INPUT_SIZE,
                   single_input: bool = False, float16: bool = False, contract: bool = True,
                   raw_contract: Optional[str] = None, **contract_overrides: Any) -> Path:
    """Write a tiny leukedge ONNX model and return its path.

    Args:
        path: where to write the .onnx file.
        input_size: (height, width) of the inputs and of the contract's preprocessing.
        single_input: only an ``image`` input (no masked image).
        float16: float16 inputs, weights and output (contract precision "fp16").
        contract: embed a contract at all (False: a plain ONNX file leukedge must refuse).
        raw_contract: embed this string verbatim under ``leukedge.contract`` instead.
        **contract_overrides: ``ModelContract`` fields (classes, review_below, backbone...), plus
            ``image_input`` / ``masked_input`` / ``output_name`` names, which the graph uses too.
    """
    spec = PreprocessSpec(input_size=input_size)
    image_name = contract_overrides.pop("image_input", "image")
    masked_name = contract_overrides.pop("masked_input", "masked_image")
    output_name = contract_overrides.pop("output_name", "probs")
    classes = tuple(contract_overrides.pop("classes", DEFAULT_CLASSES))
    contract_overrides.setdefault("precision", "fp16" if float16 else "fp32")
    contract_overrides.setdefault("backbone", "tiny_test_graph")
    names = [image_name] if single_input else [image_name, masked_name]
    model = build_tiny_graph(names, output_name, input_size, len(classes), float16)
    if raw_contract is not None:
        model.metadata_props.add(key=CONTRACT_KEY, value=raw_contract)
    elif contract:
        h, w = input_size
        inputs = [TensorSpec(image_name, (None, h, w, 3), "image")]
        if not single_input:
            inputs.append(TensorSpec(masked_name, (None, h, w, 3), "masked_image"))
        embed_contract(model, ModelContract(classes=classes, inputs=tuple(inputs),
                                            output_name=output_name, preprocessing=spec,
                                            **contract_overrides))
    save_model(model, path)
    return Path(path)


def reference_probabilities(images: np.ndarray, masked: Optional[np.ndarray]) -> np.ndarray:
    """What the tiny fp32 model computes, in numpy (to check the runtime end to end)."""
    feats = [images.mean(axis=(1, 2))]
    if masked is not None:
        feats.append(masked.mean(axis=(1, 2)))
    x = np.concatenate(feats, axis=1)
    weights, bias = tiny_weights(x.shape[1], 4)
    logits = x @ weights + bias
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)

"""A tiny CNN one-file model with a known feature map, built with ``onnx.helper``.

The network, laid out as tf2onnx writes a Keras CNN: NHWC ``image`` (32 x 32, x / 255) ->
Transpose -> a 4 x 4 stride-4 Conv (channels: redness, greenness, blueness, brightness of each
4 x 4 cell) -> Relu -> Transpose back -> the global mean (``ReduceMean`` over axes 1, 2) ->
``features`` -> a head with a hidden layer (MatMul, Add, Relu, BatchNormalization, Dropout,
MatMul, Add) -> ``logits``. Classes: 0 grey (a constant), 1 green, 2 red, 3 blue, each driven
by its colour's hidden unit, so a red patch on a grey frame makes class 2 win through the
cells it covers. :func:`reference_heatmap` computes the expected map in numpy, the head's
gradient taken by finite differences (independent of the graph's hand-made backward pass).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from leukedge.modelkit.graph.compose import compose_model, output_names
from leukedge.modelkit.graph.preprocess import OPSET
from leukedge.runtime.contract import DEFAULT_CLASSES, ModelContract, embed_contract, save_model
from leukedge.runtime.preprocessing import PreprocessSpec

SIZE = 32
CELL = 4  # the map is 8 x 8
SPEC = PreprocessSpec(input_size=(SIZE, SIZE))
_COLOUR = np.array([[1.0, -0.5, -0.5], [-0.5, 1.0, -0.5], [-0.5, -0.5, 1.0], [1 / 3] * 3],
                   np.float32)  # conv channel <- RGB
W1 = np.zeros((4, 8), np.float32)
W1[0, 0] = W1[1, 1] = W1[2, 2] = 20.0  # hidden 0-2: one colour each
W1[3, 3] = 1.0
W1[:, 4:] = np.random.default_rng(7).normal(0, 0.5, (4, 4))  # units every class ignores
B1 = np.array([-0.5, -0.5, -0.5, 0.0, 0.1, 0.1, 0.1, 0.1], np.float32)
BN = {"scale": np.array([2, 1, 3, 0.5, 1, 1, 1, 1], np.float32),
      "bias": np.full(8, 0.1, np.float32), "mean": np.full(8, 0.05, np.float32),
      "var": np.array([4, 0.25, 1, 2, 1, 1, 1, 1], np.float32)}
W2 = np.zeros((8, 4), np.float32)
W2[0, 2], W2[1, 1], W2[2, 3] = 10.0, 10.0, 10.0
W2[3, 0] = 0.5
W2[[0, 1, 2], 0] = -1.0  # grey: no colour
W2[[1, 2], 2] = W2[[0, 1], 3] = W2[[0, 2], 1] = -1.0  # and each colour: not the others
B2 = np.array([1.0, 0.0, 0.0, 0.0], np.float32)


def feature_map(pixels: np.ndarray) -> np.ndarray:
    """The network's map [N, 8, 8, 4] for uint8 [N, 32, 32, 3] pixels (already 32 x 32)."""
    x = pixels.astype(np.float32) / 255.0
    n = len(x)
    cells = x.reshape(n, SIZE // CELL, CELL, SIZE // CELL, CELL, 3).mean(axis=(2, 4))
    return np.maximum(cells @ _COLOUR.T, 0.0)


def head(features: np.ndarray) -> np.ndarray:
    hidden = np.maximum(features @ W1 + B1, 0.0)
    normed = (hidden - BN["mean"]) / np.sqrt(BN["var"] + 1e-5) * BN["scale"] + BN["bias"]
    return normed @ W2 + B2


def reference_heatmap(pixels: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Grad-CAM of the predicted class, the head's gradient by central differences."""
    maps = feature_map(pixels).astype(np.float64)
    out = []
    for a in maps:
        f = a.mean(axis=(0, 1))
        c = int(np.argmax(head(f[None])[0]))
        alpha = np.array([(head((f + eps * e)[None])[0, c] - head((f - eps * e)[None])[0, c])
                          / (2 * eps) for e in np.eye(len(f))])
        cam = a @ alpha
        spread = cam.max() - cam.min()
        out.append((cam - cam.min()) / spread if spread > 1e-12 else np.zeros_like(cam))
    return np.stack(out)


def tiny_cnn_network(pool: str = "mean", prefer: Optional[int] = None) -> Any:
    """The network part; ``pool="max"`` pools with ReduceMax instead (no heatmap possible);
    ``prefer``: a class whose bias wins every image."""
    from onnx import TensorProto, helper, numpy_helper

    kernel = np.repeat(np.repeat(_COLOUR[:, :, None, None], CELL, 2), CELL, 3) / CELL ** 2
    consts = {"kernel": kernel.astype(np.float32), "axes": np.array([1, 2], np.int64),
              "W1": W1, "B1": B1, "W2": W2,
              "B2": B2 + (1e4 * np.eye(4, dtype=np.float32)[prefer] if prefer is not None
                          else 0.0),
              **{f"bn_{k}": v for k, v in BN.items()}}
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "kernel"], ["conv"], strides=[CELL, CELL]),
        helper.make_node("Relu", ["conv"], ["conv_relu"]),
        helper.make_node("Transpose", ["conv_relu"], ["map"], perm=[0, 2, 3, 1]),
        helper.make_node("ReduceMean" if pool == "mean" else "ReduceMax", ["map", "axes"],
                         ["features"], keepdims=0),
        helper.make_node("MatMul", ["features", "W1"], ["h_mm"]),
        helper.make_node("Add", ["h_mm", "B1"], ["h_pre"]),
        helper.make_node("Relu", ["h_pre"], ["h"]),
        helper.make_node("BatchNormalization", ["h", "bn_scale", "bn_bias", "bn_mean", "bn_var"],
                         ["h_bn"]),
        helper.make_node("Dropout", ["h_bn"], ["h_drop"]),
        helper.make_node("MatMul", ["h_drop", "W2"], ["l_mm"]),
        helper.make_node("Add", ["l_mm", "B2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    return model


def make_tiny_cnn(path: str | Path, heatmap: bool = True, pool: str = "mean") -> Path:
    """Write the tiny CNN as a one-file model with its contract (review_below 0)."""
    model = compose_model(tiny_cnn_network(pool), SPEC, heatmap=heatmap)
    embed_contract(model, ModelContract(classes=DEFAULT_CLASSES, preprocessing=SPEC,
                                        outputs=output_names(False, heatmap),
                                        backbone="tiny_cnn", review_below=0.0))
    save_model(model, path)
    return Path(path)


def patch_image(row: int, col: int, colour=(255, 0, 0), size: int = 8) -> np.ndarray:
    """A grey 32 x 32 frame with a ``size`` square of ``colour`` at (row, col)."""
    image = np.full((SIZE, SIZE, 3), 128, np.uint8)
    image[row:row + size, col:col + size] = colour
    return image

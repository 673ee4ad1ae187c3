"""The ``heatmap`` output: where in the image the network found its predicted class.

Grad-CAM computed inside the graph, in standard ONNX ops, so any ONNX Runtime language reads
it. A leukedge CNN pools its last feature map ``A`` [h, w, C] globally into the head's input
(``net/features``) and its head (Dense, BatchNorm, ReLU, Dropout layers) turns that into
``net/logits``. For the predicted class ``c`` (the argmax of ``probs``) the graph computes the
head's gradient ``alpha = d logit_c / d features`` by hand (the transposed head run backwards:
``Gemm`` with the transposed weights, ReLU masks from the forward pass, BatchNorm scales), then

    heatmap[i, j] = sum_k alpha_k * A[i, j, k],  min-max normalised per image to [0, 1]

(a constant map gives zeros). For a linear head ``alpha`` is the class's weight column, so the
map is exactly the class activation map (CAM) of Zhou et al. 2016; for a deeper head it is
Grad-CAM (Selvaraju et al. 2017) without the final ReLU. Cost: one pass of the head's
transpose on one vector and ``h * w * C`` multiply-adds, far below the backbone's.

The map has the network's last feature resolution (7 x 7 for a 224 px EfficientNet-Lite0);
a hybrid's segmentation branch, concatenated after the image features, is left out of it.
The builder reads the graph only (no weights are copied; it works on FP32, FP16 and QDQ INT8
files alike), so it also adds the output to a model written before it existed
(``bench/add_heatmap.py``). A model whose features are not a global average pool (the SVM and
XGBoost rows: hand-made features) has no heatmap; an ensemble's is that of its first member
that has one, for the class the ensemble predicts.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import numpy as np

from .postprocess import PROBS

HEATMAP = "heatmap"
PREFIX = "heatmap/"
PASS_THROUGH = ("Identity", "Dropout", "QuantizeLinear", "DequantizeLinear", "Cast")


class HeatmapError(ValueError):
    """The graph has no global-average-pooled feature map and dense head to explain."""


def has_heatmap(model: Any) -> bool:
    return any(o.name == HEATMAP for o in model.graph.output)


def network_prefixes(model: Any) -> list[str]:
    """Prefixes of the networks inside a one-file model (``""``) or an ensemble (``m<i>/``)."""
    found = {}
    for node in model.graph.node:
        for name in node.output:
            match = re.fullmatch(r"(m(\d+)/)?net/features", name)
            if match:
                found[int(match.group(2) or -1)] = match.group(1) or ""
    return [found[k] for k in sorted(found)]


def add_heatmap(model: Any, prefixes: Optional[list[str]] = None) -> Any:
    """A copy of a one-file model or ensemble with the ``heatmap`` output (checked): the map of
    the first network (of ``prefixes``, default all) that has a pooled feature map.

    Raises:
        HeatmapError: no network in it has a pooled feature map and a head of supported ops;
            the message says what was found instead.
    """
    import onnx

    if has_heatmap(model):
        return model
    reasons = []
    for prefix in network_prefixes(model) if prefixes is None else prefixes:
        try:
            nodes, inits = _Builder(model, prefix).build()
        except HeatmapError as e:
            reasons.append(f"{prefix or 'the network'}: {e}")
            continue
        out = onnx.ModelProto()
        out.CopyFrom(model)
        out.graph.node.extend(nodes)
        out.graph.initializer.extend(inits)
        out.graph.output.append(onnx.helper.make_tensor_value_info(
            HEATMAP, onnx.TensorProto.FLOAT, ["N", None, None]))
        onnx.checker.check_model(out)
        return out
    raise HeatmapError("no heatmap: " + ("; ".join(reasons) or "the model has no network "
                                         "output 'net/features'"))


def remove_heatmap(model: Any) -> Any:
    """A copy without the ``heatmap`` output and the nodes and constants only it used."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    kept = [n for n in graph.node if not n.name.startswith(PREFIX)]
    del graph.node[:]
    graph.node.extend(kept)
    outputs = [o for o in graph.output if o.name != HEATMAP]
    del graph.output[:]
    graph.output.extend(outputs)
    inits = [t for t in graph.initializer if not t.name.startswith(PREFIX)]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return out


class _Builder:
    """The heatmap nodes for the network under ``prefix``, seeded by the model's ``probs``."""

    def __init__(self, model: Any, prefix: str):
        self.graph = model.graph
        self.prefix = prefix
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.constants = {t.name: t for t in model.graph.initializer}
        self.nodes: list = []
        self.inits: list = []

    # -- emitting -------------------------------------------------------------------------------
    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        from onnx import helper

        name = f"{PREFIX}{self.prefix}{op_type}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def const(self, value: Any, dtype=np.int64) -> str:
        from onnx import numpy_helper

        name = f"{PREFIX}{self.prefix}c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def float32(self, tensor: str) -> str:
        """The tensor as float32 (an FP16 network's tensors are half; a no-op cast otherwise,
        which ONNX Runtime removes)."""
        from onnx import TensorProto

        return self.op("Cast", [tensor], to=TensorProto.FLOAT)

    # -- reading the graph ------------------------------------------------------------------------
    def node_of(self, tensor: str) -> Any:
        node = self.producer.get(tensor)
        if node is None:
            raise HeatmapError(f"{tensor!r} is a graph input or constant, not computed")
        return node

    def int_values(self, tensor: str) -> Optional[list[int]]:
        from onnx import numpy_helper

        if tensor in self.constants:
            return [int(v) for v in numpy_helper.to_array(self.constants[tensor]).reshape(-1)]
        node = self.producer.get(tensor)
        if node is not None and node.op_type == "Constant":
            return [int(v) for v in numpy_helper.to_array(node.attribute[0].t).reshape(-1)]
        return None

    def reachable_from(self, tensor: str) -> set[str]:
        reach = {tensor}
        for node in self.graph.node:  # nodes are in topological order (onnx.checker)
            if any(i in reach for i in node.input):
                reach.update(node.output)
        return reach

    # -- building ---------------------------------------------------------------------------------
    def build(self) -> tuple[list, list]:
        features, logits = f"{self.prefix}net/features", f"{self.prefix}net/logits"
        feature_map, channel_axis, pooled, chain = self.pooled_map(features)
        predicted = self.op("ArgMax", [PROBS], axis=1, keepdims=0)
        depth = self.op("Shape", [PROBS], start=1, end=2)
        seed = self.op("OneHot", [predicted, depth, self.const([0.0, 1.0], np.float32)],
                       axis=-1)
        alpha, reached = self.backward(logits, pooled, set(chain), seed)
        first_part = chain[reached]
        if first_part is not None:  # a hybrid: the image's features come first
            width = self.op("Shape", [first_part], start=1, end=2)
            alpha = self.op("Slice", [alpha, self.const([0]), width, self.const([1])])
        spatial = [1, 2] if channel_axis == 3 else [2, 3]
        weights = self.op("Unsqueeze", [alpha, self.const(spatial)])
        weighted = self.op("Mul", [self.float32(feature_map), weights])
        cam = self.op("ReduceSum", [weighted, self.const([channel_axis])], keepdims=0)
        self.normalise(cam)
        return self.nodes, self.inits

    def pooled_map(self, features: str) -> tuple[str, int, str, dict]:
        """(feature map, its channel axis, the pooled tensor, chain): the chain maps each tensor
        between the pool and ``features`` to the Concat's first input when it lies after a
        Concat (a hybrid's features), else None."""
        tensor, first_part, squeezed, chain = features, None, False, {}
        while True:
            chain[tensor] = None
            node = self.node_of(tensor)
            if node.op_type in PASS_THROUGH:
                tensor = node.input[0]
            elif node.op_type == "Concat" and first_part is None and not squeezed:
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                if axis not in (1, -1):
                    raise HeatmapError(f"features are concatenated on axis {axis}, not 1")
                first_part = node.input[0]
                chain = dict.fromkeys(chain, first_part)
                tensor = first_part
            elif node.op_type in ("Flatten", "Squeeze", "Reshape") and not squeezed:
                tensor, squeezed = node.input[0], True  # [N, C, 1, 1] -> [N, C]
            elif node.op_type == "GlobalAveragePool":
                return node.input[0], 1, tensor, chain
            elif node.op_type == "ReduceMean":
                return node.input[0], self.mean_channel_axis(node, squeezed), tensor, chain
            else:
                raise HeatmapError(f"the head's input comes from a {node.op_type} node "
                                   f"({node.name}), not from a global average pool of a "
                                   "feature map")

    def mean_channel_axis(self, node: Any, squeezed: bool) -> int:
        attrs = {a.name: a for a in node.attribute}
        keepdims = attrs["keepdims"].i if "keepdims" in attrs else 1
        axes = (list(attrs["axes"].ints) if "axes" in attrs
                else self.int_values(node.input[1]) if len(node.input) > 1 else None)
        spatial = sorted(a % 4 for a in axes) if axes else None
        if spatial not in ([1, 2], [2, 3]) or bool(keepdims) != squeezed:
            raise HeatmapError(f"{node.name} averages axes {axes} (keepdims {keepdims}), not "
                               "the two spatial axes of a 4-D feature map")
        return 3 if spatial == [1, 2] else 1

    def backward(self, logits: str, pooled: str, stops: set[str], grad: str
                 ) -> tuple[str, str]:
        """(d (seed . logits) / d t, t): through the head's nodes, as new nodes, back to the
        first tensor t of ``stops`` (the pooled features, or a cast or concatenation of them)."""
        reach = self.reachable_from(pooled)
        tensor = logits
        while tensor not in stops:
            node = self.node_of(tensor)
            on_path = [k for k, i in enumerate(node.input) if i in reach]
            if len(on_path) != 1:
                raise HeatmapError(f"head node {node.name} ({node.op_type}) has {len(on_path)} "
                                   "inputs that depend on the features; expected 1")
            k = on_path[0]
            grad = self.step(node, k, grad)
            tensor = node.input[k]
        return grad, tensor

    def step(self, node: Any, k: int, grad: str) -> str:
        """The gradient with respect to input ``k`` of ``node`` from that of its output."""
        op, inputs = node.op_type, list(node.input)
        attrs = {a.name: a for a in node.attribute}
        if op in PASS_THROUGH or op == "Add" or (op == "Sub" and k == 0):
            return grad
        if op == "Sub":
            return self.op("Neg", [grad])
        if op == "Mul":
            return self.op("Mul", [grad, self.float32(inputs[1 - k])])
        if op == "Div" and k == 0:
            return self.op("Div", [grad, self.float32(inputs[1])])
        if op == "MatMul" and k == 0:
            return self.op("Gemm", [grad, self.float32(inputs[1])], transB=1)
        if op == "Gemm" and k == 0 and not (attrs.get("transA") and attrs["transA"].i):
            trans_b = attrs["transB"].i if "transB" in attrs else 0
            alpha = attrs["alpha"].f if "alpha" in attrs else 1.0
            return self.op("Gemm", [grad, self.float32(inputs[1])], transB=1 - trans_b,
                           alpha=alpha)
        if op == "Relu":
            return self.masked(grad, self.op("Greater", [self.float32(inputs[0]),
                                                         self.const(0.0, np.float32)]))
        if op == "Clip" and k == 0:
            return self.clip_step(node, grad)
        if op == "BatchNormalization" and k == 0:
            eps = attrs["epsilon"].f if "epsilon" in attrs else 1e-5
            std = self.op("Sqrt", [self.op("Add", [self.float32(inputs[4]),
                                                   self.const(eps, np.float32)])])
            scale = self.op("Div", [self.float32(inputs[1]), std])
            return self.op("Mul", [grad, scale])
        raise HeatmapError(f"the head has a {op} node ({node.name}) whose gradient the "
                           "heatmap does not compute")

    def masked(self, grad: str, mask: str) -> str:
        from onnx import TensorProto

        return self.op("Mul", [grad, self.op("Cast", [mask], to=TensorProto.FLOAT)])

    def clip_step(self, node: Any, grad: str) -> str:
        x = self.float32(node.input[0])
        inside = None
        for position, compare in ((1, "Greater"), (2, "Less")):
            if len(node.input) > position and node.input[position]:
                test = self.op(compare, [x, self.float32(node.input[position])])
                inside = test if inside is None else self.op("And", [inside, test])
        return grad if inside is None else self.masked(grad, inside)

    def normalise(self, cam: str) -> None:
        """``heatmap`` = (cam - min) / (max - min) per image; a constant map gives zeros."""
        from onnx import helper

        axes = self.const([1, 2])
        low = self.op("ReduceMin", [cam, axes], keepdims=1)
        high = self.op("ReduceMax", [cam, axes], keepdims=1)
        spread = self.op("Max", [self.op("Sub", [high, low]), self.const(1e-12, np.float32)])
        shifted = self.op("Sub", [cam, low])
        name = f"{PREFIX}{self.prefix}normalise"
        self.nodes.append(helper.make_node("Div", [shifted, spread], [HEATMAP], name=name))

"""Join preprocessing, network and postprocessing into the one-file model.

The network (converted from Keras by tf2onnx) keeps its own graph under the ``net/`` prefix;
the preprocessing graph's nodes are ``pre/...``, the postprocessing graph's ``post/...``.
Quantization uses the prefix to quantize the network only (:func:`network_node_names`), so the
preprocessing and the calibrated softmax stay in float.

The resulting model has one input, ``image`` (uint8 [N, H, W, 3] RGB, dynamic N, H, W), and the
outputs ``probs``, ``stain_fraction``, ``stain_coverage``, ``contrast``, ``stain_mask``, (when
the out-of-distribution statistics were given) ``ood_score`` and (when asked, for a CNN) the
``heatmap`` of :mod:`.heatmap`.
"""

from __future__ import annotations

from typing import Any, Optional

from leukedge.runtime.preprocessing import PreprocessSpec

from .heatmap import HEATMAP, add_heatmap
from .postprocess import OOD_SCORE, PROBS, OodStats, postprocess_nodes
from .preprocess import (NET_IMAGE, NET_MASKED, OPSET, QUALITY_OUTPUTS, STAIN_MASK,
                         input_value_info, preprocess_nodes)
from .shapes import declare_classifier_shapes

NET_PREFIX = "net/"
NETWORK_INPUTS = {"image": NET_IMAGE, "masked_image": NET_MASKED}
NETWORK_OUTPUTS = ("logits", "features")


def _check_network(net: Any) -> None:
    inputs = [i.name for i in net.graph.input]
    outputs = [o.name for o in net.graph.output]
    unknown = [n for n in inputs if n not in NETWORK_INPUTS]
    if unknown or "image" not in inputs:
        raise ValueError(f"network inputs {inputs}: expected 'image' and optionally "
                         "'masked_image'")
    if sorted(outputs) != sorted(NETWORK_OUTPUTS):
        raise ValueError(f"network outputs {outputs}: expected {list(NETWORK_OUTPUTS)}")
    opsets = {o.domain: o.version for o in net.opset_import}
    if opsets.get("", opsets.get("ai.onnx")) != OPSET:
        raise ValueError(f"network opset {opsets}: the preprocessing graph needs opset {OPSET} "
                         "(Resize with antialias); convert the network at that opset")


def compose_model(net: Any, spec: PreprocessSpec, temperature: float = 1.0,
                  ood: Optional[OodStats] = None, heatmap: bool = False) -> Any:
    """The one-file model: preprocessing + ``net`` + postprocessing, checked by onnx.checker.

    Args:
        net: the network as an ``onnx.ModelProto`` with inputs ``image`` [and
            ``masked_image``] (float32, the preprocessing graph's outputs) and outputs
            ``logits`` and ``features``, at opset 18.
        spec: the preprocessing the network was trained behind.
        temperature: softmax temperature for ``probs``.
        ood: out-of-distribution statistics of the features; None: no ``ood_score`` output.
        heatmap: add the ``heatmap`` output (:func:`.heatmap.add_heatmap`; a network without
            a pooled feature map raises :class:`.heatmap.HeatmapError`).
    """
    import onnx
    from onnx import compose, helper

    _check_network(net)
    if ("masked_image" in [i.name for i in net.graph.input]) != spec.masked_input:
        raise ValueError("the network's inputs and the preprocessing spec disagree on the "
                         "masked image")
    named = onnx.ModelProto()
    named.CopyFrom(net)
    for i, node in enumerate(named.graph.node):  # unnamed nodes would escape the prefix
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    prefixed = compose.add_prefix(named, NET_PREFIX)
    pre_nodes, pre_inits, pre_outputs = preprocess_nodes(spec)
    post_nodes, post_inits, post_outputs = postprocess_nodes(temperature, ood)
    joins = [helper.make_node("Identity", [NETWORK_INPUTS[i.name[len(NET_PREFIX):]]], [i.name],
                              name=f"join/{i.name}") for i in prefixed.graph.input]
    keep = {o.name: o for o in pre_outputs}
    outputs = list(post_outputs) + [keep[n] for n in (*QUALITY_OUTPUTS, STAIN_MASK)]
    graph = helper.make_graph(
        pre_nodes + joins + list(prefixed.graph.node) + post_nodes, "leukedge",
        [input_value_info()], outputs,
        pre_inits + list(prefixed.graph.initializer) + post_inits,
        value_info=list(prefixed.graph.value_info))
    declare_classifier_shapes(graph)  # for OpenVINO (modelkit/graph/shapes.py)
    model = helper.make_model(graph, opset_imports=list(net.opset_import),
                              producer_name="leukedge")
    model.ir_version = net.ir_version
    onnx.checker.check_model(model)
    return add_heatmap(model) if heatmap else model


def network_node_names(model: Any) -> list[str]:
    """Names of the network's nodes (those to quantize)."""
    return [n.name for n in model.graph.node if n.name.startswith(NET_PREFIX)]


def other_node_names(model: Any) -> list[str]:
    """Names of the preprocessing, joining and postprocessing nodes (kept in float)."""
    return [n.name for n in model.graph.node if not n.name.startswith(NET_PREFIX)]


def output_names(with_ood: bool, with_heatmap: bool = False) -> tuple[str, ...]:
    return (((PROBS, OOD_SCORE) if with_ood else (PROBS,)) + QUALITY_OUTPUTS + (STAIN_MASK,)
            + ((HEATMAP,) if with_heatmap else ()))


def network_boundary(model: Any) -> tuple[list[str], list[str]]:
    """(input tensor names, output tensor names) of the network inside a one-file model."""
    inputs = [n.output[0] for n in model.graph.node if n.name.startswith("join/")]
    outputs = [f"{NET_PREFIX}{name}" for name in NETWORK_OUTPUTS]
    return inputs, outputs


def extract_network(model: Any) -> Any:
    """The network part of a one-file model as its own ModelProto (names keep ``net/``)."""
    from onnx.shape_inference import infer_shapes
    from onnx.utils import Extractor

    inputs, outputs = network_boundary(model)
    network = Extractor(infer_shapes(model)).extract_model(inputs, outputs)
    _separate_outputs(network)
    return network


def _separate_outputs(network: Any) -> None:
    """Give each graph output that nodes inside also read its own Identity, so a converter that
    casts outputs (FP16 with ``keep_io_types``) cannot change what those nodes read."""
    from onnx import helper

    outputs = {o.name for o in network.graph.output}
    read = {i for n in network.graph.node for i in n.input}
    for name in sorted(outputs & read):
        inner = f"{name}__inner"
        for node in network.graph.node:
            node.output[:] = [inner if o == name else o for o in node.output]
            node.input[:] = [inner if i == name else i for i in node.input]
        network.graph.node.append(helper.make_node("Identity", [inner], [name],
                                                   name=f"{name}__output"))


def replace_network(model: Any, network: Any) -> Any:
    """A copy of the one-file model whose network nodes and weights are ``network``'s (same
    boundary tensors), e.g. the FP16 conversion of :func:`extract_network`'s result."""
    import onnx
    from onnx import helper

    graph = model.graph
    net_nodes = [n for n in graph.node if n.name.startswith(NET_PREFIX)]
    first = list(graph.node).index(net_nodes[0])
    before = [n for n in list(graph.node)[:first] if not n.name.startswith(NET_PREFIX)]
    after = [n for n in list(graph.node)[first:] if not n.name.startswith(NET_PREFIX)]
    keep_inits = [i for i in graph.initializer if not i.name.startswith(NET_PREFIX)]
    keep_info = [v for v in graph.value_info if not v.name.startswith(NET_PREFIX)]
    new_graph = helper.make_graph(before + list(network.graph.node) + after, graph.name,
                                  list(graph.input), list(graph.output),
                                  keep_inits + list(network.graph.initializer),
                                  value_info=keep_info)  # the network's types are re-inferred
    out = helper.make_model(new_graph, opset_imports=list(model.opset_import),
                            producer_name=model.producer_name)
    out.ir_version = model.ir_version
    for prop in model.metadata_props:
        out.metadata_props.add(key=prop.key, value=prop.value)
    onnx.checker.check_model(out)
    return out

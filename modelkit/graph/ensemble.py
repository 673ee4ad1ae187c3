"""Join several one-file models into one: the same ``image`` input, the weighted mean of their
``probs``.

Each member keeps its own graph (preprocessing, network, calibrated softmax) under the prefix
``m<i>/``, so members with different input sizes and normalisations (a 224 px CNN and 128 px
hand-made features) run side by side on the raw pixels. ``probs`` is ``sum_i w_i * probs_i``
(weights summing to 1); every other output (the input checks, the stain mask) is the first
member's, under its own name, so the result has exactly the outputs of the first member and
is read like any one-file model. The other members' nodes that feed only their own checks are
left out. The ``heatmap`` (:mod:`.heatmap`) is built again on the joined graph from the first
member that has one, for the class the ensemble predicts (which may differ from that member's
own); an ensemble of members without one (SVM / XGBoost, older files) has none.
"""

from __future__ import annotations

from typing import Any, Sequence

from .heatmap import HEATMAP, add_heatmap, has_heatmap
from .postprocess import PROBS
from .preprocess import INPUT
from .shapes import declare_classifier_shapes

MEMBER_PREFIX = "m{}/"


def member_prefix(index: int) -> str:
    return MEMBER_PREFIX.format(index)


def compose_ensemble(members: Sequence[Any], weights: Sequence[float]) -> Any:
    """The ensemble of one-file models (``onnx.ModelProto``), checked by onnx.checker.

    Raises:
        ValueError: fewer than two members, a weight per member missing or not positive, or a
            member without the one-file model's ``image`` input and ``probs`` output.
    """
    import onnx
    from onnx import TensorProto, compose, helper

    if len(members) < 2:
        raise ValueError("an ensemble needs at least two members")
    if len(weights) != len(members) or any(not w > 0 for w in weights):
        raise ValueError(f"one positive weight per member, got {list(weights)}")
    total = float(sum(weights))
    nodes, inits, infos = [], [], []
    opsets: dict[str, int] = {}
    for i, member in enumerate(members):
        inputs = [v.name for v in member.graph.input]
        outputs = [v.name for v in member.graph.output]
        if inputs != [INPUT] or PROBS not in outputs:
            raise ValueError(f"member {i}: inputs {inputs}, outputs {outputs}; expected the "
                             f"one-file model's {INPUT!r} input and {PROBS!r} output")
        named = onnx.ModelProto()
        named.CopyFrom(member)
        del named.metadata_props[:]
        for k, node in enumerate(named.graph.node):  # unnamed nodes would escape the prefix
            if not node.name:
                node.name = f"{node.op_type}_{k}"
        prefix = member_prefix(i)
        prefixed = compose.add_prefix(named, prefix)
        nodes.append(helper.make_node("Identity", [INPUT], [prefix + INPUT],
                                      name=f"{prefix}join/{INPUT}"))
        nodes.extend(prefixed.graph.node)
        inits.extend(prefixed.graph.initializer)
        infos.extend(prefixed.graph.value_info)
        for opset in member.opset_import:
            domain = opset.domain or ""
            opsets[domain] = max(opsets.get(domain, 0), opset.version)
        nodes.append(helper.make_node("Mul", [f"{prefix}{PROBS}", f"mean/w{i}"],
                                      [f"mean/p{i}"], name=f"mean/weigh{i}"))
        inits.append(helper.make_tensor(f"mean/w{i}", TensorProto.FLOAT, [],
                                        [float(weights[i]) / total]))
    nodes.append(helper.make_node("Sum", [f"mean/p{i}" for i in range(len(members))], [PROBS],
                                  name="mean/sum"))
    first = members[0]
    outputs = []
    for out in first.graph.output:
        if out.name == HEATMAP:
            continue
        if out.name != PROBS:
            nodes.append(helper.make_node("Identity", [member_prefix(0) + out.name], [out.name],
                                          name=f"out/{out.name}"))
        outputs.append(out)
    nodes = _needed(nodes, [o.name for o in outputs])
    used = {i for n in nodes for i in n.input}
    graph = helper.make_graph(nodes, "leukedge-ensemble", list(first.graph.input), outputs,
                              [t for t in inits if t.name in used],
                              value_info=[v for v in infos if v.name in used])
    declare_classifier_shapes(graph)  # members built before it was declared: for OpenVINO
    model = helper.make_model(
        graph, producer_name="leukedge",
        opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())])
    model.ir_version = max(m.ir_version for m in members)
    onnx.checker.check_model(model)
    with_map = [member_prefix(i) for i, m in enumerate(members) if has_heatmap(m)]
    return add_heatmap(model, with_map[:1]) if with_map else model


def _needed(nodes: list, outputs: Sequence[str]) -> list:
    """The nodes the ``outputs`` depend on, in their order: the later members' own input checks
    and stain masks feed nothing and would only cost time."""
    producer = {o: n for n in nodes for o in n.output}
    keep, todo = set(), list(outputs)
    while todo:
        node = producer.get(todo.pop())
        if node is not None and id(node) not in keep:
            keep.add(id(node))
            todo.extend(i for i in node.input if i)
    return [n for n in nodes if id(n) in keep]

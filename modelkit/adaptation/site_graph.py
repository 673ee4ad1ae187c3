"""The graph edits of ``leukedge adapt``: where a one-file model keeps the head's input of each
member, a copy that also outputs them, and the adapted model.

A one-file model (:mod:`leukedge.modelkit.graph.compose`) computes ``net/features`` (the head's
input) and ends in ``probs``; an ensemble (:mod:`leukedge.modelkit.graph.ensemble`) has one
such member per ``m<i>/`` prefix and mixes their ``probs``. The adapted model keeps every node
of the parent and puts a site head behind its probabilities::

    site/offset = Log(Clip(parent probs, 1e-7, 1))
    site/logits = site/offset + sum_i m<i>/net/features @ W_i + b     (MatMul, Sum)
    probs       = Softmax(site/logits * (1 / T_site))

so the input ``image`` (uint8), the preprocessing and every output name stay the parent's: the
result is again a one-file model with the same contract. The INT8 sibling of a model gets the
same edit (its ``net/features`` are the float input of the head's quantization). Building
needs the ``onnx`` package.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from ..graph.postprocess import PROBS

_FEATURES = re.compile(r"^((?:m\d+/)?)net/features$")
SITE = "site/"
PARENT_PROBS = f"{SITE}parent_probs"
PROB_FLOOR = 1e-7  # the log of a probability under it is taken as log(1e-7)


class NotAdaptableError(ValueError):
    """A model adapt cannot edit: no ``net/features`` (the head's input) or no ``probs``."""


def feature_tensors(model: Any) -> list[str]:
    """The head inputs of a one-file model's members (``net/features`` or ``m<i>/net/features``),
    in prefix order.

    Raises:
        NotAdaptableError: none, or no node producing ``probs``.
    """
    produced = {o for node in model.graph.node for o in node.output}
    if PROBS not in produced or SITE + "logits" in produced:
        raise NotAdaptableError(
            f"no {PROBS!r} node, or already adapted (a {SITE!r} head): not a leukedge one-file "
            "model that adapt can edit; adapt the model it came from")
    names = sorted(o for o in produced if _FEATURES.match(o))
    if not names:
        raise NotAdaptableError("no 'net/features' tensor (the head's input) in the model: "
                                "adapt fits its correction on those features")
    return names


def probe_model(model: Any) -> Any:
    """A copy of ``model`` that also outputs every member's ``net/features``, checked by
    onnx.checker."""
    import onnx
    from onnx import TensorProto, helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in feature_tensors(model):
        if name not in existing:
            probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                                    ["N", None]))
    onnx.checker.check_model(probe)
    return probe


def adapted_model(model: Any, weights: Mapping[str, np.ndarray], bias: np.ndarray,
                  temperature: float) -> Any:
    """A copy of ``model`` (metadata kept) with the site head behind its probabilities.

    Args:
        model: the parent one-file model (``onnx.ModelProto``).
        weights: features tensor name -> W [F, K], one per :func:`feature_tensors` name.
        bias: b [K].
        temperature: the site temperature.

    Raises:
        NotAdaptableError: weights that do not name the model's features tensors.
    """
    import onnx
    from onnx import helper, numpy_helper

    names = feature_tensors(model)
    if sorted(weights) != names:
        raise NotAdaptableError(f"weights for {sorted(weights)}; the model's features are "
                                f"{names}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    for node in graph.node:  # the parent's probs become the head's input
        node.output[:] = [PARENT_PROBS if o == PROBS else o for o in node.output]
    inits = [numpy_helper.from_array(np.array(PROB_FLOOR, np.float32), f"{SITE}floor"),
             numpy_helper.from_array(np.array(1.0, np.float32), f"{SITE}one"),
             numpy_helper.from_array(np.asarray(bias, np.float32)[None], f"{SITE}bias"),
             numpy_helper.from_array(np.array([1.0 / temperature], np.float32),
                                     f"{SITE}inv_temperature")]
    nodes = [helper.make_node("Clip", [PARENT_PROBS, f"{SITE}floor", f"{SITE}one"],
                              [f"{SITE}clipped"], name=f"{SITE}Clip"),
             helper.make_node("Log", [f"{SITE}clipped"], [f"{SITE}offset"], name=f"{SITE}Log")]
    terms = [f"{SITE}offset", f"{SITE}bias"]
    for i, name in enumerate(names):
        inits.append(numpy_helper.from_array(np.asarray(weights[name], np.float32),
                                             f"{SITE}weights{i}"))
        nodes.append(helper.make_node("MatMul", [name, f"{SITE}weights{i}"],
                                      [f"{SITE}projected{i}"], name=f"{SITE}MatMul{i}"))
        terms.append(f"{SITE}projected{i}")
    nodes += [helper.make_node("Sum", terms, [f"{SITE}logits"], name=f"{SITE}Sum"),
              helper.make_node("Mul", [f"{SITE}logits", f"{SITE}inv_temperature"],
                               [f"{SITE}scaled"], name=f"{SITE}Temperature"),
              helper.make_node("Softmax", [f"{SITE}scaled"], [PROBS], name=f"{SITE}Softmax",
                               axis=1)]
    graph.initializer.extend(inits)
    graph.node.extend(nodes)
    _sort_nodes(graph)  # nodes that read the probabilities (the heatmap's) now follow the head
    onnx.checker.check_model(out)
    return out


def _sort_nodes(graph: Any) -> None:
    """Order ``graph.node`` topologically (in place), keeping the given order where it holds."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        left = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                left.append(node)
        if len(left) == len(pending):
            raise NotAdaptableError(f"the graph has a cycle or an undefined input at "
                                    f"{left[0].name or left[0].op_type}")
        pending = left
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def parent_offsets(probs: np.ndarray) -> np.ndarray:
    """What the graph's ``site/offset`` computes from the parent's probabilities."""
    return np.log(np.clip(np.asarray(probs, np.float64), PROB_FLOOR, 1.0))

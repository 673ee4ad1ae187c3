"""Input and output names at the Keras -> ONNX boundary.

The contract fixes them: inputs ``image`` and ``masked_image`` (the HSV-masked image), output
``probs``. tf2onnx's output name depends on the route (``probs``, ``Identity:0``, ``output_0``,
TOOLCHAIN.md), so the graph output is renamed when needed.
"""

from __future__ import annotations

from typing import Any

from leukedge.runtime.contract import INPUT_CONTENTS
OUTPUT_NAME = "probs"


def keras_io_names(model: Any, output_name: str = OUTPUT_NAME) -> tuple[dict[str, str], str]:
    """Map content -> input name for a Keras hybrid, and the ONNX output name to use.

    Raises:
        ValueError: when an input name is not one of the contract's, or 'image' is missing.
    """
    names = [str(t.name).split(":")[0] for t in model.inputs]
    unknown = [n for n in names if n not in INPUT_CONTENTS]
    if unknown or "image" not in names or len(set(names)) != len(names):
        raise ValueError(
            f"The Keras model's inputs are named {names}; leukedge needs 'image' and optionally "
            f"'masked_image' (keras.Input(..., name='image')), the names the contract and the "
            "runtime use.")
    if len(model.outputs) != 1:
        raise ValueError(f"The Keras model has {len(model.outputs)} outputs; leukedge exports "
                         "one softmax output")
    return {n: n for n in INPUT_CONTENTS if n in names}, output_name


def rename_graph_output(proto: Any, new_name: str) -> None:
    """Rename the single graph output (and every reference to it) to ``new_name``, in place."""
    outputs = list(proto.graph.output)
    if len(outputs) != 1:
        raise ValueError(f"expected one graph output, found {[o.name for o in outputs]}")
    old = outputs[0].name
    if old == new_name:
        return
    for node in proto.graph.node:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new_name
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new_name
    for vi in proto.graph.value_info:
        if vi.name == old:
            vi.name = new_name
    outputs[0].name = new_name

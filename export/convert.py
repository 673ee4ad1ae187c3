"""Keras network -> ONNX network with tf2onnx, checked before anyone trusts it.

The network is the Keras model between the preprocessing graph and the softmax: inputs ``image``
[and ``masked_image``] (float32 NHWC at the model's size), outputs ``logits`` and ``features``
(the head's input). The route is tf2onnx's ``from_function`` on a ``tf.function`` with explicit
``TensorSpec``s (dynamic batch) at opset 18, the opset of the preprocessing graph's antialiased
``Resize``. tf2onnx logs an op it cannot convert and writes an invalid file anyway, so every
conversion ends with :func:`check_graph`: no unknown op, then ``onnx.checker``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from .errors import ExportError, UnsupportedOpError

OPSET = 18
NETWORK_OUTPUTS = ("logits", "features")


def network_view(model: Any) -> Any:
    """The Keras model with two outputs, ``logits`` and ``features``.

    A model whose ``features`` layer is shared by several graphs (a freshly trained two-phase
    model) is saved and reloaded first, which leaves each layer one graph.
    """
    import keras

    try:
        features = model.get_layer("features").output
    except ValueError as e:
        if "features" in str(e) and "no layer" in str(e).lower():
            raise ExportError("the Keras model has no layer named 'features' (the head's "
                              "input); train it with this leukedge") from e
        with tempfile.TemporaryDirectory() as tmp:  # its custom layers are registered already
            path = os.path.join(tmp, "model.keras")
            model.save(path)
            return network_view(keras.saving.load_model(path, compile=False))
    except AttributeError as e:
        raise ExportError(f"cannot read the model's 'features' layer: {e}") from e
    return keras.Model(model.inputs, {"logits": model.output, "features": features})


def convert_network(model: Any, input_size: tuple[int, int], input_names: tuple[str, ...],
                    opset: int = OPSET) -> Any:
    """Run tf2onnx on the network view; returns an ``onnx.ModelProto`` (checked)."""
    import tensorflow as tf
    import tf2onnx

    view = network_view(model)
    h, w = input_size
    spec = [tf.TensorSpec((None, h, w, 3), tf.float32, name=n) for n in input_names]

    @tf.function(input_signature=spec)
    def serve(*tensors):
        out = view(dict(zip(input_names, tensors)), training=False)
        return {name: out[name] for name in NETWORK_OUTPUTS}

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)  # unsupported ops are reported below
    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset)
    except Exception as e:
        raise ExportError(f"tf2onnx could not convert the model (opset {opset}): "
                          f"{type(e).__name__}: {e}") from e
    check_graph(proto)
    return proto


def check_graph(proto: Any) -> None:
    """Refuse unknown ops (tf2onnx's silent failure) and anything ``onnx.checker`` rejects."""
    import onnx

    unknown = sorted({f"{n.op_type}" + (f" ({n.domain})" if n.domain else "")
                      for n in proto.graph.node if not onnx.defs.has(n.op_type, n.domain)})
    if unknown:
        hint = (" `tf.image.rgb_to_hsv` cannot be exported by any route: leukedge computes the "
                "HSV mask in its own preprocessing graph."
                if any(op.startswith("RGBToHSV") for op in unknown) else "")
        raise UnsupportedOpError(
            f"tf2onnx left operators that ONNX does not define: {', '.join(unknown)}. The file "
            f"would not load in ONNX Runtime; nothing was written.{hint}")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"onnx.checker rejected the converted model: "
                          f"{str(e).splitlines()[0]}") from e

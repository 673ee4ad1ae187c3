"""The preprocessing graph: raw RGB uint8 pixels -> network inputs and input-quality measures.

This graph is THE preprocessing of leukedge: training runs it (in ONNX Runtime) on every
augmented batch, calibration and export checks run it, and every exported model carries it in
front of its network, so Python, Node.js, C++ or Triton all compute the same thing.
:class:`~leukedge.runtime.preprocessing.PreprocessSpec` describes what it does. Standard ONNX ops
only, opset 18 (``Resize`` with ``antialias`` and ``axes``).

Inputs: ``image`` uint8 [N, H, W, 3] RGB, any H and W (one size per batch).
Outputs:

- ``pre/image``: float32 [N, h, w, 3], the normalised network input;
- ``pre/masked_image``: float32 [N, h, w, 3], ``x / 255 * mask`` (only for hybrid models);
- ``stain_fraction``: float32 [N], the share of pixels in the stained-cell mask;
- ``stain_coverage``: float32 [N], the share of pixels with a stain colour in a broad sense
  (hue 0.5-0.85, saturation >= 0.15: the blue-purple of stained nuclei and cytoplasm), an input
  input-check measure. The reference mask above is too narrow for that: it selects no pixel at all in
  396 of the 643 Pro images of the ALL data, which are pale;
- ``contrast``: float32 [N], the standard deviation of the grey level on [0, 1];
- ``stain_mask``: uint8 [N, h, w], the mask itself (1 = stained), for overlays.

Building needs the ``onnx`` package (``[train]`` or ``[dev]``); running needs only onnxruntime.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from leukedge.runtime.preprocessing import HsvMaskSpec, PreprocessSpec

OPSET = 18
INPUT = "image"
NET_IMAGE = "pre/image"
NET_MASKED = "pre/masked_image"
STAIN_FRACTION = "stain_fraction"
STAIN_COVERAGE = "stain_coverage"
CONTRAST = "contrast"
STAIN_MASK = "stain_mask"
QUALITY_OUTPUTS = (STAIN_FRACTION, STAIN_COVERAGE, CONTRAST)
# The broad stain colour of ``stain_coverage`` (hue range and minimum saturation, [0, 1] scale).
STAIN_COLOUR = {"h_min": 0.5, "h_max": 0.85, "s_min": 0.15}
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 grey level
_TINY = 1e-12


class Builder:
    """Collects nodes and initializers; every name gets the prefix (``pre/`` by default)."""

    def __init__(self, prefix: str = "pre/"):
        self.nodes: list = []
        self.inits: list = []
        self.prefix = prefix
        self._n = 0

    def const(self, name: str, value, dtype=np.float32, broadcast: bool = True) -> str:
        """An initializer; float constants get rank 4 ([1, 1, 1, C]) like the image tensors:
        ONNX Runtime broadcasts a rank-0 or rank-1 constant against a rank-4 tensor about 50x
        slower than a rank-4 one (measured: 330 vs 7 us for 224x224 on one thread)."""
        from onnx import numpy_helper

        full = f"{self.prefix}{name}"
        array = np.asarray(value, dtype=dtype)
        if dtype == np.float32 and broadcast:
            array = array.reshape(1, 1, 1, -1)
        self.inits.append(numpy_helper.from_array(array, full))
        return full

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        from onnx import helper

        self._n += 1
        out = output or f"{self.prefix}{op_type.lower()}_{self._n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out],
                                           name=f"{self.prefix}{op_type}_{self._n}", **attrs))
        return out


def hsv_channels(b: Builder, unit: str) -> tuple[str, str, str]:
    """(hue, saturation, value), each [N, h, w, 1], by TensorFlow's ``rgb_to_hsv`` formula."""
    axis = b.const("channel_axis", [3], np.int64)
    r, g, bl = (b.op("Slice", [unit, b.const(f"c{i}_start", [i], np.int64),
                               b.const(f"c{i}_end", [i + 1], np.int64), axis])
                for i in range(3))
    value = b.op("Max", [r, g, bl])
    span = b.op("Sub", [value, b.op("Min", [r, g, bl])])
    tiny = b.const("tiny", _TINY)
    saturation = b.op("Div", [span, b.op("Max", [value, tiny])])
    # TensorFlow's order of operations: (1 / range) * (1 / 6)
    norm = b.op("Mul", [b.op("Reciprocal", [b.op("Max", [span, tiny])]),
                        b.const("one_sixth", 1.0 / 6.0)])
    hue_r = b.op("Mul", [norm, b.op("Sub", [g, bl])])
    hue_g = b.op("Add", [b.op("Mul", [norm, b.op("Sub", [bl, r])]), b.const("two_sixths", 2 / 6)])
    hue_b = b.op("Add", [b.op("Mul", [norm, b.op("Sub", [r, g])]), b.const("four_sixths", 4 / 6)])
    hue = b.op("Where", [b.op("Equal", [value, r]), hue_r,
                         b.op("Where", [b.op("Equal", [value, g]), hue_g, hue_b])])
    zero = b.const("zero", 0.0)
    hue = b.op("Where", [b.op("Greater", [span, zero]), hue, zero])
    hue = b.op("Where", [b.op("Less", [hue, zero]), b.op("Add", [hue, b.const("one", 1.0)]), hue])
    return hue, saturation, value


def _all(b: Builder, conditions: list[str]) -> str:
    mask = conditions[0]
    for c in conditions[1:]:
        mask = b.op("And", [mask, c])
    return mask


def stain_mask(b: Builder, hue: str, saturation: str, value: str, m: HsvMaskSpec) -> str:
    """The reference study's stained-cell mask, each bound widened by the tolerance."""
    tol = m.tolerance
    conditions = [b.op("GreaterOrEqual", [hue, b.const("h_min", m.h_min - tol)]),
                  b.op("LessOrEqual", [hue, b.const("h_max", m.h_max + tol)]),
                  b.op("GreaterOrEqual", [saturation, b.const("s_min", m.s_min - tol)]),
                  b.op("GreaterOrEqual", [value, b.const("v_min", m.v_min - tol)])]
    return _all(b, conditions)


def stain_colour(b: Builder, hue: str, saturation: str) -> str:
    """Pixels of a stain colour in the broad sense of :data:`STAIN_COLOUR`."""
    c = STAIN_COLOUR
    return _all(b, [b.op("GreaterOrEqual", [hue, b.const("colour_h_min", c["h_min"])]),
                    b.op("LessOrEqual", [hue, b.const("colour_h_max", c["h_max"])]),
                    b.op("GreaterOrEqual", [saturation, b.const("colour_s_min", c["s_min"])])])


def _network_image(b: Builder, resized: str, spec: PreprocessSpec) -> str:
    """``(x - mean) / std`` per channel, reordered to BGR when the network wants it.

    One ``MatMul`` with a 3x3 matrix does the channel scale (and order): ONNX Runtime broadcasts
    a [3] constant along NHWC's last axis slowly (450 us per 224x224 image), a MatMul does it in
    a tenth of that. The offset ``-mean / std`` is a scalar when it is the same for every
    channel (EfficientNet-Lite's 127/128), which broadcasts fast.
    """
    mean = np.asarray(spec.mean, np.float64)
    std = np.asarray(spec.std, np.float64)
    order = [2, 1, 0] if spec.channel_order == "BGR" else [0, 1, 2]
    matrix = np.zeros((3, 3))
    for out_channel, in_channel in enumerate(order):
        matrix[in_channel, out_channel] = 1.0 / std[in_channel]
    offset = (-mean / std)[order]
    x = b.op("MatMul", [resized, b.const("channel_scale", matrix, broadcast=False)])
    if np.allclose(offset, offset[0], rtol=0, atol=1e-12):
        return b.op("Add", [x, b.const("offset", offset[0])], output=NET_IMAGE)
    return b.op("Add", [x, b.const("offset", offset)], output=NET_IMAGE)


def _quality(b: Builder, unit: str, mask_f: str, colour: str) -> None:
    from onnx import TensorProto

    axes_hw = b.const("axes_hwc", [1, 2, 3], np.int64)
    b.op("ReduceMean", [mask_f, axes_hw], output=STAIN_FRACTION, keepdims=0)
    colour_f = b.op("Cast", [colour], to=TensorProto.FLOAT)
    b.op("ReduceMean", [colour_f, axes_hw], output=STAIN_COVERAGE, keepdims=0)
    grey = b.op("MatMul", [unit, b.const("luma", np.reshape(LUMA, (3, 1)), broadcast=False)])
    axes = b.const("axes_hw1", [1, 2, 3], np.int64)
    mean = b.op("ReduceMean", [grey, axes], keepdims=0)
    mean_sq = b.op("ReduceMean", [b.op("Mul", [grey, grey]), axes], keepdims=0)
    variance = b.op("Relu", [b.op("Sub", [mean_sq, b.op("Mul", [mean, mean])])])
    b.op("Sqrt", [variance], output=CONTRAST)


def preprocess_nodes(spec: PreprocessSpec) -> tuple[list, list, list[Any]]:
    """(nodes, initializers, output value infos) of the preprocessing graph for ``spec``."""
    from onnx import TensorProto, helper

    b = Builder()
    h, w = spec.input_size
    x = b.op("Cast", [INPUT], to=TensorProto.FLOAT)
    resized = b.op("Resize", [x, "", "", b.const("sizes", [h, w], np.int64)], mode="linear",
                   antialias=1, axes=[1, 2], coordinate_transformation_mode="half_pixel")
    _network_image(b, resized, spec)
    unit = b.op("Mul", [resized, b.const("inv_255", 1.0 / 255.0)])
    hue, saturation, value = hsv_channels(b, unit)
    mask = stain_mask(b, hue, saturation, value, spec.hsv_mask)
    mask_f = b.op("Cast", [mask], to=TensorProto.FLOAT)
    if spec.masked_input:
        b.op("Mul", [unit, mask_f], output=NET_MASKED)
    _quality(b, unit, mask_f, stain_colour(b, hue, saturation))
    b.op("Squeeze", [b.op("Cast", [mask], to=TensorProto.UINT8), b.const("axis_c", [3], np.int64)],
         output=STAIN_MASK)
    f32 = TensorProto.FLOAT
    outputs = [helper.make_tensor_value_info(NET_IMAGE, f32, ["N", h, w, 3])]
    if spec.masked_input:
        outputs.append(helper.make_tensor_value_info(NET_MASKED, f32, ["N", h, w, 3]))
    outputs += [helper.make_tensor_value_info(name, f32, ["N"]) for name in QUALITY_OUTPUTS]
    outputs += [
                helper.make_tensor_value_info(STAIN_MASK, TensorProto.UINT8, ["N", h, w])]
    return b.nodes, b.inits, outputs


def input_value_info() -> Any:
    """The one model input: uint8 [N, H, W, 3] with dynamic batch, height and width."""
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["N", "H", "W", 3])


def preprocess_model(spec: PreprocessSpec, ir_version: int | None = None) -> Any:
    """The preprocessing graph alone as an ``onnx.ModelProto`` (what training runs)."""
    from onnx import helper

    nodes, inits, outputs = preprocess_nodes(spec)
    graph = helper.make_graph(nodes, "leukedge_preprocess", [input_value_info()], outputs, inits)
    return checked_model(graph, ir_version)


def checked_model(graph: Any, ir_version: int | None = None) -> Any:
    """A graph of standard ops as an opset-18 ``onnx.ModelProto``, checked by onnx.checker."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="leukedge")
    if ir_version is not None:
        model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model

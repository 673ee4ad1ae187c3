"""What a model does to raw pixels before its network: the preprocessing spec.

Since contract schema 2 the preprocessing runs *inside* every leukedge ONNX file
(:mod:`leukedge.modelkit.graph.preprocess` builds it): the model takes uint8 RGB pixels of any
size, and training, calibration, export checks, the Python runtime and any other language all
run that same graph. This module only describes it; the description travels in the contract so
a reader can see what the graph does without parsing it.

The steps, for an RGB uint8 image batch [N, H, W, 3]:

1. cast to float32 (0-255);
2. resize to ``input_size`` with ONNX ``Resize`` (linear, ``antialias=1``, half-pixel
   coordinates): a triangle filter widened by the scale factor when shrinking, plain bilinear
   when enlarging, an exact identity at the model's own size. Its result is defined by the ONNX
   specification, not by one library;
3. the network's normalisation ``(x - mean) / std`` per channel (0-255 scale), optionally in
   BGR order for backbones trained that way;
4. the stained-cell mask on [0, 1] HSV (the reference study's purple: ``h_min <= H <= h_max``,
   ``S >= s_min``, ``V >= v_min``, each widened by ``tolerance``), with TensorFlow's
   ``rgb_to_hsv`` formula. Hybrid models take the masked image ``x / 255 * mask`` as a second
   network input; every model reports the mask's area fraction (stain coverage) and the grey
   level spread (contrast) for the input checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

RESIZE = "onnx Resize linear antialias=1 half_pixel"
CHANNEL_ORDERS = ("RGB", "BGR")


def _finite(values: Sequence[float], what: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{what} must be finite numbers, got {list(values)}")
    return out


@dataclass(frozen=True)
class HsvMaskSpec:
    """Thresholds of the purple (stained-cell) mask, all on the [0, 1] HSV scale."""

    h_min: float = 0.7
    h_max: float = 0.8
    s_min: float = 0.5
    v_min: float = 0.4
    tolerance: float = 1e-5

    def __post_init__(self) -> None:
        values = _finite((self.h_min, self.h_max, self.s_min, self.v_min, self.tolerance),
                         "HSV mask thresholds")
        if not (0 <= values[0] <= values[1] <= 1 and 0 <= values[2] <= 1 and 0 <= values[3] <= 1
                and 0 <= values[4] < 0.01):
            raise ValueError(f"HSV mask thresholds out of range: {self}")

    def to_dict(self) -> dict:
        return {"h_min": self.h_min, "h_max": self.h_max, "s_min": self.s_min,
                "v_min": self.v_min, "tolerance": self.tolerance, "scale": "unit"}

    @classmethod
    def from_dict(cls, d: dict) -> "HsvMaskSpec":
        return cls(h_min=float(d["h_min"]), h_max=float(d["h_max"]), s_min=float(d["s_min"]),
                   v_min=float(d["v_min"]), tolerance=float(d.get("tolerance", 1e-5)))


@dataclass(frozen=True)
class PreprocessSpec:
    """Raw RGB uint8 pixels -> network inputs, as the model's graph does it.

    Args:
        input_size: (height, width) the network runs at.
        mean, std: per-channel normalisation on 0-255 pixels, in RGB order.
        channel_order: the order the network sees ("BGR" for caffe-style backbones).
        masked_input: the network also takes the HSV-masked image (a hybrid model).
        hsv_mask: the stained-cell mask thresholds.

    Example:
        >>> PreprocessSpec((224, 224), mean=(127.0,) * 3, std=(128.0,) * 3)
    """

    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (255.0, 255.0, 255.0)
    channel_order: str = "RGB"
    masked_input: bool = False
    hsv_mask: HsvMaskSpec = field(default_factory=HsvMaskSpec)

    def __post_init__(self) -> None:
        h, w = (int(v) for v in self.input_size)
        if h < 8 or w < 8:
            raise ValueError(f"input_size must be at least 8x8 (height, width), "
                             f"got {self.input_size}")
        object.__setattr__(self, "input_size", (h, w))
        mean, std = _finite(self.mean, "mean"), _finite(self.std, "std")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std > 0; got {mean}, {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, "
                             f"got {self.channel_order!r}")

    def to_dict(self) -> dict:
        return {"input_size": list(self.input_size), "input_dtype": "uint8",
                "input_layout": "NHWC", "input_channel_order": "RGB", "resize": RESIZE,
                "mean": list(self.mean), "std": list(self.std),
                "network_channel_order": self.channel_order,
                "masked_input": self.masked_input, "hsv_mask": self.hsv_mask.to_dict(),
                "in_graph": True}

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessSpec":
        return cls(input_size=tuple(d["input_size"]), mean=tuple(d["mean"]),
                   std=tuple(d["std"]), channel_order=d.get("network_channel_order", "RGB"),
                   masked_input=bool(d.get("masked_input", False)),
                   hsv_mask=HsvMaskSpec.from_dict(d["hsv_mask"]))

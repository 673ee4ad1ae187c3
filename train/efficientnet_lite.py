"""EfficientNet-Lite in Keras, laid out so its ImageNet weights port one tensor to one weight.

EfficientNet-Lite is the edge variant of EfficientNet made for integer inference: no
squeeze-and-excitation, ReLU6 everywhere, and a stem (32 filters) and head (1280 filters) that
stay fixed when the model is scaled. Convolutions use TensorFlow's "SAME" padding (Keras
``padding="same"``), BatchNorm epsilon 1e-3.

Layer names follow the checkpoint's keys (:data:`STAGES` and :func:`block_layout`), which
:mod:`leukedge.train.pretrained` maps onto them. The model is a chain of blocks joined by single
tensors, so it can be cut between any two blocks: :meth:`EfficientNetLite.features` applies a
range of blocks to a tensor, which is how training runs the frozen lower blocks once and caches
their output (:mod:`leukedge.train.feature_cache`).

Example:
    >>> net = EfficientNetLite("efficientnet_lite0")
    >>> x = keras.Input((224, 224, 3))
    >>> features = net.features(x)                     # (None, 7, 7, 1280)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

# (repeats, kernel, stride, expansion, output filters) of EfficientNet-B0 / Lite0.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # PyTorch's 0.01; only used when BatchNorm layers are trained


@dataclass(frozen=True)
class LiteVariant:
    """Scaling of one EfficientNet-Lite size."""

    name: str
    width: float
    depth: float
    resolution: int


VARIANTS = {v.name: v for v in (LiteVariant("efficientnet_lite0", 1.0, 1.0, 224),
                                LiteVariant("efficientnet_lite1", 1.0, 1.1, 240),
                                LiteVariant("efficientnet_lite2", 1.1, 1.2, 260))}


@dataclass(frozen=True)
class BlockSpec:
    """One MBConv block: index in the checkpoint, filters in/out, kernel, stride, expansion."""

    index: int
    stage: int
    filters_in: int
    filters_out: int
    kernel: int
    stride: int
    expansion: int

    @property
    def name(self) -> str:
        return f"block{self.index:02d}"

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.filters_in == self.filters_out


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel rounding: scale by ``width``, round to a multiple of ``divisor``."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor) if rounded < 0.9 * scaled else int(rounded)


def block_layout(variant: LiteVariant) -> tuple[BlockSpec, ...]:
    """Every block of a variant, in order. Lite keeps the first and last stage's repeats fixed."""
    blocks, filters_in = [], STEM_FILTERS
    for stage, (repeats, kernel, stride, expansion, out) in enumerate(STAGES):
        fixed = stage in (0, len(STAGES) - 1)
        n = repeats if fixed else int(math.ceil(variant.depth * repeats))
        filters_out = round_filters(out, variant.width)
        for r in range(n):
            blocks.append(BlockSpec(len(blocks), stage, filters_in, filters_out, kernel,
                                    stride if r == 0 else 1, expansion))
            filters_in = filters_out
    return tuple(blocks)


def get_variant(name: str) -> LiteVariant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"Unknown EfficientNet-Lite variant {name!r}. "
                         f"Valid: {', '.join(VARIANTS)}") from None


class EfficientNetLite:
    """The layers of one EfficientNet-Lite backbone (no top), applied to tensors on request.

    Layers are created once; :meth:`features` may be called several times (on the full input, or
    on a cached intermediate tensor) and every call shares the same weights.
    """

    def __init__(self, variant: str = "efficientnet_lite0", name_prefix: str = ""):
        import keras
        from keras import layers

        self.variant = get_variant(variant)
        self.blocks = block_layout(self.variant)
        p = name_prefix

        def conv(filters, kernel, stride, name):
            return layers.Conv2D(filters, kernel, strides=stride, padding="same",
                                 use_bias=False, name=p + name)

        def bn(name):
            return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                             name=p + name)

        def relu6(name):
            return layers.ReLU(6.0, name=p + name)

        self.layers: dict[str, keras.layers.Layer] = {}
        add = self.layers.__setitem__
        add("stem_conv", conv(STEM_FILTERS, 3, 2, "stem_conv"))
        add("stem_bn", bn("stem_bn"))
        add("stem_relu", relu6("stem_relu"))
        for b in self.blocks:
            expanded = b.filters_in * b.expansion
            if b.expansion != 1:
                add(f"{b.name}_expand_conv", conv(expanded, 1, 1, f"{b.name}_expand_conv"))
                add(f"{b.name}_expand_bn", bn(f"{b.name}_expand_bn"))
                add(f"{b.name}_expand_relu", relu6(f"{b.name}_expand_relu"))
            add(f"{b.name}_dwconv", layers.DepthwiseConv2D(
                b.kernel, strides=b.stride, padding="same", use_bias=False,
                name=f"{p}{b.name}_dwconv"))
            add(f"{b.name}_dw_bn", bn(f"{b.name}_dw_bn"))
            add(f"{b.name}_dw_relu", relu6(f"{b.name}_dw_relu"))
            add(f"{b.name}_project_conv", conv(b.filters_out, 1, 1, f"{b.name}_project_conv"))
            add(f"{b.name}_project_bn", bn(f"{b.name}_project_bn"))
            if b.residual:
                add(f"{b.name}_add", layers.Add(name=f"{p}{b.name}_add"))
        add("head_conv", conv(HEAD_FILTERS, 1, 1, "head_conv"))
        add("head_bn", bn("head_bn"))
        add("head_relu", relu6("head_relu"))

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def stem(self, x, training: Optional[bool] = None):
        L = self.layers
        return L["stem_relu"](L["stem_bn"](L["stem_conv"](x), training=training))

    def block(self, b: BlockSpec, x, training: Optional[bool] = None):
        L, y = self.layers, x
        if b.expansion != 1:
            y = L[f"{b.name}_expand_conv"](y)
            y = L[f"{b.name}_expand_relu"](L[f"{b.name}_expand_bn"](y, training=training))
        y = L[f"{b.name}_dw_relu"](L[f"{b.name}_dw_bn"](L[f"{b.name}_dwconv"](y),
                                                          training=training))
        y = L[f"{b.name}_project_bn"](L[f"{b.name}_project_conv"](y), training=training)
        return L[f"{b.name}_add"]([y, x]) if b.residual else y

    def head(self, x, training: Optional[bool] = None):
        L = self.layers
        return L["head_relu"](L["head_bn"](L["head_conv"](x), training=training))

    def features(self, x, start: int = 0, stop: Optional[int] = None,
                 training: Optional[bool] = None):
        """Apply blocks ``start`` .. ``stop - 1`` (0 = from the stem; ``stop`` None = through the
        head conv). ``x`` is the normalised image when ``start == 0``, else the output of block
        ``start - 1``."""
        stop = self.num_blocks if stop is None else stop
        if not 0 <= start <= stop <= self.num_blocks:
            raise ValueError(f"block range {start}..{stop} outside 0..{self.num_blocks}")
        if start == 0:
            x = self.stem(x, training)
        for b in self.blocks[start:stop]:
            x = self.block(b, x, training)
        if stop == self.num_blocks:
            x = self.head(x, training)
        return x

    def cut_shape(self, input_size: tuple[int, int], start: int) -> tuple[int, int, int]:
        """(height, width, channels) of the tensor entering block ``start`` (SAME padding)."""
        h, w = input_size
        h, w = math.ceil(h / 2), math.ceil(w / 2)  # the stem's stride
        channels = STEM_FILTERS
        for b in self.blocks[:start]:
            h, w = math.ceil(h / b.stride), math.ceil(w / b.stride)
            channels = b.filters_out
        return h, w, channels

    def frozen_layer_names(self, start: int) -> list[str]:
        """Names of the layers that run before block ``start`` (the frozen part)."""
        names = ["stem_conv", "stem_bn", "stem_relu"]
        for b in self.blocks[:start]:
            names += [k for k in self.layers if k.startswith(b.name + "_")]
        return names

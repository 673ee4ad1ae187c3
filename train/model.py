"""The hybrid classifier: backbone(image) + U-Net-style block on the masked image -> head.

Interfaces (docs/ARCHITECTURE.md): inputs ``image`` and ``masked_image`` (float32 NHWC from
``runtime.preprocess.preprocess_array``), one softmax output layer ``probs``.

Seg-feature reduction: ``none`` leaves the segmentation branch out (an image-only model with one
input, the ablation that shows what the branch earns); ``flatten`` is the seed's exact choice (at
224x224 the 56x56x128 map gives 401,408 features and a >200 M-parameter first Dense layer, which
cannot be exported on a 24 GB machine); ``gap`` pools the map globally (the edge default).
:func:`flatten_parameter_count` gives the flatten variant's size from the cheap ``gap`` model,
without building the big one.

Example:
    >>> config = HybridConfig.resolve("small_cnn", input_size=(64, 64))
    >>> model = build_hybrid(config)
    >>> count_parameters(model)["total"]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Optional, Sequence

from leukedge.runtime.contract import INPUT_CONTENTS

from .backbones import BackboneSpec, get_backbone

SEG_FEATURES = ("gap", "flatten", "none")
SEG_FILTERS = (32, 64, 128, 256)  # the seed's segmentation encoder


@dataclass(frozen=True)
class HybridConfig:
    """Everything that defines a hybrid's architecture (recorded in run.json)."""

    backbone: str = "small_cnn"
    input_size: tuple[int, int] = (128, 128)
    seg_features: str = "gap"
    seg_width: float = 0.5
    seg_depth: int = 4
    num_classes: int = 4
    head_units: tuple[int, ...] = (256, 128)
    dropout: float = 0.5
    l2: float = 0.01

    @classmethod
    def resolve(cls, backbone: str = "small_cnn", *, input_size: Optional[Sequence[int]] = None,
                seg_width: Optional[float] = None, head_units: Optional[Sequence[int]] = None,
                dropout: Optional[float] = None, **kwargs) -> "HybridConfig":
        """A config with the backbone row's defaults for every argument left as None."""
        row = get_backbone(backbone)
        config = cls(backbone=backbone,
                     input_size=tuple(int(v) for v in (input_size or row.default_input_size)),
                     seg_width=float(row.seg_width if seg_width is None else seg_width),
                     head_units=tuple(int(u) for u in (head_units or row.head_units)),
                     dropout=float(row.dropout if dropout is None else dropout), **kwargs)
        config.validate()
        return config

    @property
    def row(self) -> BackboneSpec:
        return get_backbone(self.backbone)

    def validate(self) -> None:
        """Raises ValueError for settings the model cannot be built with."""
        if self.seg_features not in SEG_FEATURES:
            raise ValueError(f"Unknown seg_features {self.seg_features!r}. "
                             f"Valid: {', '.join(SEG_FEATURES)}")
        step = 2 ** (self.seg_depth - 1) if self.seg_features != "none" else 1
        h, w = self.input_size
        if h < 32 or w < 32 or h % step or w % step:
            raise ValueError(f"input_size {self.input_size} must be >= 32 and divisible by {step} "
                             f"(the segmentation block pools {self.seg_depth - 1} times)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")

    @property
    def input_names(self) -> tuple[str, ...]:
        """The model's inputs: ``image``, and ``masked_image`` unless seg_features is "none"."""
        return INPUT_CONTENTS[:1] if self.seg_features == "none" else INPUT_CONTENTS

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"], d["head_units"] = list(self.input_size), list(self.head_units)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "HybridConfig":
        d = dict(d)
        d["input_size"] = tuple(d["input_size"])
        d["head_units"] = tuple(d["head_units"])
        return cls(**d)


def build_hybrid(config: HybridConfig | str = "small_cnn", weights: Optional[str] = None,
                 **overrides):
    """Build the two-input hybrid Keras model.

    Args:
        config: a :class:`HybridConfig`, or a backbone name resolved with ``overrides``.
        weights: backbone weights: None, "imagenet" or a local .h5/.weights.h5 file.
        **overrides: HybridConfig fields when ``config`` is a name.

    Returns:
        A ``keras.Model`` with inputs ``image`` and ``masked_image`` (only ``image`` when
        seg_features is "none") and the softmax ``probs``.
    """
    import keras
    from keras import layers

    from .backbones import resolve_weights
    from .blocks import classification_head, image_branch, segmentation_block

    if isinstance(config, str):
        config = HybridConfig.resolve(config, **overrides)
    elif overrides:
        config = replace(config, **overrides)
    config.validate()
    row = config.row
    weights = resolve_weights(row, weights)
    shape = (*config.input_size, 3)
    image = keras.Input(shape, name="image")
    image_features = image_branch(image, row, weights)
    name = f"leukedge_{config.backbone}_{config.seg_features}"
    if config.seg_features == "none":
        probs = classification_head(image_features, config.num_classes, config.head_units,
                                    config.dropout, config.l2)
        return keras.Model({"image": image}, probs, name=name)
    masked = keras.Input(shape, name="masked_image")
    seg_in = masked
    if abs(row.scale - 1 / 255) > 1e-12:  # the seg block always sees [0, 1] pixels
        seg_in = layers.Rescaling((1 / 255) / row.scale, name="seg_rescale")(masked)
    seg_map = segmentation_block(seg_in, config.seg_width, config.seg_depth)
    reduce = layers.GlobalAveragePooling2D if config.seg_features == "gap" else layers.Flatten
    seg_features = reduce(name=f"seg_{config.seg_features}")(seg_map)
    x = layers.Concatenate(name="features")([image_features, seg_features])
    probs = classification_head(x, config.num_classes, config.head_units, config.dropout, config.l2)
    return keras.Model({"image": image, "masked_image": masked}, probs, name=name)


def count_parameters(model) -> dict[str, int]:
    """Total, trainable and non-trainable parameter counts of a Keras model."""
    import math

    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    non_trainable = sum(math.prod(w.shape) for w in model.non_trainable_weights)
    return {"total": trainable + non_trainable, "trainable": trainable,
            "non_trainable": non_trainable}


def seg_map_shape(input_size: Sequence[int], seg_width: float = 1.0,
                  seg_depth: int = 4) -> tuple[int, int, int]:
    """(height, width, channels) of the segmentation block's output map."""
    factor = 2 ** (seg_depth - 2)
    channels = max(4, int(round(SEG_FILTERS[seg_depth - 2] * seg_width)))
    return int(input_size[0]) // factor, int(input_size[1]) // factor, channels


def flatten_parameter_count(gap_model, config: HybridConfig) -> int:
    """Parameters the ``flatten`` variant of a built ``gap`` hybrid would have (exact).

    Only the first head layer differs: its kernel gets ``h*w*c`` seg rows instead of ``c``.
    """
    if config.seg_features != "gap":
        raise ValueError("flatten_parameter_count needs the gap variant's model and config")
    h, w, c = seg_map_shape(config.input_size, config.seg_width, config.seg_depth)
    first_units = config.head_units[0] if config.head_units else config.num_classes
    return count_parameters(gap_model)["total"] + (h * w * c - c) * first_units

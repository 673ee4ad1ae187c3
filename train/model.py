"""The classifier: backbone(image) [+ U-Net-style block on the masked image] -> head.

Interfaces (docs/ARCHITECTURE.md): the Keras model takes the outputs of the preprocessing graph
(:mod:`leukedge.modelkit.graph.preprocess`), ``image`` (normalised, float32 NHWC) and, for a
hybrid, ``masked_image`` ([0, 1]); its output layer is the linear ``logits`` (trained with a
from-logits cross-entropy) and the head's input is the layer ``features``. Export reads both:
it puts the softmax with the calibrated temperature behind the logits, and the
out-of-distribution score behind the features.

Seg-feature reduction: ``none`` leaves the segmentation branch out (an image-only model with one
input); ``flatten`` is the reference study's choice (at 224x224 the 56x56x128 map gives 401,408
features and a >200 M-parameter first Dense layer, which cannot be exported on a 24 GB
machine); ``gap`` pools the map globally (the edge choice). :func:`flatten_parameter_count`
gives the flatten variant's size from the cheap ``gap`` model, without building the big one.

EfficientNet-Lite backbones are also built in two parts for two-phase training (:func:`build_parts`):
a frozen ``lower`` part (stem and early blocks) whose output training caches, and a trainable
``upper`` part that starts from that cache; both share their layers with the full model.

Example:
    >>> config = HybridConfig.resolve("small_cnn", input_size=(64, 64))
    >>> model = build_hybrid(config)
    >>> count_parameters(model)["total"]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Optional, Sequence

from leukedge.runtime.preprocessing import PreprocessSpec

from leukedge.modelkit.backbones import BackboneSpec, get_backbone

SEG_FEATURES = ("gap", "flatten", "none")
INPUTS = ("image", "masked_image")
CUT_INPUT = "cut"


@dataclass(frozen=True)
class HybridConfig:
    """Everything that defines a model's architecture (recorded in the run record)."""

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
                     head_units=tuple(int(u) for u in (row.head_units if head_units is None
                                                       else head_units)),
                     dropout=float(row.dropout if dropout is None else dropout), **kwargs)
        config.validate()
        return config

    @property
    def row(self) -> BackboneSpec:
        return get_backbone(self.backbone)

    @property
    def hybrid(self) -> bool:
        """Whether the model has the segmentation branch (and the masked-image input)."""
        return self.seg_features != "none"

    def validate(self) -> None:
        """Raises ValueError for settings the model cannot be built with."""
        if self.seg_features not in SEG_FEATURES:
            raise ValueError(f"Unknown seg_features {self.seg_features!r}. "
                             f"Valid: {', '.join(SEG_FEATURES)}")
        step = 2 ** (self.seg_depth - 1) if self.hybrid else 1
        h, w = self.input_size
        if h < 32 or w < 32 or h % step or w % step:
            raise ValueError(f"input size {h}x{w} must be >= 32 and divisible by {step} "
                             f"(the segmentation block pools {self.seg_depth - 1} times)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.row.kind == "classical" and self.hybrid:
            raise ValueError(f"--backbone {self.backbone} takes hand-made features of the image "
                             "(the stain mask included); use --seg-features none")

    @property
    def input_names(self) -> tuple[str, ...]:
        """The network's inputs: ``image``, and ``masked_image`` for a hybrid."""
        return INPUTS if self.hybrid else INPUTS[:1]

    def preprocess_spec(self) -> PreprocessSpec:
        """The preprocessing graph this model is trained behind and exported with."""
        row = self.row
        return PreprocessSpec(input_size=self.input_size, mean=row.mean, std=row.std,
                              channel_order=row.channel_order, masked_input=self.hybrid)

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


@dataclass
class ModelParts:
    """The full model and, for two-phase training, its frozen and trainable parts.

    ``lower`` maps the normalised image to the tensor entering block ``cut``; ``upper`` maps
    that tensor (input ``cut``, plus ``masked_image`` for a hybrid) to the logits. All three
    share their layers, so training ``upper`` trains ``full``.
    """

    full: Any
    lower: Any = None
    upper: Any = None
    cut: Optional[int] = None
    backbone: Any = None  # the EfficientNetLite layer set, when there is one
    head: Any = None  # the shared segmentation branch and head layers


class _Head:
    """The segmentation branch and classification head, built once and applied to tensors."""

    def __init__(self, config: HybridConfig, masked_shape: tuple[int, int, int]):
        import keras
        from keras import layers

        from .blocks import head_layers, segmentation_block

        self.config = config
        self.seg = None
        if config.hybrid:
            masked = keras.Input(masked_shape, name="seg_input")
            seg_map = segmentation_block(masked, config.seg_width, config.seg_depth)
            reduce = (layers.GlobalAveragePooling2D if config.seg_features == "gap"
                      else layers.Flatten)
            self.seg = keras.Model(masked, reduce(name=f"seg_{config.seg_features}")(seg_map),
                                   name="segmentation_branch")
        self.pool = layers.GlobalAveragePooling2D(name="image_gap")
        self.join = layers.Concatenate(name="features") if config.hybrid else \
            layers.Identity(name="features")
        self.dense = head_layers(config.num_classes, config.head_units, config.dropout, config.l2)

    def __call__(self, backbone_map, masked=None):
        x = self.pool(backbone_map)
        x = self.join([x, self.seg(masked)]) if self.seg is not None else self.join(x)
        for layer in self.dense:
            x = layer(x)
        return x


def _inputs(config: HybridConfig) -> dict:
    import keras

    shape = (*config.input_size, 3)
    return {name: keras.Input(shape, name=name) for name in config.input_names}


def build_parts(config: HybridConfig, weights: Optional[str] = None,
                fine_tune_from: Optional[int] = None) -> ModelParts:
    """Build the model; for EfficientNet-Lite, also its lower and upper parts at block
    ``fine_tune_from`` (default: the row's ``fine_tune_stage``)."""
    import keras

    from .blocks import lite_backbone, other_backbone

    config.validate()
    row = config.row
    inputs = _inputs(config)
    head = _Head(config, (*config.input_size, 3))
    masked = inputs.get("masked_image")
    name = f"leukedge_{config.backbone}_{config.seg_features}"
    if row.kind != "efficientnet_lite":
        base = other_backbone(row, (*config.input_size, 3), weights)
        full = keras.Model(inputs, head(base(inputs["image"]), masked), name=name)
        return ModelParts(full=full, head=head)
    net = lite_backbone(row, weights)
    full = keras.Model(inputs, head(net.features(inputs["image"]), masked), name=name)
    cut = fine_tune_from if fine_tune_from is not None else first_block_of_stage(
        net, row.fine_tune_stage or 0)
    lower = keras.Model(inputs["image"], net.features(inputs["image"], 0, cut), name="lower")
    cut_in = keras.Input(net.cut_shape(config.input_size, cut), name=CUT_INPUT)
    upper_inputs = {CUT_INPUT: cut_in}
    upper_masked = None
    if masked is not None:
        upper_masked = keras.Input((*config.input_size, 3), name="masked_image")
        upper_inputs["masked_image"] = upper_masked
    upper = keras.Model(upper_inputs, head(net.features(cut_in, cut), upper_masked),
                        name="upper")
    return ModelParts(full=full, lower=lower, upper=upper, cut=cut, backbone=net, head=head)


def first_block_of_stage(net, stage: int) -> int:
    """Index of the first block of ``stage`` in an EfficientNet-Lite layout."""
    for block in net.blocks:
        if block.stage >= stage:
            return block.index
    return net.num_blocks


def build_hybrid(config: HybridConfig | str = "small_cnn", weights: Optional[str] = None,
                 **overrides):
    """Build the Keras model (inputs ``image`` [and ``masked_image``], output the logits).

    Args:
        config: a :class:`HybridConfig`, or a backbone name resolved with ``overrides``.
        weights: backbone weights: None, "imagenet" or a local weights file.
        **overrides: HybridConfig fields when ``config`` is a name.
    """
    if isinstance(config, str):
        config = HybridConfig.resolve(config, **overrides)
    elif overrides:
        config = replace(config, **overrides)
    return build_parts(config, weights).full


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
    from .blocks import SEG_FILTERS

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

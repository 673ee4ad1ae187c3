"""The backbone registry: one frozen row per image backbone, one lookup function.

Each row knows its Keras constructor, the input scaling it expects (the contract's
``PreprocessSpec`` scale/offset, plus any per-channel normalization the model does itself), how many
layers the seed froze when fine-tuning pretrained weights, its default input size, and the defaults of
the hybrid built around it (segmentation width, head).

Input scaling, decided per row:

- ``small_cnn``, ``densenet201``, ``vgg16``: the contract feeds [0, 1] pixels (``scale=1/255``, the
  seed's ``rescale``). DenseNet's ImageNet weights expect Keras' "torch" mode and VGG16's the "caffe"
  mode (BGR, 0-255, mean subtracted); an :class:`~leukedge.train.layers.InputNormalization` layer
  inside the model does that, so the exported ONNX carries it and the runtime stays scalar.
- ``convnext_*``, ``efficientnet_b0``, ``mobilenet_v3_small``: the Keras models normalize 0-255
  input themselves, so the contract feeds 0-255 (``scale=1.0``).

Every ``keras.applications`` backbone passes through
:func:`leukedge.train.convertible.make_convertible`, which swaps the layers tf2onnx cannot convert
(ConvNeXt's grouped convolutions and exact GELU, the built-in ``Normalization`` layers of ConvNeXt
and EfficientNet) for equivalent ones.

Example:
    >>> row = get_backbone("small_cnn")
    >>> row.scale, row.default_input_size
    (0.00392156862745098, (128, 128))
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

TORCH_MEAN, TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
WEIGHT_SUFFIXES = (".h5",)  # Keras .h5 and .weights.h5 weight files


@dataclass(frozen=True)
class BackboneSpec:
    """One registry row. ``constructor`` names a ``keras.applications`` function or ``small_cnn``."""

    name: str
    constructor: str
    scale: float
    normalization: Optional[str] = None  # None, "torch" or "caffe" (done inside the model)
    frozen_layers: int = 0  # the seed's: first N backbone layers frozen when weights are loaded
    default_input_size: tuple[int, int] = (224, 224)
    pretrained: bool = True  # ImageNet weights exist
    light: bool = False  # meant for edge devices
    constructor_kwargs: tuple[tuple[str, object], ...] = ()
    seg_width: float = 1.0  # defaults of the hybrid around this backbone
    head_units: tuple[int, ...] = (512, 256, 128)
    dropout: float = 0.7
    notes: str = field(default="", compare=False)

    @property
    def offset(self) -> float:
        return 0.0


BACKBONES: tuple[BackboneSpec, ...] = (
    BackboneSpec("densenet201", "DenseNet201", scale=1 / 255, normalization="torch",
                 frozen_layers=500, notes="the seed's main model"),
    BackboneSpec("convnext_tiny", "ConvNeXtTiny", scale=1.0, frozen_layers=100),
    BackboneSpec("convnext_base", "ConvNeXtBase", scale=1.0, frozen_layers=100),
    BackboneSpec("vgg16", "VGG16", scale=1 / 255, normalization="caffe"),
    BackboneSpec("mobilenet_v3_small", "MobileNetV3Small", scale=1.0, light=True,
                 seg_width=0.5, head_units=(256, 128), dropout=0.5,
                 constructor_kwargs=(("include_preprocessing", True),)),
    BackboneSpec("efficientnet_b0", "EfficientNetB0", scale=1.0, light=True,
                 seg_width=0.5, head_units=(256, 128), dropout=0.5),
    BackboneSpec("small_cnn", "small_cnn", scale=1 / 255, pretrained=False, light=True,
                 default_input_size=(128, 128), seg_width=0.25, head_units=(256, 128), dropout=0.5,
                 notes="trained from scratch: 5 Conv-BN-ReLU-MaxPool blocks 16-32-64-128-256"),
)

_BY_NAME = {row.name: row for row in BACKBONES}


def backbone_names() -> tuple[str, ...]:
    """Valid backbone names, in registry order."""
    return tuple(_BY_NAME)


def get_backbone(name: str) -> BackboneSpec:
    """The registry row called ``name``.

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"Unknown backbone {name!r}. Valid: {', '.join(_BY_NAME)}") from None


def resolve_weights(row: BackboneSpec, weights: Optional[str | os.PathLike]) -> Optional[str]:
    """Check a ``weights`` argument against a row: None, "imagenet" or an existing local file.

    Raises:
        ValueError: "imagenet" for a backbone without pretrained weights, or a missing/odd file.
    """
    if weights is None or str(weights).lower() in ("none", ""):
        return None
    if str(weights).lower() == "imagenet":
        if not row.pretrained:
            raise ValueError(f"Backbone {row.name!r} has no ImageNet weights (it is trained from "
                             "scratch); use weights=None or a local weights file")
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise ValueError(f"Weights {str(weights)!r} are neither 'imagenet', 'none' nor an "
                         "existing file")
    if not str(path).endswith(WEIGHT_SUFFIXES):
        raise ValueError(f"Weights file {str(path)!r} is not a Keras weights file "
                         "(.h5 or .weights.h5)")
    return str(path)

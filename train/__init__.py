"""leukedge train: Keras backbone registry, hybrid model, augmentation, training loop, run folder.

Importing this package does not import TensorFlow; the functions that need it import it.

Example:
    >>> from leukedge.train import train, load_model
    >>> result = train("/data/ALL", "runs/small", backbone="small_cnn", epochs=30)
    >>> model = load_model(result.out_dir / "model.keras")
"""

from __future__ import annotations

import os

from .augment import AugmentSpec, augment
from .backbones import BACKBONES, BackboneSpec, backbone_names, get_backbone
from .fit import TrainResult, TrainSettings, train
from .model import (SEG_FEATURES, HybridConfig, build_hybrid, count_parameters,
                    flatten_parameter_count, seg_map_shape)


def register_custom_layers() -> None:
    """Import the modules that register leukedge's custom Keras layers."""
    from . import layers  # noqa: F401


def load_model(path: str | os.PathLike, compile: bool = False):
    """Load a leukedge ``.keras`` model (custom layers registered first).

    Raises:
        ValueError: the file is missing or not a Keras model.
    """
    import keras

    register_custom_layers()
    if not os.path.isfile(path):
        raise ValueError(f"Keras model {str(path)!r} does not exist")
    try:
        return keras.saving.load_model(path, compile=compile)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"Cannot load Keras model {str(path)!r}: {e}") from e


__all__ = [
    "AugmentSpec", "augment", "BACKBONES", "BackboneSpec", "backbone_names", "get_backbone",
    "TrainResult", "TrainSettings", "train", "SEG_FEATURES", "HybridConfig", "build_hybrid",
    "count_parameters", "flatten_parameter_count", "seg_map_shape", "register_custom_layers",
    "load_model",
]

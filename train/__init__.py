"""leukedge train: backbone registry, classifier, augmentation, training, run folder.

Importing this package imports neither TensorFlow nor numpy-heavy modules: names are loaded on
first use, and the functions that need TensorFlow import it.

Example:
    >>> from leukedge.train import get_recipe, train, load_model
    >>> result = train("/data/ALL", "runs/lite0")          # the bundled CNN's recipe
    >>> result = train("/data/ALL", "runs/quick", settings=get_recipe("lite0-224-s3")
    ...                .settings(epochs=3))
    >>> model = load_model(result.out_dir / "model.keras")
"""

from __future__ import annotations

import importlib
import os

from leukedge.modelkit.backbones import BACKBONES, BackboneSpec, backbone_names, get_backbone

_LAZY = {
    "AugmentSpec": ".augment", "augment": ".augment",
    "TrainResult": ".fit", "train": ".fit",
    "SEG_FEATURES": ".model", "HybridConfig": ".model", "build_hybrid": ".model",
    "build_parts": ".model", "count_parameters": ".model", "flatten_parameter_count": ".model",
    "seg_map_shape": ".model",
    "TrainSettings": ".settings",
    "DEFAULT_RECIPE": ".recipes", "RECIPES": ".recipes", "Recipe": ".recipes",
    "get_recipe": ".recipes", "recipe_names": ".recipes",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


__all__ = ["BACKBONES", "BackboneSpec", "backbone_names", "get_backbone", "register_custom_layers",
           "load_model", *_LAZY]

"""Training recipes: named rows of (architecture, training settings, weights), the one place
where a recipe's values live.

`leukedge train` (``--recipe NAME``), the Python :func:`leukedge.train.fit.train` and the
grouped cross-validation (:mod:`leukedge.train.crossval`) all read these rows, so a model
trained from the command line, from Python or inside a fold is the same model. Options given
on top (``--epochs 5``) replace single values of the row.

A row states only what differs from the defaults of :class:`~leukedge.train.model.HybridConfig`
(filled from the backbone's registry row) and :class:`~leukedge.train.settings.TrainSettings`.

Example:
    >>> recipe = get_recipe("lite0-224-s3")
    >>> config, settings = recipe.config(), recipe.settings(epochs=5)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional

from leukedge.modelkit.backbones import CLASSICAL, get_backbone, resolve_weights

DEFAULT_RECIPE = "lite0-224-s3"  # the 0.3 bundled CNN; 0.4 bundles lite0-224-acq (docs/RESULTS.md)
# How recipes are cross-validated (leukedge.train.crossval): folds, and the seed of the fold
# assignment (fold k trains with seed + k)
CV_FOLDS = 5
CV_SEED = 2026


@dataclass(frozen=True)
class Recipe:
    """One row: ``model`` holds :meth:`HybridConfig.resolve` arguments (``backbone`` apart),
    ``train`` holds :class:`TrainSettings` fields, ``weights`` is "imagenet" or None."""

    name: str
    backbone: str
    model: tuple[tuple[str, Any], ...] = ()
    train: tuple[tuple[str, Any], ...] = ()
    weights: Optional[str] = None
    notes: str = field(default="", compare=False)

    def config(self, **overrides: Any):
        """The architecture; ``overrides`` (None values ignored) replace the row's values."""
        from .model import HybridConfig

        kwargs = {**dict(self.model), **_given(overrides)}
        return HybridConfig.resolve(kwargs.pop("backbone", self.backbone), **kwargs)

    def settings(self, augment: Optional[dict] = None, **overrides: Any):
        """The training settings; ``overrides`` and ``augment`` (AugmentSpec fields), None
        values ignored, replace the row's."""
        from .settings import TrainSettings

        row = dict(self.train)
        changes = {**dict(row.pop("augment", ())), **_given(augment or {})}
        settings = TrainSettings(**{**row, **_given(overrides)})
        return settings.with_updates(augment=replace(settings.augment, **changes)) if changes \
            else settings

    def weights_for(self, backbone: str, given: Optional[str] = None) -> Optional[str]:
        """The weights to train ``backbone`` from, checked (:func:`resolve_weights`): ``given``
        (a ``--weights`` value), else the row's when the backbone is the row's, else ImageNet
        where the backbone has such weights.

        Raises:
            ValueError: naming ``--weights`` (e.g. weights for a classical row).
        """
        row = get_backbone(backbone)
        if given is None:
            given = self.weights if backbone == self.backbone else (
                "imagenet" if row.pretrained else None)
        elif row.kind == CLASSICAL and given.lower() != "none":
            raise ValueError(f"--backbone {backbone} has no weights to load (it is fitted on "
                             "hand-made features); leave out --weights")
        return resolve_weights(row, given)

    def to_dict(self) -> dict:
        return {"name": self.name, "backbone": self.backbone, "model": dict(self.model),
                "train": {k: dict(v) if k == "augment" else _jsonable(v) for k, v in self.train},
                "weights": self.weights}


def _given(values: dict) -> dict:
    return {k: v for k, v in values.items() if v is not None}


def _jsonable(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else value


_LITE = (("seg_features", "none"), ("input_size", (224, 224)), ("l2", 1e-4))
_FINE_TUNE = (("epochs", 15), ("head_epochs", 30), ("learning_rate", 2e-4), ("patience", 4))
_CLASSICAL = (("bank_copies", 3),)
# Another microscope's changes, drawn per copy (modelkit/acquisition.py; issue 21): scale over
# 0.7-1.5x, wider stain colour and density, exposure, defocus, sensor noise, JPEG
_ACQUISITION = (("augment", (("magnification", (0.7, 1.5)), ("stain_density", 0.2),
                             ("hue_deg", 20.0), ("saturation", (0.6, 1.4)),
                             ("brightness", (0.6, 1.3)), ("contrast", (0.75, 1.3)),
                             ("defocus_sigma", 1.5), ("noise_sigma", 10.0),
                             ("jpeg_quality", (40, 95)))),)

RECIPES: tuple[Recipe, ...] = (
    Recipe("lite0-224-s3", "efficientnet_lite0", _LITE,
           _FINE_TUNE + (("bank_copies", 10), ("fine_tune_from", 5)), "imagenet",
           notes="the 0.3 bundled CNN: fine-tuned from stage 3 (block 5); the default recipe"),
    Recipe("lite0-224-acq", "efficientnet_lite0", _LITE,
           _FINE_TUNE + (("bank_copies", 10), ("fine_tune_from", 5)) + _ACQUISITION, "imagenet",
           notes="the 0.4 bundled CNN: lite0-224-s3 trained over acquisition changes"),
    Recipe("lite0-224", "efficientnet_lite0", _LITE,
           _FINE_TUNE + (("bank_copies", 10), ("fine_tune_from", 8)), "imagenet",
           notes="fine-tuned from stage 4 (block 8): the runner-up"),
    Recipe("lite0-224-s2", "efficientnet_lite0", _LITE,
           _FINE_TUNE + (("bank_copies", 8), ("fine_tune_from", 3)), "imagenet",
           notes="fine-tuned from stage 2 (block 3)"),
    Recipe("lite0-224-e2e", "efficientnet_lite0", _LITE,
           (("method", "end_to_end"), ("epochs", 10), ("learning_rate", 2e-4),
            ("schedule", "cosine")), "imagenet",
           notes="every layer, every step"),
    Recipe("lite0-160", "efficientnet_lite0",
           (("seg_features", "none"), ("input_size", (160, 160)), ("l2", 1e-4)),
           _FINE_TUNE + (("bank_copies", 10),), "imagenet", notes="160 px input"),
    Recipe("lite0-224-hybrid", "efficientnet_lite0",
           (("seg_features", "gap"), ("input_size", (224, 224)), ("seg_width", 0.25),
            ("l2", 1e-4)),
           (("epochs", 15), ("head_epochs", 10), ("learning_rate", 2e-4), ("patience", 4),
            ("bank_copies", 10)), "imagenet",
           notes="the reference study's hybrid: CNN + segmentation block on the masked image"),
    Recipe("small_cnn-128", "small_cnn",
           (("seg_features", "none"), ("input_size", (128, 128)), ("l2", 1e-4)),
           (("epochs", 30), ("learning_rate", 1e-3), ("schedule", "cosine")),
           notes="trained from scratch"),
    Recipe("svm-128", "svm", (("seg_features", "none"), ("input_size", (128, 128))), _CLASSICAL,
           notes="the reference study's SVM row, hand-made features at 128 px"),
    Recipe("xgboost-128", "xgboost", (("seg_features", "none"), ("input_size", (128, 128))),
           _CLASSICAL, notes="the reference study's XGBoost row, hand-made features at 128 px"),
    Recipe("xgboost-64", "xgboost", (("seg_features", "none"), ("input_size", (64, 64))),
           _CLASSICAL, notes="the 0.3 default's feature model: a 64 px copy"),
    Recipe("xgboost-64-acq", "xgboost", (("seg_features", "none"), ("input_size", (64, 64))),
           (("bank_copies", 8),) + _ACQUISITION,
           notes="the 0.4 default's feature model: xgboost-64 fitted over acquisition changes"),
)

_BY_NAME = {r.name: r for r in RECIPES}


def recipe_names() -> tuple[str, ...]:
    return tuple(_BY_NAME)


def get_recipe(name: str) -> Recipe:
    """The row called ``name``; ValueError lists the valid names."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"Unknown --recipe {name!r}. Valid: {', '.join(_BY_NAME)}") from None


def pick_recipe(recipe: Optional[str] = None, backbone: Optional[str] = None) -> Recipe:
    """The row ``recipe``; else ``backbone``'s (:func:`recipe_for_backbone`); else the
    default. ``leukedge train`` and :func:`leukedge.train.fit.train` choose so."""
    if recipe is not None:
        return get_recipe(recipe)
    return recipe_for_backbone(backbone) if backbone is not None else get_recipe(DEFAULT_RECIPE)


def recipe_for_backbone(backbone: str) -> Recipe:
    """The first row of ``backbone``, else a row of the plain defaults (ImageNet weights where
    the backbone has them): what ``leukedge train --backbone NAME`` trains."""
    row = get_backbone(backbone)
    found = next((r for r in RECIPES if r.backbone == backbone), None)
    return found or Recipe(backbone, backbone, weights="imagenet" if row.pretrained else None,
                           notes="the backbone's defaults")

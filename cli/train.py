"""`leukedge train`: train a hybrid classifier on a labelled folder and write a run folder.

TensorFlow is imported only when the command runs; the arguments (backbone, weights, sizes) are
checked before that, so mistakes are reported in a second.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from .errors import fail

TRAIN_HINT = "Training needs TensorFlow: pip install 'leukedge[train]'"


def _parse_size(text: Optional[str]) -> Optional[tuple[int, int]]:
    """'128' or '128x96' (height x width) -> (h, w)."""
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise typer.BadParameter(f"expected N or HxW (e.g. 128 or 224x224), got {text!r}") from None
    if len(size) not in (1, 2):
        raise typer.BadParameter(f"expected N or HxW, got {text!r}")
    return (size[0], size[-1])


def _parse_units(text: Optional[str]) -> Optional[tuple[int, ...]]:
    if text is None:
        return None
    try:
        return tuple(int(u) for u in text.split(",") if u.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None



def _summary(result) -> str:
    m = result.run["test_metrics"]
    lines = [f"Run folder: {result.out_dir}",
             f"Test split: n={m['n']}  accuracy={m['accuracy']:.4f} "
             f"(95% CI {m['accuracy_ci95'][0]:.4f}-{m['accuracy_ci95'][1]:.4f})  "
             f"macro F1={m['macro_f1']:.4f}"]
    if "total_cost" in m:
        lines.append(f"Misclassification cost={m['total_cost']:.0f} "
                     f"({m['cost_per_sample']:.4f}/sample), "
                     f"cost-sensitive accuracy={m['cost_sensitive_accuracy']:.6f}")
    lines.append(f"Next: leukedge export {result.out_dir}")
    return "\n".join(lines)


def train_command(
    data_dir: Path = typer.Argument(..., help="Labelled images: <dir>/<class>/*.jpg or the ALL "
                                              "layout <dir>/Original/<class>/*.jpg"),
    backbone: str = typer.Option("small_cnn", "--backbone", "-b", help="Registry name, e.g. "
                                 "small_cnn, mobilenet_v3_small, efficientnet_b0, densenet201"),
    weights: str = typer.Option("none", help="Backbone weights: imagenet, none, or a local "
                                             ".h5/.weights.h5 file"),
    epochs: int = typer.Option(30, help="Epochs (the plateau schedule's early stopping may end "
                                        "sooner)"),
    batch_size: int = typer.Option(32, help="Batch size"),
    seg_features: str = typer.Option("gap", help="Seg-feature reduction: gap (edge), flatten "
                                                 "(the seed's; too big to export at 224) or none "
                                                 "(no segmentation branch: image-only model)"),
    input_size: Optional[str] = typer.Option(None, help="N or HxW; default: the backbone's"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder "
                                       "[default: runs/<backbone>-<time>]"),
    seed: int = typer.Option(42, help="Seed of the split, initialisation and augmentation"),
    variant: str = typer.Option("original", help="original or segmented (ALL layout)"),
    color_jitter: bool = typer.Option(True, "--color-jitter/--no-color-jitter",
                                      help="Hue/saturation/brightness jitter on top of the seed's "
                                           "augmentation"),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Augment training images"),
    learning_rate: float = typer.Option(1e-4, help="Adam's initial learning rate"),
    seg_width: Optional[float] = typer.Option(None, help="Width multiplier of the segmentation "
                                                         "block; default: the backbone's"),
    head_units: Optional[str] = typer.Option(None, help="Head Dense sizes, e.g. 512,256,128"),
    dropout: Optional[float] = typer.Option(None, help="Head dropout; default: the backbone's"),
    l2: float = typer.Option(0.01, help="L2 weight decay of the head's Dense layers (the seed's 0.01)"),
    rotation: float = typer.Option(40.0, help="Augmentation: max rotation, degrees (the seed's 40)"),
    shift: float = typer.Option(0.4, help="Augmentation: max width/height shift, fraction (seed 0.4)"),
    zoom: float = typer.Option(0.4, help="Augmentation: zoom range, fraction (the seed's 0.4)"),
    right_angles: bool = typer.Option(False, "--right-angles/--no-right-angles",
                                      help="Augmentation: random quarter turns (exact; with the "
                                           "flip, all 8 symmetries of the square)"),
    schedule: str = typer.Option("plateau", help="Learning rate: plateau (the seed's: "
                                 "ReduceLROnPlateau + early stopping) or cosine (warm-up, cosine "
                                 "decay over all epochs, best val_loss epoch restored)"),
    patience: int = typer.Option(5, help="Early-stopping patience in epochs (plateau schedule)"),
    overwrite: bool = typer.Option(False, help="Replace the files of an existing run folder"),
) -> None:
    """Train a hybrid classifier and write a run folder (model.keras, split.json, run.json, ...)."""
    from leukedge.train import HybridConfig, get_backbone
    from leukedge.train.backbones import resolve_weights
    from leukedge.train.fit import TrainSettings

    try:
        row = get_backbone(backbone)
        HybridConfig.resolve(backbone, input_size=_parse_size(input_size),
                             seg_features=seg_features, seg_width=seg_width,
                             head_units=_parse_units(head_units), dropout=dropout, l2=l2)
        resolve_weights(row, weights)
        TrainSettings(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                      patience=patience, schedule=schedule).validate()
    except ValueError as e:
        fail(str(e), 2)
    if importlib.util.find_spec("tensorflow") is None:
        fail(TRAIN_HINT, code=1)
    run_dir = out or Path("runs") / f"{backbone}-{datetime.now():%Y%m%d-%H%M%S}"
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from leukedge.train import train

    try:
        result = train(data_dir, run_dir, backbone=backbone, weights=weights, epochs=epochs,
                       batch_size=batch_size, seg_features=seg_features,
                       input_size=_parse_size(input_size), seed=seed, variant=variant,
                       color_jitter=color_jitter, augment=augment, learning_rate=learning_rate,
                       seg_width=seg_width, head_units=_parse_units(head_units), dropout=dropout,
                       l2=l2, augment_ranges={"rotation_deg": rotation, "shift": shift, "zoom": zoom,
                                              "right_angles": right_angles},
                       schedule=schedule, patience=patience,
                       overwrite=overwrite, verbose=1 if sys.stdout.isatty() else 2)
    except ValueError as e:
        fail(str(e), 2)
    typer.echo(_summary(result))


def register(app: typer.Typer) -> None:
    """Adds `leukedge train` to the app."""
    app.command("train")(train_command)

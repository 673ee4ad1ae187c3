"""End to end: a few training steps on a tiny real subset produce a complete run folder; the CLI."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

sys.path.insert(0, os.path.dirname(__file__))
from dataset_builders import synthetic_dataset, tiny_real_dataset  # noqa: E402

from leukedge.cli import train as train_cli  # noqa: E402
from leukedge.runtime.dataset import read_split_manifest  # noqa: E402
from leukedge.runtime.files import sha256_file  # noqa: E402

RUN_KEYS = {"classes", "preprocessing", "backbone", "seg_features", "input_names", "output_name",
            "data_manifest_sha256", "split_manifest_sha256", "parameters", "seed", "test_metrics"}
TINY = ["--epochs", "1", "--batch-size", "8", "--input-size", "32", "--seg-width", "0.25",
        "--head-units", "16"]


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Forces subcommand mode (the real app registers several commands)."""

    train_cli.register(app)
    return app


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One tiny training run through the CLI, shared by the tests of this module."""
    data = tiny_real_dataset(tmp_path_factory.mktemp("data"), per_class=8)
    out = tmp_path_factory.mktemp("runs") / "run"
    result = CliRunner().invoke(_app(), ["train", str(data), "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    return data, out, result.output


@pytest.mark.slow
def test_run_folder_is_complete(trained_run):
    _, out, output = trained_run
    for name in ("model.keras", "split.json", "run.json", "history.json", "training_curves.png",
                 "metrics.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*")), "temp or checkpoint files left behind"
    assert "Test split: n=" in output and f"leukedge export {out}" in output


@pytest.mark.slow
def test_run_json_has_what_export_needs(trained_run):
    _, out, _ = trained_run
    run = json.loads((out / "run.json").read_text())
    assert RUN_KEYS <= set(run)
    assert run["input_names"] == ["image", "masked_image"] and run["output_name"] == "probs"
    assert run["preprocessing"]["input_size"] == [32, 32]
    assert run["split_manifest_sha256"] == sha256_file(out / "split.json")
    assert run["model_sha256"] == sha256_file(out / "model.keras")
    manifest = read_split_manifest(out / "split.json")
    assert run["data_manifest_sha256"] == manifest.data_manifest_sha256
    assert run["training"]["epochs_run"] == 1 and len(run["training"]["class_weights"]) == 4
    assert run["parameters"]["total"] > 0


@pytest.mark.slow
def test_metrics_match_the_test_split_and_the_saved_model(trained_run):
    from leukedge.runtime.preprocess import PreprocessSpec, preprocess_batch
    from leukedge.train import load_model

    data, out, _ = trained_run
    metrics = json.loads((out / "metrics.json").read_text())
    test_paths = read_split_manifest(out / "split.json").paths("test")
    assert [p["path"] for p in metrics["predictions"]] == test_paths
    assert metrics["n"] == len(test_paths) == sum(map(sum, metrics["confusion_matrix"]))
    spec = PreprocessSpec.from_dict(json.loads((out / "run.json").read_text())["preprocessing"])
    images, masked = preprocess_batch([data / p for p in test_paths], spec)
    probs = np.asarray(load_model(out / "model.keras")({"image": images, "masked_image": masked},
                                                        training=False))
    saved = np.array([p["probs"] for p in metrics["predictions"]])
    assert np.allclose(probs, saved, atol=1e-5)


@pytest.mark.slow
def test_existing_run_is_not_overwritten(trained_run):
    data, out, _ = trained_run
    result = CliRunner().invoke(_app(), ["train", str(data), "--out", str(out), *TINY])
    assert result.exit_code == 2 and "already holds a run" in result.output


@pytest.mark.parametrize("args, message", [
    (["--backbone", "densnet"], "Unknown backbone 'densnet'. Valid: densenet201"),
    (["--weights", "imagenet"], "has no ImageNet weights"),
    (["--seg-features", "pool"], "Valid: gap, flatten"),
    (["--input-size", "33"], "divisible by 8"),
    (["--schedule", "step"], "Unknown schedule 'step'. Valid: plateau, cosine"),
    (["--patience", "0"], "patience must be >= 1"),
])
def test_cli_refuses_bad_arguments_before_training(tmp_path, args, message):
    result = CliRunner().invoke(_app(), ["train", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_cli_reports_a_bad_dataset_folder(tmp_path):
    result = CliRunner().invoke(_app(), ["train", str(tmp_path / "none"), "--out",
                                         str(tmp_path / "run")])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "run").exists()


def test_too_small_a_dataset_is_refused_before_training(tmp_path):
    from leukedge.runtime.dataset import discover_dataset
    from leukedge.train.fit import TrainSettings, load_splits

    dataset = discover_dataset(synthetic_dataset(tmp_path / "data", per_class=1))
    with pytest.raises(ValueError, match=r"Too few images .* the val, test split\(s\) would be empty"):
        load_splits(dataset, TrainSettings())


def test_cosine_schedule_warms_up_then_decays_to_one_percent():
    from leukedge.train.fit import cosine_learning_rate

    rates = [cosine_learning_rate(e, 30, 1e-3) for e in range(30)]
    assert rates[0] == pytest.approx(1e-3 / 3) and rates[1] == pytest.approx(2e-3 / 3)
    assert rates[2] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-5)
    assert all(a > b for a, b in zip(rates[2:], rates[3:])), "strictly decaying after warm-up"
    assert cosine_learning_rate(0, 1, 1e-3) == pytest.approx(1e-3), "a 1-epoch run gets the rate"


@pytest.mark.slow
def test_cosine_run_follows_the_schedule_without_stopping_early(tmp_path):
    from leukedge.train import train
    from leukedge.train.fit import cosine_learning_rate

    data = synthetic_dataset(tmp_path / "data", per_class=6)
    result = train(data, tmp_path / "run", epochs=3, batch_size=8, input_size=(32, 32),
                   seg_width=0.25, head_units=(8,), schedule="cosine", learning_rate=1e-3,
                   augment_ranges={"right_angles": True}, verbose=0)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["learning_rate"] == pytest.approx(
        [cosine_learning_rate(e, 3, 1e-3) for e in range(3)], rel=1e-5)
    training = result.run["training"]
    assert training["epochs_run"] == 3 and training["schedule"] == "cosine"
    assert training["augment"]["right_angles"] is True


@pytest.mark.slow
def test_image_only_model_trains_exports_and_runs_without_the_mask(tmp_path, sample_images):
    from leukedge.export import export_keras
    from leukedge.runtime import Classifier
    from leukedge.train import train

    data = synthetic_dataset(tmp_path / "data", per_class=6)
    result = train(data, tmp_path / "run", epochs=1, batch_size=8, input_size=(32, 32),
                   head_units=(8,), seg_features="none", verbose=0)
    assert [str(t.name).split(":")[0] for t in result.model.inputs] == ["image"]
    assert result.run["input_names"] == ["image"] and result.run["seg_features"] == "none"
    assert not any(layer.name.startswith("seg_") for layer in result.model.layers)
    out = tmp_path / "run" / "model.onnx"
    export_keras(result.model, out, result.run, parity_images=sample_images[:4])
    clf = Classifier(out, provider="cpu")
    assert not clf.needs_masked_input
    assert clf.predict(sample_images[0]).label in clf.classes

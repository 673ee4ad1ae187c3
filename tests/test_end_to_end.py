"""The whole product path on real images: train -> export -> quantize -> infer, all through the CLI.

Checks what a user relies on: the exported model's predictions are the Keras model's, the contract
carries the run's provenance, the INT8 child extends it, and `leukedge infer` reads it all back.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dataset_builders import tiny_real_dataset
from leukedge.cli.main import app
from leukedge.runtime.contract import read_contract
from leukedge.runtime.files import sha256_file
from leukedge.runtime.preprocess import PreprocessSpec, list_images, preprocess_batch

TINY = ["--epochs", "1", "--batch-size", "8", "--input-size", "32", "--seg-width", "0.25",
        "--head-units", "16"]


def _invoke(args: list[str]):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"leukedge {' '.join(args)}\n{result.output}"
    return result


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    data = tiny_real_dataset(tmp_path_factory.mktemp("data"), per_class=8)
    run = tmp_path_factory.mktemp("runs") / "run"
    _invoke(["train", str(data), "--out", str(run), *TINY])
    _invoke(["export", str(run), "--data", str(data), "--review-below", "0.6"])
    int8 = run / "model-int8.onnx"
    _invoke(["quantize", str(run / "model.onnx"), "--method", "static", "--calib", str(data),
             "--calib-size", "16", "--out", str(int8)])
    return data, run, int8


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_exported_model_predicts_what_keras_predicts(pipeline):
    from leukedge.train import load_model

    data, run, _ = pipeline
    images = list_images([data], recursive=True)
    rows = [json.loads(line) for line in
            _invoke(["infer", str(data), "--recursive", "--model", str(run / "model.onnx"),
                     "--format", "json"]).stdout.splitlines() if line.startswith("{")]
    assert [r["path"] for r in rows] == [str(p) for p in images]
    assert all(r["error"] is None for r in rows)

    run_info = json.loads((run / "run.json").read_text())
    x, m = preprocess_batch(images, PreprocessSpec.from_dict(run_info["preprocessing"]))
    keras_probs = np.asarray(load_model(run / "model.keras")({"image": x, "masked_image": m}))
    onnx_probs = np.array([[r["probabilities"][c] for c in run_info["classes"]] for r in rows])
    assert np.abs(onnx_probs - keras_probs).max() <= 1e-4
    assert [r["label"] for r in rows] == [run_info["classes"][i] for i in keras_probs.argmax(1)]


@pytest.mark.slow
def test_contracts_carry_the_run_and_the_parent(pipeline):
    _, run, int8 = pipeline
    run_info = json.loads((run / "run.json").read_text())
    fp32 = read_contract(run / "model.onnx")
    assert fp32.precision == "fp32"
    assert fp32.classes == tuple(run_info["classes"])
    assert fp32.preprocessing.input_size == (32, 32)
    assert fp32.provenance["data_manifest_sha256"] == run_info["data_manifest_sha256"]
    assert fp32.provenance["split_manifest_sha256"] == sha256_file(run / "split.json")
    assert fp32.metrics is not None
    assert fp32.review_below == 0.6

    child = read_contract(int8)
    assert child.precision == "int8"
    assert child.quantization["method"] == "static"
    assert child.provenance["parent_sha256"] == sha256_file(run / "model.onnx")
    assert child.classes == fp32.classes and child.preprocessing == fp32.preprocessing
    assert child.review_below == fp32.review_below


@pytest.mark.slow
def test_int8_model_runs_through_infer_and_info(pipeline):
    data, _, int8 = pipeline
    out = _invoke(["infer", str(data), "--recursive", "--model", str(int8), "--format", "csv"])
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert lines[0].startswith("path,label,confidence")
    assert len(lines) == 1 + 32
    info = _invoke(["info", str(int8), "--format", "json"])
    assert json.loads(info.stdout)["contract"]["precision"] == "int8"

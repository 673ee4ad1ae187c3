"""The whole product path on real images: train -> export -> quantize -> infer, all through the CLI.

Checks what a user relies on: the exported one-file model's predictions are the Keras model's on
the raw pixels, the contract carries the run's provenance, the INT8 child extends it, and
`leukedge infer` and plain onnxruntime read it all back.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from dataset_builders import real_images, tiny_real_dataset
from leukedge.cli.main import app
from leukedge.modelkit.run_record import RunRecord
from leukedge.runtime.contract import read_contract
from leukedge.runtime.files import list_images, sha256_file
from leukedge.runtime.models import SAMPLES_DIR

TINY = ["--input-size", "64", "--epochs", "1", "--head-epochs", "1", "--batch-size", "8",
        "--bank-copies", "2"]


def _invoke(args: list[str]):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"leukedge {' '.join(args)}\n{result.output}"
    return result


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    if not real_images(1):  # a model trained 1 epoch on synthetic smears has near-tie
        # probabilities, whose INT8 top-1 flips say nothing about the product path
        pytest.skip("needs the ALL data in ../shared/data/ALL (or LEUKEDGE_ALL_DATA)")
    os.environ.setdefault("LEUKEDGE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    data = tiny_real_dataset(tmp_path_factory.mktemp("data"), per_class=8)
    run = tmp_path_factory.mktemp("runs") / "run"
    _invoke(["train", str(data), "--out", str(run), *TINY])
    _invoke(["export", str(run), "--data", str(data), "--review-below", "0.6"])
    int8 = run / "model-int8.onnx"  # the default range suits this CPU (7-bit without VNNI)
    _invoke(["quantize", str(run / "model.onnx"), "--method", "static", "--calib", str(data),
             "--calib-size", "16", "--out", str(int8), "--min-agreement", "0.8"])
    return data, run, int8


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_exported_model_predicts_what_keras_predicts(pipeline):
    from leukedge.modelkit.confidence import softmax
    from leukedge.runtime.decode import load_image
    from leukedge.modelkit.graph.runner import PreprocessRunner
    from leukedge.train import load_model

    data, run, _ = pipeline
    images = list_images([data], recursive=True)
    rows = [json.loads(line) for line in
            _invoke(["infer", str(data), "--recursive", "--model", str(run / "model.onnx"),
                     "--format", "json"]).stdout.splitlines() if line.startswith("{")]
    assert [r["path"] for r in rows] == [str(p) for p in images]
    assert all(r["error"] is None for r in rows)
    record = RunRecord.read(run / "run.json")
    pixels = np.stack([load_image(p) for p in images])
    logits = np.asarray(load_model(run / "model.keras")(PreprocessRunner(record.preprocessing)(pixels)))
    keras_probs = softmax(logits, record.calibration.temperature)
    onnx_probs = np.array([[r["probabilities"][c] for c in record.classes] for r in rows])
    assert np.abs(onnx_probs - keras_probs).max() <= 1e-4
    assert [r["label"] for r in rows] == [record.classes[i] for i in keras_probs.argmax(1)]


@pytest.mark.slow
def test_plain_onnxruntime_with_raw_pixels_gives_infers_answer(pipeline):
    import onnxruntime as ort

    from leukedge.runtime.decode import load_image

    data, run, _ = pipeline
    path = list_images([data], recursive=True)[0]
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    (probs,) = session.run(["probs"], {"image": load_image(path)[None]})
    (row,) = [json.loads(line) for line in _invoke(
        ["infer", str(path), "-m", str(run / "model.onnx"), "-f", "json"]).stdout.splitlines()]
    assert list(row["probabilities"].values()) == pytest.approx(probs[0].tolist(), abs=1e-6)


@pytest.mark.slow
def test_contracts_carry_the_run_and_the_parent(pipeline):
    _, run, int8 = pipeline
    record = RunRecord.read(run / "run.json")
    fp32 = read_contract(run / "model.onnx")
    assert fp32.precision == "fp32" and fp32.classes == record.classes
    assert fp32.preprocessing == record.preprocessing
    assert fp32.provenance["data_manifest_sha256"] == record.data_manifest_sha256
    assert fp32.provenance["split_manifest_sha256"] == sha256_file(run / "split.json")
    assert fp32.weights["init"] == "imagenet" and fp32.metrics is not None
    assert fp32.review_below == 0.6 and fp32.temperature == record.calibration.temperature
    # 8 images per class: too few for the OOD statistics (export/input_checks.py), so the
    # model has the contrast and stain checks only, and says why
    assert not fp32.has_ood_score and fp32.input_checks.max_ood_score is None
    assert "needs at least" in fp32.provenance["input_checks_fit"]["ood_not_set"]

    child = read_contract(int8)
    assert child.precision == "int8" and child.quantization["method"] == "static"
    assert child.provenance["parent_sha256"] == sha256_file(run / "model.onnx")
    assert child.classes == fp32.classes and child.preprocessing == fp32.preprocessing
    assert child.review_below == fp32.review_below and child.input_checks == fp32.input_checks


@pytest.mark.slow
def test_a_small_run_does_not_flag_new_smears_of_its_own_site(pipeline):
    """Trained on 32 images, the model's input checks pass smears it never saw (a 0.2 export
    flagged every one of them "unlike the training images")."""
    _, run, _ = pipeline
    rows = [json.loads(line) for line in
            _invoke(["infer", str(SAMPLES_DIR), "--recursive", "--model",
                     str(run / "model.onnx"), "-f", "json"]).stdout.splitlines()]
    codes = {r["code"] for row in rows for r in row["review_reasons"]}
    assert len(rows) == 8 and not codes & {"blank", "no_stain", "unlike_training"}, codes


@pytest.mark.slow
def test_int8_model_runs_through_infer_and_info(pipeline):
    data, _, int8 = pipeline
    out = _invoke(["infer", str(data), "--recursive", "--model", str(int8), "--format", "csv"])
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert lines[0].startswith("path,label,confidence")
    assert len(lines) == 1 + 32
    info = _invoke(["info", str(int8), "--format", "json"])
    assert json.loads(info.stdout)["contract"]["precision"] == "int8"

"""Keras -> the one-file ONNX model: contract, parity, input checks, size guard, the silent
RGBToHSV failure, Triton, the CLI.

Fast tests use a stand-in object for the Keras model (the size guard runs before TensorFlow is
imported); tests that build a Keras model are marked slow.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from leukedge.export import (ModelTooLargeError, ParityError, UnsupportedOpError,
                             check_conversion_memory, estimate_conversion_bytes, export_keras)
from leukedge.export.memory import available_memory_bytes
from leukedge.modelkit.run_record import Calibration, RunRecord
from leukedge.runtime.contract import read_contract
from leukedge.runtime.decode import load_image
from leukedge.runtime.preprocessing import PreprocessSpec

SIZE = 32


def record(hybrid: bool = True, temperature: float = 1.3) -> RunRecord:
    return RunRecord(
        classes=("Benign", "Early", "Pre", "Pro"), backbone="tiny_test",
        model={"seg_features": "gap" if hybrid else "none"},
        preprocessing=PreprocessSpec(input_size=(SIZE, SIZE), masked_input=hybrid),
        input_names=("image", "masked_image") if hybrid else ("image",), settings={},
        weights={"init": "none"}, data={}, data_manifest_sha256="d" * 64,
        split_manifest_sha256="s" * 64, seed=1, parameters={}, test_metrics={"accuracy": 0.5},
        training={"method": "end_to_end"}, versions={}, created="now", run_id="tiny",
        calibration=Calibration(temperature=temperature), review_below=0.7)


def _fake_model(n_params: int):
    """What export_keras reads before converting: the parameter count."""
    return SimpleNamespace(count_params=lambda: n_params)


# ----------------------------------------------------------------------------- size guard (fast)


def test_estimate_matches_the_measured_points():
    assert estimate_conversion_bytes(20_400_000) == pytest.approx(3.5e9, rel=0.05)
    assert estimate_conversion_bytes(225_800_000) > 23.3e9  # killed at 23.3 GB on a 24 GB machine
    with pytest.raises(ValueError, match="n_parameters"):
        estimate_conversion_bytes(-1)


def test_guard_refuses_with_the_memory_needed():
    with pytest.raises(ModelTooLargeError, match=r"225\.8 M parameters needs about 24\.1 GB.*8\.0 GB"):
        check_conversion_memory(225_800_000, available=8_000_000_000)
    assert check_conversion_memory(1_000, available=8_000_000_000) > 0


def test_meminfo_is_parsed(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   12000000 kB\n")
    assert available_memory_bytes(meminfo) == 12_000_000 * 1024
    assert available_memory_bytes(tmp_path / "missing") is None


def test_export_refuses_a_huge_model_before_converting(tmp_path):
    out = tmp_path / "big.onnx"
    with pytest.raises(ModelTooLargeError, match="Refusing to convert"):
        export_keras(_fake_model(225_800_000), out, record(), parity_images=[None],
                     parity_source="x", available_memory=16_000_000_000)
    assert not out.exists()


def test_export_needs_real_parity_images(tmp_path):
    with pytest.raises(ValueError, match="at least one real image"):
        export_keras(_fake_model(10), tmp_path / "m.onnx", record(), parity_images=[],
                     parity_source="none")


# ----------------------------------------------------------------------------- Keras (slow)


def _tiny_network(hybrid: bool = True, hsv_layer: bool = False):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    image = keras.Input((SIZE, SIZE, 3), name="image")
    inputs = {"image": image}
    x = keras.layers.Lambda(tf.image.rgb_to_hsv)(image) if hsv_layer else image
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(x))
    if hybrid:
        masked = keras.Input((SIZE, SIZE, 3), name="masked_image")
        inputs["masked_image"] = masked
        y = keras.layers.GlobalAveragePooling2D()(
            keras.layers.Conv2D(4, 3, activation="relu")(masked))
        x = keras.layers.Concatenate(name="features")([x, y])
    else:
        x = keras.layers.Identity(name="features")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))


@pytest.fixture(scope="module")
def pixels(sample_images) -> list[np.ndarray]:
    return [load_image(p) for p in sample_images]


@pytest.mark.slow
def test_export_writes_a_one_file_model_that_takes_raw_pixels(tmp_path, pixels, monkeypatch):
    import leukedge.export.input_checks as input_checks
    from leukedge.runtime.classifier import Classifier
    from leukedge.modelkit.confidence import softmax
    from leukedge.modelkit.graph.runner import PreprocessRunner

    monkeypatch.setattr(input_checks, "MIN_OOD_IMAGES", 10)  # 16 images stand for a real run
    model, run = _tiny_network(), record()
    out = tmp_path / "model.onnx"
    result = export_keras(model, out, run, parity_images=pixels, parity_source="test split",
                          train_images=pixels * 2)
    assert result.parity.passed and result.parity.max_abs_diff <= 1e-4
    contract = read_contract(out)
    assert contract.classes == run.classes and contract.precision == "fp32"
    assert contract.temperature == 1.3 and contract.review_below == 0.7
    assert contract.has_ood_score and contract.input_checks.max_ood_score > 0
    assert contract.provenance["split_manifest_sha256"] == "s" * 64
    assert contract.model_info["parameters"] == model.count_params()
    clf = Classifier(out, provider="cpu")
    probs = clf.run(np.stack(pixels))["probs"]
    logits = np.asarray(model(PreprocessRunner(run.preprocessing)(np.stack(pixels))))
    np.testing.assert_allclose(probs, softmax(logits, 1.3), atol=1e-5)
    big = np.stack([np.repeat(np.repeat(p, 2, 0), 2, 1) for p in pixels[:2]])  # 448 x 448
    assert clf.run(big)["probs"].shape == (2, 4)


@pytest.mark.slow
def test_too_few_training_images_set_no_ood_check_and_say_so(tmp_path, pixels):
    """A lab's 20-per-class folder: the OOD statistics would describe those images alone and
    flag every new smear; the model keeps its contrast and stain checks, without the OOD one."""
    from leukedge.export.input_checks import MIN_OOD_IMAGES

    result = export_keras(_tiny_network(), tmp_path / "m.onnx", record(), parity_images=pixels,
                          parity_source="test split", train_images=pixels * 2)
    contract = result.contract
    assert not contract.has_ood_score and contract.input_checks.max_ood_score is None
    assert contract.input_checks.min_contrast > 0
    note = contract.provenance["input_checks_fit"]["ood_not_set"]
    assert f"at least {MIN_OOD_IMAGES} training images; this run has 16" in note


@pytest.mark.slow
def test_image_only_export_without_input_checks(tmp_path, pixels):
    out = tmp_path / "m.onnx"
    result = export_keras(_tiny_network(hybrid=False), out, record(hybrid=False),
                          parity_images=pixels[:2], parity_source="x")
    contract = result.contract
    assert not contract.has_ood_score and contract.input_checks.max_ood_score is None
    import onnx

    assert [i.name for i in onnx.load(str(out)).graph.input] == ["image"]


@pytest.mark.slow
def test_rgb_to_hsv_fails_loudly_and_writes_nothing(tmp_path, pixels):
    out = tmp_path / "hsv.onnx"
    with pytest.raises(UnsupportedOpError, match="RGBToHSV"):
        export_keras(_tiny_network(hsv_layer=True), out, record(), parity_images=pixels[:1],
                     parity_source="x")
    assert not out.exists()


@pytest.mark.slow
def test_parity_failure_raises_with_the_numbers(tmp_path, monkeypatch, pixels):
    from leukedge.export import onnx_export

    real = onnx_export.model_probabilities
    monkeypatch.setattr(onnx_export, "model_probabilities",  # an ONNX file 0.01 off Keras
                        lambda session, images: real(session, images) + 0.01)
    out = tmp_path / "m.onnx"
    with pytest.raises(ParityError, match=r"max \|dp\| = 0\.01 \(tolerance 0\.0001\)"):
        export_keras(_tiny_network(), out, record(), parity_images=pixels[:2], parity_source="x")
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # keras .save
def test_cli_exports_a_run_folder_with_a_triton_repository(tmp_path, sample_images):  # noqa: ARG001
    from typer.testing import CliRunner

    from leukedge.cli.main import app
    from leukedge.modelkit.dataset import discover_dataset
    from leukedge.modelkit.splits import make_split, write_split_manifest

    from dataset_builders import tiny_real_dataset

    data = tiny_real_dataset(tmp_path / "data", per_class=6)
    split = make_split(discover_dataset(data), seed=0, fractions=(0.5, 0.0, 0.5))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sha = write_split_manifest(run_dir / "split.json", split)
    _tiny_network().save(run_dir / "model.keras")
    run = record().with_updates(split_manifest_sha256=sha, data={"dir": str(data)})
    run.write(run_dir / "run.json")
    result = CliRunner().invoke(app, ["export", str(run_dir), "--triton", str(tmp_path / "tr")])
    assert result.exit_code == 0, result.output
    assert "Parity vs the source model" in result.output and "leukedge quantize" in result.output
    assert (tmp_path / "tr" / "model" / "1" / "model.onnx").is_file()
    again = CliRunner().invoke(app, ["export", str(run_dir)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    bad = CliRunner().invoke(app, ["export", str(tmp_path / "nothing.keras")])
    assert bad.exit_code == 2 and "expected a run folder" in bad.output
    (run_dir / "run.json").write_text(json.dumps({"classes": ["a", "b"]}))
    old = CliRunner().invoke(app, ["export", str(run_dir), "--overwrite"])
    assert old.exit_code == 2 and "run record version 1" in old.output


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # keras .save
def test_final_model_export_takes_the_cross_validation_calibration(tmp_path, sample_images):  # noqa: ARG001
    """A run without a test split (a final model) is checked on its val split, and
    --calibration puts the cross-validation's temperature, threshold and metrics in the
    contract, beside the sha256 of the images kept out of training."""
    from typer.testing import CliRunner

    from leukedge.cli.main import app
    from leukedge.modelkit.dataset import discover_dataset
    from leukedge.modelkit.splits import make_split, write_split_manifest

    from dataset_builders import tiny_real_dataset

    data = tiny_real_dataset(tmp_path / "data", per_class=6)
    split = make_split(discover_dataset(data), seed=0, fractions=(0.5, 0.5, 0.0))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sha = write_split_manifest(run_dir / "split.json", split)
    _tiny_network().save(run_dir / "model.keras")
    run = record().with_updates(split_manifest_sha256=sha, test_metrics={"n": 0},
                                data={"dir": str(data), "excluded_sha256": ["e" * 64]})
    run.write(run_dir / "run.json")
    cv = {"format": "leukedge.calibration", "version": 1, "source": "5-fold CV of tiny",
          "temperature": 1.7, "review_below": 0.88, "ece_before": 0.01, "ece_after": 0.004,
          "metrics": {"fp32": {"accuracy": 0.99, "accuracy_sd": 0.003, "n": 12},
                      "int8": {"accuracy": 0.98, "n": 12}},
          "int8": {"method": "static", "per_channel": True, "reduce_range": False}}
    (tmp_path / "cv.json").write_text(json.dumps(cv))
    result = CliRunner().invoke(app, ["export", str(run_dir), "--calibration",
                                      str(tmp_path / "cv.json")])
    assert result.exit_code == 0, result.output
    c = read_contract(run_dir / "model.onnx")
    assert c.temperature == 1.7 and c.review_below == 0.88
    assert c.calibration["fitted_on"] == "5-fold CV of tiny"
    assert c.metrics == cv["metrics"]["fp32"]
    assert c.provenance["metrics_source"] == "5-fold CV of tiny"
    assert c.provenance["excluded_sha256"] == ["e" * 64]
    assert c.provenance["parity"]["source"].startswith("val split")
    (tmp_path / "bad.json").write_text(json.dumps({**cv, "temperature": -1}))
    bad = CliRunner().invoke(app, ["export", str(run_dir), "--overwrite", "--calibration",
                                   str(tmp_path / "bad.json")])
    assert bad.exit_code == 2 and "--calibration" in bad.output and "temperature" in bad.output


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    ('{"format": "other"}', "not a leukedge.calibration file"),
    ('{"format": "leukedge.calibration", "version": 1, "source": "x", "temperature": 1}',
     "missing or bad field 'review_below'"),
    ('{"format": "leukedge.calibration", "version": 1, "source": "x", "temperature": 1,'
     ' "review_below": 2}', "review_below must be in [0, 1]"),
])
def test_calibration_file_errors_name_the_flag_and_the_problem(tmp_path, content, message):
    from leukedge.export.cv_calibration import read_cv_calibration

    path = tmp_path / "calibration.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="--calibration") as caught:
        read_cv_calibration(path)
    assert message in str(caught.value)
    with pytest.raises(ValueError, match="cannot read the calibration file"):
        read_cv_calibration(tmp_path / "missing.json")

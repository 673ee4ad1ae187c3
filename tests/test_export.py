"""Keras -> ONNX export: contract, parity, size guard, the silent RGBToHSV failure, the CLI.

Fast tests use a stand-in object for the Keras model (the size guard runs before TensorFlow is
imported); tests that build a Keras model are marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from leukedge.export import (ModelTooLargeError, ParityError, UnsupportedOpError,
                             check_conversion_memory, estimate_conversion_bytes, export_keras)
from leukedge.export.memory import available_memory_bytes
from leukedge.export.naming import keras_io_names, rename_graph_output
from leukedge.runtime.contract import read_contract
from leukedge.runtime.preprocess import PreprocessSpec

SIZE = 32


def _fake_model(n_params: int, names=("image", "masked_image")):
    """What export_keras reads before converting: input names/shapes, outputs, parameter count."""
    inputs = [SimpleNamespace(name=n, shape=(None, SIZE, SIZE, 3)) for n in names]
    return SimpleNamespace(inputs=inputs, outputs=[object()], count_params=lambda: n_params)


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
        export_keras(_fake_model(225_800_000), out, {}, available_memory=16_000_000_000)
    assert not out.exists()


def test_export_checks_arguments_first(tmp_path):
    with pytest.raises(ValueError, match="Unsupported opset 20. Valid: 17, 18"):
        export_keras(_fake_model(10), tmp_path / "m.onnx", opset=20)
    with pytest.raises(ValueError, match=r"named \['img'\]"):
        export_keras(_fake_model(10, names=("img",)), tmp_path / "m.onnx")
    run = {"preprocessing": PreprocessSpec(input_size=(64, 64)).to_dict()}
    with pytest.raises(ValueError, match="does not match"):
        export_keras(_fake_model(10), tmp_path / "m.onnx", run)


def test_io_names_and_output_rename(make_tiny_onnx, tmp_path):
    import onnx

    assert keras_io_names(_fake_model(1)) == ({"image": "image", "masked_image": "masked_image"}, "probs")
    proto = onnx.load(str(make_tiny_onnx(tmp_path / "t.onnx", output_name="Identity:0")))
    rename_graph_output(proto, "probs")
    assert [o.name for o in proto.graph.output] == ["probs"]
    assert any("probs" in n.output for n in proto.graph.node)


# ----------------------------------------------------------------------------- Keras (slow)


def _tiny_hybrid(hsv_layer: bool = False):
    import keras
    import tensorflow as tf

    image = keras.Input((SIZE, SIZE, 3), name="image")
    masked = keras.Input((SIZE, SIZE, 3), name="masked_image")
    x = keras.layers.Lambda(tf.image.rgb_to_hsv)(image) if hsv_layer else image
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    y = keras.layers.Conv2D(4, 3, activation="relu")(masked)
    y = keras.layers.GlobalAveragePooling2D()(y)
    z = keras.layers.Concatenate()([x, y])
    out = keras.layers.Dense(4, activation="softmax", name="probs")(z)
    keras.utils.set_random_seed(0)
    return keras.Model([image, masked], out)


RUN = {"classes": ["Benign", "Early", "Pre", "Pro"],
       "preprocessing": PreprocessSpec(input_size=(SIZE, SIZE)).to_dict(),
       "backbone": "tiny_test", "seg_features": "gap", "data_manifest_sha256": "d" * 64,
       "split_manifest_sha256": "s" * 64, "test_metrics": {"accuracy": 0.5}}


@pytest.mark.slow
def test_export_writes_a_checked_model_with_its_contract(tmp_path, sample_images):
    from leukedge.runtime.classifier import Classifier

    model = _tiny_hybrid()
    out = tmp_path / "model.onnx"
    result = export_keras(model, out, RUN, parity_images=sample_images, parity_source="test split")
    assert result.parity.passed and result.parity.max_abs_diff <= 1e-4
    assert result.parity.n_images == len(sample_images)
    contract = read_contract(out)
    assert contract.classes == tuple(RUN["classes"]) and contract.precision == "fp32"
    assert [i.name for i in contract.inputs] == ["image", "masked_image"]
    assert contract.output_name == "probs" and contract.backbone == "tiny_test"
    assert contract.provenance["split_manifest_sha256"] == "s" * 64
    assert contract.provenance["parity"]["max_abs_diff"] <= 1e-4
    assert contract.model_info["parameters"] == model.count_params()
    assert contract.metrics == {"accuracy": 0.5}
    clf = Classifier(out, provider="cpu")  # dynamic batch: 1 and 3 images in one session
    image, masked = clf.preprocess(sample_images[0])
    batch = np.stack([image] * 3), np.stack([masked] * 3)
    np.testing.assert_allclose(clf.probabilities(*batch)[0], clf.probabilities(image[None], masked[None])[0],
                               atol=1e-6)


@pytest.mark.slow
def test_rgb_to_hsv_fails_loudly_and_writes_nothing(tmp_path):
    out = tmp_path / "hsv.onnx"
    with pytest.raises(UnsupportedOpError, match="RGBToHSV.*outside the model"):
        export_keras(_tiny_hybrid(hsv_layer=True), out, RUN)
    assert not out.exists()


@pytest.mark.slow
def test_parity_failure_raises_with_the_numbers(tmp_path, monkeypatch):
    from leukedge.export import onnx_export

    real = onnx_export.session_predictor
    monkeypatch.setattr(onnx_export, "session_predictor",  # an ONNX file 0.01 off Keras
                        lambda session, name: (lambda feeds: real(session, name)(feeds) + 0.01))
    out = tmp_path / "m.onnx"
    with pytest.raises(ParityError, match=r"max \|dp\| = 0\.01 \(tolerance 0\.0001\)"):
        export_keras(_tiny_hybrid(), out, RUN)
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # keras .save
def test_cli_exports_a_run_folder(tmp_path, sample_images):
    from typer.testing import CliRunner

    from leukedge.cli.main import app

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _tiny_hybrid().save(run_dir / "model.keras")
    (run_dir / "run.json").write_text(json.dumps(RUN))
    result = CliRunner().invoke(app, ["export", str(run_dir), "--opset", "18", "--images",
                                      str(sample_images[0].parent)])
    assert result.exit_code == 0, result.output
    assert "Parity vs Keras" in result.output
    assert read_contract(run_dir / "model.onnx").model_info["opset"] == 18
    bad = CliRunner().invoke(app, ["export", str(tmp_path / "nothing.keras")])
    assert bad.exit_code == 2 and "expected a run folder" in bad.output

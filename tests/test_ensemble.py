"""`leukedge ensemble`: one file whose probabilities are the weighted mean of its members'."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from leukedge.cli.main import app
from leukedge.export import QuantizationError, QuantizeOptions, make_ensemble, quantize_model
from leukedge.export.cv_calibration import CvCalibration
from leukedge.runtime.classifier import Classifier
from leukedge.runtime.contract import read_contract
from leukedge.runtime.files import sha256_file
from leukedge.runtime.session import create_session
from onnx_builders import make_tiny_onnx, reference_probabilities

pytest.importorskip("onnx")

RNG = np.random.default_rng(7)


def smears(n: int = 6, size: tuple[int, int] = (40, 52)) -> np.ndarray:
    """Pinkish-purple noise frames of one size, different enough to spread the tiny models."""
    base = np.array([205, 175, 215], np.float32)
    frames = base + RNG.normal(0, 25, (n, *size, 3))
    return np.clip(frames, 0, 255).astype(np.uint8)


@pytest.fixture()
def members(tmp_path: Path) -> list[Path]:
    """Two tiny models that differ in input size, mask branch and temperature."""
    a = make_tiny_onnx(tmp_path / "a.onnx", input_size=(32, 32), temperature=1.0,
                       review_below=0.6)
    b = make_tiny_onnx(tmp_path / "b.onnx", input_size=(24, 20), hybrid=True, temperature=2.0)
    return [a, b]


def outputs(path: Path, pixels: np.ndarray) -> dict[str, np.ndarray]:
    session, _ = create_session(path, provider="cpu")
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": pixels})))


def test_probs_are_the_weighted_mean_and_checks_are_the_first_members(members, tmp_path):
    pixels = smears()
    out = make_ensemble(members, tmp_path / "e.onnx", weights=[3, 1],
                        parity_images=list(pixels)).path
    got = outputs(out, pixels)
    pa = reference_probabilities(pixels, (32, 32), temperature=1.0)
    pb = reference_probabilities(pixels, (24, 20), hybrid=True, temperature=2.0)
    assert not np.allclose(pa.argmax(1), pb.argmax(1)) or np.abs(pa - pb).max() > 0.05
    np.testing.assert_allclose(got["probs"], 0.75 * pa + 0.25 * pb, atol=1e-5)
    first = outputs(members[0], pixels)
    assert list(got) == list(first)  # the first member's outputs, in its order
    for name in first:
        if name != "probs":
            np.testing.assert_array_equal(got[name], first[name])


def test_contract_lists_members_and_takes_the_cross_validation(members, tmp_path):
    cv = CvCalibration(source="5-fold CV of a + b", temperature=1.0, review_below=0.9,
                       metrics={"fp32": {"accuracy": 0.99, "n": 10}})
    out = make_ensemble(members, tmp_path / "e.onnx", calibration=cv).path
    c = read_contract(out)
    assert c.backbone == "ensemble" and c.precision == "fp32" and c.temperature == 1.0
    assert [m["sha256"] for m in c.model_info["members"]] == [sha256_file(p) for p in members]
    assert [m["weight"] for m in c.model_info["members"]] == [0.5, 0.5]
    assert [m["input_size"] for m in c.model_info["members"]] == [[32, 32], [24, 20]]
    assert c.review_below == 0.9 and c.metrics == {"accuracy": 0.99, "n": 10}
    assert c.provenance["metrics_source"] == "5-fold CV of a + b"
    assert c.outputs == read_contract(members[0]).outputs
    # without a cross-validation: no metrics, the first member's threshold
    bare = read_contract(make_ensemble(members, tmp_path / "bare.onnx").path)
    assert bare.metrics is None and bare.review_below == 0.6
    assert bare.provenance["metrics_source"] == "none"
    # the runtime reads it like any model
    preds = Classifier(out, provider="cpu").predict_pixels(list(smears(3)))
    assert len(preds) == 3 and all(p.label in c.classes for p in preds)


def test_refusals_name_the_problem(members, tmp_path):
    with pytest.raises(ValueError, match="at least two"):
        make_ensemble(members[:1], tmp_path / "e.onnx")
    with pytest.raises(ValueError, match="--weights"):
        make_ensemble(members, tmp_path / "e.onnx", weights=[1, 0])
    other = make_tiny_onnx(tmp_path / "other.onnx", classes=("A", "B", "C", "D"))
    with pytest.raises(ValueError, match=r"other\.onnx: classes \['A', 'B', 'C', 'D'\] differ"):
        make_ensemble([members[0], other], tmp_path / "e.onnx")
    with pytest.raises(ValueError, match="is one of the members"):
        make_ensemble(members, members[1])
    (tmp_path / "e.onnx").write_bytes(b"keep me")
    with pytest.raises(ValueError, match="--overwrite"):
        make_ensemble(members, tmp_path / "e.onnx")
    assert (tmp_path / "e.onnx").read_bytes() == b"keep me"
    make_ensemble(members, tmp_path / "e.onnx", overwrite=True)
    assert read_contract(tmp_path / "e.onnx").backbone == "ensemble"


def test_quantize_refuses_an_ensemble(members, tmp_path):
    out = make_ensemble(members, tmp_path / "e.onnx").path
    with pytest.raises(QuantizationError, match="quantize the members"):
        quantize_model(out, tmp_path / "e-int8.onnx", QuantizeOptions("dynamic"))
    assert not (tmp_path / "e-int8.onnx").exists()


def test_cli_writes_reports_and_refuses_bad_weights(members, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    import cv2

    for i, frame in enumerate(smears(4)):
        cv2.imwrite(str(images / f"s{i}.png"), frame[..., ::-1])
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps(
        {"format": "leukedge.calibration", "version": 1, "source": "CV of the pair",
         "temperature": 1.0, "review_below": 0.85, "metrics": {"fp32": {"accuracy": 0.98}}}))
    runner = CliRunner()
    out = tmp_path / "e.onnx"
    args = ["ensemble", str(members[0]), str(members[1]), "--out", str(out)]
    result = runner.invoke(app, [*args, "--weights", "2,1", "--images", str(images),
                                 "--calibration", str(calibration)])
    assert result.exit_code == 0, result.output
    assert "0.667 x a.onnx" in result.stdout and "4 images" in result.stdout
    assert "confidence < 0.85" in result.stdout and read_contract(out).review_below == 0.85
    info = runner.invoke(app, ["info", str(out)])
    assert info.exit_code == 0 and "Members (probabilities averaged)" in info.stdout
    assert "0.667 x  a.onnx" in info.stdout and "0.333 x  b.onnx" in info.stdout
    result = runner.invoke(app, [*args, "--weights", "2,x", "--overwrite"])
    assert result.exit_code == 2 and "--weights '2,x'" in result.stderr
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and "--overwrite" in result.stderr
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    for member, says in ((tmp_path / "missing.onnx", "model file not found"),
                         (broken, "cannot load this model")):
        result = runner.invoke(app, ["ensemble", str(members[0]), str(member), "-o",
                                     str(tmp_path / "new.onnx")])
        assert result.exit_code == 2 and f"{member}: " in result.stderr and says in result.stderr
        assert not (tmp_path / "new.onnx").exists()

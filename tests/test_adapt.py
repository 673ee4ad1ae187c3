"""`leukedge adapt`: a tiny one-file model adapted to a synthetic site where it is biased; the
result is a one-file model with the parent's contract (uint8 in, same outputs), provenance,
a review threshold never under the parent's, input-check limits never tighter, an INT8 sibling
where the parent has one, the held-out report; and every refusal."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from leukedge.cli.main import app
from leukedge.modelkit.adaptation.offset_logistic import fit_offset_logistic
from leukedge.modelkit.adaptation.site_fit import SiteData, fit_site, widened_checks
from leukedge.modelkit.adaptation.site_images import file_list_sha256
from leukedge.modelkit.evaluation.validation import JSON_KEYS
from leukedge.runtime.classifier import Classifier
from leukedge.runtime.files import sha256_file
from leukedge.runtime.input_checks import InputChecks

CLASSES = ("Benign", "Early", "Pre", "Pro")
CENTER = np.array([0.82, 0.85, 0.94]) * 255
SPREAD = np.array([0.067, 0.05, 0.027]) * 255
# one colour per class, in units of the smears' spread: the tiny parent calls most of them wrong
SITE_COLOURS = np.array([[1.5, -1.0, 0.5], [-1.5, 1.0, 1.0], [0.5, 1.5, -1.5], [-0.5, -1.5, -1.0]])


def site_image(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 48 px synthetic smear of the site: the class's background colour, noise, one purple
    cell somewhere."""
    colour = CENTER + SPREAD * (SITE_COLOURS[label] + rng.normal(0, 0.25, 3))
    image = colour + rng.normal(0, 4, (48, 48, 3))
    cv2.circle(image, tuple(int(v) for v in rng.integers(12, 36, 2)), 7, (120, 60, 160), -1)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def write_site(root: Path, per_class: dict[str, int], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class.get(name, 0)):
            cv2.imwrite(str(root / name / f"{name}-{i:03d}.png"),
                        cv2.cvtColor(site_image(label, rng), cv2.COLOR_RGB2BGR))
    return root


def invoke(*args):
    return CliRunner().invoke(app, ["adapt", *map(str, args)])


@pytest.fixture(scope="module")
def parent(tmp_path_factory, make_tiny_onnx) -> Path:
    """A tiny FP32 parent with two quantized siblings beside it, INT8 and INT8 for AVX2 (same
    graph, INT8 contracts)."""
    folder = tmp_path_factory.mktemp("parent")
    make_tiny_onnx(folder / "tiny-int8.onnx", precision="int8", review_below=0.6)
    make_tiny_onnx(folder / "tiny-int8-avx2.onnx", precision="int8", review_below=0.6,
                   quantization={"method": "static", "reduce_range": True})
    return make_tiny_onnx(folder / "tiny-fp32.onnx", review_below=0.6)


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, parent):
    root = tmp_path_factory.mktemp("adapt")
    site = write_site(root / "site", dict.fromkeys(CLASSES, 12), seed=1)
    result = invoke(site, "--out", root / "run", "--from", parent, "--threads", 1)
    assert result.exit_code == 0, result.output
    return root / "site", root / "run", result


def predictions_on_new_site_images(model: Path, n: int = 40) -> float:
    rng = np.random.default_rng(7)  # images the fit never saw
    labels = rng.integers(0, 4, n)
    clf = Classifier(model, provider="cpu", threads=1)
    found = clf.predict_pixels([site_image(int(c), rng) for c in labels])
    return float(np.mean([CLASSES.index(p.label) == c for p, c in zip(found, labels)]))


def test_adapting_corrects_a_parent_biased_on_the_site(adapted, parent):
    _, run, result = adapted
    before = predictions_on_new_site_images(parent)
    after = predictions_on_new_site_images(run / "model.onnx")
    assert before < 0.6 and after >= 0.9, (before, after)
    report = json.loads((run / "report.json").read_text())
    assert sorted(report["parent"]) == sorted(JSON_KEYS) == sorted(report["adapted"])
    held_parent, held = report["parent"]["scores"], report["adapted"]["scores"]
    assert held["n"] == held_parent["n"] == 48
    assert held["accuracy"] >= held_parent["accuracy"] + 0.3
    assert "parent" in result.stdout and "adapted" in result.stdout
    page = (run / "report.html").read_text()
    assert "adapted (held out)" in page and "https://" not in page


def test_the_adapted_model_is_a_one_file_model_with_the_parents_contract(adapted, parent):
    import onnxruntime as ort

    site, run, _ = adapted
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    parent_session = ort.InferenceSession(str(parent), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [("image", "tensor(uint8)")]
    assert [o.name for o in session.get_outputs()] == [o.name for o in
                                                       parent_session.get_outputs()]
    probs = session.run(["probs"], {"image": np.zeros((2, 40, 56, 3), np.uint8)})[0]
    assert probs.shape == (2, 4) and np.allclose(probs.sum(1), 1, atol=1e-5)
    c = Classifier(run / "model.onnx").contract
    p = Classifier(parent).contract
    assert c.classes == p.classes and c.preprocessing == p.preprocessing
    assert c.provenance["parent_sha256"] == sha256_file(parent)
    files = sorted(q for q in site.rglob("*.png"))
    assert c.provenance["site_files_sha256"] == file_list_sha256(
        [q.relative_to(site).as_posix() for q in files], [sha256_file(q) for q in files])
    assert c.review_below >= p.review_below
    assert c.input_checks.min_contrast <= p.input_checks.min_contrast
    assert c.input_checks.min_stain_coverage <= p.input_checks.min_stain_coverage
    assert c.input_checks.max_ood_score >= p.input_checks.max_ood_score


@pytest.mark.parametrize("suffix", ["int8", "int8-avx2"])
def test_each_quantized_sibling_gets_the_same_site_head(adapted, parent, suffix):
    _, run, _ = adapted
    sibling = Classifier(run / f"model-{suffix}.onnx")
    assert sibling.contract.precision == "int8"
    assert sibling.contract.provenance["parent_sha256"] == sha256_file(
        parent.with_name(f"tiny-{suffix}.onnx"))
    assert predictions_on_new_site_images(run / f"model-{suffix}.onnx") >= 0.9
    report = json.loads((run / "report.json").read_text())
    key = suffix.replace("-", "_")
    assert report["files"][f"model_{key}"] == f"model-{suffix}.onnx"
    assert report["parity"][f"{key}_agreement"]["argmax_agreement"] >= 0.95


@pytest.mark.parametrize("named, vnni", [("tiny-fp32.onnx", None), ("tiny-int8.onnx", None),
                                         ("tiny-int8-avx2.onnx", None), ("default", True),
                                         ("default", False), ("default", None)])
def test_a_quantized_name_fits_on_its_fp32_file(parent, monkeypatch, named, vnni):
    """Whatever file --from names (or `default` picks on this CPU), adapt fits on the FP32
    file and carries the head into every quantized sibling."""
    from leukedge.modelkit.adaptation.site_model import parent_files
    from leukedge.runtime import models

    monkeypatch.setattr(models, "has_int8_vnni", lambda: vnni)
    files = parent_files(named if named == "default" else parent.with_name(named))
    if named == "default":
        assert files.fitted.name == "leukedge-default-fp32.onnx"
        assert sorted(files.siblings) == sorted(
            s for s in ("int8", "int8-avx2") if f"default-{s}" in models.bundled_models())
    else:
        assert files.fitted == parent
        assert {s: f.name for s, f in files.siblings.items()} == {
            "int8": "tiny-int8.onnx", "int8-avx2": "tiny-int8-avx2.onnx"}


def test_the_review_threshold_is_never_lowered():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    features = rng.normal(size=(40, 5)) + np.eye(4, 5)[labels] * 3
    probs = np.full((40, 4), 0.25)
    data = SiteData({"net/features": features}, probs, {}, labels)
    assert fit_site(data, 0.999, InputChecks(), folds=5).review_below == 0.999
    low = fit_site(data, 0.0, InputChecks(), folds=5)
    assert low.review_below == low.review.threshold > 0.0


def test_input_check_limits_are_only_widened():
    parent = InputChecks(min_contrast=0.03, min_stain_coverage=0.01, max_ood_score=4.0)
    n = 40
    strict = {"contrast": np.full(n, 0.5), "stain_coverage": np.full(n, 0.5),
              "ood_score": np.full(n, 0.1)}
    assert widened_checks(parent, strict) == parent  # a clean site never tightens them
    loose = {"contrast": np.full(n, 0.04), "stain_coverage": np.full(n, 0.01),
             "ood_score": np.full(n, 6.0)}
    assert widened_checks(parent, loose) == InputChecks(0.02, 0.005, 9.0)
    few = {k: v[:10] for k, v in loose.items()}
    assert widened_checks(parent, few) == parent  # too few images: the parent's limits


def test_a_strong_penalty_keeps_the_parent_and_a_weak_one_learns_the_shift():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 20)
    features = rng.normal(size=(80, 3)) + 4.0 * np.eye(4, 3)[labels]
    offsets = np.zeros((80, 4))
    assert np.abs(fit_offset_logistic(features, offsets, labels, 1e6)(features)).max() < 1e-3
    learned = fit_offset_logistic(features, offsets, labels, 1e-2)
    assert np.mean((offsets + learned(features)).argmax(1) == labels) > 0.9


@pytest.mark.parametrize("counts, words", [
    ({"Benign": 12, "Early": 12, "Pre": 6, "Pro": 12}, "(Pre: 6); adapt needs at least 10 per "
                                                      "class, 20 recommended"),
    ({"Benign": 12, "Early": 12, "Pre": 12}, "(Pro: 0)"),
])
def test_too_few_images_per_class_are_refused_naming_the_class(tmp_path, parent, counts, words):
    site = write_site(tmp_path / "site", counts, seed=2)
    result = invoke(site, "--out", tmp_path / "run", "--from", parent)
    assert result.exit_code == 2 and words in result.output
    assert not (tmp_path / "run").exists()


def test_an_unknown_class_folder_and_an_existing_run_dir_are_refused(tmp_path, parent):
    site = write_site(tmp_path / "site", dict.fromkeys(CLASSES, 10), seed=3)
    (site / "Blasts").mkdir()
    result = invoke(site, "--out", tmp_path / "run", "--from", parent)
    assert result.exit_code == 2 and "does not know the class 'Blasts'" in result.output
    (site / "Blasts").rmdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.onnx").write_bytes(b"mine")
    result = invoke(site, "--out", tmp_path / "run", "--from", parent)
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert (tmp_path / "run" / "model.onnx").read_bytes() == b"mine"


def test_nodes_that_read_the_probabilities_follow_the_site_head(parent):
    """A heatmap reads `probs` (the predicted class); adapting puts its nodes after the head,
    so the map follows the adapted prediction and the graph stays topologically sorted."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from leukedge.modelkit.adaptation.site_graph import adapted_model, feature_tensors

    model = onnx.load(str(parent))
    reader = helper.make_node("ArgMax", ["probs"], ["predicted"], axis=1, keepdims=0)
    model.graph.node.append(reader)
    model.graph.output.append(helper.make_tensor_value_info("predicted", TensorProto.INT64,
                                                            ["N"]))
    weights = dict.fromkeys(feature_tensors(model))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = np.full((1, 32, 32, 3), 128, np.uint8)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in weights:
        probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                                ["N", None]))
    probed = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    features = dict(zip([o.name for o in probe.graph.output],
                        probed.run(None, {session.get_inputs()[0].name: pixels})))
    n_classes = features["probs"].shape[1]
    # a head that always votes for the last class, whatever the parent says
    weights = {name: np.zeros((features[name].shape[1], n_classes), np.float32)
               for name in weights}
    bias = np.zeros(n_classes, np.float32)
    bias[-1] = 50.0
    out = adapted_model(model, weights, bias, 1.0)  # raised "not topologically sorted" before
    run = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"])
    probs, predicted = run.run(["probs", "predicted"], {run.get_inputs()[0].name: pixels})
    assert int(predicted[0]) == n_classes - 1 == int(probs[0].argmax())

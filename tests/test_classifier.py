"""The embedding API on a real ONNX Runtime session with tiny one-file models and real smears."""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from leukedge.runtime import Classifier, ContractError, ImageError, Prediction
from leukedge.runtime.contract import ModelContract
from leukedge.runtime.input_checks import InputChecks
from leukedge.runtime.decode import load_image
from leukedge.runtime.models import ModelNotFoundError, resolve_model
from leukedge.runtime.session import RuntimeSetupError
from onnx_builders import reference_probabilities


@pytest.fixture(scope="module")
def classifier(tiny_model_path) -> Classifier:
    return Classifier(tiny_model_path, provider="cpu", threads=1)


@pytest.fixture(scope="module")
def pixels(sample_images) -> np.ndarray:
    return np.stack([load_image(p) for p in sample_images])


def test_configures_itself_from_the_contract(classifier):
    assert classifier.classes == ("Benign", "Early", "Pre", "Pro")
    assert classifier.contract.preprocessing.input_size == (32, 32)
    assert classifier.session_info.provider == "cpu" and classifier.session_info.intra_op_threads == 1
    assert classifier.review_below == 0.0
    assert "tiny.onnx" in repr(classifier)


def test_probabilities_are_what_the_graph_computes(classifier, pixels):
    probs = classifier.run(pixels)["probs"]
    # The whitening weights are large (~100), so float32 summation order shows up at ~1e-4.
    np.testing.assert_allclose(probs, reference_probabilities(pixels), atol=1e-3)
    assert len({int(p.argmax()) for p in probs}) > 1  # not a constant model


def test_temperature_is_applied_in_the_graph(make_tiny_onnx, tmp_path, pixels):
    warm = Classifier(make_tiny_onnx(tmp_path / "t2.onnx", temperature=2.0), provider="cpu")
    np.testing.assert_allclose(warm.run(pixels)["probs"],
                               reference_probabilities(pixels, temperature=2.0), atol=1e-3)


def test_any_image_size_and_batch_equals_single(classifier, pixels):
    big = np.stack([cv2.resize(p, (448, 300)) for p in pixels[:3]])
    batch = [p.probabilities for p in classifier.predict_pixels(list(big) + list(pixels))]
    single = [classifier.predict_pixels([im])[0].probabilities for im in list(big) + list(pixels)]
    for a, b in zip(batch, single):  # the tiny model's large weights amplify float32 order
        assert a == pytest.approx(b, abs=1e-3)


def test_prediction_fields(classifier, sample_images):
    p = classifier.predict(sample_images[0])
    assert isinstance(p, Prediction) and p.label in classifier.classes
    assert p.confidence == max(p.probabilities.values())
    assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert set(p.input_checks) == {"ood_score", "stain_fraction", "stain_coverage", "contrast"}
    assert p.needs_review is False and p.review_reasons == ()
    d = p.to_dict()
    assert json.loads(json.dumps(d))["label"] == p.label
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.label = "x"  # type: ignore[misc]


def test_path_bytes_and_array_give_the_same_prediction(classifier, sample_images):
    path = sample_images[1]
    a = classifier.predict(path)
    b = classifier.predict(path.read_bytes())
    c = classifier.predict(load_image(path))
    assert a == b == c


def test_one_instance_is_safe_across_threads(classifier, sample_images):
    expected = [classifier.predict(p) for p in sample_images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(classifier.predict, sample_images * 4))
    assert got == expected * 4


def test_review_flag_uses_the_reported_confidence(make_tiny_onnx, tmp_path, sample_images):
    path = make_tiny_onnx(tmp_path / "r.onnx", review_below=0.9999)
    clf = Classifier(path, provider="cpu")
    preds = clf.predict_batch(sample_images)
    assert all(p.needs_review == (p.confidence < 0.9999) for p in preds)
    flagged = [p for p in preds if p.needs_review]
    assert flagged and all(p.review_reasons[0].code == "low_confidence" for p in flagged)
    single = clf.predict(sample_images[0])
    at = Classifier(path, provider="cpu", review_below=single.confidence)
    assert at.predict(sample_images[0]).needs_review is False  # equal to the threshold: kept
    with pytest.raises(ValueError, match="--review-below"):
        Classifier(path, review_below=1.5)


def test_input_checks_flag_blank_frames_with_the_reason(classifier):
    preds = classifier.predict_pixels([np.zeros((64, 64, 3), np.uint8),
                                       np.full((64, 64, 3), 255, np.uint8)])
    for p in preds:
        assert p.needs_review
        assert any(r.code == "blank" and r.message.startswith("blank or flat image")
                   for r in p.review_reasons)
        assert any(r.code == "no_stain" and r.message.startswith("no stained cells found")
                   for r in p.review_reasons)


def test_input_checks_flag_what_is_unlike_the_training_images(classifier):
    green = np.zeros((32, 32, 3), np.uint8)
    green[..., 1] = np.indices((32, 32)).sum(0) % 2 * 255
    p = classifier.predict_pixels([green])[0]
    assert any(r.code == "unlike_training"
               and r.message.startswith("unlike the training images") for r in p.review_reasons)


def test_hybrid_model(make_tiny_onnx, tmp_path, pixels):
    clf = Classifier(make_tiny_onnx(tmp_path / "h.onnx", hybrid=True), provider="cpu")
    np.testing.assert_allclose(clf.run(pixels)["probs"],
                               reference_probabilities(pixels, hybrid=True), atol=1e-3)


def test_model_without_ood_has_no_score(make_tiny_onnx, tmp_path, pixels):
    clf = Classifier(make_tiny_onnx(tmp_path / "n.onnx", with_ood=False), provider="cpu")
    p = clf.predict_pixels([pixels[0]])[0]
    assert "ood_score" not in p.input_checks


def test_bad_images_raise_image_error_with_the_name(classifier, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match=r"notes\.jpg: not an image file"):
        classifier.predict(bad)
    with pytest.raises(ImageError, match="grayscale"):
        classifier.predict(np.zeros((32, 32), np.uint8))


def test_run_checks_its_input(classifier):
    with pytest.raises(ValueError, match=r"uint8 \[N, H, W, 3\] RGB"):
        classifier.run(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        classifier.run(np.zeros((32, 32, 3), np.uint8))


def test_missing_model_file_and_unknown_name(tmp_path):
    with pytest.raises(ModelNotFoundError, match="model file not found"):
        Classifier(tmp_path / "nope.onnx")
    with pytest.raises(ModelNotFoundError, match="No bundled model 'nope'"):
        Classifier("nope")


def test_corrupt_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not onnx")
    with pytest.raises(RuntimeSetupError, match="bad.onnx: ONNX Runtime cannot load this model"):
        Classifier(bad)


def test_model_without_contract_is_refused(make_tiny_onnx, tmp_path):
    path = make_tiny_onnx(tmp_path / "plain.onnx", contract=False)
    with pytest.raises(ContractError, match="not a leukedge model.*leukedge export"):
        Classifier(path)


def _contract_json(**changes) -> str:
    from onnx_builders import TINY_SPEC

    d = ModelContract(classes=("Benign", "Early", "Pre", "Pro"), preprocessing=TINY_SPEC,
                      input_checks=InputChecks()).to_dict()
    d.update(changes)
    return json.dumps(d)


@pytest.mark.parametrize("changes, message", [
    ({"classes": ["A", "B"]}, "2 classes"),
    ({"outputs": [{"name": "probs"}, {"name": "logits_now"}]}, "only known names"),
    ({"temperature": float("nan")}, "not valid JSON|temperature"),
    ({"classes": "Benign"}, "classes must be a list"),
    ({"schema_version": 1}, "leukedge 0.1"),
    ({"schema_version": 99}, "upgrade leukedge"),
])
def test_contracts_that_lie_or_break_are_refused(make_tiny_onnx, tmp_path, changes, message):
    path = make_tiny_onnx(tmp_path / "lie.onnx", raw_contract=_contract_json(**changes))
    with pytest.raises(ContractError, match=message):
        Classifier(path)


def test_a_model_with_a_float_input_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from leukedge.runtime.contract import CONTRACT_KEY

    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["probs"])], "old",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    model.metadata_props.add(key=CONTRACT_KEY, value=_contract_json())
    onnx.save(model, tmp_path / "float.onnx")
    with pytest.raises(ContractError, match="one input 'image' of type uint8"):
        Classifier(tmp_path / "float.onnx")


def test_bundled_models_resolve_by_name():
    from leukedge.runtime.models import bundled_models

    for name, path in bundled_models().items():
        assert resolve_model(name) == path

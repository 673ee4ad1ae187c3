"""The embedding API on a real ONNX Runtime session with the tiny model and real smears."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from leukedge.runtime import Classifier, ContractError, ImageError, Prediction
from leukedge.runtime.contract import ModelContract
from leukedge.runtime.models import ModelNotFoundError, default_model_path
from leukedge.runtime.preprocess import PreprocessSpec, preprocess_batch
from leukedge.runtime.session import RuntimeSetupError
from onnx_builders import reference_probabilities


@pytest.fixture(scope="module")
def classifier(tiny_model_path) -> Classifier:
    return Classifier(tiny_model_path, provider="cpu", threads=1)


def test_configures_itself_from_the_contract(classifier):
    assert classifier.classes == ("Benign", "Early", "Pre", "Pro")
    assert classifier.contract.preprocessing.input_size == (32, 32)
    assert classifier.spec == classifier.contract.preprocessing
    assert classifier.session_info.provider == "cpu" and classifier.session_info.intra_op_threads == 1
    assert classifier.review_below == 0.0 and classifier.needs_masked_input
    assert "tiny.onnx" in repr(classifier)


def test_probabilities_match_the_graph_computed_in_numpy(classifier, sample_images):
    images, masked = preprocess_batch(sample_images, classifier.spec)
    # The whitening weights are large (~100), so float32 summation order shows up at ~1e-4.
    np.testing.assert_allclose(classifier.probabilities(images, masked),
                               reference_probabilities(images, masked), atol=1e-3)


def test_predict_equals_predict_batch(classifier, sample_images):
    batch = classifier.predict_batch(sample_images, batch_size=3)
    assert len(batch) == len(sample_images)
    for path, from_batch in zip(sample_images, batch):
        single = classifier.predict(path)
        assert single.label == from_batch.label
        # ONNX Runtime may reduce differently per batch size: equal up to float noise (~1e-5)
        assert single.probabilities == pytest.approx(from_batch.probabilities, abs=1e-4)
    assert len({p.label for p in batch}) > 1, "the tiny model should not be constant on real smears"


def test_prediction_fields(classifier, sample_images):
    p = classifier.predict(sample_images[0])
    assert list(p.probabilities) == list(classifier.classes)
    assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert p.confidence == max(p.probabilities.values()) == p.probabilities[p.label]
    assert p.to_dict() == {"label": p.label, "confidence": p.confidence,
                           "probabilities": p.probabilities, "needs_review": p.needs_review}
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.label = "Pro"
    assert hash(p) == hash(Prediction(p.label, p.confidence, {}, p.needs_review))


def test_path_bytes_and_array_give_the_same_prediction(classifier, sample_images):
    path = sample_images[1]
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    results = [classifier.predict(s) for s in (path, str(path), path.read_bytes(), rgb)]
    assert all(r == results[0] for r in results)


def test_one_instance_is_safe_across_threads(classifier, sample_images):
    sources = sample_images * 6
    starts = range(0, len(sources), 5)
    expected_singles = [classifier.predict(s) for s in sources]
    expected_batches = [classifier.predict_batch(sources[i:i + 5], batch_size=2) for i in starts]
    with ThreadPoolExecutor(max_workers=8) as pool:
        singles = pool.map(classifier.predict, sources)
        batches = pool.map(lambda i: classifier.predict_batch(sources[i:i + 5], batch_size=2), starts)
        singles, batches = list(singles), list(batches)
    assert singles == expected_singles  # bit-identical: no state leaks between concurrent calls
    assert batches == expected_batches


def test_review_flag(tiny_model_path, make_tiny_onnx, tmp_path, sample_images):
    flagged = make_tiny_onnx(tmp_path / "review.onnx", review_below=0.9)
    from_contract = Classifier(flagged, provider="cpu")
    assert from_contract.review_below == 0.9
    preds = from_contract.predict_batch(sample_images)
    assert all(p.needs_review == (p.confidence < 0.9) for p in preds)
    assert any(p.needs_review for p in preds) and not all(p.needs_review for p in preds)
    assert all(p.needs_review for p in Classifier(flagged, review_below=1.0).predict_batch(sample_images))
    assert not any(p.needs_review for p in Classifier(flagged, review_below=0.0).predict_batch(sample_images))
    with pytest.raises(ValueError, match="review_below must be in \\[0, 1\\], got 1.5"):
        Classifier(tiny_model_path, review_below=1.5)


def test_single_input_model(make_tiny_onnx, tmp_path, sample_images):
    clf = Classifier(make_tiny_onnx(tmp_path / "single.onnx", single_input=True), provider="cpu")
    assert not clf.needs_masked_input
    images, _ = preprocess_batch(sample_images[:3], clf.spec)
    np.testing.assert_allclose(clf.probabilities(images), reference_probabilities(images, None),
                               atol=1e-3)
    assert clf.predict(sample_images[0]).label in clf.classes


def test_float16_model_gets_float16_inputs(make_tiny_onnx, tmp_path, sample_images, classifier):
    clf = Classifier(make_tiny_onnx(tmp_path / "fp16.onnx", float16=True), provider="cpu")
    assert clf.contract.precision == "fp16"
    half, full = clf.predict_batch(sample_images), classifier.predict_batch(sample_images)
    for h, f in zip(half, full):
        assert h.probabilities.keys() == f.probabilities.keys()
        np.testing.assert_allclose(list(h.probabilities.values()), list(f.probabilities.values()),
                                   atol=0.05)
        assert isinstance(h.confidence, float)


def test_bad_images_raise_image_error_with_the_name(classifier, tmp_path, sample_images):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"")
    with pytest.raises(ImageError, match=r"broken\.jpg: empty file"):
        classifier.predict(broken)
    with pytest.raises(ImageError, match=r"broken\.jpg"):
        classifier.predict_batch([sample_images[0], broken])


def test_predict_arrays_checks_its_inputs(classifier):
    good = np.zeros((2, 32, 32, 3), np.float32)
    assert len(classifier.predict_arrays(good, good)) == 2
    assert classifier.predict_arrays(good[:0], good[:0]) == []
    with pytest.raises(ValueError, match="images must be an N x 32 x 32 x 3 array, got \\(2, 64, 64, 3\\)"):
        classifier.predict_arrays(np.zeros((2, 64, 64, 3), np.float32), good)
    with pytest.raises(ValueError, match="takes a masked image input"):
        classifier.predict_arrays(good)
    with pytest.raises(ValueError, match="masked has 1 images, images has 2"):
        classifier.predict_arrays(good, good[:1])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        classifier.predict_batch([], batch_size=0)


# --------------------------------------------------------------------------- wrong model files


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"absent\.onnx: model file not found"):
        Classifier(tmp_path / "absent.onnx")


def test_bundled_default_model_missing_says_how_to_get_one():
    try:
        path = default_model_path()
    except ModelNotFoundError as e:
        assert "--model" in str(e) and "leukedge export" in str(e)
        with pytest.raises(ModelNotFoundError, match="No bundled default model \\(int8\\)"):
            Classifier()
    else:
        assert Classifier().model_path == path
    with pytest.raises(ValueError, match="Unknown precision 'int4'. Valid: fp32, fp16, int8"):
        default_model_path("int4")


def test_corrupt_file(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage" * 30)
    with pytest.raises(RuntimeSetupError, match=r"junk\.onnx: ONNX Runtime cannot load"):
        Classifier(junk)


def test_model_without_contract_is_refused(make_tiny_onnx, tmp_path):
    with pytest.raises(ContractError, match=r"plain\.onnx: not a leukedge model"):
        Classifier(make_tiny_onnx(tmp_path / "plain.onnx", contract=False))


def _raw(**changes) -> str:
    return ModelContract.for_hybrid(PreprocessSpec(input_size=(32, 32)), **changes).to_json()


@pytest.mark.parametrize("contract_json, message", [
    (_raw(image_input="pixels"), "contract input 'pixels' \\(image\\) is not an input of the model"),
    (_raw(output_name="logits_out"), "contract output 'logits_out' is not an output"),
    (_raw(classes=("A", "B", "C")), "output 'probs' has shape \\[4\\] per image, but the contract "
                                    "lists 3 classes"),
    (ModelContract.for_hybrid(PreprocessSpec(input_size=(64, 64))).to_json(),
     "input 'image' has shape \\['N', 32, 32, 3\\], but the contract's preprocessing gives "
     "\\[N, 64, 64, 3\\]"),
])
def test_model_that_does_not_match_its_contract(make_tiny_onnx, tmp_path, contract_json, message):
    path = make_tiny_onnx(tmp_path / "mismatch.onnx", raw_contract=contract_json)
    with pytest.raises(ContractError, match=message):
        Classifier(path)


def test_inputs_the_contract_does_not_describe(make_tiny_onnx, tmp_path):
    from leukedge.runtime.contract import TensorSpec

    contract = ModelContract(classes=("Benign", "Early", "Pre", "Pro"), output_name="probs",
                             inputs=(TensorSpec("image", (None, 32, 32, 3), "image"),),
                             preprocessing=PreprocessSpec(input_size=(32, 32)))
    path = make_tiny_onnx(tmp_path / "extra.onnx", raw_contract=contract.to_json())
    with pytest.raises(ContractError, match="model inputs \\['masked_image'\\] are not described"):
        Classifier(path)

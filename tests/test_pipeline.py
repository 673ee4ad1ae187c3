"""Many files with one result each (runtime.pipeline) and the overlay drawing (runtime.overlay)."""

from __future__ import annotations

import numpy as np
import pytest

from leukedge.runtime import Classifier, Prediction
from leukedge.runtime.overlay import overlay_names, render_overlay, write_overlay
from leukedge.runtime.pipeline import classify_files
from leukedge.runtime.preprocess import load_image


@pytest.fixture(scope="module")
def classifier(tiny_model_path) -> Classifier:
    return Classifier(tiny_model_path, provider="cpu")


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_results_in_input_order_with_errors_in_place(classifier, sample_images, tmp_path, workers):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    sources = [sample_images[0], empty, *sample_images[1:4], tmp_path / "absent.png"]
    results = list(classify_files(classifier, sources, batch_size=2, workers=workers))
    assert [r.source for r in results] == [str(s) for s in sources]
    assert [r.ok for r in results] == [True, False, True, True, True, False]
    assert "empty file" in results[1].error and "file not found" in results[5].error
    expected = classifier.predict_batch(sample_images[:4], batch_size=1)
    for got, want in zip([r.prediction for r in results if r.ok], expected):
        assert got.label == want.label
        assert got.probabilities == pytest.approx(want.probabilities, abs=1e-4)
    assert all(r.image is None for r in results)


def test_keep_images_and_to_dict(classifier, sample_images):
    (result,) = classify_files(classifier, [sample_images[0]], keep_images=True)
    np.testing.assert_array_equal(result.image, load_image(sample_images[0]))
    assert list(result.to_dict()) == ["path", "label", "confidence", "probabilities",
                                      "needs_review", "error"]


def test_arrays_and_bytes_are_sources_too(classifier, sample_images):
    rgb = load_image(sample_images[2])
    results = list(classify_files(classifier, [rgb, sample_images[2].read_bytes()], workers=0))
    assert results[0].source.startswith("<array") and results[1].source.endswith("bytes>")
    assert results[0].prediction == results[1].prediction


def test_bad_arguments(classifier):
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        list(classify_files(classifier, [], batch_size=0))
    with pytest.raises(ValueError, match="workers must be >= 0"):
        list(classify_files(classifier, [], workers=-1))


def test_overlay_names_are_distinct():
    names = overlay_names(["a/x.jpg", "b/x.jpg", "x-2.png", "c/X.tif", "y.bmp"])
    assert names == ["x.overlay.png", "x-2.overlay.png", "x-2-2.overlay.png", "X-3.overlay.png",
                     "y.overlay.png"]


def test_overlay_draws_outline_and_review_caption(tmp_path):
    rgb = np.full((120, 160, 3), 255, np.uint8)
    rgb[40:80, 60:100] = (128, 0, 255)  # a purple "cell"
    mask = np.zeros((120, 160), bool)
    mask[40:80, 60:100] = True
    calm = render_overlay(rgb, mask, Prediction("Pre", 0.95, {}, False))
    review = render_overlay(rgb, mask, Prediction("Pre", 0.40, {}, True))
    assert calm.shape == rgb.shape and calm.dtype == np.uint8
    assert (calm[40, 60:100] == (0, 255, 0)).all(axis=1).any()  # green outline on the cell's edge
    red = (review[..., 2] > 200) & (review[..., 0] < 60) & (review[..., 1] < 60)
    assert red.any() and not ((calm[..., 2] > 200) & (calm[..., 0] < 60) & (calm[..., 1] < 60)).any()
    with pytest.raises(ValueError, match="mask shape"):
        render_overlay(rgb, mask[:10], Prediction("Pre", 0.9, {}, False))
    from leukedge.runtime.preprocess import HsvMaskSpec

    out = write_overlay(tmp_path / "o" / "cell.overlay.png", rgb, HsvMaskSpec(),
                        Prediction("Pre", 0.9, {}, False))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["cell.overlay.png"]


def test_image_only_model_skips_the_mask(make_tiny_onnx, tmp_path, sample_images, monkeypatch):
    import sys

    preprocess_module = sys.modules["leukedge.runtime.preprocess"]  # the package exports a function
    clf = Classifier(make_tiny_onnx(tmp_path / "single.onnx", single_input=True), provider="cpu")
    expected = [clf.predict(p).probabilities for p in sample_images[:3]]

    def no_mask(*args, **kwargs):
        raise AssertionError("the HSV mask was computed for a model without a masked input")

    monkeypatch.setattr(preprocess_module, "hsv_mask", no_mask)
    results = list(classify_files(clf, sample_images[:3], batch_size=2))
    for result, probs in zip(results, expected, strict=True):
        assert result.prediction.probabilities == pytest.approx(probs, abs=1e-4)


def test_stopping_early_cancels_the_queued_batches(classifier, sample_images, monkeypatch):
    import sys

    pipeline = sys.modules["leukedge.runtime.pipeline"]
    calls = []
    original = pipeline._process
    monkeypatch.setattr(pipeline, "_process", lambda *args: calls.append(1) or original(*args))
    results = classify_files(classifier, list(sample_images) * 10, batch_size=1, workers=2)
    assert next(results).ok
    results.close()
    assert len(calls) <= 3, f"{len(calls)} of {len(sample_images) * 10} batches ran after close()"


@pytest.mark.parametrize("cpus, per_run, expected", [(2, 1, 2), (2, 2, 2), (1, 1, 2), (16, 2, 8),
                                                     (64, 1, 8), (6, 4, 2)])
def test_default_workers_fill_the_cpus(monkeypatch, cpus, per_run, expected):
    import sys
    from types import SimpleNamespace

    pipeline = sys.modules["leukedge.runtime.pipeline"]
    monkeypatch.setattr(pipeline, "usable_cpus", lambda: cpus)
    fake = SimpleNamespace(session_info=SimpleNamespace(intra_op_threads=per_run))
    assert pipeline.default_workers(fake) == expected

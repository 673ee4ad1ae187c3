"""Many files with one result each (runtime.pipeline) and the overlay drawing (runtime.overlay)."""

from __future__ import annotations

import numpy as np
import pytest

from leukedge.runtime import Classifier, Prediction
from leukedge.runtime.decode import load_image
from leukedge.runtime.overlay import overlay_names, render_overlay, write_overlay
from leukedge.runtime.pipeline import classify_files


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
    assert result.mask.shape == (32, 32) and result.mask.dtype == np.uint8
    assert list(result.to_dict()) == ["path", "label", "confidence", "probabilities",
                                      "needs_review", "review_reasons", "input_checks", "seconds",
                                      "error"]
    assert result.seconds > 0


def test_an_error_row_needs_review(classifier, tmp_path):
    missing = tmp_path / "absent.jpg"
    (result,) = classify_files(classifier, [missing], workers=0)
    row = result.to_dict()
    assert row["needs_review"] is True and row["review_reasons"] == [
        {"code": "unreadable", "message": "could not be classified"}]
    assert row["error"].startswith(str(missing))


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
    out = write_overlay(tmp_path / "o" / "cell.overlay.png", rgb, mask[::4, ::4],
                        Prediction("Pre", 0.9, {}, False))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["cell.overlay.png"]


def test_overlay_of_a_huge_image_is_drawn_at_display_size(tmp_path):
    import cv2

    rgb = np.full((3000, 4000, 3), 230, np.uint8)
    out = write_overlay(tmp_path / "big.overlay.png", rgb, np.zeros((32, 32), np.uint8),
                        Prediction("Benign", 0.99, {}, False))
    assert cv2.imread(str(out)).shape == (768, 1024, 3)


def test_images_of_different_sizes_in_one_batch(classifier, sample_images):
    import cv2

    rgb = load_image(sample_images[0])
    sources = [rgb, cv2.resize(rgb, (300, 200)), sample_images[1]]
    results = list(classify_files(classifier, sources, batch_size=3, workers=0))
    assert all(r.ok for r in results)
    assert results[0].prediction.probabilities == pytest.approx(
        classifier.predict(rgb).probabilities, abs=1e-4)


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


@pytest.mark.parametrize("provider, threads, runs", [("cpu", 1, [4, 4, 4, 4, 4, 2]),
                                                     ("cpu", 2, [12, 10]),
                                                     ("cuda", 1, [12, 10])])
def test_cpu_model_runs_stay_cache_sized(tiny_model_path, sample_images, provider, threads,
                                         runs):
    """22 files in batches of 12: a single-threaded CPU session runs the model 4 images at a
    time (faster per thread there), two threads or a GPU the whole batch; the results are
    the same either way."""
    clf = Classifier(tiny_model_path, provider="cpu", threads=threads)
    sizes = []
    original = clf.run
    object.__setattr__(clf, "run", lambda pixels, names=None: sizes.append(len(pixels))
                       or original(pixels, names))
    if provider != "cpu":  # the run size follows the provider the session really has
        object.__setattr__(clf, "session_info", clf.session_info.__class__(
            **{**clf.session_info.__dict__, "providers": ("CUDAExecutionProvider",)}))
    sources = (list(sample_images) * 3)[:22]
    results = list(classify_files(clf, sources, batch_size=12, workers=0))
    assert sizes == runs
    sizes.clear()  # the classifier's own batches (watch, serve, predict_batch) too
    clf.predict_batch(sources, batch_size=12)
    assert sizes == runs
    reference = Classifier(tiny_model_path, provider="cpu")
    assert [r.prediction.probabilities for r in results] == \
        [p.probabilities for p in reference.predict_batch(sources, batch_size=22)]


def test_overlays_of_a_model_without_a_stain_mask_output(make_tiny_onnx, sample_images,
                                                         tmp_path):
    """A model whose contract has no stain_mask output is still classified with keep_images
    (the mask is None), and its overlay is drawn without the outline."""
    import onnx

    from leukedge.runtime.contract import contract_of_proto, embed_contract, save_model

    path = make_tiny_onnx(tmp_path / "nomask.onnx")
    proto = onnx.load(str(path))
    contract = contract_of_proto(proto, str(path))
    save_model(embed_contract(proto, contract.with_updates(
        outputs=tuple(o for o in contract.outputs if o != "stain_mask"))), path)
    clf = Classifier(path, provider="cpu")
    assert "stain_mask" not in clf.contract.outputs
    results = list(classify_files(clf, sample_images[:2], keep_images=True))
    assert all(r.ok and r.mask is None and r.image is not None for r in results)
    written = write_overlay(tmp_path / "o.png", results[0].image, results[0].mask,
                            results[0].prediction)
    assert written.stat().st_size > 0

"""Bounded memory in classify_files: every decode acquires its header's pixels from one budget
shared by the workers first, no model run holds more than the budget (an image over it runs
alone), and the results are those of an unbounded run. The budget is patched down, so the
images stay tiny (bench/bench_memory.py measures the real 49 MP case)."""

from __future__ import annotations

import sys
import threading
import time

import cv2
import pytest

from leukedge.runtime import Classifier
from leukedge.runtime.pipeline import classify_files

pipeline = sys.modules["leukedge.runtime.pipeline"]
BUDGET = 10_000  # pixels: two 64 x 64 images, not three


@pytest.fixture(scope="module")
def classifier(tiny_model_path) -> Classifier:
    return Classifier(tiny_model_path, provider="cpu")


@pytest.fixture
def folder(tmp_path, sample_images):
    """Ten 64 x 64 PNGs, one 128 x 128 (over the budget) and one 48 x 80, from real smears."""
    paths = []
    for i, side in enumerate([64] * 5 + [128] + [64] * 5 + [(48, 80)]):
        h, w = side if isinstance(side, tuple) else (side, side)
        bgr = cv2.resize(cv2.imread(str(sample_images[i % len(sample_images)])), (w, h))
        path = tmp_path / f"im{i:02d}.png"
        path.write_bytes(cv2.imencode(".png", bgr)[1].tobytes())
        paths.append(path)
    return paths


@pytest.fixture
def recorded(monkeypatch, classifier):
    """Every model run's pixels and the pixels in model runs at once; the budget's state at
    each decode."""
    log = {"runs": [], "concurrent": 0, "max_concurrent": 0, "decodes": [], "budgets": []}
    lock = threading.Lock()
    run = classifier.run

    def recording_run(pixels, outputs=None):
        n = pixels.shape[0] * pixels.shape[1] * pixels.shape[2]
        with lock:
            log["runs"].append((pixels.shape[0], n))
            log["concurrent"] += n
            log["max_concurrent"] = max(log["max_concurrent"], log["concurrent"])
        time.sleep(0.01)  # let the other worker overlap if it could
        try:
            return run(pixels, outputs)
        finally:
            with lock:
                log["concurrent"] -= n

    class RecordingBudget(pipeline.PixelBudget):
        def __init__(self, total):
            super().__init__(total)
            log["budgets"].append(self)

    decode = pipeline.decode_inspected

    def recording_decode(data, name):
        budget = log["budgets"][-1]
        log["decodes"].append((budget.used, budget.total))
        return decode(data, name)

    monkeypatch.setattr(classifier, "run", recording_run)
    monkeypatch.setattr(pipeline, "PixelBudget", RecordingBudget)
    monkeypatch.setattr(pipeline, "decode_inspected", recording_decode)
    return log


@pytest.mark.parametrize("workers", [0, 2])
def test_the_pixel_budget_bounds_runs_and_decodes(classifier, folder, recorded, workers):
    bounded = list(classify_files(classifier, folder, batch_size=8, workers=workers,
                                  pixel_budget=BUDGET))
    assert all(r.ok for r in bounded) and [r.source for r in bounded] == [str(p) for p in folder]
    for images, pixels in recorded["runs"]:
        assert pixels <= BUDGET or images == 1, (images, pixels)
    assert (1, 128 * 128) in recorded["runs"]  # over the budget: alone
    assert recorded["max_concurrent"] <= max(BUDGET, 128 * 128)
    assert len(recorded["decodes"]) == len(folder)
    assert all(0 < used <= total for used, total in recorded["decodes"])  # acquired first
    assert recorded["budgets"][-1].peak <= BUDGET and recorded["budgets"][-1].used == 0
    unbounded = list(classify_files(classifier, folder, batch_size=8, workers=0))
    for got, want in zip(bounded, unbounded):
        assert got.prediction.probabilities == pytest.approx(want.prediction.probabilities,
                                                             abs=1e-4)


def test_keep_images_runs_inline_within_the_budget(classifier, folder, recorded):
    results = list(classify_files(classifier, folder, batch_size=8, workers=2, keep_images=True,
                                  pixel_budget=BUDGET))
    assert all(r.ok and r.image is not None for r in results)
    assert recorded["max_concurrent"] <= max(BUDGET, 128 * 128)
    assert recorded["budgets"][-1].peak <= BUDGET


def test_a_bomb_and_a_truncated_file_cost_no_budget(classifier, folder, recorded, tmp_path):
    cut = tmp_path / "cut.png"
    cut.write_bytes(folder[0].read_bytes()[:200])
    results = list(classify_files(classifier, [cut, folder[0]], workers=0, max_pixels=5000,
                                  pixel_budget=BUDGET))
    assert "truncated PNG" in results[0].error and results[1].ok
    assert len(recorded["decodes"]) == 1 and recorded["budgets"][-1].used == 0

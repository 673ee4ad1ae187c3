"""Model runs planned by pixels (runtime.batching), the shared pixel budget, and the serve
Batcher's stacking bound."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from leukedge.runtime.batching import (PIXEL_BUDGET, PixelBudget, images_per_run, plan_runs,
                                       release_freed_memory)


def test_runs_are_grouped_by_size_and_split_by_pixels_and_count():
    big, small = (4000, 3000, 3), (224, 224, 3)
    shapes = [big, small, big, big, small, big, big, big]
    runs = plan_runs(shapes, max_images=16, pixel_budget=50_000_000)
    assert runs == [[0, 2, 3, 5], [6, 7], [1, 4]]  # 4 x 12 MP fit in 50 MP, not 5
    assert plan_runs([small] * 5, max_images=2) == [[0, 1], [2, 3], [4]]
    assert sorted(i for run in runs for i in run) == list(range(len(shapes)))


def test_an_image_over_the_budget_runs_alone():
    runs = plan_runs([(100, 100, 3)] * 3, max_images=8, pixel_budget=5000)
    assert runs == [[0], [1], [2]]
    assert images_per_run((100, 100, 3), 8, 5000) == 1
    assert images_per_run((10, 10, 3), 8, 5000) == 8
    assert images_per_run((224, 224, 3), 10_000) == PIXEL_BUDGET // (224 * 224)


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError, match="max_images and pixel_budget must be >= 1"):
        plan_runs([(8, 8, 3)], max_images=0)
    with pytest.raises(ValueError, match="pixel budget must be >= 1"):
        PixelBudget(0)


def test_pixel_budget_blocks_until_released_and_grants_a_huge_request_alone():
    budget = PixelBudget(100)
    assert budget.acquire(60) == 60
    assert budget.try_acquire(50) is None
    granted = []
    waiter = threading.Thread(target=lambda: granted.append(budget.acquire(1000)))
    waiter.start()
    time.sleep(0.05)
    assert not granted  # 1000 is capped at the whole budget: waits until nothing is held
    budget.release(60)
    waiter.join(timeout=5)
    assert granted == [100] and budget.used == 100 and budget.peak == 100
    budget.release(100)
    assert budget.used == 0


def test_release_freed_memory_is_safe_everywhere():
    assert release_freed_memory() in (True, False)


class _RecordingClassifier:
    """What the Batcher needs of a Classifier: predict_pixels, recording each call's pixels."""

    def __init__(self, delay: float = 0.0):
        self.calls: list[list[tuple]] = []
        self.delay = delay

    def predict_pixels(self, images):
        self.calls.append([im.shape for im in images])
        time.sleep(self.delay)
        return [f"p{im.shape[0]}x{im.shape[1]}" for im in images]


def test_batcher_stacks_at_most_the_pixel_budget():
    from leukedge.runtime.http_api import Batcher

    clf = _RecordingClassifier(delay=0.05)
    batcher = Batcher(clf, max_batch=32, pixel_budget=3000)  # 3 images of 1000 pixels
    first = batcher.submit(np.zeros((10, 100, 3), np.uint8))
    time.sleep(0.01)  # the worker is busy on the first: the rest queue up
    shapes = [(10, 100, 3)] * 7 + [(50, 100, 3)] + [(20, 20, 3)] * 2
    futures = [batcher.submit(np.zeros(s, np.uint8)) for s in shapes]
    assert first.result(timeout=10) == "p10x100"
    assert [f.result(timeout=10) for f in futures] == [f"p{s[0]}x{s[1]}" for s in shapes]
    for call in clf.calls:
        pixels = sum(s[0] * s[1] for s in call)
        assert pixels <= 3000 or len(call) == 1, call  # the 5000-pixel frame ran alone
        assert len({*call}) == 1  # one size per run
    assert [(50, 100, 3)] in clf.calls


def test_batcher_passes_a_model_failure_to_every_waiting_request():
    from leukedge.runtime.http_api import Batcher

    class Failing(_RecordingClassifier):
        def predict_pixels(self, images):
            raise RuntimeError("model exploded")

    future = Batcher(Failing()).submit(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(RuntimeError, match="model exploded"):
        future.result(timeout=10)


def test_bench_batch_sizes_are_bounded():
    from typer.testing import CliRunner

    from leukedge.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["bench", "--batch-sizes", "100000"])
    assert result.exit_code == 2
    assert "--batch-sizes" in result.output and "at most 1024 images" in result.output
    result = runner.invoke(app, ["bench", "--batch-sizes", "8,1000"])  # 224 x 224 input
    assert result.exit_code == 2
    assert f"over the bound of {PIXEL_BUDGET // (224 * 224)} images" in result.output


def test_bench_with_large_images_is_bounded_by_pixels(tmp_path, tiny_model_path):
    import cv2

    from leukedge.modelkit.evaluation.benchmark import bench_model

    frame = np.full((2000, 2000, 3), 200, np.uint8)  # 4 MP: 8 per run at the 32 MP budget
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"big{i}.png"), frame)
    with pytest.raises(ValueError, match=r"--batch-sizes: 9 is over the bound of 8 images for "
                                         r"these 2000x2000 images"):
        bench_model(tiny_model_path, provider="cpu", batch_sizes=(1, 9), iterations=1,
                    warmup=0, images=[tmp_path])

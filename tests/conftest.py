"""Shared fixtures: tiny one-file models (built with onnx.helper around the real preprocessing
graph) and real smears.

The helper modules (onnx_builders, dataset_builders) are importable by name because
pyproject.toml puts tests/ on pytest's ``pythonpath``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dataset_builders import CLASSES
from leukedge.runtime.models import SAMPLES_DIR
from onnx_builders import make_tiny_onnx as _make_tiny_onnx


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """An image-only tiny model (32x32 network, 4 classes, review_below 0.0), shared."""
    return _make_tiny_onnx(tmp_path_factory.mktemp("tiny_model") / "tiny.onnx")


@pytest.fixture(scope="session")
def make_tiny_onnx():
    """The builder itself: ``make_tiny_onnx(path, **options) -> Path``."""
    return _make_tiny_onnx


@pytest.fixture(scope="session")
def sample_images() -> list[Path]:
    """Two real smear JPEGs per class (8 paths, class order): the samples bundled with the
    runtime, so these tests run in every clone, with or without the dataset beside it."""
    paths = [p for label in CLASSES for p in sorted((SAMPLES_DIR / label).glob("*.jpg"))]
    assert len(paths) == 2 * len(CLASSES), f"expected 8 bundled samples in {SAMPLES_DIR}"
    return paths

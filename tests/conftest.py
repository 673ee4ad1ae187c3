"""Shared fixtures: tiny one-file models (built with onnx.helper around the real preprocessing
graph) and real smears.

The helper modules (onnx_builders, dataset_builders) are importable by name because
pyproject.toml puts tests/ on pytest's ``pythonpath``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dataset_builders import ALL_DATA, CLASSES, real_images
from onnx_builders import make_tiny_onnx as _make_tiny_onnx

DATA_ROOT = ALL_DATA / "Original"  # ../shared/data/ALL beside the checkout, or $LEUKEDGE_ALL_DATA
NO_DATA = (f"the ALL images are not at {DATA_ROOT} (put ../shared/data/ALL beside the checkout "
           "or set LEUKEDGE_ALL_DATA)")


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
    """Two real smear JPEGs per class (8 paths); skips when the dataset is not on this machine."""
    paths = real_images(per_class=2)
    if len(paths) < 2 * len(CLASSES):
        pytest.skip(NO_DATA)
    return paths

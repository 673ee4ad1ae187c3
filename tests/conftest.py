"""Shared fixtures: a tiny contract-honouring ONNX model (built with onnx.helper) and real smears.

``make_tiny_onnx`` lives in tests/onnx_builders.py; this file puts tests/ on ``sys.path`` so test
modules can also ``from onnx_builders import make_tiny_onnx`` directly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from dataset_builders import ALL_DATA, CLASSES, real_images  # noqa: E402
from onnx_builders import make_tiny_onnx as _make_tiny_onnx  # noqa: E402

DATA_ROOT = ALL_DATA / "Original"  # ../shared/data/ALL beside the checkout, or $LEUKEDGE_ALL_DATA


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """A two-input tiny model (32x32 inputs, 4 classes, review_below 0.0), shared by the session."""
    return _make_tiny_onnx(tmp_path_factory.mktemp("tiny_model") / "tiny.onnx")


@pytest.fixture(scope="session")
def make_tiny_onnx():
    """The builder itself: ``make_tiny_onnx(path, **contract_overrides) -> Path``."""
    return _make_tiny_onnx


@pytest.fixture(scope="session")
def sample_images() -> list[Path]:
    """Two real smear JPEGs per class (8 paths); skips when the dataset is not on this machine."""
    paths = real_images(per_class=2)
    if len(paths) < 2 * len(CLASSES):
        pytest.skip(f"real smear images not found under {DATA_ROOT}")
    return paths

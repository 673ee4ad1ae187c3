"""The test vectors: plain onnxruntime, fed nothing but raw RGB pixels of several sizes,
reproduces what each bundled model answered when the vectors were made (within 1e-3)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from leukedge.runtime.cpu import has_int8_vnni
from leukedge.runtime.models import MODELS_DIR, bundled_models

VECTORS = MODELS_DIR.parent / "testvectors"


def _document() -> dict:
    path = VECTORS / "vectors.json"
    if not path.is_file():
        pytest.skip(f"no test vectors at {VECTORS} (bench/make_testvectors.py makes them)")
    return json.loads(path.read_text())


def test_every_bundled_model_has_vectors_for_its_exact_file():
    document = _document()
    for name, path in bundled_models().items():
        assert name in document["expected"], name
        assert document["expected"][name]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("model", sorted(bundled_models()))
def test_plain_onnxruntime_reproduces_the_vectors(model):
    import onnxruntime as ort

    document = _document()
    if model.endswith("int8") and has_int8_vnni() is False:
        pytest.skip("INT8 vectors hold on CPUs with VNNI; this CPU lacks it (runtime/cpu.py)")
    session = ort.InferenceSession(str(bundled_models()[model]), providers=["CPUExecutionProvider"])
    for image in document["images"]:
        raw = (VECTORS / image["file"]).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == image["sha256"]
        pixels = np.frombuffer(raw, np.uint8).reshape(image["height"], image["width"], 3)
        want = document["expected"][model]["images"][image["name"]]
        got = dict(zip(want, session.run(list(want), {"image": pixels[None]})))
        for output, values in want.items():
            np.testing.assert_allclose(np.asarray(got[output][0]), np.asarray(values),
                                       atol=document["tolerance"], err_msg=f"{image['name']} {output}")

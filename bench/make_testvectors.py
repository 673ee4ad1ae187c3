"""Write the test vectors of the bundled models: raw RGB pixels and what each model answers.

A vendor porting the runtime to C++, C#, Java or JavaScript feeds these raw uint8 arrays (no
decoder involved) to the model file and compares its outputs with the recorded ones; a test
(tests/test_testvectors.py) does the same with plain onnxruntime.

    python bench/make_testvectors.py            # -> runtime/assets/testvectors/

Every output of the contract but the stain mask is recorded, the ``heatmap`` included for a model
that has it (a vendor's port can check the map it draws, not just the label).

Images: three bundled samples at their own 224 x 224, one enlarged to 300 x 400 (the model
shrinks it), one shrunk to 160 x 160 (the model enlarges it), and a blank grey frame.
"""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import onnxruntime as ort

from leukedge.modelkit.evaluation.machine import describe_machine
from leukedge.runtime.contract import read_contract
from leukedge.runtime.cpu import has_int8_vnni
from leukedge.runtime.decode import load_image
from leukedge.runtime.files import atomic_write_bytes, atomic_write_text
from leukedge.runtime.models import MODELS_DIR, SAMPLES_DIR as SAMPLES, bundled_models

OUT = MODELS_DIR.parent / "testvectors"


def images() -> dict[str, np.ndarray]:
    benign = load_image(SAMPLES / "Benign" / "WBC-Benign-001.jpg")
    early = load_image(SAMPLES / "Early" / "WBC-Malignant-Early-033.jpg")
    pro = load_image(SAMPLES / "Pro" / "WBC-Malignant-Pro-006.jpg")
    return {"benign_224x224": benign, "early_224x224": early, "pro_224x224": pro,
            "early_300x400": cv2.resize(early, (400, 300), interpolation=cv2.INTER_CUBIC),
            "pro_160x160": cv2.resize(pro, (160, 160), interpolation=cv2.INTER_AREA),
            "grey_64x64": np.full((64, 64, 3), 128, np.uint8)}


def main() -> None:
    vectors = images()
    entries = []
    for name, pixels in vectors.items():
        raw = np.ascontiguousarray(pixels, np.uint8).tobytes()
        atomic_write_bytes(OUT / f"{name}.rgb", raw)
        entries.append({"name": name, "file": f"{name}.rgb", "height": pixels.shape[0],
                        "width": pixels.shape[1], "sha256": hashlib.sha256(raw).hexdigest()})
    expected = {}
    for model, path in bundled_models().items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs = [o["name"] for o in read_contract(path).to_dict()["outputs"]
                   if o["name"] != "stain_mask"]
        expected[model] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "images": {}}
        for name, pixels in vectors.items():
            values = session.run(outputs, {"image": pixels[None]})
            expected[model]["images"][name] = {o: np.asarray(v[0]).round(6).tolist()
                                               for o, v in zip(outputs, values)}
    document = {"format": "leukedge.testvectors", "version": 1,
                "layout": "raw bytes, uint8, RGB, row-major [height, width, 3]; feed as "
                          "image [1, height, width, 3]",
                "tolerance": 1e-3, "images": entries, "expected": expected,
                "made_on": {"cpu": describe_machine()["cpu_model"], "int8_vnni": has_int8_vnni(),
                            "onnxruntime": ort.__version__}}
    atomic_write_text(OUT / "vectors.json", json.dumps(document, indent=1) + "\n")
    print(f"wrote {len(entries)} images and {len(expected)} models' outputs to {OUT}")


if __name__ == "__main__":
    main()

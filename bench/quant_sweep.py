"""Which INT8 static settings keep a trained model's decisions on this CPU? One run, every variant.

For a training run folder with an exported `model.onnx`, quantizes it with each combination of
weight type (int8 / uint8), per-channel on/off and reduce-range, calibrated on 200 train-split
images through the project's own `quantize_model`, and reports on the test split: accuracy, top-1
agreement with FP32, max |dp|, and batch-1 latency. The CPU's INT8 kernels decide the outcome
(AVX2 without VNNI saturates u8s8 products), so the machine block is printed with the numbers.

Usage:
    python bench/quant_sweep.py --run runs/default-small_cnn-128 --data ../shared/data/ALL
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from leukedge.export import QuantizeOptions, quantize_model
from leukedge.export.evaluation import load_labelled
from leukedge.export.machine import describe_machine
from leukedge.runtime import Classifier
from leukedge.runtime.preprocess import preprocess_batch

VARIANTS = [  # (weight_type, per_channel, reduce_range)
    ("int8", True, True), ("int8", False, True), ("uint8", True, False), ("uint8", False, False),
]


def latency_ms(model: Classifier, x: np.ndarray, m: np.ndarray, n: int = 50) -> float:
    model.probabilities(x[:1], m[:1])
    times = []
    for i in range(n):
        start = time.perf_counter()
        model.probabilities(x[i % len(x):][:1], m[i % len(m):][:1])
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--calib-size", type=int, default=200)
    args = ap.parse_args()

    fp32_path = args.run / "model.onnx"
    fp32 = Classifier(fp32_path, provider="cpu")
    manifest = args.run / "split.json"
    test = load_labelled(args.data, fp32.classes, manifest, "test")
    calib = load_labelled(args.data, fp32.classes, manifest, "train", limit=args.calib_size)
    x, m = preprocess_batch(test.paths, fp32.spec)
    ref = fp32.probabilities(x, m)
    rows = [{"variant": "fp32", "accuracy": float((ref.argmax(1) == test.labels).mean()),
             "agreement": 1.0, "max_dp": 0.0, "p50_ms_b1": latency_ms(fp32, x, m)}]
    with tempfile.TemporaryDirectory() as tmp:
        for weight_type, per_channel, reduce_range in VARIANTS:
            out = Path(tmp) / f"{weight_type}-{per_channel}-{reduce_range}.onnx"
            options = QuantizeOptions("static", tuple(calib.paths), per_channel=per_channel,
                                      reduce_range=reduce_range, weight_type=weight_type)
            quantize_model(fp32_path, out, options)
            q = Classifier(out, provider="cpu")
            p = q.probabilities(x, m)
            rows.append({"variant": f"{weight_type} per_channel={per_channel} "
                                    f"reduce_range={reduce_range}",
                         "accuracy": float((p.argmax(1) == test.labels).mean()),
                         "agreement": float((p.argmax(1) == ref.argmax(1)).mean()),
                         "max_dp": float(np.abs(p - ref).max()),
                         "p50_ms_b1": latency_ms(q, x, m)})
    print(json.dumps({"run": str(args.run), "n": len(test.labels), "machine": describe_machine(),
                      "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

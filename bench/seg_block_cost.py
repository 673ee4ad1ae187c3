"""What the segmentation branch costs: parameters, ONNX size and ORT latency of three hybrids.

Builds untrained (weights=None, fixed seed) small_cnn hybrids at the default model's 128x128 that
differ only in the branch on the masked image:
- ``seed``: the seed's U-Net-style block at full width (32-64-128-256);
- ``slim``: the same block at width 0.25 (8-16-32-64), the bundled default's;
- ``none``: no branch (image-only; the runtime then skips the HSV mask too).
Each is exported with ``leukedge.export.export_keras`` (parity-checked) and timed with
``leukedge bench``'s code on real images: preprocessing per image and the model at batch 1 and 8,
all in one process so the ratios are comparable. Weights do not change the speed of these graphs.

Usage:
    python bench/seg_block_cost.py --images ../shared/data/ALL/Original --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

VARIANTS = {"seed": dict(seg_width=1.0), "slim": dict(seg_width=0.25),
            "none": dict(seg_features="none")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=Path("../shared/data/ALL/Original"))
    parser.add_argument("--n", type=int, default=32, help="real images for timing")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import keras

    from leukedge.export import export_keras
    from leukedge.export.bench import bench_model
    from leukedge.export.machine import describe_machine
    from leukedge.train import build_hybrid, count_parameters

    images = sorted(args.images.rglob("*.jpg"))[:: 7][: args.n]
    if len(images) < args.n:
        raise SystemExit(f"{args.images}: only {len(images)} images found")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in VARIANTS.items():
            keras.utils.set_random_seed(0)
            model = build_hybrid("small_cnn", input_size=(args.input_size,) * 2, l2=1e-4,
                                 **overrides)
            path = Path(tmp) / f"{name}.onnx"
            with warnings.catch_warnings():  # no run.json: default classes, no provenance
                warnings.simplefilter("ignore", UserWarning)
                export_keras(model, path, parity_images=images[:4], parity_source="real images")
            result = bench_model(path, provider="cpu", batch_sizes=(1, 8),
                                 iterations=args.iterations, images=images)
            b1, b8 = result["batches"]
            row = {"variant": name, **overrides, "parameters": count_parameters(model)["total"],
                   "onnx_mb": round(path.stat().st_size / 1e6, 2),
                   "preprocess_ms": round(result["preprocessing"]["total_p50_ms"], 3),
                   "b1_p50_ms": round(b1["p50_ms"], 2), "b8_img_per_s": round(b8["throughput_ips"], 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"command": " ".join(["python", "bench/seg_block_cost.py", *(argv or sys.argv[1:])]),
           "machine": describe_machine(), "input_size": args.input_size, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Do INT8 files give FP32's labels on an AVX2-only CPU? Run this under CPU emulation.

ONNX Runtime's INT8 matrix-product kernels on x86 CPUs without VNNI add pairs of uint8 x int8
products in 16 bits (``vpmaddubsw``), which saturates with full 8-bit weights; its depthwise
kernels widen to 32 bits first. The ``-int8-avx2`` files (``leukedge quantize --reduce-range
--depthwise-8bit``: 7-bit weights where products are paired, 8-bit in the depthwise
convolutions) cannot saturate. This script classifies real images with each model file and
compares every file with the first (the FP32 reference) in the same process. Run it natively
and under Debian's qemu-user as a Haswell (AVX2, no AVX-512, no VNNI), which reproduces the
saturation:

    python bench/avx2_agreement.py --data ../shared/data/ALL --limit 100 --out native.json \\
        runtime/assets/models/leukedge-default-{fp32,int8,int8-avx2}.onnx
    qemu-x86_64 -cpu Haswell .venv/bin/python bench/avx2_agreement.py --data ../shared/data/ALL \\
        --limit 100 --out haswell.json --native native.json --reference-from-native \\
        runtime/assets/models/leukedge-default-{fp32,int8,int8-avx2}.onnx

The CPU features are read with CPUID (numpy's dispatch table), which the emulator answers, not
from /proc/cpuinfo, which shows the host's. The gate for bundling a file whose name ends in
``-avx2.onnx``: exit 1 when, under emulation, it gives other results than natively (a label,
or a probability by more than ``--exact``) or FP32's label on fewer than ``--min-agreement``
of the images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from leukedge.runtime.classifier import Classifier
from leukedge.runtime.decode import read_image

FEATURES = ("AVX2", "FMA3", "AVX512F", "AVX512_SKX", "AVX512VNNI", "AVX512_CLX")


def cpu_features() -> dict:
    table = np._core._multiarray_umath.__cpu_features__
    return {name: bool(table.get(name)) for name in FEATURES}


def spread(items: list, limit: int) -> list:
    if limit <= 0 or limit >= len(items):
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, limit)]


def classify(model: Path, pixels: list, threads: int) -> np.ndarray:
    clf = Classifier(model, provider="cpu", threads=threads)
    return np.concatenate([clf.run(np.stack(pixels[i:i + 16]), ["probs"])["probs"]
                           for i in range(0, len(pixels), 16)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="FP32 reference first")
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--native", type=Path, help="this script's JSON from a native run")
    parser.add_argument("--exact", type=float, default=1e-4,
                        help="largest |probability difference| from the native run that counts "
                             "as the same result (float summation order may differ)")
    parser.add_argument("--min-agreement", type=float, default=0.99,
                        help="share of the images on which an -avx2 file must give FP32's label")
    parser.add_argument("--reference-from-native", action="store_true",
                        help="take the FP32 reference's probabilities from --native instead of "
                             "running it here (FP32 gives the same results on every x86 CPU; "
                             "under emulation it took about 50 s per image, INT8 about 1 s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="ONNX Runtime threads (1: spinning threads crawl under emulation)")
    args = parser.parse_args()

    # a plain listing: hashing every file (the dataset scan) is slow under emulation
    root = args.data / "Original" if (args.data / "Original").is_dir() else args.data
    items = spread(sorted(p.relative_to(root).as_posix() for p in root.glob("*/*")
                          if p.suffix.lower() in (".jpg", ".jpeg", ".png")), args.limit)
    pixels = [read_image(root / rel) for rel in items]
    native = json.loads(args.native.read_text()) if args.native else None
    if args.reference_from_native and (native is None or native["images"] != items):
        parser.error("--reference-from-native needs --native from a run on the same images")
    rows, probs = [], {}
    for i, model in enumerate(args.models):
        if i == 0 and args.reference_from_native:
            probs[model.name] = np.asarray(native["probabilities"][model.name])
            continue
        started = time.perf_counter()
        probs[model.name] = classify(model, pixels, args.threads)
        rows.append({"model": model.name, "seconds": round(time.perf_counter() - started, 1)})
        print(f"{model.name}: {rows[-1]['seconds']} s", file=sys.stderr, flush=True)
    reference = probs[args.models[0].name]
    failed = False
    for row in rows:
        p = probs[row["model"]]
        row["labels_equal_to_reference"] = int((p.argmax(1) == reference.argmax(1)).sum())
        row["max_abs_dp_vs_reference"] = float(np.abs(p - reference).max())
        if native is not None:
            theirs = np.asarray(native["probabilities"][row["model"]])
            row["labels_equal_to_native"] = int((p.argmax(1) == theirs.argmax(1)).sum())
            row["max_abs_dp_vs_native"] = float(np.abs(p - theirs).max())
        if row["model"].endswith("-avx2.onnx"):
            row["gate_passed"] = bool(
                row["labels_equal_to_reference"] >= args.min_agreement * len(p)
                and (native is None or (row["labels_equal_to_native"] == len(p)
                                        and row["max_abs_dp_vs_native"] <= args.exact)))
            failed = failed or not row["gate_passed"]
    report = {"n_images": len(pixels), "cpu_features": cpu_features(),
              "reference": args.models[0].name + (" (native run)" if args.reference_from_native
                                                  else ""), "rows": rows,
              "images": items,
              "probabilities": {k: v.round(7).tolist() for k, v in probs.items()}}
    print(json.dumps({k: report[k] for k in ("n_images", "cpu_features", "reference", "rows")},
                     indent=1))
    if args.out:
        args.out.write_text(json.dumps(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

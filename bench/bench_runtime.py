"""Runtime-side timings: preprocessing per image, the preprocessing/model overlap, and cold start.

Measures, on real smear images:
- per image: decode (``load_image``), preprocess (resize + scale + HSV mask + masked image), both;
- images/s of ``runtime.pipeline.classify_files``, in-process, after a warm-up, for sessions with
  1 and with all intra-op threads, each with 0 (inline), 1 and 2 whole-batch workers;
- the cold start of ``leukedge infer one.jpg`` (process start to exit, several runs, median), with
  ``python -c pass`` and ``leukedge --help`` as reference points.
The model is ``--model`` or, by default, the tiny test graph of tests/onnx_builders.py built at
224x224 (so the numbers are the runtime's own cost, not a network's). Prints one JSON object with
the machine (CPU model, cores, AVX512/VNNI/AMX flags), the versions and the load average (the
build machine is shared: compare numbers from the same run only).

Usage:
    python bench/bench_runtime.py [--images ../shared/data/ALL/Original] [--n 650] \
        [--model model.onnx] [--cold-runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEUKEDGE = str(Path(sys.executable).with_name("leukedge"))


def pick_images(root: Path, n: int) -> list[Path]:
    """n image paths spread evenly over the sorted tree (all classes), deterministic."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise SystemExit(f"{root}: no images")
    step = len(files) / min(n, len(files))
    return [files[int(i * step)] for i in range(min(n, len(files)))]


def tiny_model(folder: Path, size: int) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from onnx_builders import make_tiny_onnx

    return make_tiny_onnx(folder / f"tiny-{size}.onnx", input_size=(size, size))


def _ms(values: list[float]) -> dict:
    values = sorted(values)
    return {"median_ms": round(1e3 * statistics.median(values), 3),
            "p90_ms": round(1e3 * values[int(0.9 * (len(values) - 1))], 3),
            "mean_ms": round(1e3 * statistics.fmean(values), 3)}


def preprocessing_times(images: list[Path], spec, with_mask: bool = True) -> dict:
    """Per-image decode and preprocess times (perf_counter around each call); ``with_mask=False``
    for a model without a masked input (the runtime then skips the HSV mask)."""
    from leukedge.runtime.preprocess import load_image, preprocess_array

    decode, prep = [], []
    for path in images:
        t0 = time.perf_counter()
        rgb = load_image(path)
        t1 = time.perf_counter()
        preprocess_array(rgb, spec, with_mask=with_mask)
        t2 = time.perf_counter()
        decode.append(t1 - t0)
        prep.append(t2 - t1)
    total = [a + b for a, b in zip(decode, prep)]
    return {"images": len(images), "input_size": list(spec.input_size), "with_mask": with_mask,
            "decode": _ms(decode), "preprocess": _ms(prep), "decode_plus_preprocess": _ms(total)}


def overlap_throughput(model: Path, images: list[Path], repeats: int, batch_size: int) -> dict:
    """images/s of classify_files per (session threads, batch workers), median of repeats."""
    from leukedge.runtime import Classifier
    from leukedge.runtime.pipeline import classify_files
    from leukedge.runtime.session import default_threads

    configs = [(threads, workers) for threads in sorted({1, default_threads()})
               for workers in (0, 1, 2)]
    classifiers = {t: Classifier(model, provider="cpu", threads=t) for t, _ in configs}
    for clf in classifiers.values():
        list(classify_files(clf, images[:32], batch_size=batch_size))  # warm caches and pools
    rates: dict[tuple[int, int], list[float]] = {c: [] for c in configs}
    for _ in range(repeats):  # interleaved, so a burst of load on the shared machine hits all
        for threads, workers in configs:
            t0 = time.perf_counter()
            n = sum(1 for _ in classify_files(classifiers[threads], images, batch_size=batch_size,
                                              workers=workers))
            rates[(threads, workers)].append(n / (time.perf_counter() - t0))
    return {f"threads_{t}_workers_{w}": {"images_per_s_median": round(statistics.median(r)),
                                         "runs": [round(x) for x in r]}
            for (t, w), r in rates.items()}


def cold_runs(cmd: list[str], runs: int) -> dict:
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        if done.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-500:]}")
    return {"median_s": round(statistics.median(walls), 3), "min_s": round(min(walls), 3),
            "max_s": round(max(walls), 3), "runs": runs}


def machine() -> dict:
    from leukedge.export.machine import describe_machine

    return describe_machine()


def versions() -> dict:
    import cv2
    import numpy
    import onnxruntime

    return {"numpy": numpy.__version__, "opencv": cv2.__version__,
            "onnxruntime": onnxruntime.__version__, "python": sys.version.split()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/ALL/Original")
    parser.add_argument("--n", type=int, default=650, help="images for the in-process timings")
    parser.add_argument("--model", type=Path, help="ONNX model (default: tiny 224x224 test graph)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="throughput repeats per setting")
    parser.add_argument("--cold-runs", type=int, default=7)
    args = parser.parse_args()

    images = pick_images(args.images, args.n)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or tiny_model(Path(tmp), 224)
        from leukedge.runtime.contract import read_contract

        contract = read_contract(model)
        spec = contract.preprocessing
        with_mask = contract.input_for("masked_image") is not None
        result = {
            "machine": machine(), "versions": versions(), "model": str(args.model or "tiny-224"),
            "loadavg_before": os.getloadavg(),
            "preprocessing": preprocessing_times(images, spec, with_mask),
            "pipeline_overlap": overlap_throughput(model, images, args.repeats, args.batch_size),
            "cold_start": {
                "python_-c_pass": cold_runs([sys.executable, "-c", "pass"], args.cold_runs),
                "leukedge_--help": cold_runs([LEUKEDGE, "--help"], args.cold_runs),
                "leukedge_infer_one_jpg": cold_runs(
                    [LEUKEDGE, "infer", str(images[0]), "--model", str(model)], args.cold_runs),
            },
            "loadavg_after": os.getloadavg(),
        }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

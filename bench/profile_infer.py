"""Where `leukedge infer`'s time goes: start-up, decoding, and each part of the model.

Three measurements in one run, all single-threaded (one ONNX Runtime thread, as `leukedge
infer` runs each of its whole-batch workers):

- start-up: importing the CLI, then numpy / OpenCV / ONNX Runtime, opening the model
  (session, warm-up run);
- decoding: the images read and decoded (OpenCV), per image;
- the model: ONNX Runtime's own profiler over the same images, kernel time summed by part of
  the graph (``m0/pre`` = the first member's preprocessing: cast, resize, normalisation, the HSV
  stain mask and the input-check measures; ``m0/net`` = its network; ``m1/...`` = the
  second member's; ``heatmap``; the rest) and by operator type within each part;

and the model's images/s at several model-run sizes (``--batch-sizes``), where the cache
decides: a run of 16 224 px images holds 9.6 MB per float tensor.

    python bench/profile_infer.py --model default-int8 --images ../shared/data/ALL/Original \\
        --n 256 --json docs/results/profile_infer.json
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_infer import pick_images
from leukedge.modelkit.evaluation.machine import describe_machine
from results_file import command_line, report

STARTUP = """
import time
t0 = time.perf_counter()
import leukedge.cli.main
t1 = time.perf_counter()
import numpy, cv2, onnxruntime
t2 = time.perf_counter()
from leukedge.runtime.classifier import Classifier
Classifier({model!r}, provider="cpu", threads=1)
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def startup(model: str, repeats: int = 5) -> dict:
    """Median seconds of each start-up step, each in a fresh process."""
    rows = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", STARTUP.format(model=model)], check=True,
                             capture_output=True, text=True).stdout.split()
        rows.append([float(x) for x in out])
    med = np.median(np.array(rows), axis=0)
    return {"import_cli_s": round(float(med[0]), 3), "import_numpy_cv2_ort_s": round(float(med[1]), 3),
            "open_model_s": round(float(med[2]), 3)}


def part_of(node: str) -> str:
    """``m0/pre/Resize_2`` -> ``m0/pre``; ``heatmap/...`` -> ``heatmap``; others -> ``other``."""
    pieces = node.split("/")
    if len(pieces) > 2 and pieces[0][:1] == "m" and pieces[0][1:].isdigit():
        return "/".join(pieces[:2])
    if pieces[0] in ("pre", "net", "post", "heatmap", "join", "mean"):
        return pieces[0]
    return "other"


def kernel_profile(model_path: str, images: np.ndarray, batch: int) -> dict:
    """Kernel microseconds by part and by operator type, from ONNX Runtime's profiler."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs() if o.name != "stain_mask"]
        for start in range(0, len(images), batch):
            session.run(names, {"image": images[start:start + batch]})
        events = json.loads(Path(session.end_profiling()).read_text())
    by_part: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_part[part_of(e["name"])][e["args"]["op_name"]] += e["dur"]
    total = sum(sum(c.values()) for c in by_part.values())
    parts = {}
    for part, ops in sorted(by_part.items(), key=lambda kv: -sum(kv[1].values())):
        us = sum(ops.values())
        parts[part] = {"ms_per_image": round(us / 1000 / len(images), 3),
                       "share": round(us / total, 3),
                       "top_ops_ms_per_image": {op: round(v / 1000 / len(images), 3)
                                                for op, v in ops.most_common(5)}}
    return {"kernel_ms_per_image": round(total / 1000 / len(images), 3), "parts": parts}


def run_sizes(model: str, images: np.ndarray, sizes: list[int]) -> dict:
    """Model images/s (one thread) at each model-run size, best of 2 passes."""
    from leukedge.runtime.classifier import Classifier

    clf = Classifier(model, provider="cpu", threads=1)
    names = clf.default_outputs
    out = {}
    for size in sizes:
        best = float("inf")
        for _ in range(2):
            started = time.perf_counter()
            for start in range(0, len(images), size):
                clf.run(images[start:start + size], names)
            best = min(best, time.perf_counter() - started)
        out[str(size)] = round(len(images) / best, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default-int8", help="bundled name or file")
    ap.add_argument("--images", type=Path, default=Path("../shared/data/ALL/Original"))
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16, help="model-run size for the profile")
    ap.add_argument("--batch-sizes", default="1,4,8,16,32")
    ap.add_argument("--json", type=Path, help="append the result to this JSON list")
    args = ap.parse_args()

    from leukedge.runtime.decode import load_image
    from leukedge.runtime.models import resolve_model

    model_path = str(resolve_model(args.model))
    files = pick_images(args.images, args.n)
    started = time.perf_counter()
    images = np.stack([load_image(p) for p in files])
    decode_ms = (time.perf_counter() - started) * 1000 / len(files)
    result = {"command": command_line(),
              "machine": describe_machine(), "model": Path(model_path).name,
              "images": len(files), "threads": 1,
              "startup_median_of_5": startup(args.model),
              "decode_ms_per_image": round(decode_ms, 3),
              "profile_batch": args.batch,
              "profile": kernel_profile(model_path, images, args.batch),
              "images_per_s_by_run_size": run_sizes(
                  args.model, images, [int(s) for s in args.batch_sizes.split(",")])}
    report(result, args.json)


if __name__ == "__main__":
    main()

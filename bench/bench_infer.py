"""End-to-end speed and memory of `leukedge infer`, as a user runs it, in one run.

Measures, for each model given (default: every bundled model):
- a folder of N real images (default 650), process start to last row written: images/s;
- a cold `leukedge infer one.jpg` (process start to exit), median of several runs;
- the peak resident memory (max RSS) of those processes;
and, with --keras-reference, the reference study's DenseNet-201 hybrid (weights=None, 224x224,
gap) under Keras `model.predict`, per image, in the same run (needs `leukedge[train]`).
The machine (CPU model, cores, VNNI) is recorded with the numbers.

Usage:
    python bench/bench_infer.py --images ../shared/data/ALL/Original --n 650 \
        --json docs/results/bench_infer.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from leukedge.modelkit.evaluation.machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]

LEUKEDGE = str(Path(sys.executable).with_name("leukedge"))


def run_timed(cmd: list[str]) -> tuple[float, int, str]:
    """Run a command; return (wall seconds, max RSS in MiB, stderr tail)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")[-500:]
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} exited {code}: {err}")
    return wall, usage.ru_maxrss // 1024, err


def pick_images(root: Path, n: int) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(files) < n:
        raise SystemExit(f"{root}: only {len(files)} images, {n} asked for")
    step = len(files) / n  # spread over all classes, deterministic
    return [files[int(i * step)] for i in range(n)]


def bench_model(model: str, folder: Path, one: Path, repeats: int, batch: int) -> dict:
    out_file = folder.parent / "rows.jsonl"
    folder_cmd = [LEUKEDGE, "infer", str(folder), "--model", model, "--format", "json",
                  "--output", str(out_file)]
    if batch:  # else leukedge infer's own default, as a user runs it
        folder_cmd += ["--batch-size", str(batch)]
    runs = [run_timed(folder_cmd) for _ in range(repeats)]
    n = sum(1 for _ in open(out_file))
    cold = [run_timed([LEUKEDGE, "infer", str(one), "--model", model]) for _ in range(5)]
    walls = [r[0] for r in runs]
    return {
        "model": model,
        "model_bytes": Path(model).stat().st_size,
        "images": n,
        "folder_wall_s_median": round(statistics.median(walls), 3),
        "folder_images_per_s": round(n / statistics.median(walls), 1),
        "folder_max_rss_mib": max(r[1] for r in runs),
        "cold_one_image_s_median": round(statistics.median(c[0] for c in cold), 3),
        "cold_max_rss_mib": max(c[1] for c in cold),
    }


def keras_reference(images: list[Path], repeats: int = 3) -> dict:
    """The reference study's DenseNet-201 hybrid (untrained weights; speed only) under
    model.predict, fed by the preprocessing graph."""
    import numpy as np

    from leukedge.runtime.decode import load_image
    from leukedge.modelkit.graph.runner import PreprocessRunner
    from leukedge.train.model import HybridConfig, build_hybrid

    config = HybridConfig.resolve("densenet201", input_size=(224, 224), seg_features="gap")
    model = build_hybrid(config)
    feeds = PreprocessRunner(config.preprocess_spec())(np.stack([load_image(p) for p in images[:8]]))
    model.predict({k: v[:1] for k, v in feeds.items()}, verbose=0)  # warm-up / trace
    per_image = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict({k: v[:1] for k, v in feeds.items()}, verbose=0)
        per_image.append((time.perf_counter() - start) * 1000)
    model.predict(feeds, batch_size=8, verbose=0)  # trace the batch-8 shape first
    start = time.perf_counter()
    model.predict(feeds, batch_size=8, verbose=0)
    batch8 = (time.perf_counter() - start) * 1000 / 8
    return {"model": "densenet201 hybrid (gap), Keras model.predict (preprocessing not timed)",
            "parameters": int(model.count_params()),
            "ms_per_image_batch1_median": round(statistics.median(per_image), 1),
            "ms_per_image_batch8": round(batch8, 1),
            "check": bool(np.isfinite(model.predict(feeds, verbose=0)).all())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=Path, default=ROOT.parent / "shared/data/ALL/Original")
    ap.add_argument("--n", type=int, default=650)
    ap.add_argument("--models", nargs="*", default=None,
                    help="ONNX files (default: the bundled INT8 and FP32 models)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="default: leukedge infer's own (16)")
    ap.add_argument("--keras-reference", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    if args.models is None:
        from leukedge.runtime.models import bundled_models
        args.models = [str(p) for p in bundled_models().values()]
    images = pick_images(args.images, args.n)
    result = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
              "machine": describe_machine(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i, p in enumerate(images):
            shutil.copyfile(p, folder / f"{i:04d}_{p.name}")
        one = folder / sorted(os.listdir(folder))[0]
        for model in args.models:
            result["runs"].append(bench_model(model, folder, one, args.repeats, args.batch_size))
    if args.keras_reference:
        result["keras_reference"] = keras_reference(images)
        ref = result["keras_reference"]["ms_per_image_batch1_median"]
        for r in result["runs"]:
            r["speedup_vs_keras_per_image"] = round(ref / (1000 / r["folder_images_per_s"]), 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()

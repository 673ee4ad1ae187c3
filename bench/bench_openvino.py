"""`leukedge infer --provider openvino:CPU` against the CPU provider on the same folder: label
agreement, the largest probability difference, and speed (whole processes, and the rate each
run reports itself, without start-up).

Runs in a virtual environment with onnxruntime-openvino in place of onnxruntime (the two write
the same `onnxruntime` module), e.g.:
    python -m venv ov-venv && ov-venv/bin/pip install onnxruntime-openvino onnx numpy \
        opencv-python-headless typer && ov-venv/bin/pip install --no-deps -e .
    cd bench && ../ov-venv/bin/python bench_openvino.py --n 650 \
        --json ../docs/results/bench_openvino.json

With --declare-shapes (needs onnx), each model is also measured as a copy with its converted
classifier's output shape declared (modelkit/graph/shapes.py): what a model built with this
leukedge carries, and what OpenVINO needs to compile the bundled default built before it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench_infer import LEUKEDGE, pick_images, run_timed
from leukedge.modelkit.evaluation.machine import describe_machine
from leukedge.runtime.models import resolve_model
from results_file import append_run

ROOT = Path(__file__).resolve().parents[1]


def declared_copy(model: Path, folder: Path) -> Path | None:
    """A copy of ``model`` with its classifiers' output shapes declared; None when it has none
    to declare."""
    import onnx

    from leukedge.modelkit.graph.shapes import declare_classifier_shapes

    proto = onnx.load(str(model))
    if not declare_classifier_shapes(proto.graph):
        return None
    out = folder / f"{model.stem}-declared.onnx"
    onnx.save(proto, str(out))
    return out


def run_both(model: Path, folder: Path, out: dict[str, Path], repeats: int) -> dict:
    """`leukedge infer` on each provider ``repeats`` times, taking turns (the same load)."""
    runs = {p: {"provider": p, "wall_s": [], "reported_images_per_s": [], "load_1min": []}
            for p in out}
    for _ in range(repeats):
        for provider, run in runs.items():
            if "error" in run:
                continue
            cmd = [LEUKEDGE, "infer", str(folder), "-m", str(model), "--provider", provider,
                   "-f", "json", "-o", str(out[provider])]
            run["load_1min"].append(round(os.getloadavg()[0], 1))
            try:
                wall, _, err = run_timed(cmd)
            except RuntimeError as e:  # exit 2: the model or provider is refused
                run["error"] = str(e).split("exited 2: ")[-1].strip()[-400:]
                continue
            found = re.search(r"\((\d+) images/s\)", err)
            run["wall_s"].append(round(wall, 2))
            run["reported_images_per_s"].append(int(found.group(1)) if found else None)
    for provider, run in runs.items():
        if run["wall_s"]:
            n = len(out[provider].read_text().splitlines())
            run["images_per_s_whole_process"] = round(n / statistics.median(run["wall_s"]), 1)
    return runs


def compare(a: Path, b: Path) -> dict:
    rows_a = [json.loads(line) for line in a.read_text().splitlines()]
    rows_b = [json.loads(line) for line in b.read_text().splitlines()]
    ok = [(x, y) for x, y in zip(rows_a, rows_b) if x["label"] and y["label"]]
    same = sum(x["label"] == y["label"] for x, y in ok)
    diff = max((abs(x["probabilities"][c] - y["probabilities"][c])
                for x, y in ok for c in x["probabilities"]), default=0.0)
    review = sum(x["needs_review"] != y["needs_review"] for x, y in ok)
    return {"classified": len(ok), "label_agreement": round(same / len(ok), 6) if ok else None,
            "labels_differ": len(ok) - same, "max_abs_prob_diff": round(diff, 6),
            "review_flag_differs": review}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=Path, default=ROOT.parent / "shared/data/ALL/Original")
    ap.add_argument("--n", type=int, default=650)
    ap.add_argument("--models", nargs="*", default=["default", "fast-int8", "fast-fp32",
                                                    "default-fp32"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--declare-shapes", action="store_true")
    ap.add_argument("--json", type=Path, help="append the results to this JSON list")
    args = ap.parse_args()

    import onnxruntime

    images = pick_images(args.images, args.n)
    result = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
              "machine": describe_machine(), "onnxruntime": onnxruntime.__version__,
              "providers": onnxruntime.get_available_providers(), "images": len(images),
              "note": "the 2 cores are shared with training jobs: timings are contended "
                      "(load_1min: the 1-minute load average before each run)",
              "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i, p in enumerate(images):
            shutil.copyfile(p, folder / f"{i:04d}_{p.name}")
        models = [(m, resolve_model(m)) for m in args.models]
        if args.declare_shapes:
            models += [(f"{name} (shapes declared)", copy) for name, path in list(models)
                       if (copy := declared_copy(path, Path(tmp))) is not None]
        for name, path in models:
            out = {p: Path(tmp) / f"{p.replace(':', '_')}.jsonl" for p in ("cpu", "openvino:CPU")}
            runs = run_both(path, folder, out, args.repeats)
            entry = {"model": name, "file": path.name, "cpu": runs["cpu"],
                     "openvino": runs["openvino:CPU"]}
            if "error" not in entry["openvino"]:
                entry["agreement"] = compare(out["cpu"], out["openvino:CPU"])
            result["runs"].append(entry)
            print(json.dumps(entry), flush=True)
    if args.json:
        append_run(args.json, result)


if __name__ == "__main__":
    main()
